//! Ordering rules of the connection task tested on the recording durability engine, over
//! in-process byte streams (`tokio::io::duplex`): no redb, no sockets.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_util::sync::CancellationToken;

use super::{serve, ConnectionParams, ListenerSettings};
use crate::broker::durability::{Change, Recording};
use crate::broker::runtime::BrokerCore;
use crate::protocol::{
    decode, encode, Ack, Connect, Packet, ProtocolVersion, Publish, QoS, RetainHandling, Subscribe,
    SubscriptionOptions,
};

const VERSION: ProtocolVersion = ProtocolVersion::V311;

fn core_with(recording: Arc<Recording>) -> (Arc<BrokerCore>, Arc<ListenerSettings>) {
    crate::broker::runtime::test_core(recording)
}

/// MQTT 3.1.1 CONNECT of a persistent session (clean session 0), no will.
fn persistent_connect(id: &str) -> Connect {
    Connect {
        protocol: VERSION,
        clean_start: false,
        keep_alive_secs: 0,
        client_id: id.into(),
        will: None,
        username: None,
        password: None,
        properties: None,
    }
}

/// A client on one end of an in-process stream whose other end a connection task serves.
struct Client {
    stream: DuplexStream,
    buf: BytesMut,
}

impl Client {
    /// A persistent session's client `id` connected, its CONNACK read.
    async fn connect(core: &Arc<BrokerCore>, listener: &Arc<ListenerSettings>, id: &str) -> Self {
        let mut client = Client::open(core, listener, persistent_connect(id)).await;
        assert!(matches!(client.next().await, Packet::ConnAck(_)));
        client
    }

    /// A new connection served by `core` with `connect` sent on it (nothing read yet).
    async fn open(
        core: &Arc<BrokerCore>,
        listener: &Arc<ListenerSettings>,
        connect: Connect,
    ) -> Self {
        let (ours, theirs) = tokio::io::duplex(256 * 1024);
        let params = ConnectionParams {
            core: core.clone(),
            listener: listener.clone(),
            peer: "127.0.0.1:1".parse().expect("addr"),
            tls: false,
            peer_cert_subject: None,
            shutdown: CancellationToken::new(),
        };
        tokio::spawn(serve(theirs, params));
        let mut client = Client {
            stream: ours,
            buf: BytesMut::new(),
        };
        client.send(Packet::Connect(Box::new(connect))).await;
        client
    }

    async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        encode(&packet, VERSION, &mut out).expect("encode");
        self.stream.write_all(&out).await.expect("write");
    }

    /// The next packet, or `None` when none arrives within `wait`.
    async fn next_within(&mut self, wait: Duration) -> Option<Packet> {
        loop {
            if let Some(packet) = decode(&mut self.buf, Some(VERSION), 1 << 20).expect("decode") {
                return Some(packet);
            }
            match tokio::time::timeout(wait, self.stream.read_buf(&mut self.buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                Ok(_) => panic!("connection closed"),
                Err(_) => return None,
            }
        }
    }

    /// The packets received until the connection closes, which must happen within `wait`.
    async fn until_closed(&mut self, wait: Duration) -> Vec<Packet> {
        let mut packets = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            while let Some(packet) = decode(&mut self.buf, Some(VERSION), 1 << 20).expect("decode")
            {
                packets.push(packet);
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                Ok(_) => return packets,
                Err(_) => panic!("still open after {wait:?}; received {packets:?}"),
            }
        }
    }

    async fn next(&mut self) -> Packet {
        self.next_within(Duration::from_secs(5))
            .await
            .expect("a packet within 5 s")
    }
}

fn publish_qos2(id: u16) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::ExactlyOnce,
        retain: false,
        topic: "t".into(),
        packet_id: Some(id),
        payload: Bytes::from_static(b"m"),
        properties: None,
    })
}

async fn subscriber(core: &Arc<BrokerCore>, listener: &Arc<ListenerSettings>) -> Client {
    let mut sub = Client::connect(core, listener, "sub").await;
    sub.send(Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![(
            "t".into(),
            SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                no_local: false,
                retain_as_published: false,
                retain_handling: RetainHandling::SendAtSubscribe,
            },
        )],
        properties: None,
    }))
    .await;
    assert!(matches!(sub.next().await, Packet::SubAck(_)));
    sub
}

