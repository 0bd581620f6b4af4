//! Back-pressure instead of loss: a fast QoS 1 publisher to a slow but alive
//! subscriber loses nothing (it is paused instead), and it does not stall other clients.

use std::time::{Duration, Instant};

use crate::support::{
    ack, activemq_xml, connect_packet, pending_limit_policy, publish_packet, Client, RawClient,
    TestBroker,
};
use bytes::BytesMut;
use ferromq::broker::routing::limits::{
    pending_hard_cap, DEFAULT_SUBSCRIPTION_PREFETCH, OVERFILL_PAUSE_LIMIT_MS,
};
use ferromq::protocol::{decode, encode, Packet, ProtocolVersion, QoS};
use rumqttc::QoS as Q;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMIT: usize = 100;
const SLOW_MESSAGES: usize = 5000;
const OTHER_MESSAGES: usize = 500;
/// Generous bound for the whole test; each step below has a tighter one.
const TEST_LIMIT: Duration = Duration::from_secs(60);

/// A publisher that writes all `count` QoS 1 PUBLISHes at once (no waiting for PUBACKs) and
/// then reads PUBACKs until it has them all. Returns the number of PUBACKs.
async fn pipelined_publisher(
    addr: std::net::SocketAddr,
    topic: &'static str,
    count: usize,
) -> usize {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut out = BytesMut::new();
    encode(
        &Packet::Connect(Box::new(connect_packet("fast-pub", true, 0))),
        ProtocolVersion::V311,
        &mut out,
    )
    .expect("encode");
    for i in 0..count {
        let packet_id = u16::try_from(i + 1).expect("fits a packet id");
        let payload = (i as u32).to_be_bytes();
        encode(
            &publish_packet(topic, &payload, QoS::AtLeastOnce, Some(packet_id), false),
            ProtocolVersion::V311,
            &mut out,
        )
        .expect("encode");
    }
    let (mut reader, mut writer) = stream.split();
    let write = async {
        writer.write_all(&out).await.expect("write publishes");
    };
    let read = async {
        let mut buf = BytesMut::new();
        let mut pubacks = 0;
        while pubacks < count {
            match decode(&mut buf, Some(ProtocolVersion::V311), usize::MAX).expect("decode") {
                Some(Packet::PubAck(_)) => pubacks += 1,
                Some(_) => {}
                None => {
                    if reader.read_buf(&mut buf).await.expect("read") == 0 {
                        break;
                    }
                }
            }
        }
        pubacks
    };
    let ((), pubacks) = tokio::join!(write, read);
    pubacks
}

