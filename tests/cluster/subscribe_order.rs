//! A subscription gets what is stored after it, as on a single broker, also beside an older
//! overlapping subscription of the same MQTT 5 session: a message the node acknowledged before
//! the SUBSCRIBE comes once, through the older subscription only (one copy per matching
//! subscription, MQTT 5 3.3.4), even when the node's reader reads it after the SUBSCRIBE.

use std::collections::BTreeMap;
use std::time::Duration;

use ferromq::protocol::{
    Ack, Packet, Properties, QoS, RetainHandling, Subscribe, SubscriptionOptions,
};

use super::rig::{publish, v5_ok, Rig, FAST};
use crate::support::client::RawClient;

const ROUNDS: u16 = 100;
/// The older subscription's identifier; each round's new one is its round + 2.
const OLDER_ID: u32 = 1;

/// SUBSCRIBE `filter` at QoS 1 with Subscription Identifier `id` (MQTT 5 3.8.2.1.2).
fn subscribe_with_id(packet_id: u16, filter: &str, id: u32) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id,
        filters: vec![(
            filter.to_owned(),
            SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                no_local: false,
                retain_as_published: false,
                retain_handling: RetainHandling::SendAtSubscribe,
            },
        )],
        properties: Some(Box::new(Properties {
            subscription_identifiers: vec![id],
            ..Properties::default()
        })),
    })
}

/// Acknowledge `packet` if it is a QoS 1 PUBLISH, and note its (topic, subscription
/// identifiers) in `got`.
async fn note(client: &mut RawClient, got: &mut BTreeMap<String, Vec<Vec<u32>>>, packet: &Packet) {
    if let Packet::Publish(p) = packet {
        if let Some(id) = p.packet_id {
            client.send(Packet::PubAck(Ack::new(id))).await;
        }
        let ids = p
            .properties
            .as_ref()
            .map(|props| props.subscription_identifiers.clone())
            .unwrap_or_default();
        got.entry(p.topic.to_string()).or_default().push(ids);
    }
}

/// Read until `done` says the packet just read is the awaited one, noting every PUBLISH.
async fn read_until(
    client: &mut RawClient,
    got: &mut BTreeMap<String, Vec<Vec<u32>>>,
    what: &str,
    done: impl Fn(&Packet) -> bool,
) -> Packet {
    loop {
        let packet = client
            .recv_within(Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("no {what} within 10 s (or the connection closed)"));
        note(client, got, &packet).await;
        if done(&packet) {
            return packet;
        }
    }
}

/// A session subscribed to `so/#` publishes at QoS 1 to `so/<round>`, gets its PUBACK and then
/// subscribes to `so/<round>` too: each message arrives once, carrying the older
/// subscription's identifier alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_stored_before_a_subscribe_comes_through_the_older_overlapping_one_only() {
    let Some(rig) = Rig::start(1, FAST).await else {
        return;
    };
    let (mut client, _) = v5_ok(rig.addr(0), "so-overlap", true, None).await;
    let mut got = BTreeMap::new();
    client.send(subscribe_with_id(1, "so/#", OLDER_ID)).await;
    read_until(
        &mut client,
        &mut got,
        "SUBACK of so/#",
        |p| matches!(p, Packet::SubAck(a) if a.packet_id == 1),
    )
    .await;
    for round in 0..ROUNDS {
        let topic = format!("so/{round}");
        let packet_id = round + 2;
        client
            .send(publish(
                &topic,
                &round.to_be_bytes(),
                QoS::AtLeastOnce,
                Some(packet_id),
            ))
            .await;
        let acked = read_until(
            &mut client,
            &mut got,
            "PUBACK",
            |p| matches!(p, Packet::PubAck(a) if a.packet_id == packet_id),
        )
        .await;
        assert!(
            matches!(acked, Packet::PubAck(a) if a.reason == 0),
            "round {round}"
        );
        let new_id = u32::from(round) + 2;
        client
            .send(subscribe_with_id(packet_id, &topic, new_id))
            .await;
        let granted = read_until(
            &mut client,
            &mut got,
            "SUBACK",
            |p| matches!(p, Packet::SubAck(a) if a.packet_id == packet_id),
        )
        .await;
        assert!(
            matches!(&granted, Packet::SubAck(a) if a.return_codes == [1]),
            "round {round}: {granted:?}"
        );
    }
    // Whatever is still on its way.
    while let Some(packet) = client.recv_within(Duration::from_millis(1_500)).await {
        note(&mut client, &mut got, &packet).await;
    }
    let wrong: Vec<_> = (0..ROUNDS)
        .map(|round| format!("so/{round}"))
        .filter_map(|topic| {
            let copies = got.get(&topic).cloned().unwrap_or_default();
            (copies != [vec![OLDER_ID]]).then_some((topic, copies))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "messages not received once through {OLDER_ID} alone (topic, subscription ids per copy): {wrong:?}"
    );
}
