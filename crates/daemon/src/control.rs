//! The control socket: how the other `shoal` commands work through a running daemon
//! instead of binding a second endpoint with the same key.
//!
//! A Unix socket in the data directory (mode 0600), one JSON request per line, one
//! JSON answer per line: `{"ok": ...}` or `{"error": "..."}`. `events` answers with
//! one event per line until the client hangs up.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_core::DeviceId;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tracing::{debug, warn};

use crate::error::DaemonError;
use crate::journal::Numbered;

/// The longest request line a daemon reads.
const MAX_REQUEST: usize = 64 << 10;

/// What a command asks of a running daemon.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Its status, peers and groups ([`crate::DaemonStatus`]).
    Status,
    /// Where others reach it (an endpoint ticket).
    Addr,
    /// A round of sync now (a list of [`shoal_net::PeerSync`]).
    Sync {
        /// A group's name or id; every group when absent.
        group: Option<String>,
        /// Peers to sync with; every member it can reach when empty.
        peers: Vec<String>,
    },
    /// Join a group with a ticket ([`shoal_net::JoinSummary`]).
    Join {
        /// The invite ticket.
        ticket: String,
    },
    /// Every event from now on, one per line.
    Events,
}

/// Where the control socket of `device`'s daemon lives.
pub fn socket_path(data_dir: &Path, device: &DeviceId) -> PathBuf {
    let name = format!("{}.sock", &device.to_string()[..16]);
    let path = data_dir.join("run").join(&name);
    // A Unix socket's path has to fit in about a hundred bytes.
    if path.as_os_str().len() < 100 {
        return path;
    }
    let mut h = blake3::Hasher::new();
    h.update(data_dir.as_os_str().as_encoded_bytes());
    let tag = &h.finalize().to_hex()[..12];
    std::env::temp_dir().join(format!("shoal-{tag}-{name}"))
}

/// Takes the control socket for `device`, unless a daemon already answers on it.
pub(crate) fn claim(data_dir: &Path, device: &DeviceId) -> Result<UnixListener, DaemonError> {
    let path = socket_path(data_dir, device);
    if UnixStream::connect(&path).is_ok() {
        return Err(DaemonError::AlreadyRunning(path));
    }
    let io = |e: std::io::Error| DaemonError::Control(format!("{}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    // A socket left by a daemon that was killed.
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).map_err(io)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    listener.set_nonblocking(true).map_err(io)?;
    Ok(listener)
}

/// Answers requests on `listener` until the daemon stops.
pub(crate) async fn serve(listener: UnixListener, inner: Arc<impl Answer>) {
    let listener = match tokio::net::UnixListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            warn!("the control socket cannot be used: {e}");
            return;
        }
    };
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let inner = inner.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, inner).await {
                debug!("a control client went away: {e}");
            }
        });
    }
}

async fn answer(stream: tokio::net::UnixStream, inner: Arc<impl Answer>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = tokio::io::BufReader::new(read.take(MAX_REQUEST as u64)).lines();
    let Some(line) = lines.next_line().await? else {
        return Ok(());
    };
    let request: Request = match serde_json::from_str(&line) {
        Ok(r) => r,
        Err(e) => {
            let answer = serde_json::json!({ "error": format!("not a request: {e}") });
            write.write_all(format!("{answer}\n").as_bytes()).await?;
            return Ok(());
        }
    };
    if let Request::Events = request {
        let mut events = inner.subscribe();
        loop {
            let event = match events.recv().await {
                Ok(e) => e,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    debug!("an events client fell {n} behind");
                    continue;
                }
                Err(_) => return Ok(()),
            };
            let line = serde_json::to_string(&event).map_err(std::io::Error::other)?;
            write.write_all(format!("{line}\n").as_bytes()).await?;
        }
    }
    let answer = match inner.answer(request).await {
        Ok(v) => serde_json::json!({ "ok": v }),
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    };
    write.write_all(format!("{answer}\n").as_bytes()).await?;
    Ok(())
}

/// What answers control requests: the running daemon.
pub(crate) trait Answer: Send + Sync + 'static {
    /// Events from now on, for a client that asked to follow them.
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Numbered>;

    /// The answer to one request (never [`Request::Events`]).
    fn answer(
        self: Arc<Self>,
        request: Request,
    ) -> impl Future<Output = Result<serde_json::Value, DaemonError>> + Send;
}

/// A running daemon, as seen by a command.
pub struct Control {
    path: PathBuf,
}

impl Control {
    /// The daemon of `device` in `data_dir`, if one runs.
    pub fn find(data_dir: &Path, device: &DeviceId) -> Option<Control> {
        let path = socket_path(data_dir, device);
        UnixStream::connect(&path).ok().map(|_| Control { path })
    }

    fn connect(&self, request: &Request) -> Result<UnixStream, DaemonError> {
        let fail = |e: std::io::Error| DaemonError::Control(e.to_string());
        let mut stream = UnixStream::connect(&self.path).map_err(fail)?;
        let line =
            serde_json::to_string(request).map_err(|e| DaemonError::Internal(e.to_string()))?;
        stream
            .write_all(format!("{line}\n").as_bytes())
            .map_err(fail)?;
        Ok(stream)
    }

    /// Asks one thing and waits (up to `timeout`) for the answer.
    pub fn request(
        &self,
        request: &Request,
        timeout: Duration,
    ) -> Result<serde_json::Value, DaemonError> {
        let fail = |e: std::io::Error| DaemonError::Control(e.to_string());
        let stream = self.connect(request)?;
        stream.set_read_timeout(Some(timeout)).map_err(fail)?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).map_err(fail)?;
        let mut answer: serde_json::Value = serde_json::from_str(&line)
            .map_err(|e| DaemonError::Control(format!("an answer that is not JSON: {e}")))?;
        if let Some(e) = answer.get("error").and_then(|e| e.as_str()) {
            return Err(DaemonError::Remote(e.to_owned()));
        }
        Ok(answer
            .get_mut("ok")
            .map(serde_json::Value::take)
            .unwrap_or_default())
    }

    /// Events as they happen, until the daemon stops.
    pub fn events(
        &self,
    ) -> Result<impl Iterator<Item = Result<Numbered, DaemonError>>, DaemonError> {
        let stream = self.connect(&Request::Events)?;
        Ok(BufReader::new(stream).lines().map(|line| {
            let line = line.map_err(|e| DaemonError::Control(e.to_string()))?;
            serde_json::from_str(&line).map_err(|e| DaemonError::Control(e.to_string()))
        }))
    }
}
