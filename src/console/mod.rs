//! The web console: an HTTP server (axum on hyper over tokio) beside the broker, for people
//! and scripts. Basic auth against Jetty's `jetty-realm.properties` ([`realm`]); `admin` acts,
//! `user` reads. A JSON API (overview, clients, sessions, topics, queues), a Jolokia-style read
//! of ActiveMQ's Broker MBean attributes, Prometheus `/metrics`, admin actions protected by a
//! CSRF token and an Origin check, and the pages of [`ui`]. See docs/console.md.

pub mod realm;
pub mod ui;

mod api;
pub mod auth;
mod jolokia;
mod kept;
mod server;
pub mod status;

pub use api::ListenerInfo;
pub use server::{start, Console, ConsoleHandle, ConsoleInfo, StoreInfo};
