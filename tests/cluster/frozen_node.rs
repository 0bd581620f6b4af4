//! A node frozen (SIGSTOP). With stores in flight, longer than `storeTimeout`: the streams
//! answered them meanwhile, and on waking the node reads those answers before it calls any
//! store unanswered. Every receipted SEND of a producer streaming into a topic and a queue
//! gets its RECEIPT, none an ERROR (a store failed for an answer that had come was refused
//! though kept, or sent again). With a publisher that moved to another node meanwhile: the
//! PUBLISH it left in the frozen node's socket is not stored a second time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::rig::Rig;
use crate::support::cluster_nodes::FerromqNode;
use crate::support::free_port;

/// `storeTimeout` 3 s (an attempt 750 ms); quorum and node timeouts past the freeze, so that
/// what the test sees is the stores' handling alone.
const ATTRIBUTES: &str = r#"replicas="3" messageShards="2" heartbeatInterval="500ms" quorumLossTimeout="15s" nodeTimeout="15s" storeTimeout="3s""#;

/// How long the node is stopped: past `storeTimeout`, within the duplicate window (20 s).
const FROZEN: Duration = Duration::from_millis(4500);

const SENDS: usize = 4000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_frozen_with_stores_in_flight_reads_their_answers_on_waking() {
    let Some(rig) = Rig::start_with(0, ATTRIBUTES, "").await else {
        return;
    };
    let stomp = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let file = rig.write_stomp_node("node-0", free_port(), "", stomp);
    let mut node = FerromqNode::start(&file);
    tokio::task::block_in_place(|| node.wait_serving());

    let mut socket = TcpStream::connect(stomp).await.expect("connect");
    socket
        .write_all(b"CONNECT\naccept-version:1.2\nhost:x\n\n\0")
        .await
        .expect("CONNECT");
    let (mut read, mut write) = socket.into_split();
    let producer = tokio::spawn(async move {
        for i in 0..SENDS {
            let destination = if i % 2 == 0 {
                "/topic/frozen.t"
            } else {
                "/queue/frozen.q"
            };
            let frame =
                format!("SEND\ndestination:{destination}\npersistent:true\nreceipt:r{i}\n\nm{i}\0");
            if write.write_all(frame.as_bytes()).await.is_err() {
                return i;
            }
        }
        SENDS
    });

    // Freeze the node once its stores stream, then wake it.
    let mut answers = Answers::default();
    answers
        .read_until(&mut read, 200, Duration::from_secs(20))
        .await;
    assert_eq!(answers.errors, Vec::<String>::new(), "before the freeze");
    assert!(answers.receipts >= 200, "the producer's first RECEIPTs");
    tokio::task::block_in_place(|| node.pause());
    tokio::time::sleep(FROZEN).await;
    node.resume();

    answers
        .read_until(&mut read, SENDS, Duration::from_secs(60))
        .await;
    let written = producer.await.expect("producer");
    assert_eq!(written, SENDS, "every SEND written");
    assert_eq!(
        answers.errors,
        Vec::<String>::new(),
        "no store failed for an answer that came while the node was stopped"
    );
    assert_eq!(answers.receipts, SENDS, "a RECEIPT for every SEND");
    drop(node);
    drop(rig);
}

/// The frames a producer's connection reads: RECEIPTs counted, ERROR texts kept.
#[derive(Default)]
struct Answers {
    buf: Vec<u8>,
    receipts: usize,
    errors: Vec<String>,
    connected: bool,
}

impl Answers {
    /// Read until `receipts` RECEIPTs, an ERROR, the close or `within`.
    async fn read_until(
        &mut self,
        read: &mut tokio::net::tcp::OwnedReadHalf,
        receipts: usize,
        within: Duration,
    ) {
        let deadline = Instant::now() + within;
        let mut chunk = vec![0u8; 64 * 1024];
        while self.receipts < receipts && self.errors.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let n = match tokio::time::timeout(left, read.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => n,
                _ => return,
            };
            self.buf.extend_from_slice(&chunk[..n]);
            while let Some(end) = self.buf.iter().position(|b| *b == 0) {
                let frame: Vec<u8> = self.buf.drain(..=end).collect();
                let text = String::from_utf8_lossy(&frame[..end]);
                let text = text.trim_start_matches(['\n', '\r']);
                match text.lines().next().unwrap_or_default() {
                    "RECEIPT" => self.receipts += 1,
                    "CONNECTED" => self.connected = true,
                    _ => self.errors.push(text.to_owned()),
                }
            }
        }
    }
}