#[tokio::test]
async fn pubrec_waits_until_the_message_is_kept() {
    let recording = Recording::new();
    let (core, listener) = core_with(recording.clone());
    let _sub = subscriber(&core, &listener).await;
    let mut publisher = Client::connect(&core, &listener, "pub").await;
    recording.hold_when(|c| matches!(c, Change::Message { .. }));
    publisher.send(publish_qos2(7)).await;
    assert_eq!(
        publisher.next_within(Duration::from_millis(300)).await,
        None,
        "PUBREC before the message was kept"
    );
    recording.release();
    assert_eq!(publisher.next().await, Packet::PubRec(Ack::new(7)));
}

#[tokio::test]
async fn qos2_delivery_waits_until_its_sent_state_is_kept_and_changes_come_in_order() {
    let recording = Recording::new();
    let (core, listener) = core_with(recording.clone());
    let mut sub = subscriber(&core, &listener).await;
    let mut publisher = Client::connect(&core, &listener, "pub").await;
    recording.hold_when(|c| matches!(c, Change::Sent { .. }));
    publisher.send(publish_qos2(7)).await;
    assert_eq!(publisher.next().await, Packet::PubRec(Ack::new(7)));
    assert_eq!(
        sub.next_within(Duration::from_millis(300)).await,
        None,
        "PUBLISH before its packet id was kept"
    );
    recording.release();
    let Packet::Publish(delivered) = sub.next().await else {
        panic!("expected the delivery");
    };
    let packet_id = delivered.packet_id.expect("QoS 2 delivery has a packet id");
    sub.send(Packet::PubRec(Ack::new(packet_id))).await;
    assert_eq!(sub.next().await, Packet::PubRel(Ack::new(packet_id)));
    sub.send(Packet::PubComp(Ack::new(packet_id))).await;
    publisher.send(Packet::PubRel(Ack::new(7))).await;
    assert_eq!(publisher.next().await, Packet::PubComp(Ack::new(7)));

    let changes = recording.changes();
    let position = |what: fn(&Change) -> bool| {
        changes
            .iter()
            .position(what)
            .unwrap_or_else(|| panic!("missing change in {changes:#?}"))
    };
    let queued =
        position(|c| matches!(c, Change::Message { queued_for, .. } if queued_for.len() == 1));
    let received = position(|c| matches!(c, Change::InboundQos2Received { packet_id: 7, .. }));
    let sent = position(|c| matches!(c, Change::Sent { .. }));
    let released = position(|c| matches!(c, Change::Released { .. }));
    let removed = position(|c| matches!(c, Change::Removed { .. }));
    let inbound_released =
        position(|c| matches!(c, Change::InboundQos2Released { packet_id: 7, .. }));
    assert!(
        queued < sent && sent < released && released < removed,
        "{changes:#?}"
    );
    assert!(received < inbound_released, "{changes:#?}");
}

/// A persistent QoS 2 subscriber that sent its PUBREC while the engine refuses to keep
/// released states.
struct RefusedRelease {
    recording: Arc<Recording>,
    core: Arc<BrokerCore>,
    listener: Arc<ListenerSettings>,
    sub: Client,
    packet_id: u16,
}

async fn pubrec_sent_while_releases_are_refused() -> RefusedRelease {
    let recording = Recording::new();
    let (core, listener) = core_with(recording.clone());
    let mut sub = subscriber(&core, &listener).await;
    let mut publisher = Client::connect(&core, &listener, "pub").await;
    recording.refuse_when(|c| matches!(c, Change::Released { .. }), unavailable());
    publisher.send(publish_qos2(7)).await;
    assert_eq!(publisher.next().await, Packet::PubRec(Ack::new(7)));
    let Packet::Publish(delivered) = sub.next().await else {
        panic!("expected the delivery");
    };
    let packet_id = delivered.packet_id.expect("QoS 2 delivery has a packet id");
    sub.send(Packet::PubRec(Ack::new(packet_id))).await;
    RefusedRelease {
        recording,
        core,
        listener,
        sub,
        packet_id,
    }
}

fn unavailable() -> Option<crate::broker::durability::DurabilityError> {
    Some(crate::broker::durability::DurabilityError::Unavailable(
        "test: store reopening".into(),
    ))
}

