//! `shoal bench --sync`: two processes over QUIC on loopback. One runs `shoal serve` on
//! a database of N captured rows; the other joins it by ticket and receives them all
//! (a cold sync), then reconnects when already in sync, then pulls one new change.
//! Each side's peak memory is its own process's.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use shoal_core::Role;
use shoal_net::{InviteTicket, Node, NodeConfig, PeerSpec, Relay};
use shoal_store::StoreOptions;

use crate::bench::{INSERT, connect, peak_rss_kb, peak_rss_kb_at, replica, write_rows};

/// Authors in the group besides the one holding the rows, so that a reconnect
/// compares a vector of ten.
const EXTRA_AUTHORS: usize = 9;

/// What the joining process measures.
#[derive(Serialize, Deserialize)]
struct JoinFigures {
    cold_seconds: f64,
    commits: u64,
    changes: u64,
    bytes_in: u64,
    bytes_out: u64,
    reconnect_ms: f64,
    reconnect_bytes: u64,
    one_change_ms: f64,
    one_change_bytes: u64,
    one_change_pulled: u64,
    peak_rss_kb: u64,
}

/// The whole run's figures.
#[derive(Serialize)]
struct Figures {
    rows: u64,
    authors: usize,
    cold_seconds: f64,
    changes_per_s: f64,
    bytes_on_wire: u64,
    bytes_per_change: f64,
    serve_peak_rss_mb: f64,
    join_peak_rss_mb: f64,
    reconnect_ms: f64,
    reconnect_bytes: u64,
    one_change_ms: f64,
    one_change_bytes: u64,
}

/// A child process killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn run(rows: u64, json: bool) -> anyhow::Result<()> {
    let dir = tempfile::TempDir::new()?;
    let keys = dir.path().join("keys");
    let options = StoreOptions::new(&keys);
    let say = |s: String| {
        if !json {
            println!("{s}");
        }
    };
    say(format!(
        "sync {rows} rows between two processes over QUIC on loopback (relays off)"
    ));

    // The serving side: a group of ten authors, then the rows, sealed.
    let src_path = dir.path().join("src.db");
    let mut src = replica(&src_path, &options)?;
    src.create_group("bench", &[("trades".into(), vec![])])?;
    for i in 0..EXTRA_AUTHORS {
        let path = dir.path().join(format!("author{i}.db"));
        let mut other = replica(&path, &options)?;
        src.set_role("bench", &other.device(), Role::Member)?;
        crate::merge::merge_files(&mut src, &mut other)?;
        other.connection().execute(
            "INSERT INTO trades VALUES (?1, 'X', 1, 1.0, 'another author')",
            [format!("author-{i}")],
        )?;
        crate::merge::merge_files(&mut src, &mut other)?;
    }
    write_rows(&mut connect(&src_path)?, INSERT, rows)?;
    let started = Instant::now();
    let sealed = src.seal()?;
    say(format!(
        "sealed {} changes into {} commits in {:.1} s",
        sealed.changes,
        sealed.commits,
        started.elapsed().as_secs_f64()
    ));

    let dst_path = dir.path().join("dst.db");
    replica(&dst_path, &options)?;

    let exe = std::env::current_exe()?;
    // `SHOAL_CHILD_LOG` (a `RUST_LOG` filter) shows what both sides do.
    let log = std::env::var("SHOAL_CHILD_LOG").ok();
    let stderr = || {
        if log.is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        }
    };
    let mut serve = Running(
        Command::new(&exe)
            .arg("--data-dir")
            .arg(&keys)
            .args(["--json", "serve", "--relay", "none"])
            .arg(&src_path)
            .env("RUST_LOG", log.as_deref().unwrap_or("error"))
            .stdout(Stdio::piped())
            .stderr(stderr())
            .spawn()
            .context("starting shoal serve")?,
    );
    let mut line = String::new();
    BufReader::new(serve.0.stdout.take().context("serve's output")?).read_line(&mut line)?;
    let addr: serde_json::Value =
        serde_json::from_str(&line).with_context(|| format!("serve printed {line:?}"))?;
    let addr = match addr["addr"].as_str().unwrap_or_default().parse()? {
        PeerSpec::Addr(a) => a,
        other => bail!("serve printed an address that is not one: {other:?}"),
    };
    let invite = src.create_invite("bench", Role::Member, 3_600_000, 1)?;
    let ticket = InviteTicket::new(&invite, src.device(), addr).encode(src.device_key());
    drop(src);

    let mut join = Command::new(&exe);
    join.arg("--data-dir")
        .arg(&keys)
        .arg("bench-join")
        .arg(&dst_path)
        .arg(&src_path)
        .arg(&ticket)
        .env("RUST_LOG", log.as_deref().unwrap_or("error"));
    if log.is_some() {
        join.stderr(Stdio::inherit());
    }
    let out = join.output().context("running the joining process")?;
    if !out.status.success() {
        bail!(
            "the joining process failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let join: JoinFigures = serde_json::from_slice(&out.stdout)?;
    let serve_rss_kb = peak_rss_kb_at(&format!("/proc/{}/status", serve.0.id()));
    drop(serve);

    let total = rows + EXTRA_AUTHORS as u64;
    let bytes = join.bytes_in + join.bytes_out;
    let figures = Figures {
        rows,
        authors: EXTRA_AUTHORS + 1,
        cold_seconds: join.cold_seconds,
        changes_per_s: join.changes as f64 / join.cold_seconds,
        bytes_on_wire: bytes,
        bytes_per_change: bytes as f64 / total as f64,
        serve_peak_rss_mb: serve_rss_kb as f64 / 1024.0,
        join_peak_rss_mb: join.peak_rss_kb as f64 / 1024.0,
        reconnect_ms: join.reconnect_ms,
        reconnect_bytes: join.reconnect_bytes,
        one_change_ms: join.one_change_ms,
        one_change_bytes: join.one_change_bytes,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&figures)?);
        return Ok(());
    }
    say(format!(
        "cold sync: {} commits, {} changes in {:.2} s: {:.0} changes/s; {} bytes of session data ({:.1} bytes/change); peak RSS: serving {:.1} MB, joining {:.1} MB",
        join.commits,
        join.changes,
        join.cold_seconds,
        figures.changes_per_s,
        bytes,
        figures.bytes_per_change,
        figures.serve_peak_rss_mb,
        figures.join_peak_rss_mb
    ));
    say(format!(
        "reconnect in sync ({} authors): {:.1} ms, {} bytes (connection set-up included in the time)",
        figures.authors, join.reconnect_ms, join.reconnect_bytes
    ));
    say(format!(
        "one new change: {:.1} ms, {} bytes, {} commit pulled",
        join.one_change_ms, join.one_change_bytes, join.one_change_pulled
    ));
    Ok(())
}

