//! Between a CONNECT's claim and its attach, another node's claim can take the session: the
//! late connection must not start the session afresh on the first node (its fresh floors
//! would replace the record's and skip what was stored meanwhile). Two cluster engines run
//! in this process over a real 3-server NATS cluster, so that the test can put a claim of one
//! node between the claim and the attach of the other, which real clients hit only by chance
//! (S5 sees it about twice a run): a session starts on a node only when that node's latest
//! claim found none to resume.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use ferromq::broker::durability::{
    Backplane, Change, ClaimRequest, Claimed, Durability, DurabilityError, SessionData,
};
use ferromq::broker::session::SessionState;
use ferromq::cluster::codec::{InflightRef, SessionRecord};
use ferromq::cluster::subject::client_key;
use ferromq::cluster::{ClusterEngine, SESSIONS_BUCKET};
use ferromq::config::model::JetStreamSettings;

use crate::support::nats::{nats_server_or_skip, while_electing, NatsCluster};

/// An engine named `node_id` over `nats`, started as a broker starts it (without a broker),
/// once it counts the quorum as reachable.
pub(crate) async fn engine(nats: &NatsCluster, node_id: &str) -> ClusterEngine {
    let mut settings = JetStreamSettings::with_servers(nats.client_urls());
    settings.message_shards = 2;
    settings.heartbeat_interval_ms = 200;
    settings.quorum_loss_timeout_ms = 1_500;
    settings.node_timeout_ms = 2_000;
    settings.store_timeout_ms = 2_000;
    let engine = ClusterEngine::open(&settings, node_id)
        .await
        .expect("engine open");
    engine.start(Weak::new()).await.expect("engine start");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !engine.is_available() {
        assert!(Instant::now() < deadline, "{node_id}: no quorum");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    engine
}

fn request(client_id: &str, clean_start: bool) -> ClaimRequest {
    ClaimRequest {
        client_id: Arc::from(client_id),
        clean_start,
        persistent: true,
        will: None,
        take_over: true,
    }
}

/// What a claim answered, by name.
async fn claim(engine: &ClusterEngine, client_id: &str, clean_start: bool) -> &'static str {
    match engine.claim(request(client_id, clean_start)).await {
        Ok(Claimed::Here) => "here",
        Ok(Claimed::Image(_)) => "image",
        Ok(Claimed::InUse { .. }) => "in use",
        Err(e) => panic!("claim of {client_id} on {}: {e}", engine.node_id()),
    }
}

/// The attach's save of `client_id`'s session (connected).
async fn attach(engine: &ClusterEngine, client_id: &str) -> Result<(), DurabilityError> {
    let state = SessionState::new(client_id, true);
    engine
        .commit(vec![Change::SessionSaved(SessionData::of(&state))])
        .wait()
        .await
}

/// The owner and epoch `client_id`'s record names.
async fn record(nats: &NatsCluster, client_id: &str) -> (String, u64) {
    let bucket = bucket(nats).await;
    let record = read_record(&bucket, client_id).await;
    (record.owner, record.epoch)
}

