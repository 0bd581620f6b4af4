//! The access log: one `ferromq::access` line per connect, disconnect and refusal, for MQTT and
//! STOMP, with client id, user, peer, listener, protocol and reason; never a password.
//!
//! Its own test binary: it captures log lines (see `tests/README.md`, "Binaries of their own").

mod support;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::logs::Logs;
use support::{options, BrokerXml, Client, TestBroker, STEP};

const PASSWORD: &str = "Corr3ct-Horse-Battery";
const WRONG: &str = "Wr0ng-Guess-Staple";

fn xml() -> String {
    BrokerXml::new()
        .plugins(&format!(
            r#"<simpleAuthenticationPlugin>
        <users><authenticationUser username="alice" password="{PASSWORD}" groups="g"/></users>
      </simpleAuthenticationPlugin>"#
        ))
        .connector("mqtt", "mqtt://127.0.0.1:0")
        .connector("stomp", "stomp://127.0.0.1:0")
        .build()
}

/// The `ferromq::access` lines captured so far.
fn access_lines(logs: &Logs) -> Vec<String> {
    logs.text()
        .lines()
        .filter(|l| l.contains("ferromq::access"))
        .map(str::to_owned)
        .collect()
}

/// Wait (bounded) until an access line containing every part of `parts` was logged.
async fn line_with(logs: &Logs, parts: &[&str]) -> String {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        if let Some(line) = access_lines(logs)
            .into_iter()
            .find(|l| parts.iter().all(|p| l.contains(p)))
        {
            return line;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no access line with {parts:?} in:\n{}",
            logs.text()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn stomp_frame(stream: &mut TcpStream, command: &str) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(STEP, async {
        while !(String::from_utf8_lossy(&seen)
            .trim_start_matches('\n')
            .starts_with(command)
            && seen.contains(&0))
        {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed before {command}");
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {command}"));
}

#[tokio::test(flavor = "current_thread")]
async fn connects_disconnects_and_refusals_are_logged_with_who_and_why() {
    let (logs, _guard) = Logs::capture();
    let broker = TestBroker::from_xml(&xml()).await;
    let stomp_addr = broker.handle.listener_addrs()[1].1;

    // MQTT: a refused login, then a good one that disconnects.
    let mut wrong = options(broker.addr, "sensor-7");
    wrong.set_credentials("alice", WRONG);
    assert!(Client::try_connect_with(wrong).await.is_err());
    let refused = line_with(&logs, &["event=\"refused\"", "client_id=sensor-7"]).await;
    for part in [
        "listener=mqtt",
        "protocol=\"mqtt\"",
        "user=alice",
        "reason=\"bad_credentials\"",
        "peer=127.0.0.1:",
    ] {
        assert!(refused.contains(part), "{part} in {refused}");
    }
    let alice = Client::login(broker.addr, "sensor-8", "alice", PASSWORD).await;
    let connect = line_with(&logs, &["event=\"connect\"", "client_id=sensor-8"]).await;
    assert!(connect.contains("user=alice"), "{connect}");
    assert!(
        !connect.contains("reason="),
        "a connect has no reason: {connect}"
    );
    alice.disconnect().await;
    let gone = line_with(&logs, &["event=\"disconnect\"", "client_id=sensor-8"]).await;
    assert!(gone.contains("reason=\"client_disconnect\""), "{gone}");

    // STOMP: a refused login, then a good one that drops the socket.
    let mut stomp = TcpStream::connect(stomp_addr).await.expect("connect");
    let frame = format!(
        "CONNECT\naccept-version:1.2\nhost:h\nlogin:alice\npasscode:{WRONG}\nclient-id:desk-1\n\n\0"
    );
    stomp.write_all(frame.as_bytes()).await.expect("write");
    stomp_frame(&mut stomp, "ERROR").await;
    let refused = line_with(&logs, &["event=\"refused\"", "client_id=desk-1"]).await;
    for part in [
        "listener=stomp",
        "protocol=\"stomp\"",
        "user=alice",
        "reason=\"bad_credentials\"",
    ] {
        assert!(refused.contains(part), "{part} in {refused}");
    }
    let mut stomp = TcpStream::connect(stomp_addr).await.expect("connect");
    let frame = format!(
        "CONNECT\naccept-version:1.2\nhost:h\nlogin:alice\npasscode:{PASSWORD}\nclient-id:desk-2\n\n\0"
    );
    stomp.write_all(frame.as_bytes()).await.expect("write");
    stomp_frame(&mut stomp, "CONNECTED").await;
    line_with(
        &logs,
        &["event=\"connect\"", "client_id=desk-2", "user=alice"],
    )
    .await;
    drop(stomp);
    let gone = line_with(&logs, &["event=\"disconnect\"", "client_id=desk-2"]).await;
    assert!(gone.contains("reason=\"peer_closed\""), "{gone}");

    broker.shutdown().await;
    let all = logs.text();
    assert!(!all.contains(PASSWORD), "a password in the log:\n{all}");
    assert!(!all.contains(WRONG), "a password in the log:\n{all}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_socket_over_maximum_connections_is_logged_as_refused() {
    let (logs, _guard) = Logs::capture();
    let xml = BrokerXml::new().mqtt(0, &["maximumConnections=1"]).build();
    let broker = TestBroker::from_xml(&xml).await;
    let first = Client::connect(broker.addr, "first").await;
    let mut extra = TcpStream::connect(broker.addr).await.expect("connect");
    let mut buf = [0u8; 1];
    let _ = tokio::time::timeout(STEP, extra.read(&mut buf)).await;
    let line = line_with(&logs, &["event=\"refused\"", "reason=\"max_connections\""]).await;
    assert!(line.contains("listener=mqtt"), "{line}");
    assert!(!line.contains("client_id="), "no client id yet: {line}");
    first.disconnect().await;
    broker.shutdown().await;
}

/// A flood of sockets beyond `maximumConnections` does not flood the log: the first refusal
/// has its WARN and its access line, the others of the next 10 s one summary of each, with
/// their count.
#[tokio::test(flavor = "current_thread")]
async fn a_flood_over_maximum_connections_is_logged_once_then_summarised() {
    let (logs, _guard) = Logs::capture();
    let xml = BrokerXml::new().mqtt(0, &["maximumConnections=1"]).build();
    let broker = TestBroker::from_xml(&xml).await;
    let first = Client::connect(broker.addr, "first").await;
    const FLOOD: usize = 30;
    for _ in 0..FLOOD {
        let mut extra = TcpStream::connect(broker.addr).await.expect("connect");
        let mut buf = [0u8; 1];
        // Closed by the broker at accept: the read ends.
        let read = tokio::time::timeout(STEP, extra.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    }
    let warnings = |logs: &Logs| {
        logs.text()
            .lines()
            .filter(|l| l.contains("WARN") && l.contains("maximumConnections reached"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let refused = |logs: &Logs| {
        access_lines(logs)
            .into_iter()
            .filter(|l| l.contains("reason=\"max_connections\""))
            .collect::<Vec<_>>()
    };
    assert_eq!(warnings(&logs).len(), 1, "{}", logs.text());
    assert_eq!(refused(&logs).len(), 1, "{}", logs.text());
    // The metric still counts every one.
    let metrics = ferromq::metrics::render(broker.handle.core());
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("ferromq_connections_refused_total{")
                && l.contains("reason=\"max_connections\"")
                && l.ends_with(&format!(" {FLOOD}"))),
        "{metrics}"
    );
    assert!(refused(&logs)[0].contains("peer="), "{}", logs.text());
    // The window's summary: one WARN and one access line with the count, no peer.
    let summary = line_with_within(
        &logs,
        &["event=\"refused\"", "reason=\"max_connections\"", "count="],
        Duration::from_secs(15),
    )
    .await;
    assert!(
        summary.contains(&format!("count={}", FLOOD - 1)),
        "{summary}"
    );
    assert!(!summary.contains("peer="), "{summary}");
    let warnings = warnings(&logs);
    assert_eq!(warnings.len(), 2, "{}", logs.text());
    assert!(
        warnings[1].contains(&format!("{} more connection(s) closed", FLOOD - 1)),
        "{}",
        warnings[1]
    );
    assert_eq!(refused(&logs).len(), 2, "{}", logs.text());
    first.disconnect().await;
    broker.shutdown().await;
}

/// [`line_with`] with its own bound.
async fn line_with_within(logs: &Logs, parts: &[&str], within: Duration) -> String {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(line) = access_lines(logs)
            .into_iter()
            .find(|l| parts.iter().all(|p| l.contains(p)))
        {
            return line;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no access line with {parts:?} in:\n{}",
            logs.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