/// The joining half: join by ticket, reconnect, then pull one change written to the
/// serving database by another SQLite client.
pub(crate) fn join_child(
    data_dir: &Path,
    db: &Path,
    src: &Path,
    ticket: &str,
) -> anyhow::Result<()> {
    let ticket: InviteTicket = ticket.parse()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let figures = runtime.block_on(async {
        let config = NodeConfig {
            relay: Relay::Disabled,
            ..NodeConfig::default()
        };
        let node = Node::bind(db, StoreOptions::new(data_dir), config).await?;
        let quiet = |_| {};
        let started = Instant::now();
        let joined = node.join(&ticket, &quiet).await?;
        let cold_seconds = started.elapsed().as_secs_f64();

        let started = Instant::now();
        let again = node.sync(Some(ticket.group), &[], &quiet).await?;
        let reconnect_ms = started.elapsed().as_secs_f64() * 1e3;
        let reconnect = again
            .first()
            .and_then(|p| p.groups.first())
            .context("no session on reconnect")?;

        connect(src)?.execute(
            "INSERT INTO trades VALUES ('one-more', 'NEW', 1, 1.0, 'one change')",
            [],
        )?;
        let started = Instant::now();
        let one = node.sync(Some(ticket.group), &[], &quiet).await?;
        let one_change_ms = started.elapsed().as_secs_f64() * 1e3;
        let one = one
            .first()
            .and_then(|p| p.groups.first())
            .context("no session for one change")?;
        node.close().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        anyhow::Ok(JoinFigures {
            cold_seconds,
            commits: joined.sync.pulled,
            changes: joined.sync.changes as u64,
            bytes_in: joined.sync.bytes_in,
            bytes_out: joined.sync.bytes_out,
            reconnect_ms,
            reconnect_bytes: reconnect.bytes_in + reconnect.bytes_out,
            one_change_ms,
            one_change_bytes: one.bytes_in + one.bytes_out,
            one_change_pulled: one.pulled,
            peak_rss_kb: peak_rss_kb(),
        })
    })?;
    println!("{}", serde_json::to_string(&figures)?);
    Ok(())
}
