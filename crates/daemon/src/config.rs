//! The daemon's settings: `config.toml` in the data directory, read and written by
//! `shoal config get|set`. Every key has a default, so an absent file is a valid one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_net::{PeerSpec, Relay};

use crate::error::DaemonError;

/// The name of the configuration file in the data directory.
pub(crate) const FILE: &str = "config.toml";

/// What a daemon (and the other network commands) read from `config.toml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Relays: `default` (iroh's public relays), `none`, or a relay URL.
    pub relay: String,
    /// The UDP port to listen on; 0 for any free port.
    pub port: u16,
    /// Static peers: `HOST:PORT` where some member listens (a Tailscale address),
    /// or `DEVICE@HOST:PORT`.
    pub peers: Vec<String>,
    /// Find members on the local network by multicast DNS.
    pub mdns: bool,
    /// How often to sync with each member even when nothing changed here.
    #[serde(with = "text")]
    pub sync_interval: Duration,
    /// How often an idle connection sends a keep-alive; one silent for three is lost.
    #[serde(with = "text")]
    pub heartbeat: Duration,
    /// The first wait before reconnecting to a member that could not be reached.
    #[serde(with = "text")]
    pub backoff_min: Duration,
    /// The longest wait between attempts to reach a member.
    #[serde(with = "text")]
    pub backoff_max: Duration,
    /// How long one attempt to reach a member may take.
    #[serde(with = "text")]
    pub connect_timeout: Duration,
    /// How often the database is asked whether anything wrote to it.
    #[serde(with = "text")]
    pub watch_interval: Duration,
    /// Where `shoal up` serves the HTTP API and the page: `HOST:PORT`, or `off`.
    /// When the port is taken, a free one on the same host is used instead.
    pub api: String,
    /// This device's name for people, shown on the page; the machine's name when
    /// empty.
    pub name: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            relay: "default".into(),
            port: 0,
            peers: Vec::new(),
            mdns: true,
            sync_interval: Duration::from_secs(60),
            heartbeat: Duration::from_secs(5),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(15),
            watch_interval: Duration::from_millis(10),
            api: "127.0.0.1:8384".into(),
            name: String::new(),
        }
    }
}

impl Config {
    /// Settings for daemons that reach each other over loopback on one machine (a
    /// demo, a test): no relays, no multicast DNS, no HTTP API, and a lost member
    /// noticed and dialed again within seconds.
    pub fn loopback() -> Config {
        Config {
            relay: "none".into(),
            mdns: false,
            heartbeat: Duration::from_secs(1),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(2),
            api: "off".into(),
            ..Config::default()
        }
    }

