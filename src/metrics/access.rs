//! The access log: one line per connect, disconnect and refusal (MQTT and STOMP; a flood of
//! refusals beyond `maximumConnections` as one line per 10 s, `broker::server::refusals`), as tracing
//! events on the [`TARGET`] target with structured fields (`event`, `listener`, `protocol`,
//! `peer`, `client_id`, `user`, `reason`), so a JSON log format prints them as fields. Never a
//! password. The same calls count the connection in its connector's [`ListenerStats`].
//!
//! Silence it with `RUST_LOG=info,ferromq::access=off`.

use std::net::SocketAddr;

use super::listener::ListenerStats;
use super::reason::Reason;
use crate::config::Protocol;
use crate::security::Bounded;

/// The tracing target of access-log events.
pub const TARGET: &str = "ferromq::access";

/// The label / field value of a protocol.
pub fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Mqtt => "mqtt",
        Protocol::Stomp => "stomp",
    }
}

/// Who a connection is, as far as it is known.
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    pub listener: &'a ListenerStats,
    pub protocol: Protocol,
    pub peer: SocketAddr,
    pub client_id: Option<&'a str>,
    pub user: Option<&'a str>,
}

/// A connection was established (CONNECT accepted).
pub fn connected(who: Who<'_>) {
    who.listener.connected(who.protocol);
    event("connect", who, None);
}

/// An established connection ended.
pub fn closed(who: Who<'_>, reason: Reason) {
    who.listener.closed(who.protocol, reason);
    event("disconnect", who, Some(reason));
}

/// An opened connection was refused (or ended) before it was established.
pub fn refused(who: Who<'_>, reason: Reason) {
    who.listener.refused(who.protocol, reason);
    event("refused", who, Some(reason));
}

/// A socket was refused at accept, before any protocol was spoken.
pub fn refused_at_accept(listener: &ListenerStats, peer: SocketAddr, reason: Reason) {
    listener.refused_at_accept(reason);
    let who = Who {
        listener,
        protocol: listener.default_protocol,
        peer,
        client_id: None,
        user: None,
    };
    event("refused", who, Some(reason));
}

/// A socket refused at accept and counted, but not logged on its own line: one of a flood
/// beyond `maximumConnections`, which [`refused_at_accept_summary`] logs as a number.
pub fn refused_at_accept_quietly(listener: &ListenerStats, reason: Reason) {
    listener.refused_at_accept(reason);
}

/// One line for `count` sockets refused at accept (and counted) by
/// [`refused_at_accept_quietly`]: `event="refused"`, no peer, their `count`.
pub fn refused_at_accept_summary(listener: &ListenerStats, reason: Reason, count: u64) {
    tracing::info!(
        target: TARGET,
        event = "refused",
        listener = %listener.name,
        protocol = protocol_name(listener.default_protocol),
        reason = reason.as_str(),
        count,
        "refused"
    );
}

fn event(event: &'static str, who: Who<'_>, reason: Option<Reason>) {
    tracing::info!(
        target: TARGET,
        event,
        listener = %who.listener.name,
        protocol = protocol_name(who.protocol),
        peer = %who.peer,
        client_id = who.client_id.map(|c| tracing::field::display(Bounded(c))),
        user = who.user.map(|u| tracing::field::display(Bounded(u))),
        reason = reason.map(Reason::as_str),
        "{event}"
    );
}
