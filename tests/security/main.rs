//! Authentication (simple, JAAS), authorization, the `ferromq` security commands and security
//! enforced on MQTT connections, MQTT 5 enhanced authentication (SCRAM).

#[path = "../support/mod.rs"]
mod support;

mod activemq_differential;
mod auth;
mod authz;
mod cli;
mod enhanced_auth;
mod jaas;
mod jaas_live;
mod jasypt;
mod ldap;
mod ldap_authz;
mod mqtt;
mod properties_decrypt;
