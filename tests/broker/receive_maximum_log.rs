//! A client that ignores the broker's Receive Maximum (paho-mqtt 2.2 with
//! `max_inflight_messages_set(64)` against 32) is disconnected with 0x93 at every burst and
//! reconnects in a loop: the real binary warns once for its client id, naming the numbers and
//! the client's option, and logs the other closes at `info` only.
#![cfg(unix)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::log_format::{event_with, lines_of, parse};
use crate::support::{BrokerXml, ChildGuard};

/// paho-mqtt 2.2, MQTT 5, a window of 64 publishes in flight: at each CONNACK a burst of 64
/// QoS 2 publishes, written before any PUBREC is read (each counts until its PUBCOMP), then a
/// reconnect 1 s after each close. Prints `disconnected <reason code>` for each close.
const PAHO_INFLIGHT_64: &str = r#"
import sys, time
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="paho-inflight-64", protocol=mqtt.MQTTv5)
c.max_inflight_messages_set(64)
c.reconnect_delay_set(min_delay=1, max_delay=1)
def on_connect(client, userdata, flags, reason_code, properties):
    for i in range(64):
        client.publish("burst/%d" % i, b"x" * 100, qos=2)
def on_disconnect(client, userdata, flags, reason_code, properties):
    print("disconnected %d" % reason_code.value, flush=True)
c.on_connect = on_connect
c.on_disconnect = on_disconnect
c.connect("127.0.0.1", int(sys.argv[1]))
c.loop_start()
time.sleep(60)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_above_receive_maximum_is_warned_about_once_per_client_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("activemq.xml");
    let xml = BrokerXml::new()
        .name("receive-maximum")
        .mqtt(0, &[])
        .build();
    std::fs::write(&config, xml).expect("write config");
    let mut broker = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_ferromq"))
            .args(["--log-format", "json", "--log-level", "info", "run"])
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ferromq"),
    );
    let stderr = lines_of(broker.0.stderr.take().expect("stderr"));
    let mut seen = Vec::new();
    let listening = event_with(&stderr, &mut seen, "listening").await;
    let port = listening["fields"]["addr"]
        .as_str()
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
        .expect("the listening address")
        .port();

    let mut paho = ChildGuard(
        Command::new("python3")
            .args(["-c", PAHO_INFLIGHT_64, &port.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs"),
    );
    let said = lines_of(paho.0.stdout.take().expect("stdout"));
    // Three closes with 0x93 (147): the client reconnected twice after the first.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut closes = 0;
    while closes < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = tokio::task::block_in_place(|| said.recv_timeout(left))
            .unwrap_or_else(|_| panic!("paho was not disconnected 3 times within 20 s"));
        assert_eq!(line, "disconnected 147", "closed for another reason");
        closes += 1;
    }
    drop(paho);

    // Everything the broker logged by now (its log of the third close may trail paho's).
    tokio::time::sleep(Duration::from_millis(500)).await;
    seen.extend(stderr.try_iter().map(|line| parse(&line)));
    let about = |event: &&serde_json::Value| {
        event["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("Receive Maximum"))
    };
    let warnings: Vec<_> = seen
        .iter()
        .filter(about)
        .filter(|e| e["level"] == "WARN")
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "one warning for the client id: {warnings:#?}"
    );
    let warning = warnings[0]["fields"]["message"]
        .as_str()
        .unwrap_or_default();
    for wanted in [
        "`paho-inflight-64`",
        "number 33 while 32 were unacknowledged",
        "Receive Maximum of 32",
        "0x93",
        "max_inflight_messages_set(32)",
    ] {
        assert!(warning.contains(wanted), "`{wanted}` in: {warning}");
    }
    let quiet = seen
        .iter()
        .filter(about)
        .filter(|e| e["level"] == "INFO")
        .count();
    assert!(quiet >= 2, "the later closes at info: {seen:#?}");
}
