//! `ferromq --log-format json`: the real binary writes one JSON object per line, on stdout and
//! stderr alike, with the events' fields and the connection's span kept as typed fields.
#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{activemq_xml, publish_packet, ChildGuard, RawClient};
use ferromq::protocol::{Packet, QoS};
use serde_json::Value;

/// Every line of `stream`, each sent as it is read (to its end).
pub(crate) fn lines_of(
    stream: impl std::io::Read + Send + 'static,
) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    rx
}

/// `line` parsed: it must be one JSON object with a timestamp, a level and a target.
pub(crate) fn parse(line: &str) -> Value {
    let value: Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"));
    assert!(value.is_object(), "{line}");
    for key in ["timestamp", "level", "target"] {
        assert!(value[key].is_string(), "no `{key}` in {line}");
    }
    assert!(value["fields"].is_object(), "no `fields` in {line}");
    value
}

/// The next event (parsed) whose message contains `text`, within 10 s; every line read on the
/// way is checked and kept in `seen`.
pub(crate) async fn event_with(
    lines: &std::sync::mpsc::Receiver<String>,
    seen: &mut Vec<Value>,
    text: &str,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = tokio::task::block_in_place(|| lines.recv_timeout(left))
            .unwrap_or_else(|_| panic!("no log event with `{text}` within 10 s"));
        let event = parse(&line);
        seen.push(event.clone());
        if event["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(text))
        {
            return event;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_with_typed_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("activemq.xml");
    // useJmx: a name ActiveMQ knows and ferromq ignores, so a warning at start.
    let xml = activemq_xml(&[], "").replace("<broker ", "<broker useJmx=\"false\" ");
    std::fs::write(&config, xml).expect("write config");
    let mut child = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_ferromq"))
            .args(["--log-format", "json", "--log-level", "debug", "run"])
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ferromq"),
    );
    let stdout = lines_of(child.0.stdout.take().expect("stdout"));
    let stderr = lines_of(child.0.stderr.take().expect("stderr"));
    let mut seen = Vec::new();

    let warning = event_with(&stderr, &mut seen, "useJmx").await;
    assert_eq!(warning["level"], "WARN");
    assert_eq!(warning["target"], "ferromq::config");
    assert!(warning["fields"]["line"].is_u64(), "{warning}");
    assert!(warning["fields"]["column"].is_u64(), "{warning}");
    assert!(
        warning["fields"]["file"]
            .as_str()
            .is_some_and(|f| f.ends_with("activemq.xml")),
        "{warning}"
    );
    let listening = event_with(&stderr, &mut seen, "listening").await;
    assert_eq!(listening["level"], "INFO");
    let addr: SocketAddr = listening["fields"]["addr"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .expect("the listening address as its own field");
    assert_eq!(listening["fields"]["listener"], "mqtt");

    // An event inside a connection: its own fields typed, the connection's in `span`.
    let (mut client, _) = RawClient::connected(addr, "json-client", true).await;
    client
        .send(publish_packet(
            "$SYS/forged",
            b"x",
            QoS::AtMostOnce,
            None,
            false,
        ))
        .await;
    client.send(Packet::PingReq).await;
    assert_eq!(client.recv().await, Packet::PingResp);
    let refused = event_with(&stderr, &mut seen, "publish to $SYS refused").await;
    assert_eq!(refused["fields"]["topic"], "$SYS/forged");
    assert_eq!(refused["span"]["name"], "conn");
    assert_eq!(refused["span"]["listener"], "mqtt");
    assert_eq!(refused["span"]["client_id"], "json-client");
    assert!(refused["span"]["peer"]
        .as_str()
        .is_some_and(|p| p.starts_with("127.0.0.1:")));
    drop(client);

    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = child.0.try_wait().expect("wait") {
            break exit;
        }
        assert!(Instant::now() < deadline, "ferromq did not exit in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "{exit}");
    // The pipes are closed: every remaining line of both streams is JSON too.
    for line in stderr.iter().chain(stdout.iter()) {
        seen.push(parse(&line));
    }
    assert!(
        seen.iter().any(|e| e["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("shutting down"))),
        "the shutdown is logged"
    );
    // The access log's connect and disconnect of the client: their fields as fields.
    let access: Vec<&Value> = seen
        .iter()
        .filter(|e| e["target"] == "ferromq::access" && e["fields"]["client_id"] == "json-client")
        .collect();
    let events: Vec<&str> = access
        .iter()
        .filter_map(|e| e["fields"]["event"].as_str())
        .collect();
    assert_eq!(events, ["connect", "disconnect"], "{access:?}");
    for e in &access {
        assert_eq!(e["fields"]["listener"], "mqtt", "{e}");
        assert_eq!(e["fields"]["protocol"], "mqtt", "{e}");
        assert!(
            e["fields"]["peer"]
                .as_str()
                .is_some_and(|p| p.starts_with("127.0.0.1:")),
            "{e}"
        );
    }
    assert!(access[1]["fields"]["reason"].is_string(), "{}", access[1]);
    // Typed, not stringified: the recovery line's counts are numbers.
    let recovered = seen
        .iter()
        .find(|e| e["fields"]["message"] == "persistent state recovered")
        .expect("the recovery line");
    assert!(recovered["fields"]["sessions"].is_u64(), "{recovered}");
}

#[test]
fn a_configuration_that_does_not_start_is_logged_in_json_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("activemq.xml");
    let xml = activemq_xml(&[], "").replace("<broker ", "<broker brokerNme=\"typo\" ");
    std::fs::write(&config, xml).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_ferromq"))
        .args(["run", "--log-format", "json", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .output()
        .expect("run ferromq");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let events: Vec<Value> = text.lines().map(parse).collect();
    let typo = events
        .iter()
        .find(|e| {
            e["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("brokerNme"))
        })
        .unwrap_or_else(|| panic!("the unknown attribute is reported: {text}"));
    assert_eq!(typo["level"], "ERROR");
    assert!(
        typo["fields"]["hint"]
            .as_str()
            .is_some_and(|h| h.contains("brokerName")),
        "{typo}"
    );
    assert!(events.iter().any(|e| e["fields"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("not starting"))));
}

/// Text logs write a peer-chosen value's control characters escaped: a client id holding a
/// newline and a made-up log line cannot forge a line of its own. A STOMP connection's span
/// carries its `client-id` as `client_id`, as an MQTT connection's does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_id_cannot_forge_a_text_log_line() {
    const FORGED: &str = "2026-01-01T00:00:00Z  WARN forged";
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("activemq.xml");
    let xml = crate::support::BrokerXml::new()
        .mqtt(0, &[])
        .connector("stomp", "stomp://127.0.0.1:0")
        .build();
    std::fs::write(&config, xml).expect("write config");
    let mut child = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_ferromq"))
            .args(["--log-format", "text", "--log-level", "debug", "run"])
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ferromq"),
    );
    let stderr = lines_of(child.0.stderr.take().expect("stderr"));
    let mut seen: Vec<String> = Vec::new();
    let mut next_with = |text: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = tokio::task::block_in_place(|| stderr.recv_timeout(left))
                .unwrap_or_else(|_| panic!("no log line with `{text}` within 10 s: {seen:#?}"));
            seen.push(line.clone());
            if line.contains(text) {
                return line;
            }
        }
    };
    let (mut addr, mut stomp): (Option<SocketAddr>, Option<SocketAddr>) = (None, None);
    while addr.is_none() || stomp.is_none() {
        let listening = next_with("listening listener=");
        let bound = listening
            .split_whitespace()
            .find_map(|field| field.strip_prefix("addr="))
            .and_then(|a| a.parse().ok());
        if listening.contains("listener=mqtt") {
            addr = bound;
        } else if listening.contains("listener=stomp") {
            stomp = bound;
        }
    }
    let (addr, stomp) = (addr.expect("mqtt"), stomp.expect("stomp"));
    let client_id = format!("evil\n{FORGED}");
    let (mut client, _) = RawClient::connected(addr, &client_id, true).await;
    // A refused publish logs an event inside the connection's span, which carries client_id.
    client
        .send(publish_packet(
            "$SYS/forged",
            b"x",
            QoS::AtMostOnce,
            None,
            false,
        ))
        .await;
    client.send(Packet::PingReq).await;
    assert_eq!(client.recv().await, Packet::PingResp);
    let refused = next_with("publish to $SYS refused");
    // Escaped by the name's bound, then quoted (it holds spaces): still one field.
    assert!(
        refused.contains("client_id=\"evil\\\\n2026-01-01T00:00:00Z  WARN forged\""),
        "{refused}"
    );
    // A client id that reads as more fields is written quoted: no `user=admin` field appears.
    let (_fielded, _) = RawClient::connected(addr, "dev1 user=admin peer=10.9.9.9:1", true).await;
    let connect = next_with("client_id=\"dev1 user=admin peer=10.9.9.9:1\"");
    let rest = connect.replace("client_id=\"dev1 user=admin peer=10.9.9.9:1\"", "");
    assert!(
        !rest.contains("user=admin") && !rest.contains("10.9.9.9"),
        "{connect}"
    );
    // STOMP CONNECT headers are not unescaped: a terminal escape is what a client id can hold.
    let mut socket = tokio::net::TcpStream::connect(stomp).await.expect("stomp");
    tokio::io::AsyncWriteExt::write_all(
        &mut socket,
        b"CONNECT\naccept-version:1.2\nhost:x\nclient-id:span-id\x1b[2J\n\n\0",
    )
    .await
    .expect("CONNECT");
    let connected = next_with("STOMP connected");
    assert!(
        connected.contains("stomp{") && connected.contains("client_id=span-id\\u{1b}[2J"),
        "{connected}"
    );
    drop(socket);
    assert!(
        !seen.iter().any(|line| line.starts_with(FORGED)),
        "a forged line: {seen:#?}"
    );
    assert!(!seen.iter().any(|line| line.contains('\x1b')), "{seen:#?}");
}
