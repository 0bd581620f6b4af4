//! A listener's hold on one of its connections, for the connection's whole life (parked or
//! not): the connector's open-connection count (`maximumConnections`) and the broker's wait
//! for every connection at shutdown.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::broker::runtime::BrokerCore;

/// One connector's open connections, shared by its accept loop and every connection's slot
/// (one pointer per connection, which parked connections keep: docs/scaling.md).
pub struct ConnectorSlots {
    active: AtomicU32,
    core: Arc<BrokerCore>,
}

impl ConnectorSlots {
    pub fn new(core: Arc<BrokerCore>) -> Arc<Self> {
        Arc::new(ConnectorSlots {
            active: AtomicU32::new(0),
            core,
        })
    }

    /// Connections of this connector open now.
    pub fn active(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    /// Count a new connection in the connector (the caller counts it in the broker's
    /// counters); the slot uncounts it in both when dropped.
    pub fn open(self: &Arc<Self>, alive: mpsc::Sender<()>) -> ConnectionSlot {
        self.active.fetch_add(1, Ordering::Relaxed);
        ConnectionSlot {
            slots: self.clone(),
            _alive: alive,
        }
    }
}

/// Released (dropped) when the connection ends.
pub struct ConnectionSlot {
    slots: Arc<ConnectorSlots>,
    /// The broker's shutdown waits until every one of these is dropped.
    _alive: mpsc::Sender<()>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.slots.active.fetch_sub(1, Ordering::Relaxed);
        self.slots.core.counters.connection_closed();
    }
}
