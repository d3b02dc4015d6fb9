//! What every handler shares: the daemon's handle, the key, the names this server
//! answers to.

use shoal_daemon::Handle;

use crate::key::ApiKey;
use crate::session::Logins;

#[derive(Clone)]
pub(crate) struct App {
    pub(crate) daemon: Handle,
    pub(crate) key: ApiKey,
    pub(crate) hosts: Vec<String>,
    pub(crate) logins: Logins,
    /// Room for the event streams open at once.
    pub(crate) streams: std::sync::Arc<tokio::sync::Semaphore>,
}

/// How many event streams may be open at once.
pub(crate) const STREAMS: usize = 64;
