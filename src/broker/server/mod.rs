//! The broker as a network server: one accept loop per connector ([`listener`]), the running
//! listeners reconciled with each reloaded configuration ([`listener_set`]), and what a reload
//! applies to a running broker ([`apply`]).

pub mod apply;
pub mod listener;
pub mod listener_set;

use crate::config::{Config, Listener, Protocol};

/// The connectors this broker binds: every configured one except the STOMP connectors
/// (`stomp://`, `stomp+nio://`, `stomp+ssl://`, `stomp+nio+ssl://`), which are skipped with a
/// warning until STOMP connections are served, so that no STOMP port ever answers in MQTT.
/// Start and every reload go through here (one filter to remove). `ws://`/`wss://` are bound.
pub(crate) fn served_listeners(config: &Config) -> impl Iterator<Item = &Listener> {
    config.listeners.iter().filter(|listener| {
        let stomp_only = listener.scheme.protocol() == Some(Protocol::Stomp);
        if stomp_only {
            tracing::warn!(
                listener = %listener.name,
                uri = %listener.uri,
                "connector `{}` ({}://) is not served: STOMP connections are not served yet",
                listener.name,
                listener.scheme
            );
        }
        !stomp_only
    })
}
