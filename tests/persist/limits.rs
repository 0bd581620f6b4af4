//! The `storeUsage` limit of a durable broker: a QoS 1 publish that would pass it is refused
//! (not acknowledged, not delivered, counted), the connection stays, and publishing works again
//! once the store drains.

use std::time::Duration;

use crate::support::{ack, publish_packet, BrokerXml, RawClient, TestBroker};
use ferromq::protocol::{Disconnect, Packet, QoS};

const PAYLOAD_BYTES: usize = 400;

fn limited_xml(dir: &std::path::Path) -> String {
    BrokerXml::new()
        .kahadb(dir)
        .child(
            r#"<systemUsage><systemUsage>
      <storeUsage><storeUsage limit="1 kb"/></storeUsage>
    </systemUsage></systemUsage>"#,
        )
        .mqtt(0, &[])
        .build()
}

#[tokio::test]
async fn a_full_store_pauses_the_publisher_and_keeps_its_message_once_drained() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = TestBroker::from_xml(&limited_xml(dir.path())).await;
    let (mut sub, _) = RawClient::connected(broker.addr, "sub", false).await;
    sub.subscribe(1, &[("full", QoS::AtLeastOnce)]).await;
    sub.send(Packet::Disconnect(Disconnect {
        reason: 0,
        properties: None,
    }))
    .await;
    sub.expect_closed().await;

    let (mut publisher, _) = RawClient::connected(broker.addr, "pub", true).await;
    let payload = vec![b'x'; PAYLOAD_BYTES];
    let mut acked = 0u16;
    let mut refused_id = None;
    for id in 1..=10u16 {
        publisher
            .send(publish_packet(
                "full",
                &payload,
                QoS::AtLeastOnce,
                Some(id),
                false,
            ))
            .await;
        match publisher.recv_within(Duration::from_millis(500)).await {
            Some(Packet::PubAck(a)) => {
                assert_eq!(a.packet_id, id);
                acked += 1;
            }
            None => {
                refused_id = Some(id);
                break;
            }
            Some(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(acked >= 1, "messages fit before the limit");
    assert!(refused_id.is_some(), "the 1 kb store filled up");
    assert!(broker.handle.counters().refused_store_full >= 1);
    // The publisher is paused, not cut off: its other packets are answered.
    publisher.send(Packet::PingReq).await;
    assert!(matches!(publisher.recv().await, Packet::PingResp));

    // Drain: the subscriber takes and acknowledges what was stored; then the held publish is
    // kept, acknowledged and delivered too.
    let (mut sub, _) = RawClient::connected(broker.addr, "sub", false).await;
    for _ in 0..acked {
        let p = sub.recv_publish().await;
        sub.send(Packet::PubAck(ack(p.packet_id.expect("QoS 1 id"))))
            .await;
    }
    let held = refused_id.expect("held");
    assert!(matches!(publisher.recv().await, Packet::PubAck(a) if a.packet_id == held));
    let p = sub.recv_publish().await;
    sub.send(Packet::PubAck(ack(p.packet_id.expect("QoS 1 id"))))
        .await;
    crate::support::settle().await;
    publisher
        .send(publish_packet(
            "full",
            &payload,
            QoS::AtLeastOnce,
            Some(100),
            false,
        ))
        .await;
    assert!(matches!(publisher.recv().await, Packet::PubAck(a) if a.packet_id == 100));
    assert_eq!(&sub.recv_publish().await.payload[..], &payload[..]);
    broker.shutdown().await;
}
