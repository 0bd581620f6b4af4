//! QoS 0 back-pressure: publishers that pipeline QoS 0 faster than their online
//! subscriber reads are paused instead of having their messages evicted, so nothing is lost
//! and per-publisher order holds, and an unrelated pair keeps flowing meanwhile.

use std::time::{Duration, Instant};

use crate::support::{
    activemq_xml, connect_packet, pending_limit_policy, publish_packet, Client, RawClient,
    TestBroker,
};
use bytes::BytesMut;
use ferromq::protocol::{encode, Disconnect, Packet, ProtocolVersion, QoS};
use rumqttc::QoS as Q;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Small soft limit: the hard cap (16x) is far below what the publishers send together.
const LIMIT: usize = 20;
const PUBLISHERS: usize = 5;
const MESSAGES_PER_PUBLISHER: usize = 3000;
/// Large enough that the whole stream (15 MB) does not fit in the loopback socket buffers.
const PAYLOAD_BYTES: usize = 1024;
const OTHER_MESSAGES: usize = 300;
const TEST_LIMIT: Duration = Duration::from_secs(60);

/// Payload: publisher number, sequence number, then filler.
fn payload(publisher: usize, seq: usize) -> Vec<u8> {
    let mut p = vec![0x5a; PAYLOAD_BYTES];
    p[0] = u8::try_from(publisher).expect("few publishers");
    p[1..5].copy_from_slice(&u32::try_from(seq).expect("fits u32").to_be_bytes());
    p
}

/// Writes CONNECT, every QoS 0 PUBLISH and DISCONNECT in one go, then waits for the broker to
/// close the connection (it handles DISCONNECT only after every publish before it).
async fn pipelined_qos0_publisher(addr: std::net::SocketAddr, publisher: usize) {
    let mut out = BytesMut::new();
    let client_id = format!("q0-pub-{publisher}");
    encode(
        &Packet::Connect(Box::new(connect_packet(&client_id, true, 0))),
        ProtocolVersion::V311,
        &mut out,
    )
    .expect("encode");
    let topic = format!("bp0/slow/{publisher}");
    for seq in 0..MESSAGES_PER_PUBLISHER {
        let packet = publish_packet(
            &topic,
            &payload(publisher, seq),
            QoS::AtMostOnce,
            None,
            false,
        );
        encode(&packet, ProtocolVersion::V311, &mut out).expect("encode");
    }
    let disconnect = Packet::Disconnect(Disconnect {
        reason: 0,
        properties: None,
    });
    encode(&disconnect, ProtocolVersion::V311, &mut out).expect("encode");
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let (mut reader, mut writer) = stream.split();
    let write = async { writer.write_all(&out).await.expect("write publishes") };
    let read_until_closed = async {
        let mut sink = [0u8; 256];
        while matches!(reader.read(&mut sink).await, Ok(n) if n > 0) {}
    };
    tokio::join!(write, read_until_closed);
}

