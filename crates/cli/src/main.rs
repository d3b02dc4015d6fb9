//! The `shoal` command: thin glue between the command line and the store.

mod api;
mod bench;
mod bench_live;
mod bench_sync;
mod child;
mod demo;
mod group;
mod merge;
mod net;
mod output;
mod up;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use shoal_core::Value;
use shoal_store::{Policy, Resolution, Side, Store, StoreError, StoreOptions};

/// Local-first, peer-to-peer sync for SQLite: capture writes to chosen tables into
/// signed commits and merge them between replicas.
#[derive(Parser)]
#[command(name = "shoal", version, about)]
struct Cli {
    /// Where device keys are kept [default: the platform's data directory + /shoal]
    #[arg(long, global = true, env = "SHOAL_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Print machine-readable JSON instead of text
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make a SQLite database a Shoal replica, with a new device key
    Init {
        /// The database file (created if missing)
        db: PathBuf,
    },
    /// Make a copied database a device of its own, with a new key
    Adopt {
        /// The copied database file
        db: PathBuf,
    },
    /// Start syncing tables (or refresh them after a schema change)
    Track {
        /// The database file
        db: PathBuf,
        /// Tables to track
        #[arg(required = true)]
        tables: Vec<String>,
        /// How conflicts are handled: `review` waits for a person, `lww` keeps the
        /// winner and records the conflict for audit
        #[arg(long, value_parser = ["review", "lww"])]
        policy: Option<String>,
    },
    /// Stop syncing a table (its sync state is kept for a later re-track)
    Untrack {
        /// The database file
        db: PathBuf,
        /// The table
        table: String,
    },
    /// Seal captured writes into signed commits
    Seal {
        /// The database file
        db: PathBuf,
    },
    /// Seal again, stamped now, this device's commits that its clock stamped too far
    /// ahead (after the clock was set right), so that members take them at once
    Restamp {
        /// The database file
        db: PathBuf,
    },
    /// Seal both databases and exchange commits both ways
    Merge {
        /// One database file
        a: PathBuf,
        /// The other database file
        b: PathBuf,
    },
    /// List commits, newest first
    Log {
        /// The database file
        db: PathBuf,
        /// How many commits to show
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Show the replica's device, tables, commits, conflicts and held changes
    Status {
        /// The database file
        db: PathBuf,
    },
    /// List, show and resolve conflicts
    Conflicts {
        /// The database file
        db: PathBuf,
        #[command(subcommand)]
        action: Option<ConflictAction>,
    },
    /// Create, list and show groups: what is shared with whom
    Group {
        /// The database file
        db: PathBuf,
        #[command(subcommand)]
        action: GroupAction,
    },
    /// List a group's members and their roles
    Members {
        /// The database file
        db: PathBuf,
        /// The group (name or id); the only one if omitted
        #[arg(long)]
        group: Option<String>,
    },
    /// Revoke a device: its commits after the last one this database holds are
    /// refused by every member
    Revoke {
        /// The database file
        db: PathBuf,
        /// The group (name or id); the only one if omitted
        #[arg(long)]
        group: Option<String>,
        /// The device's id
        device: String,
    },
    /// Accept sync sessions from other members until stopped (Ctrl-C)
    Serve {
        /// The database file
        db: PathBuf,
        #[command(flatten)]
        net: net::NetArgs,
    },
    /// Invite a device into a group: prints a ticket (and its QR code), then waits
    /// for the new device to join
    Invite {
        /// The database file
        db: PathBuf,
        /// The group (name or id); the only one if omitted
        #[arg(long)]
        group: Option<String>,
        /// The role the new device gets
        #[arg(long, default_value = "member", value_parser = ["admin", "member", "reader"])]
        role: String,
        /// How long the ticket works: 90s, 30m, 24h, 7d
        #[arg(long, default_value = "24h")]
        expires: String,
        /// How many devices may join with it
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// Print the ticket and exit, for a `shoal serve` that is already running
        #[arg(long)]
        no_wait: bool,
        /// Leave out the QR code
        #[arg(long)]
        no_qr: bool,
        #[command(flatten)]
        net: net::NetArgs,
    },
    /// Join a group with a ticket from `shoal invite`, and receive its history
    Join {
        /// The database file
        db: PathBuf,
        /// The ticket
        ticket: String,
        #[command(flatten)]
        net: net::NetArgs,
    },
    /// Sync with other members once, both ways, and print what moved
    Sync {
        /// The database file
        db: PathBuf,
        /// Only this group (name or id)
        #[arg(long)]
        group: Option<String>,
        /// A peer: an address printed by `shoal serve`, DEVICE@HOST:PORT, a device id
        /// whose address is remembered, or HOST:PORT (repeatable) [default: every
        /// member whose address is remembered]
        #[arg(long = "peer", value_name = "PEER")]
        peers: Vec<String>,
        #[command(flatten)]
        net: net::NetArgs,
    },
    /// Keep the database in sync with every member until stopped (Ctrl-C, SIGTERM):
    /// local writes from any process go out as they land; other commands for the
    /// database work through it
    Up {
        /// The database file
        db: PathBuf,
        #[command(flatten)]
        net: net::NetArgs,
    },
    /// Every member: connected or not, path, round-trip time, last sync
    Peers {
        /// The database file
        db: PathBuf,
        /// Also commits pending each way, what was sent and received, attempts
        #[arg(short, long)]
        verbose: bool,
    },
    /// Print a running daemon's events as they happen
    Events {
        /// The database file
        db: PathBuf,
    },
    /// Open the page of this database's running daemon in the browser
    Open {
        /// The database file
        db: PathBuf,
        /// Print the one-time link instead of opening it
        #[arg(long)]
        print: bool,
    },
    /// Print the key apps send to the HTTP API of this database's daemon
    ApiKey {
        /// The database file
        db: PathBuf,
        /// Make a new key; the old one lets no one in again
        #[arg(long)]
        rotate: bool,
    },
    /// Read or change settings in the data directory's config.toml
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Print a shell's completion script (bash, zsh, fish, elvish, powershell)
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
    /// Three devices (laptop, phone, tablet) as three `shoal up` daemons on loopback:
    /// an invite, writes that sync by themselves, offline edits that converge, a
    /// conflict resolved and a revocation, printed step by step
    Demo {
        /// Keep the demo's databases in this directory instead of a temporary one
        #[arg(long, value_name = "DIR")]
        keep: Option<PathBuf>,
    },
    /// Measure capture overhead, sealing rate and merge rate against raw SQLite; with
    /// --sync a cold sync, a reconnect and one change between two processes; with
    /// --live push latency and idle cost of running daemons
    Bench {
        /// Rows to write
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        /// Runs of the engine benchmark, each raw SQLite and Shoal side by side; the
        /// median ratio is reported
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Measure sync between two processes over QUIC on loopback instead
        #[arg(long, conflicts_with = "live")]
        sync: bool,
        /// Measure live push between running daemons instead: latency from a local
        /// commit to the change applied on a connected peer, and idle cost
        #[arg(long)]
        live: bool,
        /// With --live: writes to time
        #[arg(long, default_value_t = 1000)]
        writes: u64,
        /// With --live: seconds to watch the idle daemon
        #[arg(long, default_value_t = 60)]
        idle_secs: u64,
    },
    #[command(hide = true)]
    BenchImport { from: PathBuf, to: PathBuf },
    #[command(hide = true)]
    BenchJoin {
        db: PathBuf,
        src: PathBuf,
        ticket: String,
    },
}

#[derive(Subcommand)]
enum GroupAction {
    /// Create a group with this device as its admin
    Create {
        /// A name for people
        name: String,
        /// A tracked table the group carries (repeatable); its rows are shared now
        #[arg(long = "table", value_name = "TABLE")]
        tables: Vec<String>,
        /// A column left out, as TABLE.COLUMN (repeatable): it never leaves the device
        #[arg(long, value_name = "TABLE.COLUMN")]
        exclude: Vec<String>,
    },
    /// List the groups this database knows
    List,
    /// Show a group: members, roles, tables and excluded columns
    Show {
        /// The group (name or id); the only one if omitted
        group: Option<String>,
    },
    /// Give a device a role (admin, member or reader) for its commits from now on
    Add {
        /// The group (name or id)
        group: String,
        /// The device's id
        device: String,
        /// Its role
        #[arg(long, default_value = "member")]
        role: String,
    },
    /// Carry one more tracked table in the group; its rows are shared now
    Share {
        /// The group (name or id)
        group: String,
        /// The table
        table: String,
        /// A column left out (repeatable)
        #[arg(long, value_name = "COLUMN")]
        exclude: Vec<String>,
    },
    /// Stop carrying a table in the group
    Unshare {
        /// The group (name or id)
        group: String,
        /// The table
        table: String,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Print one setting's value (its default when unset)
    Get {
        /// The setting
        key: String,
    },
    /// Change one setting; a list takes comma-separated values
    Set {
        /// The setting
        key: String,
        /// Its new value
        value: String,
    },
    /// Print every setting
    List,
}

#[derive(Subcommand)]
enum ConflictAction {
    /// List open conflicts
    List {
        /// Include resolved and closed ones
        #[arg(long)]
        all: bool,
    },
    /// Show both sides of one conflict
    Show {
        /// The conflict's id (a unique prefix will do)
        id: String,
    },
    /// Resolve a conflict with a new write that syncs
    Resolve {
        /// The conflict's id (a unique prefix will do)
        id: String,
        /// Keep this device's values or the other device's
        #[arg(long, value_parser = ["local", "remote"], conflicts_with = "set")]
        keep: Option<String>,
        /// Write this value instead (repeatable); SQL literals: 42, 1.5, 'text', X'00ff', NULL
        #[arg(long, value_name = "COLUMN=VALUE")]
        set: Vec<String>,
    },
}

fn main() -> ExitCode {
    quiet_on_a_closed_pipe();
    let cli = Cli::parse();
    let json = cli.json;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("shoal_net=info,warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if json => {
            let error =
                serde_json::json!({"error": {"code": code(&e), "message": format!("{e:#}")}});
            eprintln!("{error}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A stable name for the kind of error, for programs reading `--json`: the store's,
/// the network's or the daemon's own (`not_initialised`, `no_such_conflict`, …), or
/// `failed` for the command's own checks.
fn code(e: &anyhow::Error) -> &'static str {
    e.chain()
        .find_map(|cause| {
            cause
                .downcast_ref::<StoreError>()
                .map(StoreError::code)
                .or_else(|| {
                    cause
                        .downcast_ref::<shoal_net::NetError>()
                        .map(|e| e.code())
                })
                .or_else(|| {
                    cause
                        .downcast_ref::<shoal_daemon::DaemonError>()
                        .map(|e| e.code())
                })
        })
        .unwrap_or("failed")
}

/// Output into a pipe whose reader has gone (`shoal log DB | head -1`) ends the
/// command quietly, with the status a process killed by `SIGPIPE` has, as other
/// tools do; without this, the standard library's printing panics.
fn quiet_on_a_closed_pipe() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.contains("Broken pipe") || message.contains("BrokenPipe") {
            std::process::exit(128 + 13);
        }
        report(info)
    }));
}

