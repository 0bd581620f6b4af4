//! The web console of a cluster node lists the persistent sessions the cluster keeps that its
//! broker does not hold (released by a drained node: no node holds them; or held by another
//! node), and its delete ends one across the cluster: a client resuming it afterwards finds
//! no session (session present 0) and none of what was queued for it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ferromq::broker::durability::Backplane;
use ferromq::cluster::codec::SessionRecord;
use ferromq::cluster::subject::client_key;
use ferromq::cluster::SESSIONS_BUCKET;
use ferromq::protocol::{Disconnect, Packet, QoS};
use serde_json::Value;

use super::rig::{no_publish, publish_acked, take_acked, v3_ok, v5_ok, Rig, FAST};
use crate::console_http::{act, get};
use crate::support::cluster_nodes::FerromqNode;
use crate::support::nats::{nats_server_or_skip, while_electing, NatsCluster};
use crate::support::{free_port, STEP};

const REALM: &str = "admin: adminpw, admin\nviewer: viewerpw, user\n";
const ADMIN: (&str, &str) = ("admin", "adminpw");
const VIEWER: (&str, &str) = ("viewer", "viewerpw");

/// A node `name` over the rig's NATS cluster with its web console on `console`.
fn console_node(rig: &Rig, name: &str, console: SocketAddr) -> FerromqNode {
    console_node_with(rig, name, console, None)
}

/// [`console_node`] with a STOMP connector on `stomp` when given.
fn console_node_with(
    rig: &Rig,
    name: &str,
    console: SocketAddr,
    stomp: Option<SocketAddr>,
) -> FerromqNode {
    let realm = rig.dir.path().join("jetty-realm.properties");
    std::fs::write(&realm, REALM).expect("realm");
    let element = format!(
        r#"<console xmlns="urn:ferromq" host="127.0.0.1" port="{}" realm="{}"/>"#,
        console.port(),
        realm.display()
    );
    let file = match stomp {
        Some(stomp) => rig.write_stomp_node(name, free_port(), &element, stomp),
        None => rig.write_node(name, free_port(), &element),
    };
    let mut node = FerromqNode::start(&file);
    tokio::task::block_in_place(|| node.wait_serving());
    node
}

/// `/api/sessions`' entry for `client_id`, if listed.
fn listed<'a>(answer: &'a Value, client_id: &str) -> Option<&'a Value> {
    answer["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .find(|s| s["client_id"] == client_id)
}

