//! A paged-out queue entry keeps its MQTT 5 properties in the store, not in RAM: an offline
//! persistent session is sent far more user-property bytes than `memoryUsage` (each message's
//! properties are large, its payload small), every message is acknowledged, the broker's
//! resident (anonymous) memory stays within `memoryUsage` plus the margin of the payload paging test, also
//! after a kill -9 and restart, and the session then receives every message with its
//! properties and expiry intact. A real MQTT 5 client library (rumqttc) publishes and receives.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{ConnectProperties, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, EventLoop, Incoming, MqttOptions};

use super::paging::{
    anon_rss_mb, assert_drained_memory, config, kill_and_restart, MEMORY_LIMIT_MB, RSS_MARGIN_MB,
};
use crate::support::free_port;
use crate::support::wire::{spawn_broker, KillOnDrop};

/// User-property bytes per message; the payload is 4 bytes.
const PADDING_BYTES: usize = 6_000;
/// About seven times `memoryUsage` of properties.
const MESSAGES: u32 = 20_000;
/// What one paged-out entry may keep (topic, QoS, sequence, an expiry-only MQTT 5 side).
const ENVELOPE_BYTES: u64 = 1_024;

fn options(port: u16, id: &str, clean_start: bool) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_clean_start(clean_start);
    o.set_max_packet_size(Some(1 << 20));
    o.set_keep_alive(Duration::from_secs(60));
    let mut props = ConnectProperties::new();
    props.session_expiry_interval = Some(3_600);
    props.max_packet_size = Some(1 << 20);
    o.set_connect_properties(props);
    o
}

/// Poll until CONNACK, retrying while the broker (re)starts.
async fn connected(o: MqttOptions) -> (AsyncClient, EventLoop) {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (client, mut events) = AsyncClient::new(o.clone(), 64);
        loop {
            match tokio::time::timeout(Duration::from_secs(5), events.poll()).await {
                Ok(Ok(Event::Incoming(Incoming::ConnAck(_)))) => return (client, events),
                Ok(Ok(_)) => {}
                _ => break,
            }
        }
        assert!(tokio::time::Instant::now() < give_up, "no CONNACK");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The properties message `n` is published with: its number and a large padding as user
/// properties, a content type, and on odd numbers a Message Expiry Interval.
fn properties_of(n: u32) -> PublishProperties {
    PublishProperties {
        content_type: Some(format!("test/{n}")),
        message_expiry_interval: (n % 2 == 1).then_some(3_600),
        user_properties: vec![
            ("n".into(), n.to_string()),
            ("pad".into(), "u".repeat(PADDING_BYTES)),
        ],
        ..PublishProperties::default()
    }
}

/// Publish every message at QoS 1 and wait for every PUBACK; the peak RSS seen meanwhile.
async fn publish_all(port: u16, pid: u32) -> u64 {
    let (client, mut events) = connected(options(port, "pp-pub", true)).await;
    let publisher = tokio::spawn(async move {
        for n in 0..MESSAGES {
            client
                .publish_with_properties(
                    "pp/x",
                    QoS::AtLeastOnce,
                    false,
                    Bytes::copy_from_slice(&n.to_be_bytes()),
                    properties_of(n),
                )
                .await
                .expect("queue the publish");
        }
        client
    });
    let (mut acked, mut peak) = (0u32, 0u64);
    while acked < MESSAGES {
        match tokio::time::timeout(Duration::from_secs(20), events.poll()).await {
            Ok(Ok(Event::Incoming(Incoming::PubAck(ack)))) => {
                assert!(ack.reason as u8 == 0, "PUBACK {acked} refused: {ack:?}");
                acked += 1;
                if acked % 2_000 == 0 {
                    peak = peak.max(anon_rss_mb(pid));
                }
            }
            Ok(Ok(_)) => {}
            other => panic!("publisher after {acked} PUBACKs: {other:?}"),
        }
    }
    let _client = publisher.await.expect("publisher task");
    peak.max(anon_rss_mb(pid))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_properties_of_a_long_offline_queue_stay_in_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = config(dir.path(), port);
    let broker = std::sync::Arc::new(parking_lot::Mutex::new(spawn_broker(&config)));
    let _kill = KillOnDrop(broker.clone());
    let pid = broker.lock().id();

    let (sub, mut events) = connected(options(port, "pp-sub", true)).await;
    sub.subscribe("pp/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    loop {
        match tokio::time::timeout(Duration::from_secs(5), events.poll()).await {
            Ok(Ok(Event::Incoming(Incoming::SubAck(_)))) => break,
            Ok(Ok(_)) => {}
            other => panic!("no SUBACK: {other:?}"),
        }
    }
    sub.disconnect().await.expect("disconnect");
    let _ = tokio::time::timeout(Duration::from_secs(2), events.poll()).await;
    drop(events);

    let base = anon_rss_mb(pid);
    let peak = publish_all(port, pid).await;
    let properties_mb = (u64::from(MESSAGES) * PADDING_BYTES as u64) >> 20;
    let bound = MEMORY_LIMIT_MB + RSS_MARGIN_MB + u64::from(MESSAGES) * ENVELOPE_BYTES / (1 << 20);
    println!(
        "{MESSAGES} messages with {PADDING_BYTES} B of user properties ({properties_mb} MiB) \
         queued offline: anonymous RSS {base} -> peak {peak} MiB (bound {bound})"
    );
    assert!(
        peak <= bound,
        "anonymous RSS {peak} MiB > {bound} MiB while publishing"
    );

    // A restart (kill -9) reads the queue back as envelopes too: recovery holds neither the
    // payloads nor the large properties of paged entries.
    let pid = kill_and_restart(&broker, &config);
    // The session gets every message back, properties and expiry included.
    let (_sub, mut events) = connected(options(port, "pp-sub", false)).await;
    let after_restart = anon_rss_mb(pid);
    println!("after a restart: anonymous RSS {after_restart} MiB");
    assert!(
        after_restart <= bound,
        "anonymous RSS {after_restart} MiB > {bound} MiB after a restart"
    );
    let mut seen = BTreeMap::new();
    while seen.len() < MESSAGES as usize {
        match tokio::time::timeout(Duration::from_secs(20), events.poll()).await {
            Ok(Ok(Event::Incoming(Incoming::Publish(p)))) => {
                let n = u32::from_be_bytes(p.payload[..4].try_into().expect("number"));
                let props = p.properties.expect("properties kept");
                let expected = properties_of(n);
                assert_eq!(
                    props.user_properties, expected.user_properties,
                    "message {n}"
                );
                assert_eq!(props.content_type, expected.content_type, "message {n}");
                match expected.message_expiry_interval {
                    Some(secs) => {
                        let left = props.message_expiry_interval.expect("expiry kept");
                        assert!(
                            left <= secs && left > secs - 120,
                            "message {n}: {left} s left"
                        );
                    }
                    None => assert_eq!(props.message_expiry_interval, None, "message {n}"),
                }
                seen.insert(n, ());
            }
            Ok(Ok(_)) => {}
            other => panic!("after {} messages: {other:?}", seen.len()),
        }
    }
    assert_eq!(seen.len(), MESSAGES as usize);
    assert_eq!(seen.keys().next_back(), Some(&(MESSAGES - 1)));
    assert_drained_memory(pid, bound).await;
}
