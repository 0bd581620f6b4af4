//! The sampled delivery latency histogram (`ferromq_delivery_latency_seconds`) on a running
//! broker: one publish in 64 per QoS is stamped, the first delivery of each copy of it is
//! observed once per delivered copy, per subscriber protocol.

use std::time::Duration;

use rumqttc::QoS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::parse::Exposition;
use crate::render::scrape_core;
use crate::support::{options, BrokerXml, Client, TestBroker, STEP};

const NAME: &str = "ferromq_delivery_latency_seconds";

fn count(e: &Exposition, protocol: &str) -> f64 {
    e.value(&format!("{NAME}_count"), &[("protocol", protocol)])
}

fn sum(e: &Exposition, protocol: &str) -> f64 {
    e.value(&format!("{NAME}_sum"), &[("protocol", protocol)])
}

fn bucket(e: &Exposition, protocol: &str, le: &str) -> f64 {
    e.value(
        &format!("{NAME}_bucket"),
        &[("protocol", protocol), ("le", le)],
    )
}

#[tokio::test]
async fn every_64th_qos1_publish_is_observed_once_per_mqtt_subscriber() {
    let broker = TestBroker::default().await;
    let before = scrape_core(broker.handle.core());
    assert_eq!(count(&before, "mqtt"), 0.0);
    assert_eq!(count(&before, "stomp"), 0.0);

    let mut first = Client::connect(broker.addr, "lat-sub-1").await;
    first.subscribe("lat/#", QoS::AtLeastOnce).await;
    let mut second = Client::connect(broker.addr, "lat-sub-2").await;
    second.subscribe("lat/#", QoS::AtLeastOnce).await;
    let mut publisher = Client::connect(broker.addr, "lat-pub").await;
    for i in 0..1000u32 {
        publisher
            .publish("lat/x", QoS::AtLeastOnce, false, &i.to_be_bytes())
            .await;
    }
    for _ in 0..1000 {
        first.next_publish().await;
        second.next_publish().await;
    }

    // Observed when written to the subscriber's output buffer, so before it could read it.
    let now = scrape_core(broker.handle.core());
    assert_eq!(
        now.value("ferromq_messages_received_total", &[("qos", "1")]),
        1000.0
    );
    let sampled = (1000 / 64) as f64;
    assert_eq!(
        count(&now, "mqtt"),
        2.0 * sampled,
        "15 sampled, 2 subscribers"
    );
    assert_eq!(count(&now, "stomp"), 0.0);
    assert_eq!(bucket(&now, "mqtt", "+Inf"), 2.0 * sampled);
    let total = sum(&now, "mqtt");
    assert!(total > 0.0 && total < 5.0, "sum of 30 latencies: {total} s");
    assert_eq!(
        bucket(&now, "mqtt", "0.25"),
        2.0 * sampled,
        "live deliveries on loopback take well under 250 ms"
    );
    for client in [first, second, publisher] {
        client.disconnect().await;
    }
    broker.shutdown().await;
}

/// An MQTT 5 client with two overlapping subscriptions gets two copies of each message
/// (MQTT 5 section 3.3.4): the sampled publish is observed once per delivered copy.
#[tokio::test]
async fn overlapping_mqtt5_subscriptions_are_observed_once_per_delivered_copy() {
    use ferromq::protocol::{Packet, QoS as Q};
    let broker = TestBroker::default().await;
    let mut subscriber = crate::support::RawClient::connected_v5(broker.addr, "lat-overlap").await;
    subscriber
        .subscribe(1, &[("lat/#", Q::AtMostOnce), ("lat/+", Q::AtMostOnce)])
        .await;
    let mut publisher = Client::connect(broker.addr, "lat-overlap-pub").await;
    // The 64th QoS 1 publish is the sampled one.
    for i in 0..64u32 {
        publisher
            .publish("lat/x", QoS::AtLeastOnce, false, &i.to_be_bytes())
            .await;
    }
    let mut copies = 0;
    while copies < 128 {
        if let Packet::Publish(_) = subscriber.recv().await {
            copies += 1;
        }
    }
    let now = scrape_core(broker.handle.core());
    assert_eq!(count(&now, "mqtt"), 2.0, "one sampled publish, two copies");
    publisher.disconnect().await;
    broker.shutdown().await;
}

pub(crate) async fn write(stream: &mut TcpStream, frame: &str) {
    stream.write_all(frame.as_bytes()).await.expect("write");
}

