//! A node's start before its NATS servers: the first connection is tried again (with a
//! growing wait, each failure logged with the servers tried) for up to 60 s, so a node started
//! a moment before its nats-servers serves once they are up; servers that never come end the
//! start with code 1 and a line that says so; SIGTERM during the wait ends the process at once,
//! and SIGTERM while the node creates its streams (no JetStream meta leader yet) ends it with
//! 143 and a line naming that step.

use std::path::Path;
use std::time::{Duration, Instant};

use ferromq::protocol::QoS;

use super::rig::{next_publish, publish_acked, v3_ok};
use crate::support::cluster_nodes::{node_xml_with, read_log, FerromqNode};
use crate::support::free_port;
use crate::support::nats::{nats_server_or_skip, NatsCluster};

/// A node's configuration (`replicas="1"`) over `servers`, in `dir`.
pub(super) fn write_node(dir: &Path, servers: &[String]) -> std::path::PathBuf {
    let data = dir.join("node");
    std::fs::create_dir_all(&data).expect("node data dir");
    let xml = node_xml_with("node-a", free_port(), servers, &data, r#"replicas="1""#);
    let file = data.join("activemq.xml");
    std::fs::write(&file, xml).expect("write node config");
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_before_its_nats_server_waits_for_it_and_serves() {
    if nats_server_or_skip().is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nats = NatsCluster::configure(1, "");
    let file = write_node(dir.path(), &nats.client_urls());
    let log = dir.path().join("node.log");
    let mut node = FerromqNode::start_logging(&file, "info", &log);
    // Refused for a few seconds: the node waits instead of exiting.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        node.try_exit_status(),
        None,
        "the node exited before its NATS server came:\n{}",
        read_log(&log)
    );
    nats.start_all().await;
    tokio::task::block_in_place(|| node.wait_serving());
    let said = read_log(&log);
    let url = nats.server(0).client_url();
    assert!(
        said.contains(&format!("cannot connect to NATS ({url})")) && said.contains("trying again"),
        "each refused attempt is logged with the servers tried:\n{said}"
    );
    // It serves: a message stored through the cluster reaches a subscriber.
    let (mut sub, _) = v3_ok(node.mqtt_addr(), "early-sub", true).await;
    assert_eq!(
        sub.subscribe(1, &[("early/t", QoS::AtLeastOnce)]).await,
        [1]
    );
    let (mut publisher, _) = v3_ok(node.mqtt_addr(), "early-pub", true).await;
    assert_eq!(publish_acked(&mut publisher, "early/t", b"up", 1).await, 0);
    assert_eq!(&next_publish(&mut sub).await.payload[..], b"up");
    assert!(node.terminate().is_some_and(|s| s.success()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_nats_servers_never_come_exits_after_60_s_saying_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("nats://127.0.0.1:{}", free_port());
    let file = write_node(dir.path(), std::slice::from_ref(&url));
    let log = dir.path().join("node.log");
    let started = Instant::now();
    let mut node = FerromqNode::start_logging(&file, "info", &log);
    let status = tokio::task::block_in_place(|| node.wait_exit(Duration::from_secs(90)))
        .expect("the node gives up");
    let waited = started.elapsed();
    let said = read_log(&log);
    assert_eq!(status.code(), Some(1), "{said}");
    assert!(
        waited >= Duration::from_secs(59),
        "exited after {waited:?}:\n{said}"
    );
    assert!(
        said.contains(&format!(
            "no server of {url} accepted a connection within 60 s"
        )),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_a_node_waits_for_its_nats_servers_ends_it_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("nats://127.0.0.1:{}", free_port());
    let file = write_node(dir.path(), &[url]);
    let log = dir.path().join("node.log");
    let mut node = FerromqNode::start_logging(&file, "info", &log);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(node.try_exit_status(), None, "{}", read_log(&log));
    node.send_term();
    let status = tokio::task::block_in_place(|| node.wait_exit(Duration::from_secs(3)));
    assert!(
        status.is_some_and(|s| !s.success()),
        "SIGTERM did not end the waiting node within 3 s ({status:?}):\n{}",
        read_log(&log)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_a_node_creates_its_streams_says_so_and_exits_143() {
    if nats_server_or_skip().is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // One server of three: it accepts the node, but its JetStream has no meta leader, so the
    // streams cannot be created (retried for up to 60 s).
    let nats = NatsCluster::start_first_of(3).await;
    let file = write_node(dir.path(), &[nats.server(0).client_url()]);
    let log = dir.path().join("node.log");
    let mut node = FerromqNode::start_logging(&file, "info", &log);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !read_log(&log).contains("retrying") {
        assert!(
            Instant::now() < deadline && node.try_exit_status().is_none(),
            "the node never retried creating its streams:\n{}",
            read_log(&log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    node.send_term();
    let status = tokio::task::block_in_place(|| node.wait_exit(Duration::from_secs(5)));
    let said = read_log(&log);
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(143),
        "{status:?}:\n{said}"
    );
    assert!(
        said.contains(
            "SIGTERM received during start-up, while creating the cluster's JetStream streams \
             and buckets: stopped before serving (exit status 143)"
        ),
        "{said}"
    );
}
