//! MQTT 5 limits stated or obeyed around CONNACK, with exact packets from a raw client on our
//! codec: the listener's `wireFormat.maxFrameSize` announced as Maximum Packet Size, the
//! Session Expiry Interval capped by `offlineDurableSubscriberTimeout`, a CONNACK that fits
//! the client's Maximum Packet Size (or none at all), and in-flight messages too large for a
//! resumed client's new Maximum Packet Size.

use std::time::Duration;

use bytes::BytesMut;
use ferromq::protocol::{encode, Connect, Packet, Properties, ProtocolVersion, QoS};

use crate::support::{
    ack, activemq_xml, connect_v5, publish_packet, BrokerXml, RawClient, TestBroker,
};

/// How long "nothing arrives" is watched for.
const QUIET: Duration = Duration::from_millis(300);

fn connect_with(id: &str, clean_start: bool, properties: Properties) -> Connect {
    let mut connect = connect_v5(id, clean_start, None);
    connect.properties = Some(Box::new(properties));
    connect
}

/// Size on the wire of `packet` (our codec encodes deterministically).
fn wire_size(packet: &Packet) -> usize {
    let mut out = BytesMut::new();
    encode(packet, ProtocolVersion::V5, &mut out).expect("encode");
    out.len()
}

// --- Maximum Packet Size of the listener ----------------------------------------------------

#[tokio::test]
async fn connack_announces_max_frame_size_as_the_whole_packet_size_the_broker_accepts() {
    let default = TestBroker::default().await;
    let (_c, connack) = RawClient::connect_ok(default.addr, connect_v5("d", true, None)).await;
    let props = connack.properties.unwrap_or_default();
    assert_eq!(
        props.maximum_packet_size, None,
        "no limit beyond the protocol's"
    );

    let broker = TestBroker::with_uri_options(&["wireFormat.maxFrameSize=1000"]).await;
    let (mut c, connack) = RawClient::connect_ok(broker.addr, connect_v5("m", true, None)).await;
    let announced = connack
        .properties
        .and_then(|p| p.maximum_packet_size)
        .expect("Maximum Packet Size announced");
    // Remaining Length 1000 (the codec's limit) + 1 type byte + 2 length bytes.
    assert_eq!(announced, 1003);
    // A PUBLISH of exactly the announced size is accepted, one byte more is refused.
    let fits = publish_packet("mf", &[b'x'; 993], QoS::AtLeastOnce, Some(1), false);
    assert_eq!(wire_size(&fits), 1003);
    c.send(fits).await;
    assert!(matches!(c.recv().await, Packet::PubAck(a) if a.packet_id == 1));
    let too_large = publish_packet("mf", &[b'x'; 994], QoS::AtLeastOnce, Some(2), false);
    assert_eq!(wire_size(&too_large), 1004);
    c.send(too_large).await;
    match c.recv().await {
        Packet::Disconnect(d) => assert_eq!(d.reason, 0x95, "{d:?}"),
        other => panic!("expected DISCONNECT 0x95, got {other:?}"),
    }
}

// --- Session Expiry Interval capped by offlineDurableSubscriberTimeout ----------------------

