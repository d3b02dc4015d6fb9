//! `shoal demo`: two devices on a trading journal, from first write to resolved conflict.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use shoal_store::{ConflictKind, Resolution, Side, Store, StoreOptions};

const SCHEMA: &str = "
CREATE TABLE trades (
    id TEXT PRIMARY KEY,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    qty REAL NOT NULL,
    price REAL NOT NULL,
    opened_at TEXT NOT NULL
);
CREATE TABLE notes (
    id TEXT PRIMARY KEY,
    trade_id TEXT REFERENCES trades(id),
    body TEXT
);";

pub(crate) fn run(keep: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let temp = tempfile::TempDir::new().context("making a temporary directory")?;
    let dir = match keep {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.to_owned()
        }
        None => temp.path().to_owned(),
    };
    let options = StoreOptions::new(dir.join("keys"));
    let started = Instant::now();
    let step = |title: &str| {
        if !json {
            println!("\n== {title}  (+{} ms)", started.elapsed().as_millis());
        }
    };
    let say = |line: String| {
        if !json {
            println!("   {line}");
        }
    };

    step("Two devices, each with its own copy of the journal");
    let mut devices = Vec::new();
    for name in ["laptop", "phone"] {
        let path = dir.join(format!("{name}.db"));
        if path.exists() {
            std::fs::remove_file(&path)?;
        }
        rusqlite::Connection::open(&path)?.execute_batch(SCHEMA)?;
        let mut store = Store::init(&path, options.clone())?;
        store.track("trades", None)?;
        store.track("notes", None)?;
        say(format!(
            "{name}: {} (device {})",
            path.display(),
            store.device().short()
        ));
        devices.push(store);
    }
    let (mut laptop, mut phone) = {
        let mut it = devices.into_iter();
        (it.next().context("laptop")?, it.next().context("phone")?)
    };

    step("The laptop records three trades and a note, in plain SQL");
    laptop.connection().execute_batch(
        "INSERT INTO trades VALUES
            ('t-aapl', 'AAPL', 'buy', 10, 189.5, '2026-11-20T09:31'),
            ('t-msft', 'MSFT', 'buy', 5, 411.0, '2026-11-20T10:02'),
            ('t-nvda', 'NVDA', 'sell', 8, 142.25, '2026-11-20T11:15');
         INSERT INTO notes VALUES ('n-1', 't-aapl', 'Breakout above the 50-day average');",
    )?;
    let r = crate::merge(&mut laptop, &mut phone)?;
    say(format!(
        "merged: {} change(s) reached the phone in {} commit(s), {} bytes",
        r.a_to_b.changes, r.a_to_b.commits, r.a_to_b.bytes
    ));
    say(format!("phone now has {} trades", count(&phone, "trades")?));

    step(
        "Offline, both edit: the same trade's price, and a trade one deletes and the other updates",
    );
    laptop.connection().execute_batch(
        "UPDATE trades SET price = 189.75 WHERE id = 't-aapl';
         DELETE FROM trades WHERE id = 't-nvda';",
    )?;
    laptop.seal()?;
    say("laptop: AAPL price 189.75; deletes the NVDA trade".into());
    std::thread::sleep(std::time::Duration::from_millis(5));
    phone.connection().execute_batch(
        "UPDATE trades SET price = 189.60 WHERE id = 't-aapl';
         UPDATE trades SET qty = 12 WHERE id = 't-nvda';
         INSERT INTO notes VALUES ('n-2', 't-msft', 'Trim if it loses 400');",
    )?;
    phone.seal()?;
    say("phone:  AAPL price 189.60 (a moment later); NVDA qty 12; a new note".into());

    step("They meet again and merge");
    let r = crate::merge(&mut laptop, &mut phone)?;
    say(format!(
        "laptop -> phone: {} change(s), {} conflict(s); phone -> laptop: {} change(s), {} conflict(s)",
        r.a_to_b.changes, r.a_to_b.conflicts, r.b_to_a.changes, r.b_to_a.conflicts
    ));
    for c in laptop.conflicts(false)? {
        say(format!(
            "conflict {} on the laptop: {:?} on {} {} [{}], {} side won",
            c.id,
            c.kind,
            c.table,
            c.key_text,
            c.columns.join(", "),
            if c.winner == Side::Local {
                "local"
            } else {
                "remote"
            }
        ));
    }
    let aapl = price(&laptop)?;
    say(format!(
        "both now show AAPL at {aapl} (the later write) and no NVDA trade (the delete wins)"
    ));

    step("A person on the laptop resolves the price conflict, keeping 189.75");
    let price_conflict = laptop
        .conflicts(false)?
        .into_iter()
        .find(|c| c.kind == ConflictKind::ConcurrentWrite)
        .context("the price conflict")?;
    laptop.resolve(&price_conflict.id, Resolution::Keep(Side::Local))?;
    let r = crate::merge(&mut laptop, &mut phone)?;
    say(format!(
        "merged: {} change(s) to the phone",
        r.a_to_b.changes
    ));
    let on_phone = phone.conflict(&price_conflict.id)?;
    say(format!(
        "the phone's record of that conflict is now {:?}: {}",
        on_phone.status,
        on_phone.resolution.unwrap_or_default()
    ));
    say(format!("AAPL price on the phone: {}", price(&phone)?));

    step("Result");
    let same = dump(&laptop)? == dump(&phone)?;
    say(format!(
        "laptop and phone hold identical journals: {same} ({} trades, {} notes)",
        count(&phone, "trades")?,
        count(&phone, "notes")?
    ));
    say(format!(
        "open conflicts left for review on the laptop: {}",
        laptop.conflicts(false)?.len()
    ));
    if json {
        println!(
            "{}",
            serde_json::json!({ "identical": same, "trades": count(&phone, "trades")?, "elapsed_ms": started.elapsed().as_millis() as u64 })
        );
    }
    anyhow::ensure!(same, "the two devices did not converge");
    Ok(())
}

fn count(store: &Store, table: &str) -> anyhow::Result<i64> {
    Ok(store
        .connection()
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?)
}

fn price(store: &Store) -> anyhow::Result<f64> {
    Ok(store
        .connection()
        .query_row("SELECT price FROM trades WHERE id = 't-aapl'", [], |r| {
            r.get(0)
        })?)
}

fn dump(store: &Store) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for table in ["trades", "notes"] {
        let mut stmt = store
            .connection()
            .prepare(&format!("SELECT * FROM {table} ORDER BY 1"))?;
        let n = stmt.column_count();
        let rows = stmt.query_map([], |r| {
            Ok((0..n)
                .map(|i| format!("{:?}", r.get_ref(i).map(|v| format!("{v:?}"))))
                .collect::<Vec<_>>()
                .join("|"))
        })?;
        for row in rows {
            out.push(row?);
        }
    }
    Ok(out)
}
