//! Hot reload: configuration diffs, the file watcher, the reloader, and reloads applied to a
//! running broker (connectors, users, TLS key stores, limits).

#[path = "../support/mod.rs"]
mod support;

mod broker;
mod broker_tls;
mod diff;
mod memory_limit;
mod queues;
mod reloader;
mod watcher;