#[tokio::test]
async fn connack_carries_the_session_expiry_interval_the_offline_timeout_imposes() {
    let xml = BrokerXml::new()
        .attributes(r#"offlineDurableSubscriberTimeout="5500""#)
        .mqtt(0, &[])
        .build();
    let broker = TestBroker::from_xml(&xml).await;
    let granted = |requested: Option<u32>| {
        let addr = broker.addr;
        async move {
            let (_c, connack) =
                RawClient::connect_ok(addr, connect_v5("exp", true, requested)).await;
            connack.properties.and_then(|p| p.session_expiry_interval)
        }
    };
    assert_eq!(granted(Some(3600)).await, Some(5), "capped, whole seconds");
    assert_eq!(
        granted(Some(u32::MAX)).await,
        Some(5),
        "never-expiring capped too"
    );
    assert_eq!(
        granted(Some(5)).await,
        None,
        "the client's own value stands"
    );
    assert_eq!(granted(None).await, None);

    let uncapped = TestBroker::from_xml(&activemq_xml(&[], "")).await;
    let (_c, connack) =
        RawClient::connect_ok(uncapped.addr, connect_v5("exp", true, Some(3600))).await;
    assert_eq!(
        connack.properties.and_then(|p| p.session_expiry_interval),
        None
    );
}

// --- CONNACK within the client's Maximum Packet Size ----------------------------------------

#[tokio::test]
async fn connack_leaves_out_optional_properties_to_fit_the_clients_maximum_packet_size() {
    let broker = TestBroker::default().await;
    let asks = |maximum_packet_size| Properties {
        maximum_packet_size,
        request_response_information: Some(1),
        ..Properties::default()
    };
    let (_c, full) =
        RawClient::connect_ok(broker.addr, connect_with("roomy", true, asks(None))).await;
    let full_size = wire_size(&Packet::ConnAck(full.clone()));
    assert!(full
        .properties
        .as_ref()
        .and_then(|p| p.response_information.clone())
        .is_some());
    assert!(full_size > 20, "{full_size}");

    let (mut c, small) =
        RawClient::connect_ok(broker.addr, connect_with("tight", true, asks(Some(20)))).await;
    assert!(
        wire_size(&Packet::ConnAck(small.clone())) <= 20,
        "{small:?}"
    );
    let props = small.properties.unwrap_or_default();
    assert_eq!(props.response_information, None);
    assert!(
        props.receive_maximum.is_some(),
        "what changes the meaning stays"
    );
    // The connection works.
    assert_eq!(c.subscribe(1, &[("t", QoS::AtMostOnce)]).await, vec![0]);
}

#[tokio::test]
async fn a_client_whose_maximum_packet_size_no_connack_fits_is_closed_without_connack() {
    let broker = TestBroker::default().await;
    let mut c = RawClient::tcp(broker.addr).await;
    c.version = ProtocolVersion::V5;
    let props = Properties {
        maximum_packet_size: Some(8),
        ..Properties::default()
    };
    c.send(Packet::Connect(Box::new(connect_with("tiny", true, props))))
        .await;
    assert_eq!(c.recv_within(Duration::from_secs(5)).await, None);
    c.expect_closed().await;
    // Nothing was attached: the id is free and a normal client connects.
    let (_ok, connack) = RawClient::connect_ok(broker.addr, connect_v5("tiny", false, None)).await;
    assert!(!connack.session_present);
}

// --- In-flight messages re-sent after a resume ----------------------------------------------

#[tokio::test]
async fn inflight_messages_too_large_for_the_resumed_client_are_discarded_as_if_acknowledged() {
    let broker = TestBroker::default().await;
    let session = |maximum_packet_size| Properties {
        session_expiry_interval: Some(600),
        maximum_packet_size,
        ..Properties::default()
    };
    let (mut sub, _) =
        RawClient::connect_ok(broker.addr, connect_with("sub", true, session(None))).await;
    sub.subscribe(1, &[("big/#", QoS::ExactlyOnce)]).await;
    let (mut publisher, _) =
        RawClient::connect_ok(broker.addr, connect_v5("pub", true, None)).await;
    let messages: [(&str, &[u8], QoS); 3] = [
        ("big/1", &[b'a'; 200], QoS::AtLeastOnce),
        ("big/2", b"small", QoS::AtLeastOnce),
        ("big/3", &[b'c'; 200], QoS::ExactlyOnce),
    ];
    for (n, (topic, payload, qos)) in messages.iter().enumerate() {
        let id = n as u16 + 1;
        publisher
            .send(publish_packet(topic, payload, *qos, Some(id), false))
            .await;
        match publisher.recv().await {
            Packet::PubAck(a) | Packet::PubRec(a) => assert_eq!(a.packet_id, id),
            other => panic!("expected PUBACK/PUBREC, got {other:?}"),
        }
    }
    // Received, never acknowledged.
    for (topic, _, _) in &messages {
        assert_eq!(&*sub.recv_publish().await.topic, *topic);
    }
    drop(sub);
    let dropped_before = broker.handle.counters().dropped_packet_too_large;

    // Receive Maximum 1: big/3 waits behind big/2 and is discarded when big/2 ends.
    let narrow = Properties {
        receive_maximum: Some(1),
        ..session(Some(64))
    };
    let (mut resumed, connack) =
        RawClient::connect_ok(broker.addr, connect_with("sub", false, narrow)).await;
    assert!(connack.session_present);
    let resent = resumed.recv_publish().await;
    assert_eq!((&*resent.topic, resent.dup), ("big/2", true));
    assert!(wire_size(&Packet::Publish(resent.clone())) <= 64);
    assert_eq!(
        resumed.recv_within(QUIET).await,
        None,
        "nothing larger follows"
    );
    let dropped = || broker.handle.counters().dropped_packet_too_large - dropped_before;
    assert_eq!(dropped(), 1, "big/1");
    resumed
        .send(Packet::PubAck(ack(resent.packet_id.expect("QoS 1 id"))))
        .await;
    assert_eq!(resumed.recv_within(QUIET).await, None, "big/3 is not sent");
    assert_eq!(dropped(), 2, "big/3 too");
    drop(resumed);

    // The discarded exchanges are over: a client with room again gets nothing re-sent.
    let (mut roomy, connack) =
        RawClient::connect_ok(broker.addr, connect_with("sub", false, session(None))).await;
    assert!(connack.session_present);
    assert_eq!(roomy.recv_within(QUIET).await, None);
}

// --- A CONNECT's size before login ----------------------------------------------------------

/// A socket that has not logged in cannot make the broker buffer a CONNECT past 1 MiB (the
/// default `maxFrameSize` is 256 MiB): the connection closes once the declared length is
/// known to be larger. A CONNECT at the protocol's field limits (65,535-byte will payload and
/// password) still logs in.
#[tokio::test]
async fn a_connect_larger_than_a_login_needs_is_closed_before_it_is_buffered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let broker = TestBroker::default().await;
    let mut socket = tokio::net::TcpStream::connect(broker.addr)
        .await
        .expect("connect");
    // CONNECT, remaining length 2 MiB (variable byte integer 0x80 0x80 0x80 0x01), then
    // 1.1 MiB of it.
    let mut bytes = vec![0x10, 0x80, 0x80, 0x80, 0x01];
    bytes.extend(std::iter::repeat_n(0u8, 1_100_000));
    let _ = socket.write_all(&bytes).await;
    let mut sink = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut sink)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the broker kept the socket open: {closed:?}"
    );

    let mut connect = connect_v5("big-login", true, None);
    connect.username = Some("u".into());
    connect.password = Some(bytes::Bytes::from(vec![b'p'; 65_535]));
    connect.will = Some(ferromq::protocol::LastWill {
        topic: "w/t".into(),
        payload: bytes::Bytes::from(vec![b'w'; 65_535]),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: None,
    });
    let (_client, connack) = RawClient::connect_ok(broker.addr, connect).await;
    assert_eq!(connack.reason, ferromq::protocol::ConnectReason::Success);
    broker.shutdown().await;
}
