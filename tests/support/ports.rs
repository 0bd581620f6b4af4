//! Free loopback ports for the brokers, servers and daemons the tests start.
//!
//! A port from `bind(127.0.0.1:0)` comes from the kernel's ephemeral range
//! (`net.ipv4.ip_local_port_range`, 32768-60999 by default), the range every outgoing
//! connection's local port also comes from: between the check and the broker's own bind, a
//! client anywhere in the suite could take it and the broker fails with "Address already in
//! use". These ports are drawn at random below that range, where only listeners compete, and
//! checked free by binding them.
//!
//! Self-contained (std and rand): the support modules and the examples include it with
//! `#[path]`.

use std::net::TcpListener;

/// The lowest port drawn: clear of the well-known and most registered services' ports.
const LOWEST: u16 = 10_000;

/// A loopback port nothing listens on now, below the ephemeral range.
///
/// Errors: only when no port could be bound at all (not even one the kernel picks).
pub fn free_port() -> std::io::Result<u16> {
    let below = ephemeral_start().max(LOWEST + 1_000);
    for _ in 0..200 {
        let port = rand::random_range(LOWEST..below);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `count` distinct free loopback ports (see [`free_port`]); panics when none can be bound.
pub fn distinct_free_ports(count: usize) -> Vec<u16> {
    let mut ports: Vec<u16> = Vec::with_capacity(count);
    while ports.len() < count {
        let port = free_port().expect("a free loopback port");
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    ports
}

/// The first port of the kernel's ephemeral range (32768 when it cannot be read).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}
