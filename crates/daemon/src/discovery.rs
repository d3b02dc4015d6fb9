//! Finding members on the local network (mDNS, with the `mdns` feature): each one
//! found is tried at once.

use std::sync::Arc;

use tokio::task::JoinHandle;
#[cfg(feature = "mdns")]
use {
    crate::mutex::lock,
    shoal_core::DeviceId,
    tracing::{debug, warn},
};

use crate::inner::Inner;

impl Inner {
    /// Finds members on the local network; each one found is tried at once.
    #[cfg(feature = "mdns")]
    pub(crate) fn discover(self: Arc<Self>) -> Option<JoinHandle<()>> {
        use iroh_mdns_address_lookup::{DiscoveryEvent, MdnsAddressLookup};
        use n0_future::StreamExt;
        let endpoint = self.node.endpoint();
        let mdns = match MdnsAddressLookup::builder()
            .service_name("shoal")
            .build(endpoint.id())
        {
            Ok(m) => m,
            Err(e) => {
                warn!("local-network discovery is off: {e}");
                return None;
            }
        };
        match endpoint.address_lookup() {
            Ok(services) => services.add(mdns.clone()),
            Err(e) => {
                warn!("local-network discovery is off: {e}");
                return None;
            }
        }
        Some(tokio::spawn(async move {
            let mut events = mdns.subscribe().await;
            while let Some(event) = events.next().await {
                if let DiscoveryEvent::Discovered { endpoint_info, .. } = event {
                    let device = DeviceId(*endpoint_info.endpoint_id.as_bytes());
                    if let Some(p) = self.peer(&device) {
                        debug!(peer = %device.short(), "found on the local network");
                        lock(&p.state).discovered = true;
                        p.dirty.notify_one();
                    }
                }
            }
        }))
    }

    #[cfg(not(feature = "mdns"))]
    pub(crate) fn discover(self: Arc<Self>) -> Option<JoinHandle<()>> {
        None
    }
}
