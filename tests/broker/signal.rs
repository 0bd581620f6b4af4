//! The real binary: `ferromq run` serves the configured connector and exits 0 on SIGTERM after
//! closing its clients (graceful shutdown).
#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{activemq_xml, ChildGuard, RawClient};
use ferromq::protocol::Packet;

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
/// send the address of the "listening" line.
fn watch_stderr(stderr: std::process::ChildStderr) -> std::sync::mpsc::Receiver<SocketAddr> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let line = strip_ansi(&line);
            if line.contains("listening") {
                if let Some(addr) = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("addr="))
                    .and_then(|a| a.parse().ok())
                {
                    let _ = tx.send(addr);
                }
            }
        }
    });
    rx
}

#[tokio::test]
async fn sigterm_closes_clients_and_exits_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("activemq.xml");
    std::fs::write(&config, activemq_xml(&[], "")).expect("write config");
    let mut child = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_ferromq"))
            .args(["--log-level", "info", "run", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ferromq"),
    );
    let stderr = child.0.stderr.take().expect("stderr");
    let addrs = watch_stderr(stderr);
    let addr = tokio::task::spawn_blocking(move || addrs.recv_timeout(Duration::from_secs(10)))
        .await
        .expect("reader")
        .expect("the broker logs its listening address");

    let (mut client, _) = RawClient::connected(addr, "bye", true).await;
    client.send(Packet::PingReq).await;
    assert_eq!(client.recv().await, Packet::PingResp);

    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    client.expect_closed().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = child.0.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "ferromq did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "exit status {exit}");
}