#[tokio::test]
async fn a_pubrel_waits_for_a_refused_release_to_be_kept_on_a_retry() {
    let RefusedRelease {
        recording,
        mut sub,
        packet_id,
        ..
    } = pubrec_sent_while_releases_are_refused().await;
    assert_eq!(
        sub.next_within(Duration::from_millis(500)).await,
        None,
        "PUBREL before the released state was kept"
    );
    recording.refuse_when(|_| false, None);
    assert_eq!(sub.next().await, Packet::PubRel(Ack::new(packet_id)));
    assert!(recording
        .changes()
        .iter()
        .any(|c| matches!(c, Change::Released { packet_id: p, .. } if *p == packet_id)));
}

/// The store refuses the released state for good: no PUBREL ever leaves; the connection is
/// closed, and the resumed session sends the PUBLISH again (DUP=1), as the store has it.
#[tokio::test(start_paused = true)]
async fn a_release_never_kept_closes_without_pubrel_and_the_publish_is_sent_again() {
    let RefusedRelease {
        recording,
        core,
        listener,
        mut sub,
        packet_id,
    } = pubrec_sent_while_releases_are_refused().await;
    let before_close = sub.until_closed(Duration::from_secs(120)).await;
    assert!(
        !before_close.iter().any(|p| matches!(p, Packet::PubRel(_))),
        "a PUBREL for a release never kept: {before_close:?}"
    );
    recording.refuse_when(|_| false, None);
    let mut sub = Client::connect(&core, &listener, "sub").await;
    let Packet::Publish(again) = sub.next().await else {
        panic!("expected the PUBLISH again");
    };
    assert!(again.dup, "re-sent with DUP");
    assert_eq!(again.packet_id, Some(packet_id));
    sub.send(Packet::PubRec(Ack::new(packet_id))).await;
    assert_eq!(sub.next().await, Packet::PubRel(Ack::new(packet_id)));
}

/// A persistent QoS 2 subscriber, and a QoS 2 message published to it while the engine
/// refuses its delivery states (the packet id each PUBLISH goes out with) with `error`.
async fn published_while_delivery_states_are_refused(
    error: crate::broker::durability::DurabilityError,
) -> (
    Arc<Recording>,
    Arc<BrokerCore>,
    Arc<ListenerSettings>,
    Client,
) {
    let recording = Recording::new();
    let (core, listener) = core_with(recording.clone());
    let sub = subscriber(&core, &listener).await;
    let mut publisher = Client::connect(&core, &listener, "pub").await;
    recording.refuse_when(|c| matches!(c, Change::Sent { .. }), Some(error));
    publisher.send(publish_qos2(7)).await;
    assert_eq!(publisher.next().await, Packet::PubRec(Ack::new(7)));
    (recording, core, listener, sub)
}

/// The next packet is the message's PUBLISH, and its delivery state was kept; its packet id.
async fn delivered_with_its_state_kept(sub: &mut Client, recording: &Recording) -> u16 {
    let Packet::Publish(delivered) = sub.next().await else {
        panic!("expected the delivery");
    };
    assert_eq!(&delivered.payload[..], b"m");
    let packet_id = delivered.packet_id.expect("QoS 2 has a packet id");
    assert!(recording
        .changes()
        .iter()
        .any(|c| matches!(c, Change::Sent { packet_id: p, .. } if *p == packet_id)));
    packet_id
}

/// The store refuses the state of a QoS 2 delivery (its packet id, before the PUBLISH)
/// because the session is no longer this broker's: the PUBLISH is not sent (an exchange the
/// session's owner does not know could collide with a packet id it gives another message) and
/// the connection closes; the resumed session delivers it.
#[tokio::test]
async fn a_qos2_delivery_of_a_session_that_left_is_not_sent_and_comes_at_the_resume() {
    let (recording, core, listener, mut sub) = published_while_delivery_states_are_refused(
        crate::broker::durability::DurabilityError::Stale("test: the session left".into()),
    )
    .await;
    let before_close = sub.until_closed(Duration::from_secs(10)).await;
    assert!(
        !before_close.iter().any(|p| matches!(p, Packet::Publish(_))),
        "a PUBLISH whose delivery state was not kept: {before_close:?}"
    );
    recording.refuse_when(|_| false, None);
    let mut sub = Client::connect(&core, &listener, "sub").await;
    let packet_id = delivered_with_its_state_kept(&mut sub, &recording).await;
    sub.send(Packet::PubRec(Ack::new(packet_id))).await;
    assert_eq!(sub.next().await, Packet::PubRel(Ack::new(packet_id)));
    sub.send(Packet::PubComp(Ack::new(packet_id))).await;
    assert_eq!(sub.next_within(Duration::from_millis(300)).await, None);
}

