//! MQTT 5 subscriptions with options over a [`RawClient`]: SUBSCRIBE with No Local, Retain As
//! Published and a Subscription Identifier, PUBLISH with properties, and what arrives.

use std::time::Duration;

use bytes::Bytes;
use ferromq::protocol::{
    Packet, Properties, Publish, QoS, RetainHandling, Subscribe, SubscriptionOptions,
};

use super::client::RawClient;
use super::STEP;

/// One filter of a SUBSCRIBE: QoS, No Local, Retain As Published (Retain Handling 0).
#[derive(Debug, Clone, Copy)]
pub struct Filter<'a> {
    pub filter: &'a str,
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
}

impl<'a> Filter<'a> {
    pub fn new(filter: &'a str, qos: QoS) -> Self {
        Filter {
            filter,
            qos,
            no_local: false,
            retain_as_published: false,
        }
    }

    pub fn no_local(self) -> Self {
        Filter {
            no_local: true,
            ..self
        }
    }

    pub fn retain_as_published(self) -> Self {
        Filter {
            retain_as_published: true,
            ..self
        }
    }
}

/// A SUBSCRIBE of `filters` with Subscription Identifier `id` (absent when `None`).
pub fn subscribe_with(packet_id: u16, filters: &[Filter<'_>], id: Option<u32>) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id,
        filters: filters
            .iter()
            .map(|f| {
                (
                    f.filter.to_owned(),
                    SubscriptionOptions {
                        qos: f.qos,
                        no_local: f.no_local,
                        retain_as_published: f.retain_as_published,
                        retain_handling: RetainHandling::SendAtSubscribe,
                    },
                )
            })
            .collect(),
        properties: id.map(|id| {
            Box::new(Properties {
                subscription_identifiers: vec![id],
                ..Properties::default()
            })
        }),
    })
}

/// SUBSCRIBE and return the SUBACK's reason codes.
pub async fn subscribe(
    client: &mut RawClient,
    packet_id: u16,
    filters: &[Filter<'_>],
    id: Option<u32>,
) -> Vec<u8> {
    client.send(subscribe_with(packet_id, filters, id)).await;
    match client.recv().await {
        Packet::SubAck(s) => {
            assert_eq!(s.packet_id, packet_id);
            s.return_codes
        }
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

/// A PUBLISH with optional properties.
pub fn publish(
    topic: &str,
    payload: &'static [u8],
    qos: QoS,
    packet_id: Option<u16>,
    retain: bool,
    properties: Option<Properties>,
) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain,
        topic: topic.into(),
        packet_id,
        payload: Bytes::from_static(payload),
        properties: properties.map(Box::new),
    })
}

/// Publish at QoS 1 and wait for the PUBACK (so the message is routed). PUBLISH packets that
/// arrive first (the client's own subscriptions) are returned.
pub async fn publish_acked(
    client: &mut RawClient,
    topic: &str,
    payload: &'static [u8],
    packet_id: u16,
    retain: bool,
) -> Vec<Publish> {
    client
        .send(publish(
            topic,
            payload,
            QoS::AtLeastOnce,
            Some(packet_id),
            retain,
            None,
        ))
        .await;
    let mut before = Vec::new();
    loop {
        match client.recv().await {
            Packet::PubAck(a) if a.packet_id == packet_id => return before,
            Packet::Publish(p) => before.push(p),
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
}

/// The Subscription Identifiers a delivered PUBLISH carries.
pub fn ids(p: &Publish) -> Vec<u32> {
    p.properties
        .as_ref()
        .map(|props| props.subscription_identifiers.clone())
        .unwrap_or_default()
}

/// PUBLISH packets received until one has `payload` (included), acknowledging QoS 1 ones.
pub async fn publishes_until(client: &mut RawClient, payload: &[u8]) -> Vec<Publish> {
    let mut got = Vec::new();
    loop {
        match client.recv().await {
            Packet::Publish(p) => {
                if let (QoS::AtLeastOnce, Some(id)) = (p.qos, p.packet_id) {
                    client.send(Packet::PubAck(super::client::ack(id))).await;
                }
                let last = &p.payload[..] == payload;
                got.push(p);
                if last {
                    return got;
                }
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
}

/// The reason code of the DISCONNECT `client` receives, then its connection is closed.
pub async fn disconnect_code(client: &mut RawClient) -> u8 {
    match client.recv_within(STEP).await {
        Some(Packet::Disconnect(d)) => {
            client.expect_closed().await;
            d.reason
        }
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
}

/// Nothing at all arrives within `within`.
pub async fn nothing_within(client: &mut RawClient, within: Duration) {
    if let Some(p) = client.recv_within(within).await {
        panic!("expected nothing, got {p:?}");
    }
}
