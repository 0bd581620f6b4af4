//! The real binary: `ferromq run` serves the configured connector and exits 0 on SIGTERM after
//! closing its clients (graceful shutdown); a second SIGTERM while it drains makes it exit at
//! once, with 128 + 15.
#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{activemq_xml, publish_packet, ChildGuard, RawClient};
use ferromq::protocol::{Packet, QoS};

/// The log line without terminal colour sequences (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Read stderr in a thread (to its end, so the broker never writes to a closed pipe) and
/// send every line, without colours.
fn watch_stderr(stderr: std::process::ChildStderr) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(strip_ansi(&line));
        }
    });
    rx
}

/// The next line containing `text`, within 10 s.
async fn line_with(lines: &std::sync::mpsc::Receiver<String>, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::task::block_in_place(|| lines.recv_timeout(left)) {
            Ok(line) if line.contains(text) => return line,
            Ok(_) => {}
            Err(_) => panic!("no log line with `{text}` within 10 s"),
        }
    }
}

/// The address of the "listening" line.
async fn listening_addr(lines: &std::sync::mpsc::Receiver<String>) -> SocketAddr {
    line_with(lines, "listening")
        .await
        .split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .and_then(|a| a.parse().ok())
        .expect("the broker logs its listening address")
}

fn spawn_broker(config: &std::path::Path) -> ChildGuard {
    ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_ferromq"))
            .args(["--log-level", "info", "run", "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ferromq"),
    )
}

fn sigterm(child: &ChildGuard) {
    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// The exit status within `within`.
async fn exited_within(child: &mut ChildGuard, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(exit) = child.0.try_wait().expect("wait") {
            return exit;
        }
        assert!(
            Instant::now() < deadline,
            "ferromq did not exit within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_clients_and_exits_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("activemq.xml");
    std::fs::write(&config, activemq_xml(&[], "")).expect("write config");
    let mut child = spawn_broker(&config);
    let lines = watch_stderr(child.0.stderr.take().expect("stderr"));
    let addr = listening_addr(&lines).await;

    let (mut client, _) = RawClient::connected(addr, "bye", true).await;
    client.send(Packet::PingReq).await;
    assert_eq!(client.recv().await, Packet::PingResp);

    sigterm(&child);
    client.expect_closed().await;
    let exit = exited_within(&mut child, Duration::from_secs(10)).await;
    assert!(exit.success(), "exit status {exit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_while_draining_exits_at_once() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("activemq.xml");
    std::fs::write(&config, activemq_xml(&[], "")).expect("write config");
    let mut child = spawn_broker(&config);
    let lines = watch_stderr(child.0.stderr.take().expect("stderr"));
    let addr = listening_addr(&lines).await;

    // A subscriber that never reads, and a publisher flooding it: closing the subscriber has
    // output to flush that cannot be written, which keeps the shutdown busy for a while.
    let (mut stalled, _) = RawClient::connected(addr, "stalled", true).await;
    stalled.subscribe(1, &[("flood", QoS::AtMostOnce)]).await;
    let (mut publisher, _) = RawClient::connected(addr, "flooder", true).await;
    let flood = tokio::spawn(async move {
        let payload = vec![b'x'; 64 * 1024];
        for _ in 0..2_000 {
            publisher
                .send(publish_packet(
                    "flood",
                    &payload,
                    QoS::AtMostOnce,
                    None,
                    false,
                ))
                .await;
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !flood.is_finished(),
        "the broker should be holding output back"
    );

    sigterm(&child);
    line_with(&lines, "shutting down").await;
    let second = Instant::now();
    sigterm(&child);
    let exit = exited_within(&mut child, Duration::from_secs(3)).await;
    assert!(
        second.elapsed() < Duration::from_secs(2),
        "exited {:?} after the second SIGTERM",
        second.elapsed()
    );
    assert_eq!(exit.code(), Some(128 + 15), "exit status {exit}");
    assert_eq!(exit.signal(), None, "exited by itself, not killed");
    line_with(&lines, "exiting now").await;
    flood.abort();
    drop(stalled);
}