/// A store that refuses the state of a QoS 2 delivery for a while (unavailable: reopening, a
/// cluster store's election) holds the PUBLISH back, without closing, until a retry is kept.
#[tokio::test]
async fn a_qos2_delivery_waits_for_its_refused_state_to_be_kept_on_a_retry() {
    let (recording, _core, _listener, mut sub) =
        published_while_delivery_states_are_refused(unavailable().expect("an error")).await;
    assert_eq!(
        sub.next_within(Duration::from_millis(500)).await,
        None,
        "a PUBLISH before its delivery state was kept"
    );
    recording.refuse_when(|_| false, None);
    delivered_with_its_state_kept(&mut sub, &recording).await;
}

#[tokio::test]
async fn a_publish_the_engine_refuses_is_acknowledged_only_once_a_retry_is_kept() {
    let recording = Recording::new();
    let (core, listener) = core_with(recording.clone());
    let mut sub = subscriber(&core, &listener).await;
    let mut publisher = Client::connect(&core, &listener, "pub").await;
    recording.refuse_with(Some(crate::broker::durability::DurabilityError::Full(
        "test: store full".into(),
    )));
    publisher
        .send(Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "t".into(),
            packet_id: Some(5),
            payload: Bytes::from_static(b"kept"),
            properties: None,
        }))
        .await;
    assert_eq!(
        publisher.next_within(Duration::from_millis(300)).await,
        None,
        "PUBACK for a message the engine did not keep"
    );
    assert_eq!(sub.next_within(Duration::from_millis(50)).await, None);
    recording.refuse_with(None);
    assert_eq!(publisher.next().await, Packet::PubAck(Ack::new(5)));
    let Packet::Publish(delivered) = sub.next().await else {
        panic!("expected the delivery");
    };
    assert_eq!(&delivered.payload[..], b"kept");
}

/// A publish retried after the store refused it keeps the entry numbers of its first plan:
/// the same publisher's next publish, kept meanwhile, sorts after it, as a restart recovers
/// a session's queue in entry-number order (`runtime/replan.rs`).
#[tokio::test]
async fn a_publish_retried_after_a_refusal_keeps_its_place_in_the_entry_order() {
    let recording = Recording::new();
    let (core, listener) = core_with(recording.clone());
    let _sub = subscriber(&core, &listener).await;
    let mut publisher = Client::connect(&core, &listener, "pub").await;
    recording.refuse_when(
        |c| matches!(c, Change::Message { message, .. } if &message.payload[..] == b"first"),
        Some(crate::broker::durability::DurabilityError::Full(
            "test: store full".into(),
        )),
    );
    for (packet_id, payload) in [(5, "first"), (6, "second")] {
        publisher
            .send(Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: "t".into(),
                packet_id: Some(packet_id),
                payload: Bytes::from(payload),
                properties: None,
            }))
            .await;
    }
    let entry_of = |payload: &[u8]| {
        recording.changes().iter().find_map(|c| match c {
            Change::Message {
                message,
                queued_for,
                ..
            } if &message.payload[..] == payload => queued_for.first().map(|q| q.seq),
            _ => None,
        })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while entry_of(b"second").is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the second publish kept"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The first is retried (planned again) a few times while the second is kept.
    tokio::time::sleep(Duration::from_millis(100)).await;
    recording.refuse_when(|_| false, None);
    assert_eq!(publisher.next().await, Packet::PubAck(Ack::new(5)));
    assert_eq!(publisher.next().await, Packet::PubAck(Ack::new(6)));
    let (first, second) = (entry_of(b"first"), entry_of(b"second"));
    assert!(
        first.is_some() && first < second,
        "entries in publish order: first {first:?}, second {second:?}"
    );
}

/// A drain's "Use another server" is the node shutting down in the access log and the
/// metrics; a lost quorum's is the store being unavailable. Both send DISCONNECT 0x9C.
#[test]
fn a_drain_is_logged_as_a_shutdown_and_a_lost_quorum_as_the_store() {
    use super::CloseReason;
    use crate::metrics::Reason;
    let drained = CloseReason::UseAnotherServer { draining: true };
    let unkept = CloseReason::UseAnotherServer { draining: false };
    assert_eq!(drained.metric_reason(), Reason::ServerShutdown);
    assert_eq!(unkept.metric_reason(), Reason::StoreUnavailable);
    assert_eq!(drained.server_disconnect_code(), Some(0x9C));
    assert_eq!(unkept.server_disconnect_code(), Some(0x9C));
    assert!(drained.to_string().contains("draining"), "{drained}");
}