fn data_dir(cli: &Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(d) = cli {
        return Ok(d.clone());
    }
    let base = dirs::data_dir().context(
        "no data directory known for this platform: pass --data-dir or set SHOAL_DATA_DIR",
    )?;
    Ok(base.join("shoal"))
}

/// The options every command opens its stores with. Debug builds also read
/// `SHOAL_TEST_CLOCK_AHEAD_MS`, a clock that many milliseconds ahead of the system's,
/// so that the command's tests order two devices' writes without waiting for the
/// clock; release builds have no such setting.
fn store_options(data: PathBuf) -> StoreOptions {
    #[allow(unused_mut)]
    let mut options = StoreOptions::new(data);
    #[cfg(debug_assertions)]
    if let Some(ahead) = std::env::var("SHOAL_TEST_CLOCK_AHEAD_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        options.wall_clock = std::sync::Arc::new(move || shoal_store::system_now_ms() + ahead);
    }
    options
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let json = cli.json;
    let options =
        || -> anyhow::Result<StoreOptions> { Ok(store_options(data_dir(&cli.data_dir)?)) };
    let open = |db: &Path| -> anyhow::Result<Store> { Ok(Store::open(db, options()?)?) };
    match &cli.command {
        Command::Init { db } => {
            let store = Store::init(db, options()?)?;
            output::init(json, &store, "initialised");
        }
        Command::Adopt { db } => {
            let store = Store::adopt(db, options()?)?;
            output::init(json, &store, "adopted as a new device");
        }
        Command::Track { db, tables, policy } => {
            let mut store = open(db)?;
            let policy = policy.as_deref().and_then(Policy::parse);
            let mut reports = Vec::new();
            for t in tables {
                reports.push(store.track(t, policy)?);
            }
            output::track(json, &reports);
        }
        Command::Untrack { db, table } => {
            open(db)?.untrack(table)?;
            output::done(
                json,
                &format!("{table} is no longer tracked; its sync state is kept"),
            );
        }
        Command::Restamp { db } => {
            let mut store = open(db)?;
            let report = store.restamp()?;
            output::restamp(json, &report);
        }
        Command::Seal { db } => {
            let mut store = open(db)?;
            let report = store.seal()?;
            output::seal(json, &report);
            if !json {
                output::clock_ahead(store.status()?.clock_ahead_ms, db);
            }
        }
        Command::Merge { a, b } => {
            if a.canonicalize().ok() == b.canonicalize().ok() {
                bail!("{} and {} are the same file", a.display(), b.display());
            }
            let mut a_store = open(a)?;
            let mut b_store = open(b)?;
            let report = merge::merge_files(&mut a_store, &mut b_store)?;
            output::merge(json, a, b, &report);
            for (store, db) in [(&a_store, a), (&b_store, b)] {
                output::schema_problems(&store.schema_problems()?);
                let status = store.status()?;
                for o in status.oversized {
                    eprintln!("warning: {o}");
                }
                output::clock_ahead(status.clock_ahead_ms, db);
            }
        }
        Command::Log { db, limit } => output::log(json, &open(db)?.log(*limit)?),
        Command::Status { db } => {
            let status = open(db)?.status()?;
            let daemon = up::daemon_status(db, &options()?)?;
            if json {
                let mut v = serde_json::to_value(&status)?;
                v["daemon"] = serde_json::to_value(&daemon)?;
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                output::status(false, &status, db);
                match &daemon {
                    Some(d) => up::print_daemon(d),
                    None => println!("daemon     not running (`shoal up DB` keeps it in sync)"),
                }
            }
        }
        Command::Conflicts { db, action } => {
            let action = action
                .as_ref()
                .unwrap_or(&ConflictAction::List { all: false });
            match action {
                ConflictAction::List { all } => {
                    output::conflicts(json, &open(db)?.conflicts(*all)?)
                }
                ConflictAction::Show { id } => output::conflict(json, &open(db)?.conflict(id)?),
                ConflictAction::Resolve { id, keep, set } => {
                    let resolution = match (keep.as_deref(), set.is_empty()) {
                        (Some("local"), _) => Resolution::Keep(Side::Local),
                        (Some(_), _) => Resolution::Keep(Side::Remote),
                        (None, false) => Resolution::Set(parse_sets(set)?),
                        (None, true) => bail!(
                            "say how to resolve it: --keep local, --keep remote, or --set COLUMN=VALUE"
                        ),
                    };
                    let c = open(db)?.resolve(id, resolution)?;
                    output::conflict(json, &c);
                }
            }
        }
        Command::Group { db, action } => {
            let mut store = open(db)?;
            match action {
                GroupAction::Create {
                    name,
                    tables,
                    exclude,
                } => {
                    let mut shares = Vec::new();
                    for t in tables {
                        let mut excluded = Vec::new();
                        for e in exclude {
                            let (table, column) = e.split_once('.').with_context(|| {
                                format!("--exclude {e:?}: write it as TABLE.COLUMN")
                            })?;
                            if table.eq_ignore_ascii_case(t) {
                                excluded.push(column.to_owned());
                            }
                        }
                        shares.push((t.clone(), excluded));
                    }
                    for e in exclude {
                        let table = e.split_once('.').map(|(t, _)| t).unwrap_or_default();
                        anyhow::ensure!(
                            tables.iter().any(|t| t.eq_ignore_ascii_case(table)),
                            "--exclude {e:?} names a table not given with --table"
                        );
                    }
                    let g = store.create_group(name, &shares)?;
                    output::group(json, &g);
                }
                GroupAction::List => output::groups(json, &store.groups()?),
                GroupAction::Show { group } => {
                    output::group(json, &group::one_group(&store, group.as_deref())?)
                }
                GroupAction::Add {
                    group,
                    device,
                    role,
                } => {
                    let g = store.set_role(group, &device.parse()?, role.parse()?)?;
                    output::group(json, &g);
                }
                GroupAction::Share {
                    group,
                    table,
                    exclude,
                } => output::group(json, &store.share(group, table, exclude)?),
                GroupAction::Unshare { group, table } => {
                    output::group(json, &store.unshare(group, table)?)
                }
            }
        }
        Command::Members { db, group } => {
            let store = open(db)?;
            output::members(json, &group::one_group(&store, group.as_deref())?);
        }
        Command::Revoke { db, group, device } => {
            let mut store = open(db)?;
            let g = group::one_group(&store, group.as_deref())?;
            let g = store.revoke(&g.id.to_string(), &device.parse()?)?;
            output::members(json, &g);
        }
        Command::Serve { db, net } => net::serve(db, options()?, net, json)?,
        Command::Invite {
            db,
            group,
            role,
            expires,
            uses,
            no_wait,
            no_qr,
            net,
        } => net::invite(
            db,
            options()?,
            net,
            net::InviteRequest {
                group: group.as_deref(),
                role: role.parse()?,
                expires: shoal_daemon::parse_duration(expires).map_err(anyhow::Error::msg)?,
                uses: *uses,
                no_wait: *no_wait,
                qr: !*no_qr,
            },
            json,
        )?,
        Command::Join { db, ticket, net } => net::join(db, options()?, net, ticket, json)?,
        Command::Sync {
            db,
            group,
            peers,
            net,
        } => net::sync(db, options()?, net, group.as_deref(), peers, json)?,
        Command::Up { db, net } => up::up(db, options()?, net, json)?,
        Command::Peers { db, verbose } => up::peers(db, &options()?, *verbose, json)?,
        Command::Events { db } => up::events(db, &options()?, json)?,
        Command::ApiKey { db, rotate } => api::key(db, &options()?, *rotate)?,
        Command::Open { db, print } => api::open(db, &options()?, *print)?,
        Command::Config { action } => {
            let dir = data_dir(&cli.data_dir)?;
            match action {
                ConfigAction::Get { key } => {
                    println!("{}", shoal_daemon::Config::load(&dir)?.get(key)?)
                }
                ConfigAction::Set { key, value } => {
                    let c = shoal_daemon::Config::set(&dir, key, value)?;
                    println!("{key} = {}", c.get(key)?);
                }
                ConfigAction::List => {
                    let c = shoal_daemon::Config::load(&dir)?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&c)?);
                    } else {
                        for (k, v) in c.entries()? {
                            println!("{k} = {v}");
                        }
                    }
                }
            }
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "shoal", &mut std::io::stdout());
        }
        Command::Demo { keep } => demo::run(keep.as_deref(), json)?,
        Command::Bench {
            live: true,
            writes,
            idle_secs,
            ..
        } => bench_live::run(*writes, (*idle_secs).max(1), json)?,
        Command::Bench {
            rows, sync: true, ..
        } => bench_sync::run(*rows, json)?,
        Command::Bench { rows, runs, .. } => bench::run(*rows, *runs, json)?,
        Command::BenchJoin { db, src, ticket } => {
            bench_sync::join_child(&data_dir(&cli.data_dir)?, db, src, ticket)?
        }
        Command::BenchImport { from, to } => {
            bench::import_child(&data_dir(&cli.data_dir)?, from, to)?
        }
    }
    Ok(())
}

fn parse_sets(sets: &[String]) -> anyhow::Result<Vec<(String, Value)>> {
    sets.iter()
        .map(|s| {
            let (col, value) = s
                .split_once('=')
                .with_context(|| format!("--set {s:?}: write it as COLUMN=VALUE"))?;
            Ok((col.trim().to_owned(), Value::parse_literal(value)))
        })
        .collect()
}