#[tokio::test]
async fn slow_subscriber_loses_no_qos1_message_and_others_keep_flowing() {
    let policy = pending_limit_policy("bp.slow", LIMIT);
    let broker = TestBroker::from_xml(&activemq_xml(&[], &policy)).await;
    let started = Instant::now();

    let (mut slow, _) = RawClient::connected(broker.addr, "slow-sub", true).await;
    slow.subscribe(1, &[("bp/slow", QoS::AtLeastOnce)]).await;
    let mut other_sub = Client::connect(broker.addr, "other-sub").await;
    other_sub.subscribe("bp/other", Q::AtLeastOnce).await;
    let mut other_pub = Client::connect(broker.addr, "other-pub").await;

    let publisher = tokio::spawn(pipelined_publisher(broker.addr, "bp/slow", SLOW_MESSAGES));

    // The slow subscriber: reads in bursts with pauses, acknowledging every QoS 1 message.
    let slow_reader = tokio::spawn(async move {
        let mut received = Vec::with_capacity(SLOW_MESSAGES);
        while received.len() < SLOW_MESSAGES {
            let Some(packet) = slow.recv_within(Duration::from_secs(5)).await else {
                break;
            };
            if let Packet::Publish(p) = packet {
                let bytes: [u8; 4] = p.payload[..].try_into().expect("4-byte payload");
                received.push(u32::from_be_bytes(bytes));
                slow.send(Packet::PubAck(ack(p.packet_id.expect("QoS 1 id"))))
                    .await;
                if received.len() % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        received
    });

    // Wait until the slow session is above its soft limit: the publisher is being held back.
    let core = broker.handle.core().clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let queued = core
            .registry
            .by_client_id("slow-sub")
            .map(|s| s.snapshot().pending().len())
            .unwrap_or(0);
        if queued > LIMIT {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "slow queue never passed its limit"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }

    // Meanwhile, an unrelated publisher/subscriber pair is not stalled.
    let other_started = Instant::now();
    for i in 0..OTHER_MESSAGES {
        other_pub
            .publish("bp/other", Q::AtLeastOnce, false, format!("{i}").as_bytes())
            .await;
        assert_eq!(other_sub.next_publish().await.payload, format!("{i}"));
    }
    let other_took = other_started.elapsed();
    assert!(
        other_took < Duration::from_secs(10),
        "unrelated traffic stalled: {other_took:?}"
    );

    let pubacks = tokio::time::timeout(TEST_LIMIT, publisher)
        .await
        .expect("publisher finished in time")
        .expect("publisher task");
    assert_eq!(pubacks, SLOW_MESSAGES, "every publish acknowledged");
    let received = tokio::time::timeout(TEST_LIMIT, slow_reader)
        .await
        .expect("slow subscriber finished in time")
        .expect("reader task");
    let expected: Vec<u32> = (0..SLOW_MESSAGES as u32).collect();
    assert_eq!(received.len(), SLOW_MESSAGES, "acknowledged messages lost");
    assert_eq!(received, expected, "every message once, in order");
    assert_eq!(broker.handle.counters().dropped_queue_full, 0);
    assert!(started.elapsed() < TEST_LIMIT);
    broker.shutdown().await;
}

#[tokio::test]
async fn stuck_subscriber_pauses_the_publisher_once_and_loses_nothing() {
    const STUCK_LIMIT: usize = 10;
    let policy = pending_limit_policy("bp.stuck", STUCK_LIMIT);
    let broker = TestBroker::from_xml(&activemq_xml(&[], &policy)).await;
    // Never reads its socket, so never acknowledges.
    let (mut stuck, _) = RawClient::connected(broker.addr, "stuck-sub", true).await;
    stuck.subscribe(1, &[("bp/stuck", QoS::AtLeastOnce)]).await;
    let hard_cap = pending_hard_cap(STUCK_LIMIT);
    let messages = DEFAULT_SUBSCRIPTION_PREFETCH + hard_cap + 50;

    // A publisher that waits for each PUBACK: every publish after the first overfill waits
    // for the broker to read it, which it does once it gave up on the stuck subscriber.
    let mut publisher = Client::connect(broker.addr, "stuck-pub").await;
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(20), async {
        for i in 0..messages {
            publisher
                .publish("bp/stuck", Q::AtLeastOnce, false, format!("{i}").as_bytes())
                .await;
        }
    })
    .await
    .expect("a stuck subscriber must not stall the publisher for good");
    assert!(
        started.elapsed() >= Duration::from_millis(OVERFILL_PAUSE_LIMIT_MS),
        "the publisher was paused before giving up"
    );
    let state = broker
        .handle
        .core()
        .registry
        .by_client_id("stuck-sub")
        .expect("session")
        .snapshot();
    // Every acknowledged message is still held for the subscriber: queued past the hard cap
    // (which only bounds QoS 0), or in flight; memoryUsage bounds the whole.
    assert!(
        state.pending().len() > hard_cap,
        "{} queued",
        state.pending().len()
    );
    assert_eq!(state.pending().len() + state.inflight().len(), messages);
    assert_eq!(broker.handle.counters().dropped_queue_full, 0);
    broker.shutdown().await;
}
