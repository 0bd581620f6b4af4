//! What a connection's reads keep in memory, and that `memoryUsage` counts it: a message is a
//! slice of the read it arrived in, so a message kept (retained, queued for an offline session)
//! keeps that read; the read is charged for all of it, and a retained message gets a copy.

use std::time::Duration;

use crate::support::{ack, activemq_xml, publish_packet, RawClient, TestBroker, STEP};
use ferromq::protocol::{Disconnect, Packet, ProtocolVersion, QoS};

fn limited_to(limit: &str) -> String {
    activemq_xml(
        &[],
        &format!(
            r#"<systemUsage><systemUsage>
                 <memoryUsage><memoryUsage limit="{limit}"/></memoryUsage>
               </systemUsage></systemUsage>"#
        ),
    )
}

/// `packets` encoded back to back, to be sent in one write.
fn one_write(packets: &[Packet]) -> bytes::BytesMut {
    let mut write = bytes::BytesMut::new();
    for packet in packets {
        ferromq::protocol::encode(packet, ProtocolVersion::V311, &mut write).expect("encode");
    }
    write
}

/// The packet ids of the next `count` PUBACKs.
async fn acknowledged(client: &mut RawClient, count: usize) -> Vec<u16> {
    let mut ids = Vec::new();
    while ids.len() < count {
        match client.recv_within(STEP).await {
            Some(Packet::PubAck(a)) => ids.push(a.packet_id),
            got => panic!("expected a PUBACK, got {got:?}"),
        }
    }
    ids
}

/// A persistent subscriber to `filter` at QoS 1, offline again.
async fn offline_subscriber(broker: &TestBroker, id: &str, filter: &str) {
    let (mut sub, _) = RawClient::connected(broker.addr, id, false).await;
    sub.subscribe(1, &[(filter, QoS::AtLeastOnce)]).await;
    sub.send(Packet::Disconnect(Disconnect {
        reason: 0,
        properties: None,
    }))
    .await;
    sub.expect_closed().await;
}

/// The gauge once it has settled below `below` (charges are released by other tasks), or
/// what it still reads after a second.
async fn used_bytes_settled(broker: &TestBroker, below: u64) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        let used = broker.handle.core().memory.used_bytes();
        if used < below || tokio::time::Instant::now() > deadline {
            return used;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_queued_message_s_read_is_charged_for_the_refused_packet_beside_it() {
    let broker = TestBroker::from_xml(&limited_to("1 mb")).await;
    offline_subscriber(&broker, "offline", "kept").await;
    let (mut publisher, _) = RawClient::connected(broker.addr, "pub", true).await;
    // One read: a 10 KiB PUBLISH the broker refuses before admitting it ($SYS is not for
    // clients; MQTT 3.1.1 acknowledges it all the same), then a 1-byte QoS 1 message queued
    // for the offline session, which keeps the read in memory.
    let refused = vec![b'r'; 10 * 1024];
    publisher
        .send_raw(&one_write(&[
            publish_packet("$SYS/forged", &refused, QoS::AtLeastOnce, Some(100), false),
            publish_packet("kept", b"k", QoS::AtLeastOnce, Some(1), false),
        ]))
        .await;
    assert_eq!(acknowledged(&mut publisher, 2).await, [100, 1]);
    let used = broker.handle.core().memory.used_bytes();
    assert!(
        used >= refused.len() as u64,
        "{used} bytes charged while the queued message keeps its {} byte read",
        refused.len()
    );
    // Delivered and acknowledged: the read goes, and its whole charge with it.
    let (mut sub, connack) = RawClient::connected(broker.addr, "offline", false).await;
    assert!(connack.session_present);
    let delivered = sub.recv_publish().await;
    assert_eq!(&delivered.payload[..], b"k");
    sub.send(Packet::PubAck(ack(delivered.packet_id.expect("QoS 1"))))
        .await;
    let used = used_bytes_settled(&broker, 1).await;
    assert_eq!(
        used, 0,
        "bytes still charged after the delivery was acknowledged"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn a_large_refused_packet_is_not_kept_by_the_small_message_after_it() {
    // Twenty reads of [200 KiB refused][1 byte queued]: were the large packets kept with the
    // small ones, 4 MB would be held against a 1 MB limit and the later publishes paused.
    let broker = TestBroker::from_xml(&limited_to("1 mb")).await;
    offline_subscriber(&broker, "offline", "kept").await;
    let (mut publisher, _) = RawClient::connected(broker.addr, "pub", true).await;
    let refused = vec![b'r'; 200 * 1024];
    for id in 1..=20u16 {
        publisher
            .send_raw(&one_write(&[
                publish_packet("$SYS/forged", &refused, QoS::AtLeastOnce, Some(100), false),
                publish_packet("kept", b"k", QoS::AtLeastOnce, Some(id), false),
            ]))
            .await;
        assert_eq!(acknowledged(&mut publisher, 2).await, [100, id]);
    }
    let used = used_bytes_settled(&broker, 64 * 1024).await;
    assert!(
        used < 64 * 1024,
        "{used} bytes charged for twenty 1-byte queued messages"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn a_retained_message_does_not_keep_the_memory_of_the_read_it_arrived_in() {
    let broker = TestBroker::from_xml(&limited_to("4 kb")).await;
    // One write under 8 KiB, so one read: a small retained message, then a QoS 0 message larger than
    // the limit that no one subscribes to (admitted: the limit was not reached before it).
    let (mut publisher, _) = RawClient::connected(broker.addr, "pub", true).await;
    let big = vec![b'q'; 6 * 1024];
    publisher
        .send_raw(&one_write(&[
            publish_packet("status/x", b"online", QoS::AtMostOnce, None, true),
            publish_packet("nobody/listens", &big, QoS::AtMostOnce, None, false),
        ]))
        .await;
    // A ping answered: both publishes were handled.
    publisher.send(Packet::PingReq).await;
    assert!(matches!(publisher.recv().await, Packet::PingResp));
    let used = broker.handle.core().memory.used_bytes();
    assert!(
        used < 1024,
        "{used} bytes still charged: only the retained copy should be"
    );
    // The big message went to no one: its memory is free again, so another publisher's QoS 1
    // message is acknowledged (not held as if memory were full).
    let (mut other, _) = RawClient::connected(broker.addr, "other", true).await;
    other
        .send(publish_packet(
            "a/b",
            b"x",
            QoS::AtLeastOnce,
            Some(1),
            false,
        ))
        .await;
    match other.recv_within(STEP).await {
        Some(Packet::PubAck(a)) => assert_eq!(a.packet_id, 1),
        got => panic!("the QoS 1 publish was not acknowledged: {got:?}"),
    }
    // The retained message is still served, from its own copy.
    let (mut sub, _) = RawClient::connected(broker.addr, "sub", true).await;
    sub.subscribe(1, &[("status/x", QoS::AtMostOnce)]).await;
    let retained = sub.recv_publish().await;
    assert_eq!(
        (&retained.payload[..], retained.retain),
        (&b"online"[..], true)
    );
    broker.shutdown().await;
}
