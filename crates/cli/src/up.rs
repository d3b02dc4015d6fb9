//! The daemon's commands: `up` runs it, `peers` and `events` ask it, `status` adds
//! what it knows.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use shoal_daemon::{Control, Daemon, DaemonStatus, Event, Numbered, PeerStatus, Request};
use shoal_store::{Store, StoreOptions, system_now_ms};

use crate::net::{NetArgs, daemon, runtime, stopped};

/// `shoal up`: keeps the database in sync until SIGINT or SIGTERM.
pub(crate) fn up(
    db: &Path,
    options: StoreOptions,
    net: &NetArgs,
    json: bool,
) -> anyhow::Result<()> {
    let config = net.settings(&options)?;
    let api_at = config.api_addr();
    let data_dir = options.data_dir.clone();
    runtime()?.block_on(async {
        let daemon = Daemon::start(db, options, config, true).await?;
        let api = match api_at {
            Some(at) => Some(crate::api::serve(&daemon, &data_dir, at).await?),
            None => None,
        };
        let api_url = api.as_ref().map(|a| format!("http://{}/v1/", a.addr));
        let mut events = daemon.subscribe();
        let addr = shoal_net::PeerSpec::remembered(&daemon.addr().await);
        let status = daemon.status().await?;
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "event": "up",
                    "device": daemon.device().to_string(),
                    "addr": addr,
                    "pid": std::process::id(),
                    "members": status.peers.len(),
                    "api": api_url,
                })
            );
        } else {
            println!("device {} is up", daemon.device());
            println!("address {addr}");
            println!(
                "{} member(s) in {} group(s); stop with Ctrl-C",
                status.peers.len(),
                status.groups.len()
            );
            if let Some(api) = &api {
                println!(
                    "page {} (opens once; `shoal open DB` for another)",
                    api.login_link()
                );
                println!("api http://{}/v1/ (its key: `shoal api-key DB`)", api.addr);
            }
        }
        std::io::stdout().flush()?;
        let stop = stopped();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                e = events.recv() => match e {
                    Ok(e) => print_event(&e, json)?,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => break,
                },
            }
        }
        if let Some(api) = api {
            api.stop().await;
        }
        daemon.shutdown().await;
        if !json {
            println!("stopped");
        }
        Ok(())
    })
}

fn print_event(numbered: &Numbered, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(numbered)?);
        return Ok(std::io::stdout().flush()?);
    }
    let e = &numbered.event;
    let short = |d: &str| d.get(..10).unwrap_or(d).to_owned();
    match e {
        Event::PeerConnected { peer, path } => println!(
            "connected to {} ({})",
            peer.short(),
            path.map_or("?".to_owned(), |p| p.to_string())
        ),
        Event::PeerLost { peer, reason } => println!("lost {}: {reason}", peer.short()),
        Event::LocalCommits { commits, changes } => {
            println!("sealed {changes} local change(s) into {commits} commit(s)")
        }
        Event::ChangesApplied {
            peer,
            name,
            commits,
            changes,
            ..
        } => println!(
            "applied {changes} change(s) in {commits} commit(s) from {} ({name})",
            peer.short()
        ),
        Event::SyncProgress { .. } => return Ok(()),
        Event::Synced {
            peer,
            pushed,
            pulled,
            bytes,
            elapsed_ms,
        } => println!(
            "synced with {}: {pushed} out, {pulled} in, {bytes} bytes, {elapsed_ms} ms",
            peer.short()
        ),
        Event::ConflictFound {
            id,
            table,
            kind,
            status,
        } => println!(
            "conflict {} in {table} ({kind}, {status}): shoal conflicts DB show {}",
            short(id),
            short(id)
        ),
        Event::ConflictClosed { id } => println!("conflict {} closed", short(id)),
        Event::Refused { peer, reason } => println!("refused ({}): {reason}", peer.short()),
        Event::NotSealed { table, reason } => println!("not sealed ({table}): {reason}"),
        Event::ClockAhead { ahead_ms } => println!(
            "this device's commits are stamped {:.1} days ahead of this machine's clock: members hold them until then; once the clock is right, `shoal restamp DB` stamps them again",
            *ahead_ms as f64 / 86_400_000.0
        ),
        Event::HeldForClock {
            peer,
            name,
            commits,
            ..
        } => println!(
            "{commits} commit(s) from {} ({name}) held here: stamped too far ahead of this machine's clock",
            peer.short()
        ),
    }
    Ok(std::io::stdout().flush()?)
}