/// A publisher whose node froze moves to another node and sends its unfinished PUBLISH
/// again there (QoS 1, and QoS 2 with its PUBREL); the frozen node, woken, finds the same
/// PUBLISH in its socket. The session is no longer the frozen node's: that copy is not
/// delivered a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_woken_node_does_not_store_what_a_session_taken_from_it_left_in_its_socket() {
    use ferromq::protocol::QoS;
    let Some(rig) = Rig::start(2, super::rig::FAST).await else {
        return;
    };
    left_in_the_socket(&rig, QoS::AtLeastOnce, "q1").await;
    left_in_the_socket(&rig, QoS::ExactlyOnce, "q2").await;
}

async fn left_in_the_socket(rig: &Rig, qos: ferromq::protocol::QoS, tag: &str) {
    use super::rig::{next_publish_within, puback_of, publish, v5_ok};
    use ferromq::protocol::{Ack, Packet, QoS};

    let topic = format!("z/{tag}");
    let (mut subscriber, _) = v5_ok(rig.addr(1), &format!("zs-{tag}"), false, Some(300)).await;
    // Delivered at QoS 1: what is counted is the publisher's side.
    subscriber
        .subscribe(1, &[(topic.as_str(), QoS::AtLeastOnce)])
        .await;
    let publisher_id = format!("zp-{tag}");
    let (mut stale, _) = v5_ok(rig.addr(0), &publisher_id, false, Some(300)).await;
    stale
        .send(publish(&topic, b"before", QoS::AtLeastOnce, Some(1)))
        .await;
    assert_eq!(puback_of(&mut stale, 1).await, 0);

    tokio::task::block_in_place(|| rig.nodes[0].pause());
    stale.send(publish(&topic, b"again", qos, Some(2))).await;
    // Its client gives up on the frozen node and resumes the session on the other one, where
    // it sends the unfinished PUBLISH again.
    let (mut moved, ack) = v5_ok(rig.addr(1), &publisher_id, false, Some(300)).await;
    assert!(ack.session_present, "{ack:?}");
    let mut again = publish(&topic, b"again", qos, Some(2));
    if let Packet::Publish(p) = &mut again {
        p.dup = true;
    }
    moved.send(again).await;
    if qos == QoS::ExactlyOnce {
        let pubrec = moved.recv_within(Duration::from_secs(10)).await;
        assert!(
            matches!(&pubrec, Some(Packet::PubRec(a)) if a.packet_id == 2 && a.reason == 0),
            "{pubrec:?}"
        );
        // The PUBREL the frozen node would also find, sent before the client moved.
        stale.send(Packet::PubRel(Ack::new(2))).await;
        moved.send(Packet::PubRel(Ack::new(2))).await;
        let pubcomp = moved.recv_within(Duration::from_secs(10)).await;
        assert!(
            matches!(&pubcomp, Some(Packet::PubComp(a)) if a.packet_id == 2),
            "{pubcomp:?}"
        );
    } else {
        assert_eq!(puback_of(&mut moved, 2).await, 0);
    }
    rig.nodes[0].resume();

    let mut bodies = Vec::new();
    while let Some(p) = next_publish_within(&mut subscriber, Duration::from_secs(5)).await {
        if let Some(id) = p.packet_id {
            subscriber.send(Packet::PubAck(Ack::new(id))).await;
        }
        bodies.push(String::from_utf8_lossy(&p.payload).into_owned());
    }
    assert_eq!(bodies, ["before", "again"], "{tag}: each once");
    drop(stale);
}

