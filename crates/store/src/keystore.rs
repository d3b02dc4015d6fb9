//! Device keys in the data directory: one file per device, readable by its owner only.
//!
//! Keys never live in the database, so a copied database file carries no key and cannot
//! go on signing as the device it was copied from.

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
