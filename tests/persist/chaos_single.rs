//! Scenario S0-single of the chaos harness (`tests/support/chaos`): QoS 1 publishers and
//! persistent subscribers (rumqttc) on one durable `ferromq` process that is SIGKILLed under
//! load and restarted on the same store and port. Every PUBACKed message reaches every matching
//! subscriber (L = 0), in order per publisher and subscriber (O = 0), and every subscriber
//! resumes its session; with MQTT 3.1.1 clients and with MQTT 5 clients.

use std::time::Duration;

use crate::chaos::checker::check;
use crate::chaos::load::LoadConfig;
use crate::chaos::mqtt::Protocol;
use crate::chaos::single::{kill_and_restart, s0_single, BrokerProgram};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s0_single_kill_under_qos1_load_loses_and_reorders_nothing() {
    s0_single_passes(Protocol::V311, "s0-v311").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s0_single_with_mqtt5_sessions_loses_and_reorders_nothing() {
    s0_single_passes(Protocol::V5, "s0-v5").await;
}

/// The harness sees what a broker without a store loses: the same kill on a memory broker
/// leaves no session for any reconnecting client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_kill_on_a_memory_broker_shows_the_lost_sessions() {
    let load = LoadConfig {
        duration: Duration::from_secs(6),
        ..small_load(Protocol::V311, "s0-memory")
    };
    let recording = tokio::time::timeout(
        Duration::from_secs(40),
        kill_and_restart(program(), false, &load, Duration::from_secs(3)),
    )
    .await
    .expect("within 40 s")
    .expect("broker process");
    let report = check(&recording);
    eprintln!("{report}");
    assert!(report.reconnects > 0, "{report}");
    assert_eq!(report.reconnects_with_session, 0, "{report}");
    assert!(report.session_present_rate < 1.0, "{report}");
}

fn program() -> BrokerProgram {
    BrokerProgram {
        path: env!("CARGO_BIN_EXE_ferromq").into(),
        env: Vec::new(),
    }
}

fn small_load(protocol: Protocol, name: &str) -> LoadConfig {
    LoadConfig {
        protocol,
        publishers: 4,
        subscribers: 4,
        rate: 200.0,
        payload_size: 64,
        duration: Duration::from_secs(10),
        drain: Duration::from_secs(10),
        quiet: Duration::from_secs(1),
        topic_prefix: format!("chaos/{name}"),
        client_prefix: name.into(),
        ..LoadConfig::default()
    }
}

async fn s0_single_passes(protocol: Protocol, name: &str) {
    let load = small_load(protocol, name);
    let recording = tokio::time::timeout(
        Duration::from_secs(40),
        s0_single(program(), &load, Duration::from_secs(4)),
    )
    .await
    .expect("S0-single within 40 s")
    .expect("broker process");
    let report = check(&recording);
    eprintln!("{report}");
    assert!(report.acked > 1000, "the load ran: {report}");
    assert_eq!(report.lost, 0, "{report}");
    assert_eq!(report.inversions, 0, "{report}");
    assert_eq!(report.unexpected, 0, "{report}");
    let fault = &report.faults[0];
    assert!(
        fault.clients_disconnected > 0,
        "the kill was seen: {report}"
    );
    assert_eq!(
        fault.clients_resumed, fault.clients_disconnected,
        "{report}"
    );
    assert_eq!(report.session_present_rate, 1.0, "{report}");
}