/// `/api/sessions` until `until` holds of it (the listing is read again every few seconds).
async fn sessions_until(console: SocketAddr, what: &str, until: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + STEP * 3;
    loop {
        let answer = get(console, "/api/sessions", Some(VIEWER)).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        let json = answer.json();
        if until(&json) {
            return json;
        }
        assert!(Instant::now() < deadline, "{what}: {json:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_lists_and_deletes_the_sessions_its_node_does_not_hold() {
    let Some(mut rig) = Rig::start(2, FAST).await else {
        return;
    };
    let console: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let console_node = console_node(&rig, "node-c", console);
    let watched = console_node.mqtt_addr();

    // The node keeps no store of its own: the overview and `ferromq status` say where its
    // messages are instead of an empty store's figures.
    let overview = get(console, "/api/overview", Some(VIEWER)).await.json();
    assert_eq!(overview["store"]["kind"], "cluster", "{overview:#}");
    let url = format!("http://{console}");
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_ferromq"))
            .args(["status", "--console", &url, "--username", VIEWER.0])
            .args(["--password-env", "CONSOLE_PW"])
            .env("CONSOLE_PW", VIEWER.1)
            .output()
            .expect("run status")
    })
    .await
    .expect("status ran");
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{status:?}");
    assert!(
        stdout.contains("store: in the cluster (NATS JetStream)") && !stdout.contains("0 of 0"),
        "{stdout}"
    );

    // A persistent subscriber on node 0, which drains: its session is released into the
    // cluster's records with no owner.
    let (mut released, _) = v3_ok(rig.addr(0), "kept-released", false).await;
    released.subscribe(1, &[("ks/#", QoS::AtLeastOnce)]).await;
    // A persistent MQTT 5 subscriber connected to node 1: held there.
    let (mut busy, _) = v5_ok(rig.addr(1), "kept-busy", false, Some(600)).await;
    busy.subscribe(1, &[("kb/#", QoS::AtLeastOnce)]).await;
    // A persistent session offline on the console's own node: listed once, as its broker's.
    let (mut local, _) = v3_ok(watched, "kept-local", false).await;
    local
        .send(Packet::Disconnect(Disconnect {
            reason: 0,
            properties: None,
        }))
        .await;
    local.expect_closed().await;

    let status = tokio::task::block_in_place(|| rig.nodes[0].terminate());
    assert!(status.is_some_and(|s| s.success()), "drained: {status:?}");
    released.expect_closed().await;
    // Queued for the released session while no node holds it.
    let (mut publisher, _) = v5_ok(rig.addr(1), "kept-pub", true, None).await;
    assert_eq!(publish_acked(&mut publisher, "ks/1", b"queued", 1).await, 0);

    let answer = sessions_until(console, "the released session is listed", |json| {
        listed(json, "kept-released").is_some() && listed(json, "kept-local").is_some()
    })
    .await;
    let entry = listed(&answer, "kept-released").expect("listed");
    assert_eq!(entry["connected"], false, "{entry}");
    assert_eq!(entry["held_by"], "cluster (no node)", "{entry}");
    assert_eq!(entry["here"], false, "{entry}");
    assert_eq!(entry["persistent"], true, "{entry}");
    assert_eq!(entry["subscriptions"], 1, "{entry}");
    assert!(entry["last_seen_unix_ms"].as_u64().is_some(), "{entry}");
    let entry = listed(&answer, "kept-busy").expect("the other node's session is listed");
    assert_eq!(entry["connected"], true, "{entry}");
    assert_eq!(entry["held_by"], "node-1", "{entry}");
    assert_eq!(entry["expiry_secs"], 600, "{entry}");
    let local_entries: Vec<&Value> = answer["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .filter(|s| s["client_id"] == "kept-local")
        .collect();
    assert_eq!(local_entries.len(), 1, "once: {answer:#}");
    assert_eq!(local_entries[0]["held_by"], "node-c");
    assert_eq!(local_entries[0]["here"], true);
    let cluster = &answer["cluster"];
    assert_eq!(cluster["truncated"], false, "{cluster}");
    assert_eq!(cluster["records_unread"], 0, "{cluster}");
    assert!(cluster["error"].is_null(), "{cluster}");
    assert_eq!(cluster["limit"], 1000, "{cluster}");

    // A session whose client is connected on another node is not ended.
    let refused = act(console, "/api/sessions/kept-busy/delete", ADMIN).await;
    assert_eq!(refused.status, 409, "{}", refused.text());
    assert_eq!(refused.json()["held_by"], "node-1");
    no_publish(&mut busy, Duration::from_millis(300)).await;
    assert!(
        busy.closed_within(Duration::from_millis(100))
            .await
            .is_none(),
        "kept its connection"
    );

    // The released one is ended across the cluster.
    let deleted = act(console, "/api/sessions/kept-released/delete", ADMIN).await;
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    assert_eq!(deleted.json()["held_by"], "cluster (no node)");
    let unknown = act(console, "/api/sessions/kept-never/delete", ADMIN).await;
    assert_eq!(unknown.status, 404, "{}", unknown.text());
    let answer = get(console, "/api/sessions", Some(VIEWER)).await.json();
    assert!(listed(&answer, "kept-released").is_none(), "{answer:#}");

    // Its client resumes on a live node: no session, nothing of what was queued.
    let (mut again, ack) = v3_ok(rig.addr(1), "kept-released", false).await;
    assert!(!ack.session_present, "the session was ended");
    no_publish(&mut again, Duration::from_secs(1)).await;

    // The busy one still works on its node.
    assert_eq!(publish_acked(&mut publisher, "kb/1", b"x", 2).await, 0);
    take_acked(&mut busy, 1).await;
}

/// A delete that races a client resuming the session on another node: the console reads the
/// record naming the node that held it, the client is connected elsewhere by the time the
/// claim asks, and the 409 names where it is connected now, not where it was read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_delete_names_the_node_the_session_moved_to() {
    let Some(rig) = Rig::start(2, FAST).await else {
        return;
    };
    let console: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let _console_node = console_node(&rig, "node-c", console);

    // Held on node 0, its client connected there.
    let (mut first, _) = v5_ok(rig.addr(0), "kept-hopper", false, Some(600)).await;
    first.subscribe(1, &[("kh/#", QoS::AtLeastOnce)]).await;
    // Node 0 answers no kick from now on: a claim waits its bound (2 s) for it before
    // reading the record again, which holds the hop and the delete apart.
    rig.nodes[0].pause();
    let node1 = rig.addr(1);
    let hop = tokio::spawn(async move { v5_ok(node1, "kept-hopper", false, Some(600)).await });
    // The console reads the record while it still names node 0 (node 1's claim is waiting
    // for node 0), asks node 0 in turn, and finds the session on node 1 when it reads again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let refused = act(console, "/api/sessions/kept-hopper/delete", ADMIN).await;
    let hopped = hop.await;
    rig.nodes[0].resume();
    let (mut second, ack) = hopped.expect("the client resumed on node 1");
    assert!(ack.session_present, "node 1 took the session over");
    assert_eq!(refused.status, 409, "{}", refused.text());
    let body = refused.json();
    assert_eq!(body["held_by"], "node-1", "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("cluster node node-1:")),
        "{body}"
    );
    // Its client keeps the session on node 1.
    let (mut publisher, _) = v5_ok(rig.addr(1), "kept-hop-pub", true, None).await;
    assert_eq!(publish_acked(&mut publisher, "kh/1", b"x", 1).await, 0);
    take_acked(&mut second, 1).await;
}

