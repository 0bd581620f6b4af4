//! STOMP clients on the broker: topics shared with MQTT in both directions (headers <-> MQTT 5
//! properties), acknowledgement modes, receipts, ERROR frames, heart-beats, transactions,
//! authentication and authorization, STOMP over WebSocket (a raw Rust client and python's
//! `websocket-client` / `stomp.py`).

#[path = "../support/mod.rs"]
mod support;

mod acks;
mod activemq_differential;
mod back_pressure;
mod browse;
mod client;
mod composite;
mod crash_transactions;
mod dead_letter;
mod dead_letter_kept;
mod durable;
mod edge_cases;
mod frames;
mod idle_memory;
mod injection;
mod limits;
mod nack;
mod python;
mod queues;
mod reload;
mod selectors;
mod subscribe_values;
mod tls;
mod topics;
mod transactions;
mod virtual_topics;

use std::net::SocketAddr;

use support::{BrokerXml, TestBroker};

use client::StompClient;

/// A broker with an MQTT connector (`mqtt`), a STOMP connector (`stomp`) and a WebSocket
/// connector (`ws`, STOMP for clients that offer no MQTT sub-protocol), with `children` inside
/// `<broker>`.
pub async fn broker_with(children: &str) -> Env {
    let xml = BrokerXml::new()
        .name("stomp")
        .child(children)
        .connector("mqtt", "mqtt://127.0.0.1:0")
        .connector("stomp", "stomp://127.0.0.1:0")
        .connector("ws", "ws://127.0.0.1:0")
        .build();
    let broker = TestBroker::from_xml(&xml).await;
    Env { broker }
}

/// [`broker_with`] keeping its state in a store in `dir` (kahaDB configured: ferromq's store).
pub async fn broker_in(dir: &std::path::Path) -> Env {
    let xml = BrokerXml::new()
        .name("stomp")
        .kahadb(dir)
        .connector("mqtt", "mqtt://127.0.0.1:0")
        .connector("stomp", "stomp://127.0.0.1:0")
        .connector("ws", "ws://127.0.0.1:0")
        .build();
    Env {
        broker: TestBroker::from_xml(&xml).await,
    }
}

pub async fn broker() -> Env {
    broker_with("").await
}

pub struct Env {
    pub broker: TestBroker,
}

impl Env {
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.broker
            .handle
            .listener_addrs()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
            .expect("listener")
    }

    pub fn mqtt(&self) -> SocketAddr {
        self.addr("mqtt")
    }

    /// A STOMP client on the `stomp://` connector, not connected yet.
    pub async fn stomp(&self) -> StompClient {
        StompClient::tcp(self.addr("stomp")).await
    }

    /// A STOMP client over WebSocket (`v12.stomp`), not connected yet.
    pub async fn stomp_ws(&self) -> StompClient {
        StompClient::ws(self.addr("ws"), "v12.stomp").await.0
    }

    /// A STOMP client after CONNECT with `headers`.
    pub async fn connected(&self, headers: &[(&str, &str)]) -> StompClient {
        let mut c = self.stomp().await;
        c.connect(headers).await;
        c
    }
}
