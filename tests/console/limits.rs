//! The console's connection limit: idle HTTP sockets beyond `maximumConnections` wait in the
//! listen backlog (holding none of the broker's descriptors) and the MQTT listener keeps
//! accepting while the console is saturated.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::client::RawClient;
use crate::support::STEP;
use crate::{http, Env, ADMIN};

#[tokio::test]
async fn idle_sockets_beyond_the_limit_wait_and_mqtt_keeps_accepting() {
    let env = Env::start_with(r#"maximumConnections="2""#, "").await;
    let mut idle = Vec::new();
    for _ in 0..6 {
        idle.push(TcpStream::connect(env.console).await.expect("idle socket"));
    }
    // Saturated: a request beyond the limit is not served while the idle sockets are open.
    let mut waiting = TcpStream::connect(env.console).await.expect("connect");
    waiting
        .write_all(b"GET /api/overview HTTP/1.1\r\nHost: console\r\n\r\n")
        .await
        .expect("write");
    let mut answer = vec![0u8; 4096];
    let early = tokio::time::timeout(Duration::from_millis(500), waiting.read(&mut answer)).await;
    assert!(
        early.is_err(),
        "answered beyond maximumConnections: {early:?}"
    );
    // MQTT is not starved by the console.
    let mqtt = env.listener("mqtt");
    let (_client, _ack) = RawClient::connected(mqtt, "while-console-saturated", true).await;
    // Once the idle sockets close, the waiting request and new ones are answered.
    drop(idle);
    let n = tokio::time::timeout(STEP, waiting.read(&mut answer))
        .await
        .expect("answered once the idle sockets closed")
        .expect("read");
    let head = String::from_utf8_lossy(&answer[..n]);
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    let overview = http::get(env.console, "/api/overview", Some(ADMIN)).await;
    assert_eq!(overview.status, 200, "{}", overview.text());
}
