//! The network commands: `serve`, `invite`, `join` and `sync`, each on its own
//! runtime and endpoint.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use shoal_core::Role;
use shoal_daemon::{Config, Control, Request};
use shoal_net::{InviteTicket, JoinSummary, Node, NodeConfig, PeerSpec, PeerSync, Progress};
use shoal_store::{Store, StoreOptions};

/// Options shared by the commands that use the network; each overrides the setting
/// of the same name in the configuration file.
#[derive(Args, Clone, Debug)]
pub(crate) struct NetArgs {
    /// Relays: `default` (iroh's public relays), `none` (direct addresses only, e.g.
    /// on a LAN or Tailscale), or the URL of your own [default: the configuration's
    /// `relay`, else `default`]
    #[arg(long, env = "SHOAL_RELAY", value_name = "RELAY")]
    relay: Option<String>,
    /// The UDP port to listen on [default: the configuration's `port`, else any free
    /// port]
    #[arg(long, env = "SHOAL_PORT")]
    port: Option<u16>,
}

impl NetArgs {
    /// The configuration of `options`' data directory, with these options over it.
    pub(crate) fn settings(&self, options: &StoreOptions) -> anyhow::Result<Config> {
        let mut config = Config::load(&options.data_dir)?;
        if let Some(r) = &self.relay {
            config.relay = r.clone();
        }
        if let Some(p) = self.port {
            config.port = p;
        }
        Ok(config)
    }

    fn config(&self, options: &StoreOptions) -> anyhow::Result<NodeConfig> {
        Ok(shoal_daemon::node_config(&self.settings(options)?)?)
    }
}

/// The daemon serving `db`, if one runs.
pub(crate) fn daemon(db: &Path, options: &StoreOptions) -> anyhow::Result<Option<Control>> {
    let device = Store::open(db, options.clone())?.device();
    Ok(Control::find(&options.data_dir, &device))
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

async fn bind(db: &Path, options: &StoreOptions, net: &NetArgs) -> anyhow::Result<Node> {
    Ok(Node::bind(db, options.clone(), net.config(options)?).await?)
}

/// Waits for Ctrl-C or SIGTERM.
pub(crate) async fn stopped() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `shoal serve`: accepts sessions until stopped.
pub(crate) fn serve(
    db: &Path,
    options: StoreOptions,
    net: &NetArgs,
    json: bool,
) -> anyhow::Result<()> {
    if daemon(db, &options)?.is_some() {
        bail!("a daemon (`shoal up`) runs for this database and already accepts sessions");
    }
    runtime()?.block_on(async {
        let node = Arc::new(bind(db, &options, net).await?);
        let addr = node.addr().await;
        let ticket = PeerSpec::remembered(&addr);
        if json {
            println!(
                "{}",
                serde_json::json!({"device": node.device().to_string(), "addr": ticket})
            );
        } else {
            println!("device {} is listening", node.device());
            println!("other members sync with it by:");
            println!("  shoal sync THEIR_DB --peer {ticket}");
            println!("stop with Ctrl-C");
        }
        std::io::stdout().flush()?;
        let server = node.clone();
        tokio::select! {
            r = server.serve() => r?,
            () = stopped() => {}
        }
        node.close().await;
        Ok(())
    })
}

/// What `shoal invite` was asked for.
pub(crate) struct InviteRequest<'a> {
    pub(crate) group: Option<&'a str>,
    pub(crate) role: Role,
    pub(crate) expires: Duration,
    pub(crate) uses: u32,
    pub(crate) no_wait: bool,
    pub(crate) qr: bool,
}

