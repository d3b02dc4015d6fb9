//! The API key: 32 random bytes, made the first time a daemon serves the API, kept in
//! the data directory where only its owner can read it.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use shoal_core::DeviceId;

/// What an app presents to be let in. A key read from a file follows the file: once
/// it is made anew (`shoal api-key DB --rotate`), the old one lets no one in.
#[derive(Clone)]
pub struct ApiKey {
    text: String,
    file: Option<std::sync::Arc<std::sync::Mutex<Followed>>>,
}

struct Followed {
    path: PathBuf,
    modified: Option<std::time::SystemTime>,
    text: String,
}

/// The key file cannot be read or written.
#[derive(Debug, thiserror::Error)]
#[error(
    "the API key in {path} cannot be {doing}: {source}. Check the data directory's permissions, or remove the file to make a new key"
)]
pub struct KeyError {
    path: PathBuf,
    doing: &'static str,
    source: std::io::Error,
}

impl ApiKey {
    /// Where the key of `device`'s daemon is kept.
    pub fn path(data_dir: &Path, device: &DeviceId) -> PathBuf {
        data_dir
            .join("api")
            .join(format!("{}.key", &device.to_string()[..16]))
    }

    /// The key kept at `path`, made there first if there is none.
    pub fn load_or_make(path: &Path) -> Result<ApiKey, KeyError> {
        match std::fs::read_to_string(path) {
            Ok(text) if text.trim().len() == 64 => {
                let mode = std::fs::metadata(path).map(|m| m.permissions().mode() & 0o077);
                if mode.is_ok_and(|m| m != 0) {
                    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
                }
                Ok(ApiKey::followed(path, text.trim().to_owned()))
            }
            Ok(_) => ApiKey::make(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ApiKey::make(path),
            Err(source) => Err(KeyError {
                path: path.to_owned(),
                doing: "read",
                source,
            }),
        }
    }

    /// A new key at `path`, replacing any there: the old one lets no one in again.
    pub fn make(path: &Path) -> Result<ApiKey, KeyError> {
        let fail = |doing, source| KeyError {
            path: path.to_owned(),
            doing,
            source,
        };
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| fail("made", std::io::Error::other(e)))?;
        let text = hex::encode(bytes);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| fail("written", e))?;
        }
        let tmp = path.with_extension("key.new");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| fail("written", e))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| fail("written", e))?;
        std::fs::rename(&tmp, path).map_err(|e| fail("written", e))?;
        Ok(ApiKey::followed(path, text))
    }

    fn followed(path: &Path, text: String) -> ApiKey {
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        ApiKey {
            text: text.clone(),
            file: Some(std::sync::Arc::new(std::sync::Mutex::new(Followed {
                path: path.to_owned(),
                modified,
                text,
            }))),
        }
    }

    /// The key now: the file's, if it changed since it was read.
    fn current(&self) -> String {
        let Some(file) = &self.file else {
            return self.text.clone();
        };
        let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
        let modified = std::fs::metadata(&f.path).and_then(|m| m.modified()).ok();
        if modified != f.modified
            && let Ok(text) = std::fs::read_to_string(&f.path)
            && text.trim().len() == 64
        {
            f.text = text.trim().to_owned();
            f.modified = modified;
        }
        f.text.clone()
    }

    /// The key as an app sends it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `given` is this key, in time that does not depend on where they differ.
    pub(crate) fn admits(&self, given: &str) -> bool {
        // Hashing both first leaves nothing to learn from how long a comparison took.
        blake3::hash(given.as_bytes()) == blake3::hash(self.current().as_bytes())
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_made_once_readable_by_its_owner_alone_and_rotated_on_demand() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("api").join("k.key");
        let first = ApiKey::load_or_make(&path).expect("made");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(first.as_str().len(), 64);
        let again = ApiKey::load_or_make(&path).expect("read");
        assert!(again.admits(first.as_str()));
        let rotated = ApiKey::make(&path).expect("rotated");
        assert!(!rotated.admits(first.as_str()));
        // A key already in use follows its file.
        assert!(
            again.admits(rotated.as_str()),
            "the server still takes the old key"
        );
        assert!(!again.admits(first.as_str()));
        assert!(
            ApiKey::load_or_make(&path)
                .expect("read")
                .admits(rotated.as_str())
        );
        assert!(!rotated.admits(""));
    }
}
