//! Authentication (simple, JAAS), authorization, the `ferromq` security commands and security
//! enforced on MQTT connections.

#[path = "../support/mod.rs"]
mod support;

mod auth;
mod authz;
mod cli;
mod enhanced_auth;
mod jaas;
mod mqtt;
