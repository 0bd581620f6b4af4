//! A reloaded `memoryUsage` limit applies to the next publishes: a broker full at 1 kb accepts
//! again once the file says 1 mb, without a restart and without dropping what it holds.

use std::time::Duration;

use crate::support::broker_xml;
use crate::support::live::LiveBroker;
use crate::support::{publish_packet, RawClient};
use ferromq::protocol::{Disconnect, Packet, QoS};

fn with_memory_limit(limit: &str) -> String {
    broker_xml("", &[("mqtt", "mqtt://127.0.0.1:0")]).replace(
        "<transportConnectors>",
        &format!(
            "<systemUsage><systemUsage><memoryUsage><memoryUsage limit=\"{limit}\"/>\
             </memoryUsage></systemUsage></systemUsage>\n    <transportConnectors>"
        ),
    )
}

/// Whether a QoS 1 publish of 300 bytes is acknowledged.
async fn accepted(publisher: &mut RawClient, id: u16) -> bool {
    publisher
        .send(publish_packet(
            "m",
            &[7; 300],
            QoS::AtLeastOnce,
            Some(id),
            false,
        ))
        .await;
    match publisher.recv_within(Duration::from_millis(400)).await {
        Some(Packet::PubAck(a)) => a.packet_id == id,
        None => false,
        Some(other) => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn a_raised_memory_limit_applies_without_a_restart() {
    let mut live = LiveBroker::start(&with_memory_limit("1 kb"), true).await;
    let mqtt = live.addr("mqtt").await.expect("mqtt listening");
    let (mut sub, _) = RawClient::connected(mqtt, "holder", false).await;
    sub.subscribe(1, &[("m", QoS::AtLeastOnce)]).await;
    sub.send(Packet::Disconnect(Disconnect {
        reason: 0,
        properties: None,
    }))
    .await;
    sub.expect_closed().await;

    let (mut publisher, _) = RawClient::connected(mqtt, "pub", true).await;
    let mut held = 0u16;
    for id in 1..=10u16 {
        if !accepted(&mut publisher, id).await {
            break;
        }
        held += 1;
    }
    assert!(
        (1..10).contains(&held),
        "the 1 kb limit is reached after {held}"
    );
    let used = live.handle.core().memory.used_bytes();

    let stats = live.edit(&with_memory_limit("1 mb")).await;
    assert_eq!(
        (stats.reloads_ok, stats.reloads_failed),
        (1, 0),
        "{stats:?}"
    );
    assert_eq!(live.handle.core().memory.limit_bytes(), Some(1 << 20));
    // The publish held by the old limit is admitted under the new one.
    let held_id = held + 1;
    assert!(
        matches!(publisher.recv().await, Packet::PubAck(a) if a.packet_id == held_id),
        "the held publish is acknowledged under the new limit"
    );
    assert!(
        live.handle.core().memory.used_bytes() > used,
        "what was held stays, and the held message joined it"
    );
    assert!(
        accepted(&mut publisher, 100).await,
        "accepted under the new limit"
    );
    assert_eq!(live.handle.counters().refused_memory_full, 1);
    live.shutdown().await;
}