/// Read until `n` frames starting with `command` arrived (frames end with NUL; heart-beat
/// newlines between frames are skipped); other frames are ignored.
pub(crate) async fn read_frames(stream: &mut TcpStream, command: &str, n: usize) {
    let mut pending = Vec::new();
    let mut seen = 0;
    let mut buf = [0u8; 8192];
    tokio::time::timeout(STEP, async {
        while seen < n {
            let read = stream.read(&mut buf).await.expect("read");
            assert!(read > 0, "closed after {seen} {command} frames");
            pending.extend_from_slice(&buf[..read]);
            while let Some(end) = pending.iter().position(|&b| b == 0) {
                let frame: Vec<u8> = pending.drain(..=end).collect();
                let text = String::from_utf8_lossy(&frame);
                if text.trim_start_matches(['\n', '\r']).starts_with(command) {
                    seen += 1;
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{seen} of {n} {command} frames in time"));
}

pub(crate) async fn stomp_connect(addr: std::net::SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    write(
        &mut stream,
        "CONNECT\naccept-version:1.2\nhost:localhost\n\n\0",
    )
    .await;
    read_frames(&mut stream, "CONNECTED", 1).await;
    stream
}

#[tokio::test]
async fn stomp_topic_and_queue_deliveries_are_observed_as_stomp() {
    let xml = BrokerXml::new()
        .connector("mqtt", "mqtt://127.0.0.1:0")
        .connector("stomp", "stomp://127.0.0.1:0")
        .build();
    let broker = TestBroker::from_xml(&xml).await;
    let stomp_addr = broker.handle.listener_addrs()[1].1;
    let mut consumer = stomp_connect(stomp_addr).await;
    write(
        &mut consumer,
        "SUBSCRIBE\nid:t\ndestination:/topic/lat.x\nreceipt:s1\n\n\0",
    )
    .await;
    read_frames(&mut consumer, "RECEIPT", 1).await;
    write(
        &mut consumer,
        "SUBSCRIBE\nid:q\ndestination:/queue/lat\nreceipt:s2\n\n\0",
    )
    .await;
    read_frames(&mut consumer, "RECEIPT", 1).await;

    // Non-persistent SENDs are QoS 0: the 64th and the 128th are sampled.
    let mut producer = stomp_connect(stomp_addr).await;
    for i in 0..128 {
        write(
            &mut producer,
            &format!("SEND\ndestination:/topic/lat.x\n\ntopic {i}\0"),
        )
        .await;
    }
    read_frames(&mut consumer, "MESSAGE", 128).await;
    let topic = scrape_core(broker.handle.core());
    assert_eq!(count(&topic, "stomp"), 2.0);
    assert_eq!(count(&topic, "mqtt"), 0.0);
    let total = sum(&topic, "stomp");
    assert!(total > 0.0 && total < 5.0, "sum of 2 latencies: {total} s");

    // Queue sends count on: the 192nd QoS 0 message is the next sampled one.
    for i in 0..64 {
        write(
            &mut producer,
            &format!("SEND\ndestination:/queue/lat\n\nqueue {i}\0"),
        )
        .await;
    }
    read_frames(&mut consumer, "MESSAGE", 64).await;
    let queue = scrape_core(broker.handle.core());
    assert_eq!(
        queue.value("ferromq_messages_received_total", &[("qos", "0")]),
        192.0
    );
    assert_eq!(count(&queue, "stomp"), 3.0);
    assert_eq!(bucket(&queue, "stomp", "+Inf"), 3.0);
    broker.shutdown().await;
}

#[tokio::test]
async fn messages_queued_for_an_offline_session_show_their_wait() {
    let broker = TestBroker::default().await;
    let mut sub_options = options(broker.addr, "lat-offline");
    sub_options.set_clean_session(false);
    let mut sub = Client::connect_with(sub_options.clone()).await;
    sub.subscribe("off/#", QoS::AtLeastOnce).await;
    sub.disconnect().await;

    let mut publisher = Client::connect(broker.addr, "lat-off-pub").await;
    for i in 0..64u32 {
        publisher
            .publish("off/x", QoS::AtLeastOnce, false, &i.to_be_bytes())
            .await;
    }
    let queued = scrape_core(broker.handle.core());
    assert_eq!(count(&queued, "mqtt"), 0.0, "nothing delivered yet");
    // The wait being measured: the 64th message stays queued at least this long.
    let offline_for = Duration::from_millis(400);
    tokio::time::sleep(offline_for).await;

    let mut sub = Client::connect_with(sub_options).await;
    assert!(sub.session_present);
    for _ in 0..64 {
        sub.next_publish().await;
    }
    let delivered = scrape_core(broker.handle.core());
    assert_eq!(count(&delivered, "mqtt"), 1.0);
    assert_eq!(
        bucket(&delivered, "mqtt", "0.25"),
        0.0,
        "queued for over 400 ms: not in the 250 ms bucket"
    );
    assert_eq!(bucket(&delivered, "mqtt", "+Inf"), 1.0);
    let waited = sum(&delivered, "mqtt");
    assert!(
        waited >= offline_for.as_secs_f64() && waited < 5.0,
        "waited {waited} s"
    );
    sub.disconnect().await;
    publisher.disconnect().await;
    broker.shutdown().await;
}
