//! Bytes per idle connection, STOMP beside MQTT (a measurement, `#[ignore]`d: run with
//! `cargo test --test stomp idle_memory -- --ignored --nocapture`). Opens 2,000 idle MQTT
//! connections (CONNECT, keep-alive 0), then 2,000 idle STOMP ones (CONNECT, `heart-beat:0,0`,
//! no subscription), and prints the growth of this process's resident memory per connection
//! (broker and the test's client sockets together; kernel socket buffers are not counted).

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONNECTIONS: usize = 2_000;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}

/// An MQTT 3.1.1 CONNECT (clean session, keep-alive 0) for a 6-character client id.
fn mqtt_connect(n: usize) -> Vec<u8> {
    let id = format!("c{n:05}");
    let mut p = vec![0x10, (10 + 2 + id.len()) as u8];
    p.extend_from_slice(&[
        0,
        4,
        b'M',
        b'Q',
        b'T',
        b'T',
        4,
        0x02,
        0,
        0,
        0,
        id.len() as u8,
    ]);
    p.extend_from_slice(id.as_bytes());
    p
}

async fn idle_mqtt(addr: std::net::SocketAddr, n: usize) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(&mqtt_connect(n)).await.expect("CONNECT");
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).await.expect("CONNACK");
    assert_eq!(connack, [0x20, 2, 0, 0]);
    s
}

async fn idle_stomp(addr: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"CONNECT\naccept-version:1.2\nhost:x\nheart-beat:0,0\n\n\0")
        .await
        .expect("CONNECT");
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\0") {
        s.read_exact(&mut byte).await.expect("CONNECTED");
        got.push(byte[0]);
    }
    assert!(got.starts_with(b"CONNECTED"));
    s
}

async fn settled_rss() -> u64 {
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    rss_bytes()
}

#[tokio::test]
#[ignore = "a measurement: run with --ignored --nocapture"]
async fn idle_memory_per_connection_stomp_beside_mqtt() {
    let env = crate::broker().await;
    // Warm up both paths (allocator arenas, lazily built tables) before measuring.
    let warm: Vec<_> = {
        let mut v = Vec::new();
        for n in 0..50 {
            v.push(idle_mqtt(env.mqtt(), 90_000 + n).await);
            v.push(idle_stomp(env.addr("stomp")).await);
        }
        v
    };
    drop(warm);
    let before = settled_rss().await;
    let mut mqtt = Vec::with_capacity(CONNECTIONS);
    for n in 0..CONNECTIONS {
        mqtt.push(idle_mqtt(env.mqtt(), n).await);
    }
    let with_mqtt = settled_rss().await;
    let mut stomp = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        stomp.push(idle_stomp(env.addr("stomp")).await);
    }
    let with_stomp = settled_rss().await;
    let per_mqtt = with_mqtt.saturating_sub(before) / CONNECTIONS as u64;
    let per_stomp = with_stomp.saturating_sub(with_mqtt) / CONNECTIONS as u64;
    println!(
        "idle connection, resident bytes each: MQTT {per_mqtt}, STOMP {per_stomp} \
         ({CONNECTIONS} of each, {} build)",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    assert!(
        per_mqtt > 0 && per_stomp > 0,
        "the measurement saw no growth"
    );
    drop((mqtt, stomp));
    env.broker.shutdown().await;
}
