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
use ferromq::cluster::codec::SessionRecord;
use ferromq::cluster::subject::client_key;
use ferromq::cluster::{ClusterEngine, SESSIONS_BUCKET};
use ferromq::config::model::JetStreamSettings;

use crate::support::nats::{nats_server_or_skip, NatsCluster};

/// An engine named `node_id` over `nats`, started as a broker starts it (without a broker),
/// once it counts the quorum as reachable.
async fn engine(nats: &NatsCluster, node_id: &str) -> ClusterEngine {
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
        Ok(Claimed::InUse) => "in use",
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
    let client = async_nats::connect(nats.client_urls())
        .await
        .expect("NATS client");
    let bucket = async_nats::jetstream::new(client)
        .get_key_value(SESSIONS_BUCKET)
        .await
        .expect("session bucket");
    let value = bucket
        .get(client_key(client_id))
        .await
        .expect("read the record")
        .expect("a record");
    let record = SessionRecord::decode(&value).expect("decode the record");
    (record.owner, record.epoch)
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
}
