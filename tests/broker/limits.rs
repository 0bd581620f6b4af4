//! Resource limits: maximumConnections, slow consumers (bounded queues, other clients and the
//! publisher unaffected), bind errors that name the connector.

use std::time::{Duration, Instant};

use crate::support::{
    activemq_xml, load_xml, pending_limit_policy, publish_packet, Client, RawClient, TestBroker,
    STEP,
};
use ferromq::broker::routing::limits::{pending_hard_cap, DEFAULT_SUBSCRIPTION_PREFETCH};
use ferromq::protocol::QoS;
use rumqttc::QoS as Q;

#[tokio::test]
async fn maximum_connections_closes_extra_sockets_at_accept() {
    let broker = TestBroker::with_uri_options(&["maximumConnections=2"]).await;
    let (_a, _) = RawClient::connected(broker.addr, "a", true).await;
    let (b, _) = RawClient::connected(broker.addr, "b", true).await;
    let mut extra = RawClient::tcp(broker.addr).await;
    assert!(extra.closed_within(Duration::from_secs(2)).await.is_some());
    assert_eq!(broker.handle.counters().connections_refused_limit, 1);
    // A slot frees when a connection ends.
    drop(b);
    let deadline = tokio::time::Instant::now() + STEP;
    while broker.handle.counters().connections_current > 1 {
        assert!(tokio::time::Instant::now() < deadline, "slot not released");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (_c, _) = RawClient::connected(broker.addr, "c", true).await;
    broker.shutdown().await;
}

#[tokio::test]
async fn slow_consumers_are_bounded_and_do_not_stall_others() {
    const LIMIT: usize = 5;
    // Enough that the QoS 0 subscriber's hard cap plus its socket buffers overflow.
    const MESSAGES: usize = 400;
    let policy = pending_limit_policy("slow.>", LIMIT);
    let broker = TestBroker::from_xml(&activemq_xml(&[], &policy)).await;

    // Two subscribers that never read their sockets (so never acknowledge either).
    let (mut stuck_qos1, _) = RawClient::connected(broker.addr, "stuck1", true).await;
    stuck_qos1
        .subscribe(1, &[("slow/#", QoS::AtLeastOnce)])
        .await;
    let (mut stuck_qos0, _) = RawClient::connected(broker.addr, "stuck0", true).await;
    stuck_qos0
        .subscribe(1, &[("slow/#", QoS::AtMostOnce)])
        .await;
    let mut fast = Client::connect(broker.addr, "fast").await;
    fast.subscribe("slow/#", Q::AtLeastOnce).await;

    let mut publ = Client::connect(broker.addr, "pub").await;
    let payload = vec![0x5a; 64 * 1024];
    let start = Instant::now();
    for i in 0..MESSAGES {
        publ.publish(&format!("slow/{i}"), Q::AtLeastOnce, false, &payload)
            .await;
        assert_eq!(fast.next_publish().await.topic, format!("slow/{i}"));
    }
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "publisher was slowed down"
    );

    // QoS 0 stays bounded by the hard cap; every acknowledged QoS 1 message is kept for the
    // stuck QoS 1 subscriber (memoryUsage bounds it, not a message count).
    let core = broker.handle.core().clone();
    let cap = pending_hard_cap(LIMIT);
    let stuck0 = core
        .registry
        .by_client_id("stuck0")
        .expect("session")
        .snapshot();
    assert!(
        stuck0.pending().len() <= cap,
        "{} queued",
        stuck0.pending().len()
    );
    let stuck1 = core
        .registry
        .by_client_id("stuck1")
        .expect("session")
        .snapshot();
    assert!(stuck1.inflight().len() <= DEFAULT_SUBSCRIPTION_PREFETCH);
    assert_eq!(stuck1.pending().len() + stuck1.inflight().len(), MESSAGES);
    let counters = broker.handle.counters();
    // stuck0 (QoS 0): the hard cap queued plus what the socket buffers hold; the rest evicted.
    let must_drop = (MESSAGES / 4) as u64;
    assert!(
        counters.dropped_queue_full >= must_drop,
        "dropped {} < {must_drop}",
        counters.dropped_queue_full
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn bind_error_names_the_connector_and_its_line() {
    let first = TestBroker::default().await;
    let xml = activemq_xml(&[], "").replace(
        r#"name="mqtt" uri="mqtt://127.0.0.1:0"#,
        &format!(
            r#"name="busy-connector" uri="mqtt://127.0.0.1:{}"#,
            first.addr.port()
        ),
    );
    let config = load_xml(&xml);
    let err = match ferromq::broker::start(config).await {
        Ok(_) => panic!("binding a port in use must fail"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("busy-connector"), "{err}");
    assert!(err.contains("<memory>.xml:5:"), "{err}");
    first.shutdown().await;
}

/// `limit="0"` is no limit, as in ActiveMQ (its `Usage` counts 0 % of a limit of 0): QoS 1
/// publishes held for an offline subscriber are all acknowledged, QoS 0 is delivered, and
/// nothing is refused or dropped, for `memoryUsage` and `storeUsage` alike.
#[tokio::test]
async fn a_limit_of_0_is_no_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let xml = crate::support::BrokerXml::new()
        .kahadb(dir.path())
        .child(
            r#"<systemUsage><systemUsage>
      <memoryUsage><memoryUsage limit="0"/></memoryUsage>
      <storeUsage><storeUsage limit="0 mb"/></storeUsage>
    </systemUsage></systemUsage>"#,
        )
        .mqtt(0, &[])
        .build();
    let broker = TestBroker::from_xml(&xml).await;
    let (mut kept, _) = RawClient::connected(broker.addr, "kept", false).await;
    kept.subscribe(1, &[("zero", QoS::AtLeastOnce)]).await;
    drop(kept);
    let (mut online, _) = RawClient::connected(broker.addr, "online", true).await;
    online.subscribe(1, &[("zero", QoS::AtMostOnce)]).await;

    let (mut publisher, _) = RawClient::connected(broker.addr, "pub", true).await;
    let payload = vec![b'x'; 400];
    for id in 1..=20u16 {
        publisher
            .send(publish_packet(
                "zero",
                &payload,
                QoS::AtLeastOnce,
                Some(id),
                false,
            ))
            .await;
        match publisher.recv_within(Duration::from_secs(2)).await {
            Some(ferromq::protocol::Packet::PubAck(a)) => assert_eq!(a.packet_id, id),
            other => panic!("QoS 1 publish {id} not acknowledged: {other:?}"),
        }
    }
    publisher
        .send(publish_packet("zero", b"q0", QoS::AtMostOnce, None, false))
        .await;
    let mut got_qos0 = false;
    for _ in 0..21 {
        let p = online.recv_publish().await;
        got_qos0 |= &p.payload[..] == b"q0";
    }
    assert!(got_qos0, "the QoS 0 publish was delivered");
    let counters = broker.handle.counters();
    assert_eq!(
        (
            counters.refused_memory_full,
            counters.refused_store_full,
            counters.dropped_memory_full
        ),
        (0, 0, 0)
    );
    broker.shutdown().await;
}