/// `shoal invite`: prints a ticket and, unless told not to, serves until it has been
/// used as often as it allows, or expires.
pub(crate) fn invite(
    db: &Path,
    options: StoreOptions,
    net: &NetArgs,
    req: InviteRequest<'_>,
    json: bool,
) -> anyhow::Result<()> {
    let mut store = Store::open(db, options.clone())?;
    let group = crate::group::one_group(&store, req.group)?;
    let invite = store.create_invite(
        &group.id.to_string(),
        req.role,
        req.expires.as_millis() as u64,
        req.uses,
    )?;
    let print = |addr: iroh::EndpointAddr| -> anyhow::Result<()> {
        let ticket = InviteTicket::new(&invite, store.device(), addr).encode(store.device_key());
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "ticket": ticket,
                    "group": group.name,
                    "role": req.role.as_str(),
                    "expires_ms": invite.expires_ms,
                    "uses": invite.uses,
                })
            );
        } else {
            println!(
                "invite to group {:?} as {}, for {} device(s), valid {}:",
                group.name,
                req.role.as_str(),
                req.uses,
                humanize(req.expires)
            );
            println!();
            println!("{ticket}");
            if let Some(code) = req
                .qr
                .then(|| qrcode::QrCode::new(ticket.as_bytes()).ok())
                .flatten()
            {
                println!();
                println!(
                    "{}",
                    code.render::<qrcode::render::unicode::Dense1x2>()
                        .quiet_zone(true)
                        .build()
                );
            }
            println!();
            println!("on the new device: shoal join THEIR_DB TICKET (the ticket above)");
        }
        std::io::stdout().flush()?;
        Ok(())
    };
    if let Some(control) = daemon(db, &options)? {
        let text = control.request(&Request::Addr, Duration::from_secs(30))?;
        let Some(Ok(PeerSpec::Addr(addr))) = text.as_str().map(str::parse::<PeerSpec>) else {
            bail!("the daemon gave an address that cannot be read: {text}");
        };
        print(addr)?;
        if !json {
            eprintln!("the daemon (`shoal up`) serves the new device");
        }
        return Ok(());
    }
    if req.no_wait {
        let text = store.peer_addr(&store.device())?.context(
            "no `shoal serve` has run for this database, so the ticket would have no address: start `shoal serve` first, or drop --no-wait",
        )?;
        let Ok(PeerSpec::Addr(addr)) = text.parse::<PeerSpec>() else {
            bail!("the remembered address of `shoal serve` cannot be read; start it again");
        };
        return print(addr);
    }
    runtime()?.block_on(async {
        let node = Arc::new(bind(db, &options, net).await?);
        print(node.addr().await)?;
        if !json {
            eprintln!("waiting for the new device to join (Ctrl-C to stop)...");
        }
        let server = node.clone();
        let serving = tokio::spawn(async move { server.serve().await });
        let deadline = Instant::now() + req.expires;
        loop {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
                () = stopped() => break,
            }
            let left = store.invite_uses_left(&invite.id)?.unwrap_or(0);
            if (left == 0 && node.active_sessions() == 0) || Instant::now() >= deadline {
                // One more moment, for a session that just started.
                tokio::time::sleep(Duration::from_millis(300)).await;
                if node.active_sessions() == 0 {
                    if !json {
                        if left == 0 {
                            eprintln!("the invite has been used; done");
                        } else {
                            eprintln!("the invite expired");
                        }
                    }
                    break;
                }
            }
        }
        node.close().await;
        serving.abort();
        Ok(())
    })
}

fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 86_400 == 0 => format!("{} day(s)", s / 86_400),
        s if s % 3600 == 0 => format!("{} hour(s)", s / 3600),
        s if s % 60 == 0 => format!("{} minute(s)", s / 60),
        s => format!("{s} second(s)"),
    }
}

/// A progress bar on stderr, shown once a transfer is large enough to need one.
fn progress_bar(json: bool) -> impl Fn(Progress) + Send + Sync {
    let bar = (!json && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::hidden();
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {msg} [{elapsed_precise}] {binary_bytes} at {binary_bytes_per_sec}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        b
    });
    move |p: Progress| {
        if let Some(b) = &bar {
            if p.pushed + p.pulled >= 1000 && b.is_hidden() {
                b.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            }
            let done = p.pushed + p.pulled;
            b.set_message(format!(
                "{}: {done} of {} commits ({} out, {} in)",
                p.peer.short(),
                p.total.max(done),
                p.pushed,
                p.pulled
            ));
            b.set_position(p.bytes);
        }
    }
}

/// `shoal join`: redeems a ticket and takes in the group's history.
pub(crate) fn join(
    db: &Path,
    options: StoreOptions,
    net: &NetArgs,
    ticket: &str,
    json: bool,
) -> anyhow::Result<()> {
    let parsed: InviteTicket = ticket.parse()?;
    let started = Instant::now();
    let summary: JoinSummary = match daemon(db, &options)? {
        Some(control) => serde_json::from_value(control.request(
            &Request::Join {
                ticket: ticket.to_owned(),
            },
            THROUGH_DAEMON,
        )?)?,
        None => runtime()?.block_on(async {
            let node = bind(db, &options, net).await?;
            let summary = node.join(&parsed, &progress_bar(json)).await;
            node.close().await;
            anyhow::Ok(summary?)
        })?,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "joined group {:?} as {} in {:.1?}",
            summary.name,
            summary.role.map_or("nothing", Role::as_str),
            started.elapsed()
        );
        println!(
            "received {} commits ({} row changes applied, {} held, {} conflicts)",
            summary.sync.pulled, summary.sync.changes, summary.sync.held, summary.sync.conflicts
        );
        // The joiner's fingerprint was taken before it knew the group's tables, so
        // only changes held tell of a real difference.
        if summary.sync.held > 0 {
            println!(
                "note: {} change(s) are held, for tables or columns this database lacks; they apply once it has them (`shoal status` lists them)",
                summary.sync.held
            );
        }
    }
    Ok(())
}