    /// Where the configuration of `data_dir` lives.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(FILE)
    }

    /// Reads the configuration of `data_dir`; the defaults when there is no file.
    pub fn load(data_dir: &Path) -> Result<Config, DaemonError> {
        let path = Config::path(data_dir);
        match std::fs::read_to_string(&path) {
            Ok(text) => Config::parse(&text).map_err(|reason| DaemonError::Config { path, reason }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(DaemonError::Config {
                path,
                reason: e.to_string(),
            }),
        }
    }

    fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        if self.backoff_min.is_zero() || self.backoff_min > self.backoff_max {
            return Err("backoff_min must be above zero and at most backoff_max".into());
        }
        if self.heartbeat < Duration::from_millis(100) {
            return Err("heartbeat must be at least 100ms".into());
        }
        if self.watch_interval.is_zero() || self.connect_timeout.is_zero() {
            return Err("watch_interval and connect_timeout must be above zero".into());
        }
        if self.sync_interval < Duration::from_secs(1) {
            return Err("sync_interval must be at least 1s".into());
        }
        self.relay_mode()?;
        if self.name.len() > 100 || self.name.chars().any(char::is_control) {
            return Err("name must be at most 100 bytes, with no control characters".into());
        }
        if self.api != "off" && self.api.parse::<std::net::SocketAddr>().is_err() {
            return Err(format!(
                "api must be HOST:PORT (such as 127.0.0.1:8384) or off, not {:?}",
                self.api
            ));
        }
        Ok(())
    }

    /// The relays asked for: `default`, `none`, or an `http(s)://` URL.
    pub fn relay_mode(&self) -> Result<Relay, String> {
        match self.relay.as_str() {
            "default" => Ok(Relay::Default),
            "none" | "off" | "disabled" => Ok(Relay::Disabled),
            url if url.starts_with("https://") || url.starts_with("http://") => url
                .parse()
                .map(Relay::Custom)
                .map_err(|e| format!("relay {url:?} is not a URL: {e}")),
            url => Err(format!(
                "relay must be `default`, `none` or an https:// URL, not {url:?}"
            )),
        }
    }

    /// The static peers: each `HOST:PORT` or `DEVICE@HOST:PORT` read, and its host
    /// name looked up.
    pub fn static_peers(&self) -> Result<Vec<PeerSpec>, DaemonError> {
        self.peers
            .iter()
            .map(|p| p.parse::<PeerSpec>().map_err(DaemonError::from))
            .collect()
    }

    /// This device's name for people: [`Config::name`], or else the machine's name
    /// as the kernel has it.
    pub fn device_name(&self) -> Option<String> {
        let name = self.name.trim();
        if !name.is_empty() {
            return Some(name.to_owned());
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .ok()
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
    }

    /// Where to serve the HTTP API, unless it is off.
    pub fn api_addr(&self) -> Option<std::net::SocketAddr> {
        self.api.parse().ok()
    }

    /// The value of `key` as it would be written in the file.
    pub fn get(&self, key: &str) -> Result<String, DaemonError> {
        let table =
            toml::Table::try_from(self).map_err(|e| DaemonError::Internal(e.to_string()))?;
        match table.get(key) {
            Some(toml::Value::String(s)) => Ok(s.clone()),
            Some(v) => Ok(v.to_string()),
            None => Err(unknown_key(key)),
        }
    }

    /// Every key and its value, in the file's notation.
    pub fn entries(&self) -> Result<Vec<(String, String)>, DaemonError> {
        let table =
            toml::Table::try_from(self).map_err(|e| DaemonError::Internal(e.to_string()))?;
        table
            .keys()
            .map(|k| Ok((k.clone(), self.get(k)?)))
            .collect()
    }

    /// Sets `key` to `value` in the file of `data_dir`, keeping its other keys (and
    /// refusing a value that does not fit the key).
    pub fn set(data_dir: &Path, key: &str, value: &str) -> Result<Config, DaemonError> {
        let path = Config::path(data_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                return Err(DaemonError::Config {
                    path,
                    reason: e.to_string(),
                });
            }
        };
        let mut file: toml::Table = toml::from_str(&text).map_err(|e| DaemonError::Config {
            path: path.clone(),
            reason: e.message().to_owned(),
        })?;
        let defaults = toml::Table::try_from(Config::default())
            .map_err(|e| DaemonError::Internal(e.to_string()))?;
        let parsed = match defaults.get(key) {
            None => return Err(unknown_key(key)),
            Some(toml::Value::String(_)) => toml::Value::String(value.to_owned()),
            Some(toml::Value::Array(_)) => toml::Value::Array(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| toml::Value::String(s.to_owned()))
                    .collect(),
            ),
            Some(_) => {
                let wrapped = format!("v = {value}");
                let t: toml::Table = toml::from_str(&wrapped).map_err(|_| DaemonError::Value {
                    key: key.to_owned(),
                    reason: format!("{value:?} is not a valid value"),
                })?;
                t.get("v").cloned().ok_or_else(|| DaemonError::Value {
                    key: key.to_owned(),
                    reason: format!("{value:?} is not a valid value"),
                })?
            }
        };
        file.insert(key.to_owned(), parsed);
        let text = toml::to_string(&file).map_err(|e| DaemonError::Internal(e.to_string()))?;
        let config = Config::parse(&text).map_err(|reason| DaemonError::Value {
            key: key.to_owned(),
            reason,
        })?;
        if key == "peers" {
            config.static_peers().map_err(|e| DaemonError::Value {
                key: key.to_owned(),
                reason: e.to_string(),
            })?;
        }
        std::fs::create_dir_all(data_dir).map_err(|e| DaemonError::Config {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        std::fs::write(&path, text).map_err(|e| DaemonError::Config {
            path,
            reason: e.to_string(),
        })?;
        Ok(config)
    }
}

