//! The HTTP API beside a running daemon: its key, its address, and `shoal api-key`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use shoal_api::{ApiKey, LoginLink, Logins};
use shoal_core::DeviceId;
use shoal_daemon::Daemon;
use shoal_store::{Store, StoreOptions};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The API being served.
pub(crate) struct Served {
    pub(crate) addr: SocketAddr,
    logins: Logins,
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
    let logins = Logins::default();
    let task = tokio::spawn(shoal_api::serve(
        daemon.handle(),
        key,
        logins.clone(),
        listener,
        shoal_api::Limits::default(),
        async {
            let _ = stopped.await;
        },
    ));
    Ok(Served {
        addr,
        logins,
        stop,
        task,
        addr_file,
    })
}

impl Served {
    /// A one-time link that opens the page.
    pub(crate) fn login_link(&self) -> String {
        format!("http://{}/login?token={}", self.addr, self.logins.link())
    }

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

/// `shoal open DB`: a one-time link to the page of this database's running daemon,
/// opened in the default browser (or printed, with `print`, or when none opens).
pub(crate) fn open(db: &Path, options: &StoreOptions, print: bool) -> anyhow::Result<()> {
    let device = Store::open(db, options.clone())?.device();
    let addr = std::fs::read_to_string(addr_file(&options.data_dir, &device)).map_err(|_| {
        anyhow::anyhow!(
            "no daemon serves the page of {}: start one with `shoal up {}` (and check that `shoal config get api` is not off)",
            db.display(),
            db.display()
        )
    })?;
    let key = ApiKey::load_or_make(&ApiKey::path(&options.data_dir, &device))?;
    // The client links rustls (for the relays' sake) without a provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let link: LoginLink = crate::net::runtime()?.block_on(async {
        let answer = reqwest::Client::new()
            .post(format!("http://{addr}/v1/login-links"))
            .bearer_auth(key.as_str())
            .send()
            .await
            .with_context(|| {
                format!("the daemon's API at {addr} did not answer: is `shoal up` still running?")
            })?;
        if !answer.status().is_success() {
            anyhow::bail!(
                "the daemon's API refused a login link: {}",
                answer.text().await.unwrap_or_default()
            );
        }
        Ok::<_, anyhow::Error>(answer.json().await?)
    })?;
    let url = format!("http://{addr}{}", link.path);
    let opened = !print
        && ["xdg-open", "open"].iter().any(|cmd| {
            std::process::Command::new(cmd)
                .arg(&url)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
    if opened {
        eprintln!("opened the page in the browser (the link works once, for ten minutes)");
    } else {
        println!("{url}");
        eprintln!("open this link in a browser on this machine: it works once, for ten minutes");
    }
    Ok(())
}