#[tokio::test]
async fn pipelined_qos0_publishers_lose_nothing_to_a_slow_subscriber() {
    let policy = pending_limit_policy("bp0.slow.*", LIMIT);
    let broker = TestBroker::from_xml(&activemq_xml(&[], &policy)).await;
    let started = Instant::now();
    let total = PUBLISHERS * MESSAGES_PER_PUBLISHER;

    let (mut slow, _) = RawClient::connected(broker.addr, "q0-slow-sub", true).await;
    slow.subscribe(1, &[("bp0/slow/+", QoS::AtMostOnce)]).await;
    let mut other_sub = Client::connect(broker.addr, "q0-other-sub").await;
    other_sub.subscribe("bp0/other", Q::AtMostOnce).await;
    let mut other_pub = Client::connect(broker.addr, "q0-other-pub").await;

    // The slow subscriber: reads in bursts of 100 messages with a pause after each.
    let slow_reader = tokio::spawn(async move {
        let mut received: Vec<Vec<u32>> = vec![Vec::new(); PUBLISHERS];
        let mut count = 0;
        while count < total {
            let Some(packet) = slow.recv_within(Duration::from_secs(5)).await else {
                break;
            };
            if let Packet::Publish(p) = packet {
                let publisher = usize::from(p.payload[0]);
                let seq: [u8; 4] = p.payload[1..5].try_into().expect("4-byte sequence");
                received[publisher].push(u32::from_be_bytes(seq));
                count += 1;
                if count % 100 == 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        received
    });
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| tokio::spawn(pipelined_qos0_publisher(broker.addr, p)))
        .collect();

    // Meanwhile, an unrelated QoS 0 pair is not stalled.
    let other_started = Instant::now();
    for i in 0..OTHER_MESSAGES {
        other_pub
            .publish("bp0/other", Q::AtMostOnce, false, format!("{i}").as_bytes())
            .await;
        assert_eq!(other_sub.next_publish().await.payload, format!("{i}"));
    }
    let other_took = other_started.elapsed();
    assert!(
        other_took < Duration::from_secs(10),
        "unrelated traffic stalled: {other_took:?}"
    );

    for publisher in publishers {
        tokio::time::timeout(TEST_LIMIT, publisher)
            .await
            .expect("publisher finished in time")
            .expect("publisher task");
    }
    let received = tokio::time::timeout(TEST_LIMIT, slow_reader)
        .await
        .expect("slow subscriber finished in time")
        .expect("reader task");
    let expected: Vec<u32> = (0..MESSAGES_PER_PUBLISHER as u32).collect();
    for (publisher, seqs) in received.iter().enumerate() {
        assert_eq!(
            seqs.len(),
            MESSAGES_PER_PUBLISHER,
            "publisher {publisher}: lost"
        );
        assert!(*seqs == expected, "publisher {publisher}: out of order");
    }
    assert_eq!(broker.handle.counters().dropped_queue_full, 0);
    assert!(started.elapsed() < TEST_LIMIT);
    broker.shutdown().await;
}

/// A publisher paused for an overfilled subscriber is not read meanwhile, so its keep-alive
/// must not run out during the pause: its PINGREQs wait unseen in the socket. Keep-alive 1 s
/// (limit 1.5 s) is shorter than the 2 s a pause may last.
#[tokio::test]
async fn a_paused_publisher_is_not_cut_by_its_keep_alive() {
    let policy = pending_limit_policy("bp0.ka.>", 5);
    let broker = TestBroker::from_xml(&activemq_xml(&[], &policy)).await;
    // Subscribes, then never reads: its socket buffers, the broker's output buffer and then its
    // queue fill up, and the publisher is paused until the pause limit.
    let (mut stuck, _) = RawClient::connected(broker.addr, "ka-stuck-sub", true).await;
    stuck.subscribe(1, &[("bp0/ka/t", QoS::AtMostOnce)]).await;

    let (mut publisher, ack) =
        RawClient::connect(broker.addr, connect_packet("ka-pub", true, 1)).await;
    assert_eq!(ack.reason, ferromq::protocol::ConnectReason::Success);
    let mut burst = BytesMut::new();
    let big = vec![0u8; 64 * 1024];
    for _ in 0..200 {
        let packet = publish_packet("bp0/ka/t", &big, QoS::AtMostOnce, None, false);
        encode(&packet, ProtocolVersion::V311, &mut burst).expect("encode");
    }
    encode(&Packet::PingReq, ProtocolVersion::V311, &mut burst).expect("encode");
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(20), publisher.stream.write_all(&burst))
        .await
        .expect("the broker reads the publisher again after the pause")
        .expect("connection still open while paused");
    let answer = publisher.recv_within(Duration::from_secs(10)).await;
    assert!(
        matches!(answer, Some(Packet::PingResp)),
        "expected PINGRESP after the pause, got {answer:?} after {:?}",
        started.elapsed()
    );
    assert!(
        broker.handle.counters().dropped_queue_full > 0,
        "the subscriber was stuck: the hard cap must have been reached (else no pause happened)"
    );
    drop(stuck);
    broker.shutdown().await;
}