/// How long a command waits for a daemon doing a sync or join for it.
const THROUGH_DAEMON: Duration = Duration::from_secs(3600);

/// `shoal sync`: one round with the peers given, or every member with a known address.
pub(crate) fn sync(
    db: &Path,
    options: StoreOptions,
    net: &NetArgs,
    group: Option<&str>,
    peers: &[String],
    json: bool,
) -> anyhow::Result<()> {
    if let Some(control) = daemon(db, &options)? {
        let started = Instant::now();
        let results: Vec<PeerSync> = serde_json::from_value(control.request(
            &Request::Sync {
                group: group.map(str::to_owned),
                peers: peers.to_vec(),
            },
            THROUGH_DAEMON,
        )?)?;
        print_sync(&results, started.elapsed(), json)?;
        warn_clock(db, &options, json);
        if results.iter().all(|r| r.error.is_some()) {
            bail!("no peer could be synced with");
        }
        return Ok(());
    }
    let store = Store::open(db, options.clone())?;
    let group = match group {
        Some(g) => Some(store.group(g)?.id),
        None => None,
    };
    drop(store);
    let peers = peers
        .iter()
        .map(|p| p.parse::<PeerSpec>())
        .collect::<Result<Vec<_>, _>>()?;
    runtime()?.block_on(async {
        let node = bind(db, &options, net).await?;
        let started = Instant::now();
        let results = node.sync(group, &peers, &progress_bar(json)).await?;
        node.close().await;
        print_sync(&results, started.elapsed(), json)?;
        warn_clock(db, &options, json);
        if results.iter().all(|r| r.error.is_some()) {
            bail!("no peer could be synced with");
        }
        Ok(())
    })
}

/// Says when this device's own commits are stamped so far ahead that members hold
/// them: what they would say about it.
fn warn_clock(db: &Path, options: &StoreOptions, json: bool) {
    if json {
        return;
    }
    if let Ok(status) = Store::open(db, options.clone()).and_then(|s| s.status()) {
        crate::output::clock_ahead(status.clock_ahead_ms, db);
    }
}

fn print_sync(results: &[PeerSync], elapsed: Duration, json: bool) -> anyhow::Result<()> {
    let total = |f: &dyn Fn(&shoal_net::GroupSync) -> u64| -> u64 {
        results.iter().flat_map(|r| &r.groups).map(f).sum()
    };
    let (pushed, pulled) = (total(&|g| g.pushed), total(&|g| g.pulled));
    let conflicts = total(&|g| g.conflicts);
    let bytes = total(&|g| g.bytes_in + g.bytes_out);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "peers": results,
                "pushed": pushed,
                "pulled": pulled,
                "conflicts": conflicts,
                "bytes": bytes,
                "elapsed_ms": elapsed.as_millis() as u64,
            }))?
        );
        return Ok(());
    }
    for r in results {
        match &r.error {
            Some(e) => println!("{}: failed: {e}", r.peer.short()),
            None => {
                for g in &r.groups {
                    println!(
                        "{} {:?}: pushed {}, pulled {} commits ({} row changes), {} conflicts{}{}",
                        r.peer.short(),
                        g.name,
                        g.pushed,
                        g.pulled,
                        g.changes,
                        g.conflicts,
                        if g.held > 0 {
                            format!(", {} held", g.held)
                        } else {
                            String::new()
                        },
                        if g.refused.is_empty() {
                            String::new()
                        } else {
                            format!(", {} refused", g.refused.len())
                        },
                    );
                    for why in &g.refused {
                        println!("  refused: {why}");
                    }
                    if g.future > 0 {
                        println!(
                            "  {} commit(s) held here: stamped too far ahead of this machine's clock (is a sender's clock wrong?); they apply when this clock gets there",
                            g.future
                        );
                    }
                    if g.schema_differs {
                        println!(
                            "  note: the peer's tables differ; changes to columns one side lacks are held"
                        );
                    }
                }
            }
        }
    }
    println!(
        "pushed {pushed}, pulled {pulled} commits, {conflicts} conflicts, {} in {:.1?}",
        human_bytes(bytes),
        elapsed
    );
    Ok(())
}

fn human_bytes(b: u64) -> String {
    match b {
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} bytes"),
    }
}
