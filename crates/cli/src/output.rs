//! What the commands print: plain text for people, JSON with `--json` for scripts.

use std::path::Path;

use serde::Serialize;
use serde_json::json;
use shoal_core::{DeviceId, Hlc, Value};
use shoal_store::{CommitSummary, Conflict, SealReport, Side, Status, Store, TrackReport};

use crate::MergeReport;

fn print_json(v: &impl Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

pub(crate) fn init(json: bool, store: &Store, what: &str) {
    if json {
        print_json(&json!({ "db": store.path(), "device": store.device().to_string() }));
    } else {
        println!(
            "{} {what}: device {}",
            store.path().display(),
            store.device()
        );
    }
}

pub(crate) fn done(json: bool, message: &str) {
    if json {
        print_json(&json!({ "ok": true, "message": message }));
    } else {
        println!("{message}");
    }
}

pub(crate) fn track(json: bool, reports: &[TrackReport]) {
    if json {
        return print_json(&reports);
    }
    for r in reports {
        println!(
            "tracking {} (key: {}; columns: {}; conflicts: {:?}); {} existing row(s) captured",
            r.table.name,
            r.table.key_columns.join(", "),
            r.table.columns.join(", "),
            r.table.policy,
            r.rows_captured
        );
        if r.held_applied > 0 {
            println!("  {} held change(s) applied", r.held_applied);
        }
        for w in &r.warnings {
            println!("  warning: {w}");
        }
    }
}

pub(crate) fn seal(json: bool, r: &SealReport) {
    if json {
        return print_json(r);
    }
    match r.last_seq {
        Some(seq) => println!(
            "sealed {} change(s) into {} commit(s), up to seq {seq}",
            r.changes, r.commits
        ),
        None => println!("nothing to seal"),
    }
}

pub(crate) fn merge(json: bool, a: &Path, b: &Path, r: &MergeReport) {
    if json {
        return print_json(r);
    }
    let line = |from: &Path, to: &Path, d: &crate::Direction| {
        println!(
            "{} -> {}: {} commit(s), {} change(s) applied, {} conflict(s), {} held, {} bytes",
            from.display(),
            to.display(),
            d.commits,
            d.changes,
            d.conflicts,
            d.held,
            d.bytes
        );
    };
    line(a, b, &r.a_to_b);
    line(b, a, &r.b_to_a);
}

pub(crate) fn log(json: bool, commits: &[CommitSummary]) {
    if json {
        return print_json(&commits);
    }
    for c in commits {
        println!(
            "{}  seq {:>5}  clock {}  {:>6} change(s)  {}",
            &c.author[..10],
            c.seq,
            c.clock,
            c.changes,
            c.state
        );
    }
}

pub(crate) fn status(json: bool, s: &Status) {
    if json {
        return print_json(s);
    }
    println!("device     {}", s.device);
    println!("clock      {}", s.clock);
    for t in &s.tables {
        println!(
            "table      {} ({}{}; key {})",
            t.name,
            if t.tracked { "tracked" } else { "untracked" },
            if t.tracked {
                format!(", conflicts {:?}", t.policy).to_lowercase()
            } else {
                String::new()
            },
            t.key_columns.join(", ")
        );
    }
    println!("unsealed   {} captured change(s)", s.unsealed_changes);
    println!(
        "commits    {} ({} by this device)",
        s.commits, s.own_commits
    );
    for (device, seq) in &s.version_vector {
        println!("  {}  up to seq {seq}", &device[..10]);
    }
    println!(
        "conflicts  {} pending, {} auto-resolved",
        s.conflicts_pending, s.conflicts_auto
    );
    if s.waiting_commits > 0 {
        println!(
            "waiting    {} commit(s) wait for earlier ones",
            s.waiting_commits
        );
    }
    if s.future_commits > 0 {
        println!(
            "held       {} commit(s) stamped too far in the future",
            s.future_commits
        );
    }
    for h in &s.held {
        println!(
            "held       {} change(s) for {}: {}",
            h.count, h.table, h.reason
        );
    }
    for f in &s.forked_authors {
        println!("forked     {f}: signed two histories; its commits are refused");
    }
}

fn values_json(values: &Option<Vec<(String, Value)>>) -> serde_json::Value {
    match values {
        None => serde_json::Value::Null,
        Some(v) => v
            .iter()
            .map(|(c, v)| (c.clone(), serde_json::Value::String(v.to_sql_literal())))
            .collect::<serde_json::Map<_, _>>()
            .into(),
    }
}

fn conflict_json(c: &Conflict) -> serde_json::Value {
    let mut v = serde_json::to_value(c).unwrap_or_default();
    v["local_values"] = values_json(&c.local_values);
    v["remote_values"] = values_json(&c.remote_values);
    v
}

fn side(c: &Conflict, s: Side) -> String {
    let who = |v: Option<(Hlc, DeviceId)>| match v {
        Some((hlc, d)) => format!("{} at {hlc}", d.short()),
        None => "?".into(),
    };
    let (label, clock) = match s {
        Side::Local => ("local", who(c.local)),
        Side::Remote => ("remote", who(Some(c.remote))),
    };
    let won = if c.winner == s { ", won" } else { "" };
    format!("{label} ({clock}{won})")
}

pub(crate) fn conflicts(json: bool, list: &[Conflict]) {
    if json {
        return print_json(&list.iter().map(conflict_json).collect::<Vec<_>>());
    }
    if list.is_empty() {
        println!("no open conflicts");
    }
    for c in list {
        println!(
            "{}  {:<16} {} {}  [{}]  {:?}, {} won",
            c.id,
            format!("{:?}", c.kind),
            c.table,
            c.key_text,
            c.columns.join(", "),
            c.status,
            match c.winner {
                Side::Local => "local",
                Side::Remote => "remote",
            }
        );
    }
}

pub(crate) fn conflict(json: bool, c: &Conflict) {
    if json {
        return print_json(&conflict_json(c));
    }
    println!("conflict   {}", c.id);
    println!("kind       {:?}", c.kind);
    println!("row        {} {}", c.table, c.key_text);
    println!(
        "status     {:?}{}",
        c.status,
        c.resolution
            .as_ref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default()
    );
    if let Some(d) = &c.detail {
        println!("detail     {d}");
    }
    let value = |vals: &Option<Vec<(String, Value)>>, col: &str| match vals {
        None => "(row deleted)".to_owned(),
        Some(v) => v
            .iter()
            .find(|(c, _)| c == col)
            .map(|(_, v)| v.to_sql_literal())
            .unwrap_or_else(|| "-".into()),
    };
    let (l, r) = (side(c, Side::Local), side(c, Side::Remote));
    let width = c.columns.iter().map(|c| c.len()).max().unwrap_or(6).max(6);
    println!("{:width$}  {:<32}  {}", "column", l, r);
    for col in &c.columns {
        println!(
            "{col:width$}  {:<32}  {}",
            value(&c.local_values, col),
            value(&c.remote_values, col)
        );
    }
}
