//! The HTTP API beside a running daemon: its key, its address, and `shoal api-key`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use shoal_api::ApiKey;
use shoal_core::DeviceId;
use shoal_daemon::Daemon;
use shoal_store::{Store, StoreOptions};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The API being served.
pub(crate) struct Served {
    pub(crate) addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
    addr_file: PathBuf,
}

/// Where the address of `device`'s API is written while it is served.
fn addr_file(data_dir: &Path, device: &DeviceId) -> PathBuf {
    ApiKey::path(data_dir, device).with_extension("addr")
}

/// Serves the API for `daemon` at `want` (or, if that port is taken, at a free
/// one on the same host).
pub(crate) async fn serve(
    daemon: &Daemon,
    data_dir: &Path,
    want: SocketAddr,
) -> anyhow::Result<Served> {
    let key = ApiKey::load_or_make(&ApiKey::path(data_dir, &daemon.device()))?;
    let listener = match tokio::net::TcpListener::bind(want).await {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            tokio::net::TcpListener::bind(SocketAddr::new(want.ip(), 0))
                .await
                .with_context(|| format!("the API cannot listen on {}", want.ip()))?
        }
        Err(e) => {
            return Err(e).with_context(|| {
                format!("the API cannot listen on {want}: set another address with `shoal config set api HOST:PORT`, or `shoal config set api off`")
            });
        }
    };
    let addr = listener.local_addr()?;
    let addr_file = addr_file(data_dir, &daemon.device());
    std::fs::write(&addr_file, addr.to_string())
        .with_context(|| format!("cannot write {}", addr_file.display()))?;
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(shoal_api::serve(daemon.handle(), key, listener, async {
        let _ = stopped.await;
    }));
    Ok(Served {
        addr,
        stop,
        task,
        addr_file,
    })
}

impl Served {
    /// Stops serving, and forgets the address.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
        let _ = std::fs::remove_file(&self.addr_file);
    }
}

/// `shoal api-key DB`: prints the key apps use, or makes a new one (the old one lets
/// no one in again; a running daemon takes the new one when it starts again).
pub(crate) fn key(db: &Path, options: &StoreOptions, rotate: bool) -> anyhow::Result<()> {
    let device = Store::open(db, options.clone())?.device();
    let path = ApiKey::path(&options.data_dir, &device);
    let key = if rotate {
        ApiKey::make(&path)?
    } else {
        ApiKey::load_or_make(&path)?
    };
    println!("{}", key.as_str());
    if let Ok(addr) = std::fs::read_to_string(addr_file(&options.data_dir, &device)) {
        eprintln!("the API of this database's daemon: http://{addr}/v1/");
    }
    Ok(())
}
