//! `shoal bench`: capture overhead, sealing rate and merge rate, each against raw SQLite
//! doing the same work on the same machine in the same run.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::Context;
use rusqlite::Connection;
use serde::Serialize;
use shoal_store::{Store, StoreOptions};

const SCHEMA: &str =
    "CREATE TABLE trades (id TEXT PRIMARY KEY, symbol TEXT, qty INTEGER, price REAL, note TEXT);";
pub(crate) const INSERT: &str = "INSERT INTO trades VALUES (?1, ?2, ?3, ?4, ?5)";
const UPSERT: &str = "INSERT INTO trades VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (id) DO UPDATE SET symbol = excluded.symbol, qty = excluded.qty, price = excluded.price, note = excluded.note";

/// One run's figures.
#[derive(Serialize, Clone)]
struct Figures {
    raw_insert_per_s: f64,
    tracked_insert_per_s: f64,
    capture_overhead: f64,
    seal_per_s: f64,
    commits: usize,
    commit_bytes: u64,
    raw_upsert_per_s: f64,
    import_per_s: f64,
    import_vs_upsert: f64,
    import_peak_rss_mb: f64,
    import_read_mb: f64,
    import_written_mb: f64,
}

/// Every run, and the median of each ratio: this machine's speed varies from minute to
/// minute, so Shoal and raw SQLite are measured side by side in each run.
#[derive(Serialize)]
struct Report {
    rows: u64,
    median_capture_overhead: f64,
    median_import_vs_upsert: f64,
    median_seal_per_s: f64,
    max_import_peak_rss_mb: f64,
    runs: Vec<Figures>,
}

/// What the import child reports.
#[derive(Serialize, serde::Deserialize)]
struct ImportFigures {
    seconds: f64,
    changes: usize,
    peak_rss_kb: u64,
    /// Bytes the import read and wrote through system calls: its own database's pages,
    /// its write-ahead log, and the source's pages. Unlike seconds, the same from run
    /// to run.
    read_bytes: u64,
    written_bytes: u64,
}

pub(crate) fn connect(path: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")?;
    Ok(conn)
}

/// A new replica at `path` with the benchmark's table, tracked.
pub(crate) fn replica(path: &Path, options: &StoreOptions) -> anyhow::Result<Store> {
    connect(path)?.execute_batch(SCHEMA)?;
    let mut store = Store::init(path, options.clone())?;
    store.track("trades", None)?;
    Ok(store)
}

/// Writes `rows` rows with `sql` in one transaction; returns rows per second.
pub(crate) fn write_rows(conn: &mut Connection, sql: &str, rows: u64) -> anyhow::Result<f64> {
    let started = Instant::now();
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare(sql)?;
        for i in 0..rows {
            stmt.execute(rusqlite::params![
                format!("{:016x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                ["AAPL", "MSFT", "NVDA", "TSLA"][(i % 4) as usize],
                (i % 100) as i64,
                100.0 + (i % 1000) as f64 / 8.0,
                "bench row"
            ])?;
        }
    }
    tx.commit()?;
    Ok(rows as f64 / started.elapsed().as_secs_f64())
}

pub(crate) fn run(rows: u64, runs: usize, json: bool) -> anyhow::Result<()> {
    let say = |s: String| {
        if !json {
            println!("{s}");
        }
    };
    say(format!(
        "{rows} rows, {runs} run(s); raw SQLite and Shoal side by side in each, WAL, synchronous=NORMAL"
    ));
    let mut all = Vec::new();
    for i in 1..=runs.max(1) {
        say(format!("run {i}:"));
        all.push(run_once(rows, &say)?);
    }
    let median = |f: fn(&Figures) -> f64| {
        let mut v: Vec<f64> = all.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let report = Report {
        rows,
        median_capture_overhead: median(|f| f.capture_overhead),
        median_import_vs_upsert: median(|f| f.import_vs_upsert),
        median_seal_per_s: median(|f| f.seal_per_s),
        max_import_peak_rss_mb: all.iter().map(|f| f.import_peak_rss_mb).fold(0.0, f64::max),
        runs: all,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "median of {} run(s): capture overhead {:.2}x, seal {:.0} changes/s, merge {:.2} of raw upsert; import peak RSS at most {:.1} MB",
            report.runs.len(),
            report.median_capture_overhead,
            report.median_seal_per_s,
            report.median_import_vs_upsert,
            report.max_import_peak_rss_mb
        );
    }
    Ok(())
}