/// `client_id`'s record.
async fn read_record(bucket: &async_nats::jetstream::kv::Store, client_id: &str) -> SessionRecord {
    let value = while_electing("read the record", || bucket.get(client_key(client_id))).await;
    SessionRecord::decode(&value.expect("a record")).expect("decode the record")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_taken_between_a_claim_and_its_attach_is_not_started_afresh() {
    let Some(_) = nats_server_or_skip() else {
        return;
    };
    let nats = NatsCluster::start(3).await;
    let a = engine(&nats, "node-a").await;
    let b = engine(&nats, "node-b").await;

    // A new session: the claim finds no record, the attach writes the first one.
    assert_eq!(claim(&a, "c", false).await, "here");
    attach(&a, "c")
        .await
        .expect("a new session starts where it was claimed");
    assert_eq!(record(&nats, "c").await, ("node-a".to_owned(), 1));

    // B takes it (kicking A), A takes it back: both restore it from the record.
    assert_eq!(claim(&b, "c", false).await, "image");
    attach(&b, "c").await.expect("B attaches what it restored");
    assert_eq!(claim(&a, "c", false).await, "image");
    // Before A's connection attaches, B's next claim takes the session again.
    assert_eq!(claim(&b, "c", false).await, "image");
    let late = attach(&a, "c").await;
    assert!(
        late.is_err(),
        "A's late attach of a session it let go was accepted"
    );
    attach(&b, "c").await.expect("B attaches");
    let (owner, epoch) = record(&nats, "c").await;
    assert_eq!(owner, "node-b", "the record is B's");
    assert_eq!(
        epoch, 4,
        "one epoch per claim that took the session, none more"
    );

    // A copy dropped after a claim that restored it (here: ended) is not made new either:
    // only a claim that found no session to resume starts one.
    assert_eq!(claim(&a, "c", false).await, "image");
    a.commit(vec![Change::SessionEnded {
        client_id: Arc::from("c"),
    }])
    .wait()
    .await
    .expect("end");
    assert!(
        attach(&a, "c").await.is_err(),
        "a session whose claim restored it was started afresh after its copy went"
    );

    // A clean start discards the session wherever it is: that claim starts a new one.
    assert_eq!(claim(&b, "c", true).await, "here");
    attach(&b, "c")
        .await
        .expect("a clean start's session starts here");
    assert_eq!(record(&nats, "c").await.0, "node-b");

    // A delivery of the session on A, which no longer holds it, is refused as stale (the
    // node that holds it would not know an exchange opened on A), not sent without its
    // state.
    let client_id: Arc<str> = Arc::from("c");
    let sent = a.commit(vec![Change::sent(&client_id, 1, 1)]).wait().await;
    assert!(matches!(sent, Err(DurabilityError::Stale(_))), "{sent:?}");
}

/// A node taking a session reads back the messages of its in-flight list one by one; a kick
/// from a third node during those reads must not hand over a copy lacking the entries not
/// read yet. The record lists 200 QoS 2 exchanges whose PUBREL is to be re-sent (no message
/// to read, but each entry is still looked for: about a millisecond apiece), so that C's
/// claim lands while B restores. The node after B must get every open exchange, else it
/// gives their packet ids to other messages while the client holds them open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_kicked_while_it_is_restored_hands_over_every_open_exchange() {
    const OPEN: u16 = 200;
    let Some(_) = nats_server_or_skip() else {
        return;
    };
    let nats = NatsCluster::start(3).await;
    let a = engine(&nats, "node-a").await;
    let b = engine(&nats, "node-b").await;
    let c = engine(&nats, "node-c").await;
    let bucket = bucket(&nats).await;

    // Node A owns the record (it does not track the session: it answers a kick at once).
    let record = SessionRecord {
        client_id: "hop".to_owned(),
        owner: a.node_id().to_owned(),
        epoch: 1,
        connected: false,
        // Left a moment ago (not expired).
        offline_since_ms: u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock after 1970")
                .as_millis(),
        )
        .expect("ms fit"),
        expiry_secs: Some(3600),
        mqtt5: true,
        subscriptions: Vec::new(),
        floors: vec![0, 0],
        inflight: (1..=OPEN)
            .map(|packet_id| InflightRef {
                shard: u32::from(packet_id % 2),
                seq: 1_000_000 + u64::from(packet_id),
                packet_id,
                qos: 2,
                subscription_id: None,
                released: true,
            })
            .collect(),
        done: Vec::new(),
        will: None,
        owner_instance: 0,
        incarnation: 7,
    };
    // Tried again while the bucket's raft group elects (see `read_record`).
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = bucket.create(client_key("hop"), record.encode()).await {
        // An earlier attempt that landed without its answer.
        if e.kind() == async_nats::jetstream::kv::CreateErrorKind::AlreadyExists {
            break;
        }
        assert!(Instant::now() < deadline, "write the record: {e}");
        eprintln!("writing the record again: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // B takes it and starts reading its in-flight list back; once B's claim is in the
    // record, C claims it from B.
    let b_claim = tokio::spawn(async move {
        let taken = b.claim(request("hop", false)).await;
        (b, taken)
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if read_record(&bucket, "hop").await.owner == "node-b" {
            break;
        }
        assert!(Instant::now() < deadline, "B never took the session");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let image = match c.claim(request("hop", false)).await {
        Ok(Claimed::Image(image)) => image,
        Ok(_) => panic!("C did not restore the session"),
        Err(e) => panic!("C's claim: {e}"),
    };
    let restored = image.state.inflight().len();
    assert_eq!(
        restored,
        usize::from(OPEN),
        "C restored {restored} of the {OPEN} open exchanges"
    );
    // B's claim either finished before C's kick (then it handed over a whole copy) or was
    // refused (it let the session go while restoring): never a partial hand-over.
    let (_b, _taken) = b_claim.await.expect("B's claim task");
    drop(a);
}

async fn bucket(nats: &NatsCluster) -> async_nats::jetstream::kv::Store {
    let client = async_nats::connect(nats.client_urls())
        .await
        .expect("NATS client");
    let js = async_nats::jetstream::new(client);
    while_electing("open the session bucket", || {
        js.get_key_value(SESSIONS_BUCKET)
    })
    .await
}

/// A QoS 2 PUBLISH read by a connection whose session this node no longer has (handed over
/// to another node while the client's old connection stayed open) names no publisher: the
/// broker's registry lost the session. It must still be taken as its exchange, which this
/// node cannot hold any more (refused: the client re-sends it where it resumed), not stored
/// as a plain publish, which was delivered at once and again at the re-send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qos2_publish_of_a_session_not_held_here_is_not_stored_as_a_plain_publish() {
    let Some(_) = nats_server_or_skip() else {
        return;
    };
    let nats = NatsCluster::start(3).await;
    let a = engine(&nats, "node-a").await;
    let message = ferromq::broker::message::Message {
        stamp: ferromq::broker::message::SampleStamp::NONE,
        topic: Arc::from("q2/left"),
        payload: bytes::Bytes::from_static(b"once"),
        qos: ferromq::protocol::QoS::ExactlyOnce,
        retain: false,
        v5: None,
    };
    let outcome = a
        .commit(vec![
            Change::Published {
                message,
                retained: ferromq::broker::durability::RetainedChange::Unchanged,
                publisher: None,
                store_id: None,
            },
            Change::InboundQos2Received {
                client_id: Arc::from("left"),
                packet_id: 1,
                connection: None,
            },
        ])
        .wait()
        .await;
    assert!(
        matches!(outcome, Err(DurabilityError::Stale(_))),
        "a QoS 2 PUBLISH of a session not held here was {outcome:?}"
    );
}