/// A client whose CONNECT to a frozen node went unanswered closes that socket (having pinged
/// while it waited, or not) and connects to another node. The frozen node, woken, finds the
/// CONNECT and the close behind it in the socket: it must not take the session from the node
/// where its client is live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_woken_node_does_not_claim_for_a_connect_whose_client_already_left() {
    let Some(rig) = Rig::start(2, super::rig::FAST).await else {
        return;
    };
    left_behind_a_connect(&rig, "zc-left", false).await;
    left_behind_a_connect(&rig, "zc-pinged", true).await;
}

async fn left_behind_a_connect(rig: &Rig, id: &str, pinged: bool) {
    use super::rig::{next_publish_within, publish, v5_ok};
    use ferromq::protocol::{Packet, QoS};

    let mut abandoned = connect_to_frozen_node(rig, id).await;
    if pinged {
        abandoned.send(Packet::PingReq).await;
    }
    abandoned
        .stream
        .shutdown()
        .await
        .expect("close the abandoned socket");
    let (mut live, _) = v5_ok(rig.addr(1), id, false, Some(300)).await;
    let topic = format!("{id}/t");
    live.subscribe(1, &[(topic.as_str(), QoS::AtMostOnce)])
        .await;
    rig.nodes[0].resume();
    // Time for the woken node to read the CONNECT and (wrongly) claim the session.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let (mut publisher, _) = v5_ok(rig.addr(1), &format!("{id}-publisher"), true, None).await;
    publisher
        .send(publish(&topic, b"still here", QoS::AtMostOnce, None))
        .await;
    let got = next_publish_within(&mut live, Duration::from_secs(5)).await;
    assert_eq!(
        got.map(|p| p.payload.to_vec()),
        Some(b"still here".to_vec()),
        "{id}: the live connection kept its session"
    );
    drop(abandoned);
}

/// The same stale CONNECT on a socket its client left open: the woken node cannot tell, and
/// claims the session (the client's live connection elsewhere is told "taken over"). The
/// woken node's check of the copy it held before the freeze must not undo that newer claim:
/// the stale connection is served, not refused with the session held nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_made_on_waking_is_not_undone_by_the_check_of_the_copy_held_before() {
    use super::rig::v5_ok;
    use ferromq::protocol::{ConnectReason, Packet};

    let Some(rig) = Rig::start(2, super::rig::FAST).await else {
        return;
    };
    let id = "zc-open";
    let (held, _) = v5_ok(rig.addr(0), id, false, Some(300)).await;
    let mut stale = connect_to_frozen_node(&rig, id).await;
    // The frozen node does not answer the kick: the other takes the session after the bound.
    let (mut live, ack) = v5_ok(rig.addr(1), id, false, Some(300)).await;
    assert!(ack.session_present, "{ack:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    rig.nodes[0].resume();
    let answer = stale.recv_within(Duration::from_secs(15)).await;
    match &answer {
        Some(Packet::ConnAck(ack)) => assert_eq!(
            ack.reason,
            ConnectReason::Success,
            "the claim the woken node made is served: {ack:?}"
        ),
        other => panic!("expected a CONNACK on the stale socket, got {other:?}"),
    }
    let kicked = live.recv_within(Duration::from_secs(5)).await;
    assert!(
        matches!(&kicked, Some(Packet::Disconnect(_)) | None),
        "the live connection lost the session to the newer claim: {kicked:?}"
    );
    drop((held, stale));
}

/// Freeze node 0 and write a persistent MQTT 5 CONNECT of `id` to it (the kernel accepts the
/// connection; nobody answers until the node is resumed).
async fn connect_to_frozen_node(rig: &Rig, id: &str) -> crate::support::client::RawClient {
    use crate::support::client::{connect_v5, RawClient};
    use ferromq::protocol::Packet;

    tokio::task::block_in_place(|| rig.nodes[0].pause());
    let mut client = RawClient::tcp(rig.addr(0)).await;
    client.version = ferromq::protocol::ProtocolVersion::V5;
    client
        .send(Packet::Connect(Box::new(connect_v5(id, false, Some(300)))))
        .await;
    client
}
