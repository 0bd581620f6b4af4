//! `ferromq check --online` and `cluster::probe` against a real 3-server NATS JetStream
//! cluster, and against a port where nothing listens.

use ferromq::cluster::probe::{probe, ProbeError};
use ferromq::config::JetStreamSettings;

use super::config::{check, cluster_xml};
use crate::support::nats::{free_ports, nats_server_or_skip, NatsCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_check_sees_the_three_servers_and_whether_replicas_fit() {
    if nats_server_or_skip().is_none() {
        return;
    }
    let nats = NatsCluster::start(3).await;
    let servers = nats.client_urls();

    // A server may answer before it has heard of its last peer (the servers are ready, their
    // routes still forming): the probe reports what the server it reached sees, so ask again
    // until that is the whole cluster, within 10 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let report = loop {
        let report = probe(&JetStreamSettings::with_servers(servers.clone()))
            .await
            .expect("probe");
        if report.cluster_size == Some(3) || std::time::Instant::now() > deadline {
            break report;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(report.jetstream);
    assert_eq!(report.cluster_size, Some(3), "{report:?}");
    assert_eq!(report.cluster_name.as_deref(), Some("fmq-test"));
    assert!(
        ["n1", "n2", "n3"].contains(&report.server_name.as_str()),
        "{report:?}"
    );
    assert!(report.replicas_fit());

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("activemq.xml");
    let servers_attr = nats.servers_attribute();
    std::fs::write(
        &file,
        cluster_xml("", &format!(r#"<fmq:jetStream servers="{servers_attr}"/>"#)),
    )
    .expect("write");
    let (ok, text) = check_off_runtime(&file, &["--online"]).await;
    assert!(ok, "{text}");
    assert!(text.contains("note: connected to NATS server `n"), "{text}");
    assert!(
        text.contains("JetStream enabled; NATS cluster `fmq-test` of 3 server(s); replicas 3"),
        "{text}"
    );

    // Five copies cannot be placed on three servers.
    std::fs::write(
        &file,
        cluster_xml(
            "",
            &format!(r#"<fmq:jetStream servers="{servers_attr}" replicas="5"/>"#),
        ),
    )
    .expect("write");
    let (ok, text) = check_off_runtime(&file, &["--online"]).await;
    assert!(!ok, "{text}");
    assert!(
        text.contains("error: replicas=\"5\" but the NATS cluster has 3 server(s)"),
        "{text}"
    );
    assert!(
        text.contains("hint: lower replicas to the number of NATS servers"),
        "{text}"
    );
}

/// A NATS cluster whose JetStream has no meta leader yet (one of its three servers runs, as
/// when the others are still starting): the server accepts the connection, its JetStream API
/// answers nothing, and `check --online` says so within its bound, and to wait and retry;
/// once the other servers run, the same check passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_check_before_jetstream_has_a_meta_leader_says_to_wait_and_retry() {
    if nats_server_or_skip().is_none() {
        return;
    }
    let mut nats = NatsCluster::start_first_of(3).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("activemq.xml");
    let url = nats.server(0).client_url();
    std::fs::write(
        &file,
        cluster_xml("", &format!(r#"<fmq:jetStream servers="{url}"/>"#)),
    )
    .expect("write");
    let started = std::time::Instant::now();
    let (ok, text) = check_off_runtime(&file, &["--online"]).await;
    assert!(!ok, "{text}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(12),
        "bounded: {:?}",
        started.elapsed()
    );
    assert!(
        text.contains("(cluster `fmq-test`) accepted the connection and announces JetStream")
            && text.contains("most likely has no meta leader yet"),
        "{text}"
    );
    assert!(
        text.contains("hint: wait a few seconds and run the check again"),
        "{text}"
    );
    assert!(!text.contains("did not answer within 10 s"), "{text}");

    nats.start_all().await;
    let (ok, text) = check_off_runtime(&file, &["--online"]).await;
    assert!(ok, "{text}");
    assert!(text.contains("JetStream enabled"), "{text}");
}

#[tokio::test]
async fn online_check_against_a_closed_port_is_an_error_with_a_hint() {
    // A port that was free a moment ago: nothing listens there.
    let port = free_ports(1)[0];
    let url = format!("nats://127.0.0.1:{port}");
    let started = std::time::Instant::now();
    let err = probe(&JetStreamSettings::with_servers(vec![url.clone()]))
        .await
        .expect_err("nothing listens");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(7),
        "bounded"
    );
    assert!(
        matches!(&err, ProbeError::Connect { servers, .. } | ProbeError::Timeout { servers } if servers == &url),
        "{err:?}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("activemq.xml");
    std::fs::write(
        &file,
        cluster_xml("", &format!(r#"<fmq:jetStream servers="{url}"/>"#)),
    )
    .expect("write");
    let (ok, text) = check_off_runtime(&file, &["--online"]).await;
    assert!(!ok, "{text}");
    let at = format!("{}:4:7: error: ", file.display());
    assert!(
        text.lines()
            .any(|l| l.starts_with(&at) && l.contains(&format!("NATS at {url}"))),
        "{text}"
    );
    assert!(text.contains("hint: start the NATS servers"), "{text}");
    // Without --online nothing is contacted: the same file checks clean.
    let (ok, text) = check_off_runtime(&file, &[]).await;
    assert!(ok, "{text}");
}

/// `check --online` gives the MQTT listener the cap of the `max_payload` the server announced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_check_caps_the_max_frame_by_the_servers_max_payload() {
    if nats_server_or_skip().is_none() {
        return;
    }
    let nats = NatsCluster::start_with(1, "max_payload: 2MB").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("activemq.xml");
    let servers_attr = nats.servers_attribute();
    std::fs::write(
        &file,
        cluster_xml(
            "",
            &format!(r#"<fmq:jetStream servers="{servers_attr}" replicas="1"/>"#),
        ),
    )
    .expect("write");
    let (ok, text) = check_off_runtime(&file, &["--online"]).await;
    assert!(ok, "{text}");
    assert!(text.contains("max frame 2047 kb,"), "{text}");
    assert!(
        text.contains("max frame capped by the cluster: NATS max_payload 2 mb (as the server announced it) less 1 kb of frame"),
        "{text}"
    );
}

/// `ferromq check --online FILE` with stdout and stderr into one file, in the order a terminal
/// shows them.
fn check_online_as_a_terminal_shows_it(file: &std::path::Path) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_path = dir.path().join("out");
    let out = std::fs::File::create(&out_path).expect("create");
    let err = out.try_clone().expect("clone");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_ferromq"))
        .arg("check")
        .arg("--online")
        .arg(file)
        .env_remove("RUST_LOG")
        .stdout(out)
        .stderr(err)
        .status()
        .expect("run ferromq");
    let text = std::fs::read_to_string(&out_path).expect("read");
    assert!(status.success(), "{text}");
    text
}

/// The report of `check --online` is not interleaved with the NATS client's log lines: every
/// line is the report's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_check_output_is_the_report_alone() {
    if nats_server_or_skip().is_none() {
        return;
    }
    let nats = NatsCluster::start(1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("activemq.xml");
    let servers_attr = nats.servers_attribute();
    std::fs::write(
        &file,
        cluster_xml(
            "",
            &format!(r#"<fmq:jetStream servers="{servers_attr}" replicas="1"/>"#),
        ),
    )
    .expect("write");
    let text = tokio::task::spawn_blocking(move || check_online_as_a_terminal_shows_it(&file))
        .await
        .expect("check");
    let first = text.lines().next().unwrap_or_default();
    assert!(
        first.contains("note: connected to NATS server `n1`"),
        "{text}"
    );
    assert!(!text.contains("async_nats"), "{text}");
    assert!(!text.contains(" INFO "), "{text}");
    assert!(text.ends_with("0 error(s), 0 warning(s)\n"), "{text}");
}

#[tokio::test]
async fn a_single_server_is_not_a_cluster_for_three_replicas() {
    if nats_server_or_skip().is_none() {
        return;
    }
    let nats = NatsCluster::start(1).await;
    let report = probe(&JetStreamSettings::with_servers(nats.client_urls()))
        .await
        .expect("probe");
    assert_eq!(report.cluster_name, None);
    assert_eq!(report.cluster_size, Some(1));
    assert_eq!(report.server_name, "n1");
    assert!(!report.replicas_fit(), "3 replicas on one server");
    let mut one = JetStreamSettings::with_servers(nats.client_urls());
    one.replicas = 1;
    assert!(probe(&one).await.expect("probe").replicas_fit());
}

/// `ferromq check FILE EXTRA...` on a blocking thread (it waits on the child process; the
/// test's runtime keeps serving): whether it passed, and what it printed.
async fn check_off_runtime(file: &std::path::Path, extra: &[&'static str]) -> (bool, String) {
    let (file, extra) = (file.to_path_buf(), extra.to_vec());
    tokio::task::spawn_blocking(move || check(&file, &extra))
        .await
        .expect("check")
}
