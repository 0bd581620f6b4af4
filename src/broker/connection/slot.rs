//! A listener's hold on one of its connections, for the connection's whole life (parked or
//! not): the connector's open-connection count (`maximumConnections`) and the broker's wait
//! for every connection at shutdown.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::broker::runtime::BrokerCore;

/// Released (dropped) when the connection ends.
pub struct ConnectionSlot {
    active: Arc<AtomicU32>,
    core: Arc<BrokerCore>,
    /// The broker's shutdown waits until every one of these is dropped.
    _alive: mpsc::Sender<()>,
}

impl ConnectionSlot {
    /// Count a new connection in `active` (the connector's) and in the broker's counters,
    /// the caller having counted it already.
    pub fn new(active: Arc<AtomicU32>, core: Arc<BrokerCore>, alive: mpsc::Sender<()>) -> Self {
        ConnectionSlot {
            active,
            core,
            _alive: alive,
        }
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
        self.core.counters.connection_closed();
    }
}
