//! `shoal bench --live`: four `shoal up` daemons on loopback, three of them connected
//! to the first. Measures how long a write on one takes to be applied on a connected
//! peer (p50, p99), the bytes each pushed write costs, and the first daemon's CPU and
//! memory while idle with three peers connected.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use shoal_daemon::{Config, Control, DaemonStatus, Request};
use shoal_store::StoreOptions;

use crate::bench::{INSERT, connect, peak_rss_kb_at, replica, status_kb};
use crate::child::{Up, shoal};

#[derive(Serialize)]
struct Figures {
    writes: u64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    bytes_per_write: f64,
    idle_seconds: u64,
    idle_cpu_percent: f64,
    idle_rss_mb: f64,
    peak_rss_mb: f64,
}

/// CPU time (user + system) of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').context("stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Ok(f.get(11).context("utime")?.parse::<u64>()? + f.get(12).context("stime")?.parse::<u64>()?)
}

fn ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

fn status(control: &Control) -> anyhow::Result<DaemonStatus> {
    Ok(serde_json::from_value(
        control.request(&Request::Status, Duration::from_secs(30))?,
    )?)
}

pub(crate) fn run(writes: u64, idle_secs: u64, json: bool) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    Config::set(&data, "relay", "none")?;
    Config::set(&data, "mdns", "false")?;
    let options = StoreOptions::new(&data);
    let dbs: Vec<_> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| dir.path().join(format!("{n}.db")))
        .collect();
    let mut hub = None;
    for db in &dbs {
        let store = replica(db, &options)?;
        if hub.is_none() {
            hub = Some(store.device());
            let mut store = store;
            store.create_group("desk", &[("trades".into(), Vec::new())])?;
        }
    }
    let hub = hub.context("a hub")?;
    let up_a = Up::start(&data, &dbs[0])?;
    let a = dbs[0].to_string_lossy().into_owned();
    for db in &dbs[1..] {
        let ticket = shoal(&data, &["invite", &a, "--no-qr"])?["ticket"]
            .as_str()
            .context("ticket")?
            .to_owned();
        shoal(&data, &["join", &db.to_string_lossy(), &ticket])?;
    }
    let _peers: Vec<Up> = dbs[1..]
        .iter()
        .map(|db| Up::start(&data, db))
        .collect::<anyhow::Result<_>>()?;
    let control = Control::find(&data, &hub).context("the hub's daemon")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while status(&control)?
        .peers
        .iter()
        .filter(|p| p.connected)
        .count()
        < 3
    {
        if Instant::now() > deadline {
            bail!("the peers did not all connect");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let b = dbs[1].clone();
    let before = status(&control)?;
    let bytes = |s: &DaemonStatus| -> u64 {
        s.peers
            .iter()
            .map(|p| p.bytes_sent + p.bytes_received)
            .sum()
    };

    // Push latency: a write on the hub until it is readable on B.
    let writer = connect(&dbs[0])?;
    let reader = connect(&b)?;
    let seen = |id: &str| -> anyhow::Result<bool> {
        Ok(reader
            .prepare_cached("SELECT count(*) FROM trades WHERE id = ?1")?
            .query_row([id], |r| r.get::<_, i64>(0))?
            == 1)
    };
    let warmup = 20;
    let mut lat = Vec::new();
    for i in 0..writes + warmup {
        let id = format!("live-{i}");
        let start = Instant::now();
        writer.execute(INSERT, rusqlite::params![id, "AAPL", i as i64, 1.5, "x"])?;
        let give_up = start + Duration::from_secs(30);
        while !seen(&id)? {
            if Instant::now() > give_up {
                bail!("write {i} did not arrive within 30 s");
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        if i >= warmup {
            lat.push(start.elapsed().as_secs_f64() * 1000.0);
        }
    }
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    let after = status(&control)?;
    // Every write went to three peers; count per write and peer.
    let bytes_per_write = (bytes(&after) - bytes(&before)) as f64 / (writes + warmup) as f64 / 3.0;

    // Idle: three connected peers, nothing written.
    std::thread::sleep(Duration::from_secs(2));
    let pid = up_a.pid();
    let proc_status = format!("/proc/{pid}/status");
    let t0 = cpu_ticks(pid)?;
    std::thread::sleep(Duration::from_secs(idle_secs));
    let used = cpu_ticks(pid)? - t0;
    let figures = Figures {
        writes,
        p50_ms: pct(0.50),
        p90_ms: pct(0.90),
        p99_ms: pct(0.99),
        max_ms: lat[lat.len() - 1],
        bytes_per_write,
        idle_seconds: idle_secs,
        idle_cpu_percent: used as f64 / ticks_per_second() as f64 / idle_secs as f64 * 100.0,
        idle_rss_mb: status_kb(&proc_status, "VmRSS:") as f64 / 1024.0,
        peak_rss_mb: peak_rss_kb_at(&proc_status) as f64 / 1024.0,
    };
    if json {
        println!("{}", serde_json::to_string(&figures)?);
        return Ok(());
    }
    println!(
        "live push: {writes} writes, each from a local commit on one daemon until readable on a connected peer"
    );
    println!(
        "  p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        figures.p50_ms, figures.p90_ms, figures.p99_ms, figures.max_ms
    );
    println!(
        "  {:.0} bytes of session data per write and peer",
        figures.bytes_per_write
    );
    println!(
        "idle for {idle_secs} s with three peers connected: {:.2}% of one core, RSS {:.1} MB (peak {:.1} MB)",
        figures.idle_cpu_percent, figures.idle_rss_mb, figures.peak_rss_mb
    );
    Ok(())
}
