//! Device keys in the data directory: one file per device, readable by its owner only.
//!
//! Keys never live in the database, so a copied database file carries no key and cannot
//! go on signing as the device it was copied from.
//!
//! A copy made beside the original, with the key in reach, is caught too: the data
//! directory records which file each device lives in (`devices/<id>.home`). A file that
//! names a device while the file recorded for it is still there and names it too is a
//! copy, and signs nothing (`status` says so) until it is adopted as a device of its
//! own. A file that was moved leaves nothing behind and becomes the device's file.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use shoal_core::{DeviceId, DeviceKey};

use crate::error::{Result, StoreError};

/// Where a device's key file lives.
pub(crate) fn key_path(data_dir: &Path, device: &DeviceId) -> PathBuf {
    data_dir.join("devices").join(format!("{device}.key"))
}

/// Writes a new device key, readable and writable by its owner only.
pub(crate) fn save(data_dir: &Path, key: &DeviceKey) -> Result<()> {
    let path = key_path(data_dir, &key.id());
    let io = |source| StoreError::Io {
        path: path.clone(),
        source,
    };
    let dir = path.parent().unwrap_or(data_dir);
    fs::create_dir_all(dir).map_err(io)?;
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&path).map_err(io)?;
    file.write_all(hex::encode(key.seed()).as_bytes())
        .map_err(io)?;
    file.sync_all().map_err(io)
}

/// Loads the key of `device`, or `None` when this data directory does not have it.
pub(crate) fn load(data_dir: &Path, device: &DeviceId) -> Result<Option<DeviceKey>> {
    let path = key_path(data_dir, device);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StoreError::Io { path, source }),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = fs::metadata(&path).map_err(|source| StoreError::Io {
            path: path.clone(),
            source,
        })?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(StoreError::KeyExposed { path });
        }
    }
    let seed: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| StoreError::KeyDamaged { path: path.clone() })?;
    let key = DeviceKey::from_seed(seed);
    if key.id() != *device {
        return Err(StoreError::KeyDamaged { path });
    }
    Ok(Some(key))
}

/// Where the data directory records which file a device lives in.
fn home_path(data_dir: &Path, device: &DeviceId) -> PathBuf {
    data_dir.join("devices").join(format!("{device}.home"))
}

/// The file `device` lives in when `path` is a copy of it: another file, still there,
/// that names the same device. Otherwise `path` becomes (or stays) the device's file:
/// a file that was moved leaves nothing at its old place.
pub(crate) fn copy_of(data_dir: &Path, device: &DeviceId, path: &Path) -> Result<Option<PathBuf>> {
    let record = home_path(data_dir, device);
    let here = fs::canonicalize(path).map_err(|source| StoreError::Io {
        path: path.to_owned(),
        source,
    })?;
    if let Ok(text) = fs::read_to_string(&record) {
        let home = PathBuf::from(text.trim_end_matches('\n'));
        if home != here && !same_file(&home, &here) && names_device(&home, device) {
            return Ok(Some(home));
        }
        if home == here {
            return Ok(None);
        }
    }
    let io = |source| StoreError::Io {
        path: record.clone(),
        source,
    };
    let dir = record.parent().unwrap_or(data_dir);
    fs::create_dir_all(dir).map_err(io)?;
    let partial = record.with_extension("home.new");
    fs::write(&partial, here.to_string_lossy().as_bytes()).map_err(io)?;
    fs::rename(&partial, &record).map_err(io)?;
    Ok(None)
}

/// Whether two paths are one file (hard links, or one path through a bind mount).
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(a), Ok(b)) = (fs::metadata(a), fs::metadata(b)) {
            return a.dev() == b.dev() && a.ino() == b.ino();
        }
    }
    let _ = (a, b);
    false
}

/// Whether the Shoal database at `path` is `device`'s.
fn names_device(path: &Path, device: &DeviceId) -> bool {
    let Ok(conn) = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) else {
        return false;
    };
    conn.query_row(
        "SELECT value FROM shoal_meta WHERE key = 'device'",
        [],
        |r| r.get::<_, Vec<u8>>(0),
    )
    .is_ok_and(|v| v == device.0)
}