fn control(db: &Path, options: &StoreOptions) -> anyhow::Result<Control> {
    daemon(db, options)?.context("no daemon runs for this database; start one with `shoal up DB`")
}

/// `shoal events`: prints a running daemon's events until it stops.
pub(crate) fn events(db: &Path, options: &StoreOptions, json: bool) -> anyhow::Result<()> {
    for e in control(db, options)?.events()? {
        print_event(&e?, json)?;
    }
    Ok(())
}

/// What a running daemon says, if one runs.
pub(crate) fn daemon_status(
    db: &Path,
    options: &StoreOptions,
) -> anyhow::Result<Option<DaemonStatus>> {
    let Some(c) = daemon(db, options)? else {
        return Ok(None);
    };
    let status = c.request(&Request::Status, Duration::from_secs(30))?;
    Ok(Some(serde_json::from_value(status)?))
}

/// `shoal peers`: every member, connected or not.
pub(crate) fn peers(
    db: &Path,
    options: &StoreOptions,
    verbose: bool,
    json: bool,
) -> anyhow::Result<()> {
    let peers = match daemon_status(db, options)? {
        Some(s) => s.peers,
        None => remembered(db, options)?,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&peers)?);
        return Ok(());
    }
    if peers.is_empty() {
        println!("no members known yet: join a group, or invite a device");
    }
    for p in &peers {
        print_peer(p, verbose);
    }
    Ok(())
}

/// Without a daemon: the members and where they were last reached.
fn remembered(db: &Path, options: &StoreOptions) -> anyhow::Result<Vec<PeerStatus>> {
    let store = Store::open(db, options.clone())?;
    let me = store.device();
    let addrs = store.peers()?;
    let mut out: Vec<PeerStatus> = Vec::new();
    for g in store.groups()? {
        for m in g.members() {
            if m.device == me || m.role.is_none() || out.iter().any(|p| p.device == m.device) {
                continue;
            }
            let known = addrs.iter().find(|p| p.device == m.device);
            out.push(PeerStatus {
                addr: known.map(|p| p.addr.clone()),
                last_sync_ms: known.map(|p| p.seen_ms),
                last_error: Some("no daemon runs: start one with `shoal up`".into()),
                ..PeerStatus::new(m.device)
            });
        }
    }
    Ok(out)
}

/// "3 min ago".
pub(crate) fn ago(ms: u64) -> String {
    let s = system_now_ms().saturating_sub(ms) / 1000;
    match s {
        0..=59 => format!("{s} s ago"),
        60..=3599 => format!("{} min ago", s / 60),
        3600..=86_399 => format!("{} h ago", s / 3600),
        _ => format!("{} days ago", s / 86_400),
    }
}

fn print_peer(p: &PeerStatus, verbose: bool) {
    let state = if p.connected {
        format!(
            "connected, {}{}",
            p.path.map_or("?".to_owned(), |p| p.to_string()),
            p.rtt_ms
                .map(|r| format!(", rtt {r:.1} ms"))
                .unwrap_or_default()
        )
    } else {
        "not connected".to_string()
    };
    let last = p.last_sync_ms.map_or("never synced".to_string(), |t| {
        format!("last sync {}", ago(t))
    });
    println!("{}  {state}; {last}", &p.device.to_string()[..16]);
    if !verbose {
        return;
    }
    println!(
        "  pending     {} commit(s) to send, {} to receive",
        p.pending_out, p.pending_in
    );
    println!(
        "  sent        {} commit(s), {} bytes",
        p.commits_sent, p.bytes_sent
    );
    println!(
        "  received    {} commit(s) ({} row changes applied), {} bytes",
        p.commits_received, p.changes_applied, p.bytes_received
    );
    if let Some(a) = &p.addr {
        println!("  address     {a}");
    }
    if let Some(t) = p.next_attempt_ms.filter(|_| !p.connected) {
        let wait = t.saturating_sub(system_now_ms());
        println!("  next try    in {:.1} s", wait as f64 / 1000.0);
    }
    if let Some(e) = &p.last_error {
        println!("  last error  {e}");
    }
}

/// The daemon's part of `shoal status`.
pub(crate) fn print_daemon(s: &DaemonStatus) {
    println!(
        "daemon     running (pid {}, up {:.0} s)",
        s.pid,
        s.uptime_ms as f64 / 1000.0
    );
    for g in &s.groups {
        println!(
            "group      {}: {} member(s), {} conflict(s) pending, {} change(s) held",
            g.name,
            g.members.len(),
            g.pending_conflicts,
            g.held_changes
        );
    }
    for p in &s.peers {
        print_peer(p, false);
    }
}