/// A PUBLISH above a cluster node's cap is logged with a hint that names NATS's
/// `max_payload`, not `wireFormat.maxFrameSize` (which cannot lift the cap); elsewhere, and
/// below the cap, the codec's own hint stands.
#[test]
fn a_publish_above_the_cluster_cap_names_max_payload() {
    use super::CloseReason;
    use crate::protocol::DecodeError;
    let cap = 1_047_552;
    let listener_max = 256 << 20;
    let over_cap = CloseReason::Malformed(DecodeError::TooLarge {
        size: 2_000_000,
        max: cap,
    });
    let text = over_cap.describe(Some(cap), listener_max);
    assert!(
        text.contains("raise max_payload in the NATS servers' configuration to accept it"),
        "{text}"
    );
    assert!(
        text.contains("2000000 bytes") && text.contains("1047552 bytes"),
        "{text}"
    );
    assert!(!text.contains("maxFrameSize"), "{text}");
    // Above both: both are named.
    let over_both = over_cap.describe(Some(cap), 1_000_000);
    assert!(
        over_both.contains("max_payload") && over_both.contains("wireFormat.maxFrameSize"),
        "{over_both}"
    );
    // A single node: raise maxFrameSize.
    let single = over_cap.describe(None, 1_000_000);
    assert!(single.contains("raise wireFormat.maxFrameSize"), "{single}");
    // Above a listener limit below the cap: maxFrameSize is the one to raise.
    let under_cap = CloseReason::Malformed(DecodeError::TooLarge {
        size: 5000,
        max: 4096,
    });
    let text = under_cap.describe(Some(cap), 4096);
    assert!(
        text.contains("raise wireFormat.maxFrameSize") && !text.contains("max_payload"),
        "{text}"
    );
}

/// A single broker whose store refuses a persistent session's save at once (reopening after
/// a failed write) refuses the CONNECT with 0x88 (MQTT 3.1.1 return code 3, Server
/// unavailable) instead of serving a session it cannot keep; once the store takes writes
/// again the client's next CONNECT is served, and the session's save is recorded.
#[tokio::test]
async fn a_connect_whose_session_the_store_refuses_at_once_is_refused_server_unavailable() {
    let recording = Recording::new();
    let (core, listener) = core_with(recording.clone());
    recording.refuse_when(|c| matches!(c, Change::SessionSaved(_)), unavailable());
    let mut refused = Client::open(&core, &listener, persistent_connect("kept")).await;
    let answer = refused.until_closed(Duration::from_secs(5)).await;
    match answer.as_slice() {
        [Packet::ConnAck(ack)] => assert_eq!(
            ack.reason,
            crate::protocol::ConnectReason::ServerUnavailable,
            "{ack:?}"
        ),
        other => panic!("expected one CONNACK refusing the CONNECT, got {other:?}"),
    }
    assert!(!recording
        .changes()
        .iter()
        .any(|c| matches!(c, Change::SessionSaved(_))));

    recording.refuse_when(|_| false, None);
    let _served = Client::connect(&core, &listener, "kept").await;
    assert!(recording
        .changes()
        .iter()
        .any(|c| matches!(c, Change::SessionSaved(d) if &*d.client_id == "kept")));
}