/// A released record of `client_id` (no owner, offline).
fn released_record(client_id: &str) -> SessionRecord {
    SessionRecord {
        client_id: client_id.into(),
        owner: String::new(),
        epoch: 1,
        connected: false,
        offline_since_ms: 1_700_000_000_000,
        expiry_secs: None,
        mqtt5: false,
        subscriptions: Vec::new(),
        floors: vec![0, 0],
        inflight: Vec::new(),
        done: Vec::new(),
        will: None,
        owner_instance: 0,
        incarnation: 1,
    }
}

/// The engine's read of the session records stops at its bound, in pages, and says how many
/// it left unread; clean sessions' will records are not read, deleted records are read and
/// not listed, STOMP durable subscriptions' are listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_records_are_read_in_pages_up_to_the_bound() {
    let Some(_) = nats_server_or_skip() else {
        return;
    };
    let nats = NatsCluster::start(3).await;
    let engine = crate::claim_attach::engine(&nats, "node-r").await;
    let client = async_nats::connect(nats.client_urls())
        .await
        .expect("NATS client");
    let js = async_nats::jetstream::new(client);
    let bucket = while_electing("open the session bucket", || {
        js.get_key_value(SESSIONS_BUCKET)
    })
    .await;
    const RECORDS: usize = 300;
    for i in 0..RECORDS {
        let id = format!("many-{i:03}");
        bucket
            .put(client_key(&id), released_record(&id).encode())
            .await
            .expect("put");
    }
    let stomp = "\u{0}stomp-durable:3:app:orders";
    bucket
        .put(client_key(stomp), released_record(stomp).encode())
        .await
        .expect("put");
    bucket
        .put(client_key("gone"), released_record("gone").encode())
        .await
        .expect("put");
    bucket.delete(client_key("gone")).await.expect("delete");
    bucket
        .put(
            format!("w.{}.0000000000000001", client_key("clean")),
            "{}".into(),
        )
        .await
        .expect("put");

    let all = engine.kept_sessions(1000).await.expect("read");
    assert_eq!(all.sessions.len(), RECORDS + 1, "listed");
    assert!(all.sessions.iter().any(|s| s.client_id == stomp));
    assert_eq!(
        all.read,
        RECORDS + 2,
        "the STOMP record and the deletion read too"
    );
    assert_eq!(all.unread, 0);
    assert!(all
        .sessions
        .iter()
        .all(|s| s.owner.is_none() && !s.connected));

    let bounded = engine.kept_sessions(260).await.expect("read");
    assert_eq!(bounded.read, 260, "two pages: 256 and 4");
    assert_eq!(bounded.unread, (RECORDS + 2 - 260) as u64, "left unread");
    assert!(bounded.sessions.len() <= 260);

    let one = engine.kept_session("many-007").await.expect("read");
    assert_eq!(one.map(|k| k.client_id), Some("many-007".to_owned()));
    assert_eq!(engine.kept_session("gone").await.expect("read"), None);
    assert_eq!(engine.kept_session("never").await.expect("read"), None);
}

