//! An app that embeds Shoal: it opens (or creates) its database, makes sure its
//! table is tracked, joins a group from an invite ticket if it is given one, and
//! then keeps the database in sync, printing every event, until Ctrl-C.
//!
//! ```sh
//! # on a device with Shoal set up: an invite for the app
//! shoal invite journal.db --group desk
//! # the app, on another device (or in another directory)
//! cargo run -p shoal-embed-example -- app.db shoalinvite1...
//! ```
//!
//! Keys are kept in `SHOAL_DATA_DIR` (default `./shoal-data`); the daemon's settings
//! come from `config.toml` there (`shoal config set relay none` for a LAN only).

use std::path::PathBuf;

use anyhow::Context;
use shoal_daemon::{Config, Daemon, Event};
use shoal_net::InviteTicket;
use shoal_store::{Store, StoreOptions};

/// The app's own table, as it would create it anyway.
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS trades (
    id TEXT PRIMARY KEY,
    symbol TEXT NOT NULL,
    qty INTEGER NOT NULL,
    price REAL
)";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `RUST_LOG=shoal_daemon=debug` shows what the daemon does.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let db = PathBuf::from(args.next().context("usage: embed DB [TICKET]")?);
    let ticket: Option<InviteTicket> = args.next().map(|t| t.parse()).transpose()?;
    let data_dir =
        std::env::var_os("SHOAL_DATA_DIR").map_or_else(|| "shoal-data".into(), PathBuf::from);
    let options = StoreOptions::new(&data_dir);

    // The app's schema, then Shoal's: a new file becomes a replica with its own key.
    rusqlite::Connection::open(&db)?.execute_batch(SCHEMA)?;
    let mut store = match Store::open(&db, options.clone()) {
        Ok(s) => s,
        Err(_) => Store::init(&db, options.clone())?,
    };
    if !store
        .tables()?
        .iter()
        .any(|t| t.name == "trades" && t.tracked)
    {
        store.track("trades", None)?;
    }
    println!("device {}", store.device());
    drop(store);

    let daemon = Daemon::start(&db, options, Config::load(&data_dir)?, false).await?;
    let mut events = daemon.subscribe();
    if let Some(ticket) = ticket {
        let joined = daemon.join(&ticket).await?;
        println!(
            "joined {:?}: {} commits received, {} row changes applied",
            joined.name, joined.sync.pulled, joined.sync.changes
        );
    }
    println!(
        "in sync; write to {} from anything, Ctrl-C to stop",
        db.display()
    );
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            event = events.recv() => match event {
                Ok(e) if matches!(e.event, Event::SyncProgress { .. }) => {}
                Ok(e) => println!("{}: {:?}", e.id, e.event),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    println!("({n} events skipped)");
                }
                Err(_) => break,
            },
        }
    }
    daemon.shutdown().await;
    Ok(())
}
