//! The broker as a network server: one accept loop per connector ([`listener`]; its refusals
//! beyond `maximumConnections` logged without flooding the log, [`refusals`]), the running
//! listeners reconciled with each reloaded configuration ([`listener_set`]), and what a reload
//! applies to a running broker ([`apply`]).

pub mod apply;
pub mod listener;
pub mod listener_set;
pub mod published_address;
pub mod refusals;

use crate::config::{Config, Listener};

/// The connectors this broker binds: every configured one (MQTT, STOMP and WebSocket
/// connectors alike; a WebSocket client picks its protocol by sub-protocol). Start and every
/// reload go through here.
pub(crate) fn served_listeners(config: &Config) -> impl Iterator<Item = &Listener> {
    config.listeners.iter()
}