/// A cluster node's console lists STOMP durable subscriptions wherever the cluster keeps
/// them (by their readable id `stomp:<client-id>:<name>`, with destination and holder) and
/// deletes one across the cluster, as a single broker's does: a subscription made again
/// afterwards starts empty. Refused (409) while its consumer holds it on another node, or
/// while its STOMP client is connected to the console's node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_lists_and_deletes_stomp_durable_subscriptions_across_nodes() {
    use super::stomp_durable::{client, disconnect, messages, subscribe_durable};
    use super::stomp_queues::send_ok;
    let Some((_rig_guard, stomp)) = super::stomp_queues::stomp_rig(2).await else {
        return;
    };
    let rig = &_rig_guard;
    let console: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let own_stomp: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let _node = console_node_with(rig, "node-c", console, Some(own_stomp));

    // Offline on node 0; offline on the console's node; consumed on node 1; offline on the
    // console's node with its client connected there.
    let mut app = client(stomp[0], "cs-app").await;
    subscribe_durable(&mut app, "/topic/cs.orders", "orders", "auto").await;
    disconnect(app).await;
    let mut local = client(own_stomp, "cs-local").await;
    subscribe_durable(&mut local, "/topic/cs.local", "mine", "auto").await;
    disconnect(local).await;
    let mut busy = client(stomp[1], "cs-busy").await;
    subscribe_durable(&mut busy, "/topic/cs.busy", "b", "auto").await;
    let mut held = client(own_stomp, "cs-held").await;
    subscribe_durable(&mut held, "/topic/cs.held", "h", "auto").await;
    disconnect(held).await;
    let _held_client = client(own_stomp, "cs-held").await;

    let answer = sessions_until(
        console,
        "every STOMP durable subscription is listed",
        |json| {
            [
                "stomp:cs-app:orders",
                "stomp:cs-local:mine",
                "stomp:cs-busy:b",
            ]
            .iter()
            .all(|id| listed(json, id).is_some())
        },
    )
    .await;
    let entry = listed(&answer, "stomp:cs-app:orders").expect("listed");
    assert_eq!(entry["kind"], "stomp-durable-subscription", "{entry}");
    assert_eq!(entry["stomp_client_id"], "cs-app", "{entry}");
    assert_eq!(entry["subscription_name"], "orders", "{entry}");
    assert_eq!(entry["destination"], "/topic/cs.orders", "{entry}");
    assert_eq!(entry["held_by"], "node-0", "{entry}");
    assert_eq!(entry["here"], false, "{entry}");
    assert_eq!(entry["connected"], false, "{entry}");
    let entry = listed(&answer, "stomp:cs-local:mine").expect("listed");
    assert_eq!(entry["here"], true, "{entry}");
    assert_eq!(entry["destination"], "/topic/cs.local", "{entry}");
    let entry = listed(&answer, "stomp:cs-busy:b").expect("listed");
    assert_eq!(entry["connected"], true, "{entry}");
    assert_eq!(entry["held_by"], "node-1", "{entry}");
    assert!(
        !answer.to_string().contains("\\u0000"),
        "no stored id is shown: {answer:#}"
    );

    // Refused while in use.
    let refused = act(console, "/api/sessions/stomp:cs-busy:b/delete", ADMIN).await;
    assert_eq!(refused.status, 409, "{}", refused.text());
    assert_eq!(refused.json()["held_by"], "node-1");
    let refused = act(console, "/api/sessions/stomp:cs-held:h/delete", ADMIN).await;
    assert_eq!(refused.status, 409, "{}", refused.text());
    assert!(
        refused.text().contains("client-id cs-held"),
        "{}",
        refused.text()
    );

    // Deleted across the cluster, and here.
    let deleted = act(console, "/api/sessions/stomp:cs-app:orders/delete", ADMIN).await;
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    assert_eq!(deleted.json()["client_id"], "stomp:cs-app:orders");
    assert_eq!(deleted.json()["held_by"], "node-0");
    let deleted = act(console, "/api/sessions/stomp:cs-local:mine/delete", ADMIN).await;
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    let unknown = act(console, "/api/sessions/stomp:cs-nobody:x/delete", ADMIN).await;
    assert_eq!(unknown.status, 404, "{}", unknown.text());
    let answer = sessions_until(console, "the deleted ones are not listed", |json| {
        listed(json, "stomp:cs-app:orders").is_none()
            && listed(json, "stomp:cs-local:mine").is_none()
    })
    .await;
    assert!(listed(&answer, "stomp:cs-busy:b").is_some(), "{answer:#}");

    // Published while it would have been offline: a subscription made again starts empty.
    let mut producer = client(stomp[1], "cs-producer").await;
    send_ok(&mut producer, "/topic/cs.orders", "after-delete").await;
    let mut again = client(stomp[0], "cs-app").await;
    subscribe_durable(&mut again, "/topic/cs.orders", "orders", "auto").await;
    let got = messages(&mut again, 1, Duration::from_secs(2), false).await;
    assert!(got.is_empty(), "the subscription was deleted: {got:?}");
    // The busy one still gets what is published.
    send_ok(&mut producer, "/topic/cs.busy", "still").await;
    let got = messages(&mut busy, 1, Duration::from_secs(10), false).await;
    assert_eq!(super::stomp_durable::bodies(&got), ["still"]);
}
