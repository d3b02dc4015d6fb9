//! Whether a daemon syncs by itself: a setting people change while it runs (the
//! page's switch), which every member's supervisor follows. What was set lasts: it
//! is kept for the device in `DATA/daemon/<device>.toml` and read back when the
//! daemon starts again, in place of the configuration's `sync_interval`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_core::DeviceId;

use crate::error::DaemonError;

/// Whether the daemon syncs by itself, and how often it does with nothing new.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoSync {
    /// Rounds run by themselves: on every connection, every change, every interval.
    /// Off, this device dials no one and starts no round (members may still sync
    /// with it, and a sync asked for runs).
    pub on: bool,
    /// How often to sync with each member even when nothing changed.
    #[serde(with = "crate::config::text")]
    pub interval: Duration,
}

impl AutoSync {
    /// Where what was set for `device` is kept.
    pub fn path(data_dir: &Path, device: &DeviceId) -> PathBuf {
        data_dir
            .join("daemon")
            .join(format!("{}.toml", &device.to_string()[..16]))
    }

    /// What was set and kept at `path`, if anything was.
    pub(crate) fn load(path: &Path) -> Result<Option<AutoSync>, DaemonError> {
        let bad = |reason: String| DaemonError::AutoSyncFile {
            path: path.to_owned(),
            reason: format!("{reason} (delete the file to go back to the configuration's)"),
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let auto: AutoSync = toml::from_str(&text).map_err(|e| bad(e.message().into()))?;
                if auto.interval < Duration::from_secs(1) {
                    return Err(bad("the interval must be at least 1s".into()));
                }
                Ok(Some(auto))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(bad(e.to_string())),
        }
    }

    /// Keeps this at `path`, whole or not at all (written aside, then renamed).
    pub(crate) fn save(&self, path: &Path) -> Result<(), DaemonError> {
        let failed = |e: std::io::Error| DaemonError::AutoSyncFile {
            path: path.to_owned(),
            reason: e.to_string(),
        };
        let text = toml::to_string(self).map_err(|e| DaemonError::Internal(e.to_string()))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(failed)?;
        }
        let aside = path.with_extension("toml.new");
        std::fs::write(&aside, text).map_err(failed)?;
        std::fs::rename(&aside, path).map_err(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_was_set_is_read_back_and_a_damaged_file_is_named() {
        let dir = tempfile::tempdir().expect("dir");
        let path = AutoSync::path(dir.path(), &DeviceId([7; 32]));
        assert_eq!(AutoSync::load(&path).expect("none yet"), None);
        let set = AutoSync {
            on: false,
            interval: Duration::from_secs(300),
        };
        set.save(&path).expect("save");
        assert_eq!(AutoSync::load(&path).expect("load"), Some(set));
        assert!(
            std::fs::read_to_string(&path)
                .expect("text")
                .contains("interval = \"5m\"")
        );
        std::fs::write(&path, "on = maybe").expect("damage");
        let e = AutoSync::load(&path).expect_err("damaged");
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    }
}
