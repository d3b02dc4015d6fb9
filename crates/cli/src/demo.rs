//! `shoal demo`: three devices keep a trading journal in sync through `shoal up`
//! daemons on loopback QUIC, from pairing by ticket to a revoked device.
//!
//! Each device is its own database and its own daemon process; the demo writes to
//! the databases in plain SQL, as an app would, and watches the files.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rusqlite::Connection;
use serde::Serialize;
use shoal_daemon::Config;
use shoal_store::{ConflictKind, Resolution, Side, Store, StoreOptions};

use crate::child::{Up, shoal};

const SCHEMA: &str = "
CREATE TABLE trades (
    id TEXT PRIMARY KEY,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    qty REAL NOT NULL,
    price REAL NOT NULL,
    opened_at TEXT NOT NULL
);
CREATE TABLE emotional_states (
    id TEXT PRIMARY KEY,
    trade_id TEXT,
    feeling TEXT NOT NULL
);";

/// How long the demo waits for anything to arrive before it gives up.
const PATIENCE: Duration = Duration::from_secs(60);

#[derive(Serialize)]
struct Step {
    title: String,
    ms: u64,
}

struct Demo {
    dir: PathBuf,
    data: PathBuf,
    options: StoreOptions,
    json: bool,
    started: Instant,
    step_started: Instant,
    steps: Vec<Step>,
}

impl Demo {
    fn step(&mut self, title: &str) {
        self.close_step();
        if !self.json {
            println!("\n== {title}");
        }
        self.steps.push(Step {
            title: title.to_owned(),
            ms: 0,
        });
        self.step_started = Instant::now();
    }

    fn close_step(&mut self) {
        if let Some(last) = self.steps.last_mut() {
            last.ms = self.step_started.elapsed().as_millis() as u64;
            if !self.json {
                println!("   ({} ms)", last.ms);
            }
        }
    }

    fn say(&self, line: impl AsRef<str>) {
        if !self.json {
            println!("   {}", line.as_ref());
        }
    }

    fn db(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.db"))
    }

    fn up(&self, name: &str) -> anyhow::Result<Up> {
        Up::start(&self.data, &self.db(name))
    }

    fn store(&self, name: &str) -> anyhow::Result<Store> {
        Ok(Store::open(self.db(name), self.options.clone())?)
    }