/// A persistent publisher's QoS 2 PUBLISH whose commit the engine holds, then the client's
/// new connection taking the session over and sending it again (DUP): the re-send's
/// connection, with the first copy's commit still on its way.
async fn qos2_resent_while_its_first_copy_is_stored() -> (
    Arc<Recording>,
    Arc<BrokerCore>,
    Arc<ListenerSettings>,
    Client,
) {
    let recording = Recording::new();
    let (core, listener) = core_with(recording.clone());
    recording.hold_when(|c| matches!(c, Change::InboundQos2Received { .. }));
    let mut first = Client::connect(&core, &listener, "q2pub").await;
    first.send(publish_qos2(5)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !recording
        .changes()
        .iter()
        .any(|c| matches!(c, Change::InboundQos2Received { packet_id: 5, .. }))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first copy never reached the store"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut again = Client::connect(&core, &listener, "q2pub").await;
    let Packet::Publish(mut resent) = publish_qos2(5) else {
        unreachable!("publish_qos2 makes a PUBLISH");
    };
    resent.dup = true;
    again.send(Packet::Publish(resent)).await;
    (recording, core, listener, again)
}

/// The first copy's commit fails (a store I/O error) after the client re-sent it on a new
/// connection: the re-send gets no PUBREC (it would stand for a message nobody stored); the
/// connection closes, and the client's next re-send is stored and acknowledged.
#[tokio::test]
async fn a_resent_qos2_publish_is_not_acknowledged_for_a_first_copy_the_store_failed() {
    let (recording, core, listener, mut again) = qos2_resent_while_its_first_copy_is_stored().await;
    assert_eq!(
        again.next_within(Duration::from_millis(300)).await,
        None,
        "PUBREC before the first copy's commit answered"
    );
    recording.fail_held();
    let before_close = again.until_closed(Duration::from_secs(5)).await;
    assert!(
        !before_close.iter().any(|p| matches!(p, Packet::PubRec(_))),
        "PUBREC for a message the store did not keep: {before_close:?}"
    );
    let stored_before = recording
        .changes()
        .iter()
        .filter(|c| matches!(c, Change::InboundQos2Received { packet_id: 5, .. }))
        .count();
    let mut third = Client::connect(&core, &listener, "q2pub").await;
    third.send(publish_qos2(5)).await;
    assert_eq!(third.next().await, Packet::PubRec(Ack::new(5)));
    let stored_after = recording
        .changes()
        .iter()
        .filter(|c| matches!(c, Change::InboundQos2Received { packet_id: 5, .. }))
        .count();
    assert_eq!(
        stored_after,
        stored_before + 1,
        "stored again, then acknowledged"
    );
}

/// The first copy's commit lands after the re-send: the re-send's PUBREC follows it, and the
/// message is not stored twice.
#[tokio::test]
async fn a_resent_qos2_publish_is_acknowledged_once_its_first_copy_is_kept() {
    let (recording, _core, _listener, mut again) =
        qos2_resent_while_its_first_copy_is_stored().await;
    assert_eq!(
        again.next_within(Duration::from_millis(300)).await,
        None,
        "PUBREC before the first copy's commit answered"
    );
    recording.release();
    assert_eq!(again.next().await, Packet::PubRec(Ack::new(5)));
    let stored = recording
        .changes()
        .iter()
        .filter(|c| matches!(c, Change::InboundQos2Received { packet_id: 5, .. }))
        .count();
    assert_eq!(stored, 1, "stored once");
}

/// A connected client's will is charged to `memoryUsage` from its CONNECT (a large will is
/// held for the connection's whole life), and the charge ends with the connection, whether
/// the will is discarded (DISCONNECT) or published (a dropped socket).
#[tokio::test]
async fn a_connected_clients_will_is_charged_until_its_connection_ends() {
    let recording = Recording::new();
    let (core, listener) = core_with(recording);
    let before = core.memory.used_bytes();
    let will_payload = vec![7u8; 60 * 1024];
    let open = |id: &'static str| {
        let (core, listener) = (core.clone(), listener.clone());
        let will = crate::protocol::LastWill {
            topic: "wills/w".into(),
            payload: Bytes::from(will_payload.clone()),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: None,
        };
        async move {
            let connect = Connect {
                clean_start: true,
                will: Some(will),
                ..persistent_connect(id)
            };
            let mut client = Client::open(&core, &listener, connect).await;
            assert!(matches!(client.next().await, Packet::ConnAck(_)));
            client
        }
    };
    let wait_for = |want: u64| {
        let core = core.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while core.memory.used_bytes() != want {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "memoryUsage {} bytes, expected {want}",
                    core.memory.used_bytes()
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    let will_bytes = (will_payload.len() + "wills/w".len()) as u64;

    let mut discarding = open("will-1").await;
    wait_for(before + will_bytes).await;
    let dropping = open("will-2").await;
    wait_for(before + 2 * will_bytes).await;
    discarding
        .send(Packet::Disconnect(crate::protocol::Disconnect {
            reason: 0,
            properties: None,
        }))
        .await;
    wait_for(before + will_bytes).await;
    drop(dropping);
    wait_for(before).await;
}
