//! Accepting connections: iroh's [`Router`] runs the one accept loop, and hands each
//! connection on Shoal's ALPN to [`Sessions`], which answers the sessions the peer
//! opens on it. Whoever listens ([`Welcome`]) hears who came, each session finished,
//! and who left.

use std::future::Future;
use std::sync::Arc;

use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler, Router};
use shoal_core::DeviceId;
use shoal_host::GroupSync;
use tracing::debug;

use crate::error::NetError;
use crate::link::PeerLink;
use crate::node::{ALPN, Node, lock};

/// What a listening device does around the sessions its peers open.
pub trait Welcome: Send + Sync + 'static {
    /// A peer connected; its sessions are answered once this returns.
    fn arrived(&self, link: &PeerLink) -> impl Future<Output = ()> + Send;
    /// A session the peer opened finished.
    fn finished(&self, peer: DeviceId, sync: &GroupSync);
    /// The peer's connection closed.
    fn left(&self, link: &PeerLink);
}

/// A listener that wants to hear nothing.
pub struct Quiet;

impl Welcome for Quiet {
    async fn arrived(&self, _: &PeerLink) {}
    fn finished(&self, _: DeviceId, _: &GroupSync) {}
    fn left(&self, _: &PeerLink) {}
}

/// Answers the sessions of each connection the router hands over.
pub(crate) struct Sessions<W> {
    pub(crate) node: Arc<Node>,
    pub(crate) welcome: Arc<W>,
}

impl<W> std::fmt::Debug for Sessions<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("device", &self.node.device())
            .finish()
    }
}

impl<W: Welcome> ProtocolHandler for Sessions<W> {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let link = PeerLink::new(conn);
        self.welcome.arrived(&link).await;
        let welcome = self.welcome.clone();
        let served = self
            .node
            .serve_connection(link.clone(), move |peer, sync| welcome.finished(peer, sync))
            .await;
        if let Err(e) = served {
            debug!("serving a connection ended: {e}");
        }
        self.welcome.left(&link);
        Ok(())
    }
}

impl Node {
    /// Accepts sessions until the node is closed.
    pub async fn serve(self: &Arc<Self>) -> Result<(), NetError> {
        self.remember_own_addr().await?;
        self.listen(Arc::new(Quiet));
        let mut closed = self.closed.subscribe();
        let _ = closed.wait_for(|c| *c).await;
        Ok(())
    }

    /// Starts accepting connections, each answered as [`Node::serve_connection`]
    /// does, with `welcome` told who comes and goes; returns at once. Until
    /// [`Node::close`].
    pub fn listen<W: Welcome>(self: &Arc<Self>, welcome: Arc<W>) {
        let router = Router::builder(self.endpoint().clone())
            .accept(
                ALPN,
                Sessions {
                    node: self.clone(),
                    welcome,
                },
            )
            .spawn();
        if let Some(old) = lock(&self.router).replace(router) {
            drop(old);
        }
    }
}