fn unknown_key(key: &str) -> DaemonError {
    let known = toml::Table::try_from(Config::default())
        .map(|t| t.keys().cloned().collect::<Vec<_>>().join(", "))
        .unwrap_or_default();
    DaemonError::Value {
        key: key.to_owned(),
        reason: format!("no such setting; the settings are: {known}"),
    }
}

/// Reads a duration written as a number and a unit: `250ms`, `90s`, `30m`, `24h`,
/// `7d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let bad = || format!("{s:?} is not a duration like 250ms, 30s, 5m, 24h or 7d");
    let n: u64 = n.parse().map_err(|_| bad())?;
    let ms = match unit.trim() {
        "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        _ => None,
    };
    ms.map(Duration::from_millis).ok_or_else(bad)
}

/// Writes a duration in the largest unit that keeps it whole.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis() as u64;
    match ms {
        0 => "0ms".into(),
        ms if ms % 86_400_000 == 0 => format!("{}d", ms / 86_400_000),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

/// Durations in the file are text in [`parse_duration`]'s notation.
pub(crate) mod text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_and_write_in_the_usual_units() {
        for (text, ms) in [
            ("250ms", 250),
            ("90s", 90_000),
            ("30m", 1_800_000),
            ("36h", 129_600_000),
            ("7d", 604_800_000),
        ] {
            assert_eq!(parse_duration(text), Ok(Duration::from_millis(ms)));
            assert_eq!(format_duration(Duration::from_millis(ms)), text);
        }
        for bad in ["soon", "5y", "", "ms", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was read");
        }
    }

    #[test]
    fn a_missing_file_is_the_defaults_and_set_keeps_other_keys() {
        let dir = tempfile::tempdir().expect("dir");
        assert_eq!(Config::load(dir.path()).expect("load"), Config::default());
        Config::set(dir.path(), "sync_interval", "2m").expect("set");
        Config::set(dir.path(), "peers", "100.64.0.2:7777, 10.0.0.3:7777").expect("set");
        Config::set(dir.path(), "mdns", "false").expect("set");
        let c = Config::load(dir.path()).expect("load");
        assert_eq!(c.sync_interval, Duration::from_secs(120));
        assert_eq!(c.peers, ["100.64.0.2:7777", "10.0.0.3:7777"]);
        assert!(!c.mdns);
        assert_eq!(c.get("sync_interval").expect("get"), "2m");
        assert_eq!(c.get("mdns").expect("get"), "false");
    }

    #[test]
    fn a_bad_key_or_value_is_refused_and_the_file_is_unchanged() {
        let dir = tempfile::tempdir().expect("dir");
        Config::set(dir.path(), "port", "7777").expect("set");
        let before = std::fs::read_to_string(Config::path(dir.path())).expect("read");
        let e = Config::set(dir.path(), "colour", "blue").expect_err("unknown key");
        assert!(e.to_string().contains("sync_interval"), "{e}");
        assert!(Config::set(dir.path(), "port", "seventy").is_err());
        assert!(Config::set(dir.path(), "port", "70000").is_err());
        assert!(Config::set(dir.path(), "heartbeat", "soon").is_err());
        assert!(Config::set(dir.path(), "backoff_min", "1h").is_err());
        let after = std::fs::read_to_string(Config::path(dir.path())).expect("read");
        assert_eq!(before, after);
    }

    #[test]
    fn a_file_with_an_unknown_key_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(Config::path(dir.path()), "colour = \"blue\"\n").expect("write");
        let e = Config::load(dir.path()).expect_err("unknown key");
        assert!(e.to_string().contains("colour"), "{e}");
    }
}