fn run_once(rows: u64, say: &dyn Fn(String)) -> anyhow::Result<Figures> {
    let dir = tempfile::TempDir::new()?;
    let keys = dir.path().join("keys");
    let options = StoreOptions::new(&keys);

    let mut raw = connect(&dir.path().join("raw.db"))?;
    raw.execute_batch(SCHEMA)?;
    let raw_insert = write_rows(&mut raw, INSERT, rows)?;
    drop(raw);

    let src_path = dir.path().join("src.db");
    let mut src = replica(&src_path, &options)?;
    let mut conn = connect(&src_path)?;
    let tracked_insert = write_rows(&mut conn, INSERT, rows)?;
    drop(conn);
    say(format!(
        "  capture: raw insert {raw_insert:.0} rows/s, tracked {tracked_insert:.0} rows/s: overhead {:.2}x",
        raw_insert / tracked_insert
    ));

    let started = Instant::now();
    let sealed = src.seal()?;
    let seal_rate = sealed.changes as f64 / started.elapsed().as_secs_f64();
    let bytes: i64 =
        src.connection()
            .query_row("SELECT sum(length(signed)) FROM shoal_commits", [], |r| {
                r.get(0)
            })?;
    say(format!(
        "  seal: {} changes into {} commits in {:.2} s: {seal_rate:.0} changes/s, {} bytes ({:.1} bytes/change)",
        sealed.changes,
        sealed.commits,
        started.elapsed().as_secs_f64(),
        bytes,
        bytes as f64 / sealed.changes.max(1) as f64
    ));
    drop(src);

    let mut raw2 = connect(&dir.path().join("raw2.db"))?;
    raw2.execute_batch(SCHEMA)?;
    let raw_upsert = write_rows(&mut raw2, UPSERT, rows)?;
    drop(raw2);

    let dst_path = dir.path().join("dst.db");
    replica(&dst_path, &options)?;
    let exe = std::env::current_exe()?;
    let out = Command::new(exe)
        .arg("--data-dir")
        .arg(&keys)
        .arg("bench-import")
        .arg(&src_path)
        .arg(&dst_path)
        .output()
        .context("running the import child")?;
    anyhow::ensure!(
        out.status.success(),
        "import child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let child: ImportFigures = serde_json::from_slice(&out.stdout)?;
    let import_rate = child.changes as f64 / child.seconds;
    let mb = |b: u64| b as f64 / (1 << 20) as f64;
    say(format!(
        "  merge: import {} changes into an empty database in {:.2} s: {import_rate:.0} changes/s; raw upsert {raw_upsert:.0} rows/s: {:.2} of raw; peak RSS {:.1} MB; read {:.0} MB, wrote {:.0} MB",
        child.changes,
        child.seconds,
        import_rate / raw_upsert,
        child.peak_rss_kb as f64 / 1024.0,
        mb(child.read_bytes),
        mb(child.written_bytes),
    ));
    Ok(Figures {
        raw_insert_per_s: raw_insert,
        tracked_insert_per_s: tracked_insert,
        capture_overhead: raw_insert / tracked_insert,
        seal_per_s: seal_rate,
        commits: sealed.commits,
        commit_bytes: bytes as u64,
        raw_upsert_per_s: raw_upsert,
        import_per_s: import_rate,
        import_vs_upsert: import_rate / raw_upsert,
        import_peak_rss_mb: child.peak_rss_kb as f64 / 1024.0,
        import_read_mb: mb(child.read_bytes),
        import_written_mb: mb(child.written_bytes),
    })
}

/// The import half, in its own process so that its peak memory is its own.
pub(crate) fn import_child(data_dir: &Path, from: &Path, to: &Path) -> anyhow::Result<()> {
    let options = StoreOptions::new(data_dir);
    let src = Store::open(from, options.clone())?;
    let mut dst = Store::open(to, options)?;
    dst.connection()
        .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")?;
    let started = Instant::now();
    let changes = import_all(&src, &mut dst)?;
    let figures = ImportFigures {
        seconds: started.elapsed().as_secs_f64(),
        changes,
        peak_rss_kb: peak_rss_kb(),
        read_bytes: io_bytes("rchar:"),
        written_bytes: io_bytes("wchar:"),
    };
    println!("{}", serde_json::to_string(&figures)?);
    Ok(())
}

/// The store's import alone, without a session around it: every commit `to` lacks
/// of `from`'s local group, kept in batches and applied in one pass. Returns the
/// row changes applied.
fn import_all(from: &Store, to: &mut Store) -> shoal_store::Result<usize> {
    const BATCH_BYTES: usize = 8 << 20;
    let group = shoal_core::GroupId::DEFAULT;
    let (mut batch, mut size) = (Vec::new(), 0);
    from.export_each(&group, &to.version_vector(&group)?, |c| {
        size += c.body.len() + 64;
        batch.push(c);
        if size >= BATCH_BYTES {
            size = 0;
            to.receive(std::mem::take(&mut batch))?;
        }
        Ok(())
    })?;
    to.receive(batch)?;
    Ok(to.apply_waiting()?.changes_applied)
}

/// A count from this process's `/proc/self/io`.
fn io_bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// This process's peak memory.
pub(crate) fn peak_rss_kb() -> u64 {
    peak_rss_kb_at("/proc/self/status")
}

/// The peak memory recorded in a `/proc/PID/status` file.
pub(crate) fn peak_rss_kb_at(status: &str) -> u64 {
    status_kb(status, "VmHWM:")
}

/// A memory figure (`VmRSS:`, `VmHWM:`) from a `/proc/PID/status` file, in KiB.
pub(crate) fn status_kb(status: &str, field: &str) -> u64 {
    std::fs::read_to_string(status)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}
