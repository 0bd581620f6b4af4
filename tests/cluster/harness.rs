//! The harness the cluster tests stand on: a 3-server NATS JetStream cluster on free loopback
//! ports survives a SIGKILLed server, takes it back on the same ports and store, and a
//! SIGSTOPped one answers nothing until SIGCONT; node configurations load as cluster nodes.

use std::time::{Duration, Instant};

use ferromq::config::Persistence;

use crate::support::cluster_nodes::node_xml;
use crate::support::nats::{http_status, nats_server_or_skip, NatsCluster};

/// A JetStream request to the cluster through server `via` succeeds within 20 s (a killed
/// server may have led the meta group: the others elect a new leader first).
async fn jetstream_works(nats: &NatsCluster, via: usize) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(client) = async_nats::connect(nats.client_urls()[via].clone()).await {
            let js = async_nats::jetstream::new(client);
            let answer = tokio::time::timeout(Duration::from_secs(2), js.query_account()).await;
            if answer.is_ok_and(|r| r.is_ok()) {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// Put `value` under `key`, retrying while a stream leader is being elected (20 s bound).
async fn put_eventually(kv: &async_nats::jetstream::kv::Store, key: &str, value: &'static str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match kv.put(key, value.into()).await {
            Ok(_) => return,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("put {key}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_survive_a_kill_and_take_the_server_back() {
    if nats_server_or_skip().is_none() {
        return;
    }
    let mut nats = NatsCluster::start(3).await;
    assert_eq!(nats.len(), 3);
    let urls = nats.client_urls();
    assert_eq!(urls.len(), 3);
    assert!(urls.iter().all(|u| u.starts_with("nats://127.0.0.1:")));
    let pids: Vec<u32> = (0..3).map(|i| nats.pid(i).expect("running")).collect();

    // A replicated key-value bucket, written before the kill, is read after it.
    let client = async_nats::connect(urls.clone()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    // The meta group of three servers just started may take longer than a request's 5 s to
    // answer on a loaded machine (the whole test suite at once): asked again until 20 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let kv = loop {
        let config = async_nats::jetstream::kv::Config {
            bucket: "HARNESS".into(),
            num_replicas: 3,
            ..Default::default()
        };
        match js.create_key_value(config).await {
            Ok(kv) => break kv,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("bucket with 3 replicas: {e}; again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("bucket with 3 replicas: {e}"),
        }
    };
    // A bucket just made answers once its stream's raft group has a leader: on a loaded
    // machine the first put can find no stream yet.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match kv.put("k", "before".into()).await {
            Ok(_) => break,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("put before the kill: {e}; again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("put: {e}"),
        }
    }

    nats.kill(2);
    assert_eq!(nats.pid(2), None);
    assert_eq!(
        http_status(nats.server(2).http_port, "/healthz"),
        None,
        "killed"
    );
    assert!(
        jetstream_works(&nats, 0).await,
        "two of three keep the quorum"
    );
    put_eventually(&kv, "k", "during").await;

    nats.restart(2).await;
    let new_pid = nats.pid(2).expect("restarted");
    assert_ne!(new_pid, pids[2]);
    for i in 0..3 {
        // A restarted server answers 503 while its JetStream catches up with the others
        // (seen on a loaded CI machine): healthy within a bound, not at once.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let port = nats.server(i).http_port;
        let mut status = http_status(port, "/healthz");
        while status != Some(200) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            status = http_status(port, "/healthz");
        }
        assert_eq!(status, Some(200), "server {i} healthy within 30 s");
        assert!(jetstream_works(&nats, i).await, "server {i}");
    }
    let entry = kv.get("k").await.expect("get").expect("the value");
    assert_eq!(&entry[..], b"during");

    // A paused server keeps its port but answers nothing; resumed, it is healthy again.
    nats.pause(1);
    let port = nats.server(1).http_port;
    let paused = tokio::task::spawn_blocking(move || http_status(port, "/healthz"))
        .await
        .expect("join");
    assert_eq!(paused, None, "a stopped process does not answer");
    nats.resume(1);
    nats.wait_ready().await;

    nats.stop(0);
    assert_eq!(nats.pid(0), None);
    assert!(jetstream_works(&nats, 1).await);
}

#[test]
fn node_xml_is_a_cluster_node_configuration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let urls = vec![
        "nats://127.0.0.1:4222".to_owned(),
        "nats://127.0.0.1:4223".to_owned(),
    ];
    let xml = node_xml("node-7", 1889, &urls, dir.path());
    let file = dir.path().join("activemq.xml");
    std::fs::write(&file, xml).expect("write");
    let config = crate::support::xml::load_file(&file);
    assert_eq!(config.broker.broker_name, "node-7");
    assert_eq!(config.listeners[0].port, 1889);
    let Persistence::JetStream(js) = config.persistence else {
        panic!("not a cluster node");
    };
    assert_eq!(js.servers, urls);
    assert_eq!(js.replicas, 3);
}

#[test]
fn debians_nats_server_2_9_is_refused() {
    use crate::support::nats::{version_of, MIN_VERSION};
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = dir.path().join("nats-server");
    std::fs::write(&fake, "#!/bin/sh\necho 'nats-server: v2.9.10'\n").expect("write");
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let version = version_of(&fake).expect("a version");
    assert_eq!(version, (2, 9));
    assert!(version < MIN_VERSION);
    if let Some(found) = crate::support::nats::nats_server_binary() {
        assert!(version_of(&found).is_some_and(|v| v >= MIN_VERSION));
    }
}

/// The node harness on a single-node broker (the cluster engine is not needed to test it):
/// spawn waits until MQTT accepts, pause/resume keep the process, SIGTERM ends it cleanly,
/// SIGKILL ends it at once.
#[test]
fn ferromq_nodes_start_serve_pause_and_stop_by_pid() {
    use crate::support::cluster_nodes::FerromqNode;
    use crate::support::xml::BrokerXml;

    let dir = tempfile::tempdir().expect("tempdir");
    let port = crate::support::free_port();
    let file = dir.path().join("activemq.xml");
    BrokerXml::new().mqtt(port, &[]).write(&file);

    let mut node = FerromqNode::spawn(&file);
    assert_eq!(node.mqtt_port, port);
    let pid = node.pid().expect("running");
    assert!(std::net::TcpStream::connect(node.mqtt_addr()).is_ok());
    node.pause();
    assert_eq!(node.try_exit_status(), None, "a paused node is still there");
    node.resume();
    let status = node.terminate().expect("exit status");
    assert!(status.success(), "SIGTERM is a clean shutdown: {status}");
    assert_eq!(node.pid(), None);

    let mut node = FerromqNode::spawn(&file);
    assert_ne!(node.pid(), Some(pid));
    node.kill();
    assert_eq!(node.pid(), None);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}
