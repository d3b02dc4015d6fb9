//! What the commands print: plain text for people, JSON with `--json` for scripts.

use std::path::Path;

use serde::Serialize;
use serde_json::json;
use shoal_core::{DeviceId, Hlc, Value};
use shoal_store::{CommitSummary, Conflict, SealReport, Side, Status, Store, TrackReport};

use crate::merge::{Direction, MergeReport};

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
    schema_problems(&r.schema_problems);
    for o in &r.oversized {
        eprintln!("warning: {o}");
    }
    for k in &r.kept_here {
        eprintln!("warning: {k}");
    }
}

/// The warning that this device's commits are stamped so far ahead of its clock that
/// members hold them, on standard error.
pub(crate) fn clock_ahead(ahead_ms: Option<u64>, db: &Path) {
    if let Some(ahead) = ahead_ms {
        eprintln!(
            "warning: this device's newest commit in {} is stamped {} ahead of this machine's clock (it ran ahead once): members hold its commits, and every later one, until then; once this machine's clock is right, run `shoal restamp {}` to stamp them again",
            db.display(),
            days(ahead),
            db.display()
        );
    }
}

fn days(ms: u64) -> String {
    format!("{:.1} days", ms as f64 / 86_400_000.0)
}

pub(crate) fn restamp(json: bool, r: &shoal_store::RestampReport) {
    if json {
        return print_json(r);
    }
    if r.commits == 0 {
        println!(
            "no commit of this device is stamped ahead of this machine's clock beyond what members accept: nothing to stamp again"
        );
    } else {
        println!(
            "stamped again {} commit(s) in {} group(s), the newest of which was {} ahead; members take them at the next sync",
            r.commits,
            r.groups,
            days(r.ahead_ms)
        );
    }
}

/// Tables Shoal stopped sealing because their schema changed, on standard error.
pub(crate) fn schema_problems(problems: &[shoal_store::SchemaProblem]) {
    for p in problems {
        eprintln!("warning: {p}");
    }
}

pub(crate) fn merge(json: bool, a: &Path, b: &Path, r: &MergeReport) {
    if json {
        return print_json(r);
    }
    let line = |from: &Path, to: &Path, d: &Direction| {
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
        for r in &d.refused {
            println!("  refused: {r}");
        }
        if d.waiting > 0 {
            println!("  {} commit(s) there wait for earlier ones", d.waiting);
        }
        if d.future > 0 {
            println!(
                "  {} commit(s) there are held: stamped too far ahead of its clock (is the sender's clock wrong?)",
                d.future
            );
        }
        if d.withdrawn > 0 {
            println!(
                "  {} commit(s) held there were withdrawn by their author for commits stamped again",
                d.withdrawn
            );
        }
    };
    line(a, b, &r.a_to_b);
    line(b, a, &r.b_to_a);
    for s in &r.skipped {
        println!("not merged: {s}");
    }
}

pub(crate) fn log(json: bool, commits: &[CommitSummary]) {
    if json {
        return print_json(&commits);
    }
    for c in commits {
        println!(
            "{}  {:<10}  seq {:>5}  clock {}  {:>6} change(s)  {}",
            &c.author[..10],
            c.group,
            c.seq,
            c.clock,
            c.changes,
            c.state
        );
    }
}

pub(crate) fn status(json: bool, s: &Status, db: &Path) {
    if json {
        return print_json(s);
    }
    println!("device     {}", s.device);
    if let Some(original) = &s.copy_of {
        println!(
            "copy of    {original}, the same device: nothing is signed here until `shoal adopt` makes it a device of its own"
        );
    }
    println!("clock      {}", s.clock);
    clock_ahead(s.clock_ahead_ms, db);
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
        if let Some(p) = &t.schema_problem {
            println!("  schema changed: {p}");
        }
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
    for o in &s.oversized {
        println!("too large  {o}");
    }
    for a in &s.set_aside {
        println!("set aside  {a}");
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
    if s.refused_commits > 0 {
        println!(
            "refused    {} commit(s): revoked authors' or readers'",
            s.refused_commits
        );
    }
    for g in &s.groups {
        println!(
            "group      {} ({}): {}, {} member(s), tables: {}",
            g.name,
            &g.id[..16],
            g.role.as_deref().unwrap_or("not a member"),
            g.members,
            g.tables.join(", ")
        );
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

/// A group as `group show` prints it and `--json` gives it.
#[derive(Serialize)]
struct GroupView {
    id: String,
    name: String,
    creator: String,
    members: Vec<MemberView>,
    tables: Vec<ShareView>,
}

#[derive(Serialize)]
struct MemberView {
    device: String,
    role: Option<String>,
    revoked_after: Option<u64>,
}

#[derive(Serialize)]
struct ShareView {
    table: String,
    excluded: Vec<String>,
}

fn group_view(g: &shoal_core::Group) -> GroupView {
    GroupView {
        id: g.id.to_string(),
        name: g.name.clone(),
        creator: g.creator.to_string(),
        members: g
            .members()
            .into_iter()
            .map(|m| MemberView {
                device: m.device.to_string(),
                role: m.role.map(|r| r.to_string()),
                revoked_after: m.revoked_after.map(|s| s.0),
            })
            .collect(),
        tables: g
            .shares()
            .map(|s| ShareView {
                table: s.table.clone(),
                excluded: s.excluded.clone(),
            })
            .collect(),
    }
}

fn print_members(v: &GroupView) {
    for m in &v.members {
        match (&m.role, m.revoked_after) {
            (_, Some(after)) => println!("  {}  revoked (commits after {after} refused)", m.device),
            (Some(role), None) => println!("  {}  {role}", m.device),
            (None, None) => println!("  {}  no role", m.device),
        }
    }
}

pub(crate) fn group(json: bool, g: &shoal_core::Group) {
    let v = group_view(g);
    if json {
        print_json(&v);
        return;
    }
    println!("group {} ({})", v.name, v.id);
    println!("created by {}", v.creator);
    println!("members:");
    print_members(&v);
    println!("tables:");
    if v.tables.is_empty() {
        println!("  none yet: `shoal group DB share GROUP TABLE`");
    }
    for t in &v.tables {
        if t.excluded.is_empty() {
            println!("  {}", t.table);
        } else {
            println!("  {} (without {})", t.table, t.excluded.join(", "));
        }
    }
}

pub(crate) fn groups(json: bool, groups: &[shoal_core::Group]) {
    let views: Vec<GroupView> = groups.iter().map(group_view).collect();
    if json {
        print_json(&views);
        return;
    }
    if views.is_empty() {
        println!("no groups yet: `shoal group DB create NAME --table TABLE` makes one");
    }
    for v in &views {
        let tables: Vec<&str> = v.tables.iter().map(|t| t.table.as_str()).collect();
        println!(
            "{}  {}  {} member(s)  tables: {}",
            &v.id[..16],
            v.name,
            v.members.iter().filter(|m| m.role.is_some()).count(),
            tables.join(", ")
        );
    }
}

pub(crate) fn members(json: bool, g: &shoal_core::Group) {
    let v = group_view(g);
    if json {
        print_json(&v.members);
        return;
    }
    println!("members of {}:", v.name);
    print_members(&v);
}
