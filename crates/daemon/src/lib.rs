//! Always-on sync for a Shoal database: `shoal up`.
//!
//! A [`Daemon`] binds the device's endpoint, keeps a connection to every member of
//! every group it is in, notices local writes from any process (SQLite's
//! `data_version`, not the app's tables), seals them and pushes them at once,
//! reconnects with capped exponential backoff and jitter, and syncs on an interval
//! besides. It reports [`Event`]s and a [`DaemonStatus`], and answers the other
//! `shoal` commands on a control socket ([`Control`]).

mod addresses;
mod auto;
mod backoff;
mod config;
#[cfg(unix)]
mod control;
mod daemon;
mod discovery;
mod error;
mod event;
mod gossip;
mod inner;
mod journal;
mod local;
mod members;
mod mutex;
mod peer;
mod report;
#[cfg(unix)]
mod requests;
mod rounds;
mod schedule;
mod status;
mod steer;
mod supervisor;
mod watch;

pub use auto::AutoSync;
pub use backoff::Backoff;
pub use config::{Config, format_duration, parse_duration};
#[cfg(unix)]
pub use control::{Control, Request, socket_path};
pub use daemon::{Daemon, Handle, node_config};
pub use error::DaemonError;
pub use event::Event;
pub use journal::{EVENTS_KEPT, Numbered, Since};
pub use shoal_net::NetError;
pub use status::{DaemonStatus, GroupStatus, PeerStatus};
pub use steer::IssuedInvite;