    /// Waits until `check` holds, and says how long that took.
    fn until(
        &self,
        what: &str,
        mut check: impl FnMut() -> anyhow::Result<bool>,
    ) -> anyhow::Result<u64> {
        let start = Instant::now();
        while !check()? {
            if start.elapsed() > PATIENCE {
                bail!("gave up waiting: {what}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let ms = start.elapsed().as_millis() as u64;
        self.say(format!("{what} ({ms} ms)"));
        Ok(ms)
    }
}

/// Plain SQL on a device's file, as its app would write.
fn sql(db: &Path, sql: &str) -> anyhow::Result<()> {
    let conn = Connection::open(db)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.execute_batch(sql)?;
    Ok(())
}

fn one<T: rusqlite::types::FromSql>(db: &Path, sql: &str) -> anyhow::Result<T> {
    let conn = Connection::open(db)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    Ok(conn.query_row(sql, [], |r| r.get(0))?)
}

/// Every trade, each value quoted as SQL writes it.
fn journal(db: &Path) -> anyhow::Result<Vec<String>> {
    let conn = Connection::open(db)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    let mut stmt = conn.prepare(
        "SELECT quote(id) || quote(symbol) || quote(side) || quote(qty) || quote(price) || quote(opened_at) FROM trades ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(crate) fn run(keep: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let temp = tempfile::TempDir::new().context("making a temporary directory")?;
    let dir = match keep {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.to_owned()
        }
        None => temp.path().to_owned(),
    };
    let data = dir.join("keys");
    // The demo's own settings: loopback only, and quick to notice a device going.
    for (k, v) in [
        ("relay", "none"),
        ("mdns", "false"),
        ("heartbeat", "1s"),
        ("backoff_min", "200ms"),
        ("backoff_max", "2s"),
    ] {
        Config::set(&data, k, v)?;
    }
    let mut demo = Demo {
        options: StoreOptions::new(&data),
        dir,
        data,
        json,
        started: Instant::now(),
        step_started: Instant::now(),
        steps: Vec::new(),
    };
    let names = ["laptop", "phone", "tablet"];

    demo.step("Three devices, each with its own journal: `trades` is shared, `emotional_states` stays on the device");
    for name in names {
        let path = demo.db(name);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        sql(&path, SCHEMA)?;
        let mut store = Store::init(&path, demo.options.clone())?;
        store.track("trades", None)?;
        store.track("emotional_states", None)?;
        demo.say(format!(
            "{name:7} device {}  {}",
            store.device().short(),
            path.display()
        ));
    }
    let mut laptop_store = demo.store("laptop")?;
    let group = laptop_store.create_group("journal", &[("trades".into(), Vec::new())])?;
    demo.say("the laptop creates the group \"journal\", carrying `trades` only");

    demo.step("Each device starts its daemon; the laptop invites the others by ticket");
    let laptop = demo.up("laptop")?;
    let laptop_path = demo.db("laptop");
    let laptop_db = laptop_path.to_string_lossy().into_owned();
    for name in ["phone", "tablet"] {
        let ticket = shoal(&demo.data, &["invite", &laptop_db, "--no-qr"])?;
        let ticket = ticket["ticket"].as_str().context("a ticket")?;
        demo.say(format!(
            "ticket for the {name}: {}...",
            &ticket[..40.min(ticket.len())]
        ));
        let joined = shoal(
            &demo.data,
            &["join", &demo.db(name).to_string_lossy(), ticket],
        )?;
        demo.say(format!(
            "the {name} joins as {}: {} commits of history",
            joined["role"].as_str().unwrap_or("?").to_lowercase(),
            joined["sync"]["pulled"]
        ));
    }
    let mut phone = Some(demo.up("phone")?);
    let tablet = demo.up("tablet")?;
    demo.say("three `shoal up` processes run");

    demo.step("The laptop records trades and a feeling, in plain SQL; nobody runs a sync command");
    sql(
        &demo.db("laptop"),
        "INSERT INTO trades VALUES
            ('t-aapl', 'AAPL', 'buy', 10, 189.5, '2026-11-20T09:31'),
            ('t-msft', 'MSFT', 'buy', 5, 411.0, '2026-11-20T10:02'),
            ('t-nvda', 'NVDA', 'sell', 8, 142.25, '2026-11-20T11:15');
         INSERT INTO emotional_states VALUES ('e-1', 't-nvda', 'anxious: sold too early?');",
    )?;
    for name in ["phone", "tablet"] {
        let db = demo.db(name);
        demo.until(&format!("the {name} has the three trades"), || {
            Ok(one::<i64>(&db, "SELECT count(*) FROM trades")? == 3)
        })?;
    }
    let private: i64 = one(&demo.db("phone"), "SELECT count(*) FROM emotional_states")?;
    demo.say(format!(
        "emotional states on the phone: {private} (they never leave the laptop)"
    ));

    demo.step("The phone goes offline; both edit the same trades");
    phone.take().context("the phone's daemon")?.stop()?;
    demo.say("the phone's daemon stops");
    sql(
        &demo.db("laptop"),
        "UPDATE trades SET price = 189.75 WHERE id = 't-aapl';
         DELETE FROM trades WHERE id = 't-nvda';",
    )?;
    demo.say("laptop: AAPL price 189.75; deletes the NVDA trade");
    std::thread::sleep(Duration::from_millis(5));
    sql(
        &demo.db("phone"),
        "UPDATE trades SET price = 189.60 WHERE id = 't-aapl';
         UPDATE trades SET qty = 12 WHERE id = 't-nvda';
         INSERT INTO trades VALUES ('t-tsla', 'TSLA', 'buy', 3, 251.0, '2026-11-20T14:40');",
    )?;
    demo.say("phone:  AAPL price 189.60 (a moment later); NVDA qty 12; a new TSLA trade");

    demo.step("The phone comes back: its daemon reconnects and everyone converges");
    let phone = demo.up("phone")?;
    let reference = demo.db("laptop");
    demo.until("laptop, phone and tablet hold the same trades", || {
        let want = journal(&reference)?;
        Ok(want.len() == 3
            && ["phone", "tablet"]
                .iter()
                .map(|n| journal(&demo.db(n)))
                .collect::<anyhow::Result<Vec<_>>>()?
                .iter()
                .all(|j| *j == want))
    })?;
    let price: f64 = one(
        &demo.db("phone"),
        "SELECT price FROM trades WHERE id = 't-aapl'",
    )?;
    demo.say(format!(
        "AAPL at {price} everywhere (the later write); no NVDA trade (the delete beats the update)"
    ));

    demo.step("The conflict inbox, and a person's resolution that syncs");
    let mut conflicts = Vec::new();
    demo.until("the laptop lists both conflicts", || {
        conflicts = laptop_store.conflicts(false)?;
        Ok(conflicts.len() >= 2)
    })?;
    for c in &conflicts {
        demo.say(format!(
            "conflict {}: {:?} on {} {} [{}]",
            &c.id[..10],
            c.kind,
            c.table,
            c.key_text,
            c.columns.join(", ")
        ));
    }
    let price_conflict = conflicts
        .iter()
        .find(|c| c.kind == ConflictKind::ConcurrentWrite)
        .context("the price conflict")?
        .id
        .clone();
    laptop_store.resolve(&price_conflict, Resolution::Keep(Side::Local))?;
    demo.say("on the laptop, a person keeps its price: 189.75");
    let phone_store = demo.store("phone")?;
    demo.until(
        "the phone has the resolution, and its record of the conflict closed",
        || {
            let p: f64 = one(
                &demo.db("phone"),
                "SELECT price FROM trades WHERE id = 't-aapl'",
            )?;
            let open = phone_store
                .conflicts(false)?
                .iter()
                .any(|c| c.id == price_conflict);
            Ok(p == 189.75 && !open)
        },
    )?;

    demo.step("The laptop revokes the tablet while everything runs");
    let tablet_id = demo.store("tablet")?.device();
    laptop_store.revoke(&group.id.to_string(), &tablet_id)?;
    let phone_path = demo.db("phone");
    demo.until("the phone knows the tablet is revoked", || {
        let g = phone_store.group(&group.id.to_string())?;
        Ok(g.revoked_after(&tablet_id).is_some())
    })?;
    sql(
        &demo.db("tablet"),
        "INSERT INTO trades VALUES ('t-spy', 'SPY', 'sell', 1, 600.0, '2026-11-20T15:00');",
    )?;
    demo.say("the tablet writes a trade after its revocation");
    sql(
        &demo.db("laptop"),
        "INSERT INTO trades VALUES ('t-amzn', 'AMZN', 'buy', 2, 201.0, '2026-11-20T15:05');",
    )?;
    demo.until("the laptop's next trade reaches the phone", || {
        Ok(one::<i64>(
            &phone_path,
            "SELECT count(*) FROM trades WHERE id = 't-amzn'",
        )? == 1)
    })?;
    let leaked = one::<i64>(
        &phone_path,
        "SELECT count(*) FROM trades WHERE id = 't-spy'",
    )? + one::<i64>(
        &demo.db("laptop"),
        "SELECT count(*) FROM trades WHERE id = 't-spy'",
    )?;
    demo.say(format!(
        "the tablet's later trade reached {} of the other devices: it is cut off",
        leaked
    ));

    demo.step("Result");
    let same = journal(&demo.db("laptop"))? == journal(&phone_path)?;
    let trades = journal(&phone_path)?.len();
    demo.say(format!(
        "laptop and phone hold identical journals: {same} ({trades} trades)"
    ));
    demo.say(format!(
        "open conflicts left for review on the laptop: {}",
        laptop_store.conflicts(false)?.len()
    ));
    demo.close_step();
    drop((laptop, phone, tablet));
    if json {
        println!(
            "{}",
            serde_json::json!({
                "identical": same,
                "revoked_write_reached": leaked,
                "trades": trades,
                "steps": demo.steps,
                "elapsed_ms": demo.started.elapsed().as_millis() as u64,
            })
        );
    } else {
        println!(
            "\ndone in {:.1} s; the daemons are stopped{}",
            demo.started.elapsed().as_secs_f64(),
            if keep.is_some() {
                format!(" and the files kept in {}", demo.dir.display())
            } else {
                " and the files removed".to_string()
            }
        );
    }
    anyhow::ensure!(same, "the devices did not converge");
    anyhow::ensure!(leaked == 0, "a revoked device's write got through");
    Ok(())
}
