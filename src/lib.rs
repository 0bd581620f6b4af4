//! ferromq: an MQTT broker that reads Apache ActiveMQ's `activemq.xml`.
//!
//! Layout (see ARCHITECTURE.md for the flow):
//! - [`config`]: XML -> typed [`config::Config`]; never opens a socket.
//! - [`protocol`]: IO-free MQTT codec (3.1, 3.1.1, 5.0).
//! - [`security`]: authentication and casbin-backed authorization.
//! - [`broker`]: the runtime graph (listeners, connections, sessions, router).
//! - [`store`]: durable sessions, queued and retained messages (redb, group commit).

pub mod admin;
pub mod broker;
pub mod cluster;
pub mod cli;
pub mod config;
pub mod console;
pub mod control;
pub mod metrics;
pub mod protocol;
pub mod reload;
pub mod security;
pub mod store;
pub mod transport;
