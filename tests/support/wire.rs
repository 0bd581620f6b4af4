//! For the persist tests: a raw MQTT 3.1.1 client that tolerates the broker vanishing, and the
//! `ferromq` process that crash tests kill and restart.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::Rng;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use ferromq::protocol::{
    decode, encode, ConnAck, Connect, ConnectReason, Packet, ProtocolVersion, Publish, QoS,
    RetainHandling, Subscribe, SubscriptionOptions,
};

use super::client::connect_packet;
use super::free_port;
use super::xml::{pending_limit_policy, BrokerXml};

/// A minimal error-tolerant MQTT 3.1.1 client (the broker may vanish at any byte).
pub struct Wire {
    stream: TcpStream,
    buf: BytesMut,
}

impl Wire {
    /// Connect and CONNECT, retrying while the broker (re)starts.
    pub async fn connect(addr: SocketAddr, client_id: &str, clean: bool) -> Wire {
        Wire::connect_with(addr, connect_packet(client_id, clean, 0)).await
    }

    /// Connect and send `connect`, retrying while the broker (re)starts, until a CONNACK
    /// accepting it.
    pub async fn connect_with(addr: SocketAddr, connect: Connect) -> Wire {
        let give_up = Instant::now() + Duration::from_secs(15);
        loop {
            assert!(Instant::now() < give_up, "broker did not come back");
            if let Ok(mut wire) = Wire::try_connect(addr, &connect).await {
                match wire.recv(Duration::from_secs(2)).await {
                    Ok(Some(Packet::ConnAck(ack))) if ack.reason == ConnectReason::Success => {
                        return wire
                    }
                    Ok(Some(Packet::ConnAck(ack))) => panic!("CONNECT refused: {ack:?}"),
                    _ => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Like [`Wire::connect_with`], and also returns the accepting CONNACK (to check its
    /// session-present flag).
    pub async fn connect_acked(addr: SocketAddr, connect: Connect) -> (Wire, ConnAck) {
        let give_up = Instant::now() + Duration::from_secs(15);
        loop {
            assert!(Instant::now() < give_up, "broker did not come back");
            if let Ok(mut wire) = Wire::try_connect(addr, &connect).await {
                match wire.recv(Duration::from_secs(2)).await {
                    Ok(Some(Packet::ConnAck(ack))) if ack.reason == ConnectReason::Success => {
                        return (wire, ack)
                    }
                    Ok(Some(Packet::ConnAck(ack))) => panic!("CONNECT refused: {ack:?}"),
                    _ => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn try_connect(addr: SocketAddr, connect: &Connect) -> std::io::Result<Wire> {
        let stream = TcpStream::connect(addr).await?;
        let mut wire = Wire {
            stream,
            buf: BytesMut::new(),
        };
        wire.send(&Packet::Connect(Box::new(connect.clone())))
            .await?;
        Ok(wire)
    }

    pub async fn send(&mut self, packet: &Packet) -> std::io::Result<()> {
        let mut out = BytesMut::new();
        encode(packet, ProtocolVersion::V311, &mut out)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        self.stream.write_all(&out).await
    }

    /// The next packet; `Ok(None)` on timeout; `Err` when the connection is gone.
    pub async fn recv(&mut self, within: Duration) -> std::io::Result<Option<Packet>> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match decode(&mut self.buf, Some(ProtocolVersion::V311), usize::MAX) {
                Ok(Some(p)) => return Ok(Some(p)),
                Ok(None) => {}
                Err(e) => return Err(std::io::Error::other(e.to_string())),
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return Ok(None),
                Ok(Ok(0)) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(Err(e)) => return Err(e),
                Ok(Ok(_)) => {}
            }
        }
    }
}

/// Sends `numbers` as [`numbered_publish`]es on `topic` with at most `window` unacknowledged,
/// calling `on_ack` with each number its PUBACK acknowledges. Returns when every number is
/// acknowledged, or the connection's error (5 s without a packet: `TimedOut`), so the caller
/// reconnects and sends what `on_ack` has not seen.
pub async fn publish_numbers(
    wire: &mut Wire,
    topic: &str,
    numbers: impl IntoIterator<Item = u32>,
    window: usize,
    mut on_ack: impl FnMut(u32),
) -> std::io::Result<()> {
    let mut todo = numbers.into_iter();
    let mut in_flight: std::collections::HashMap<u16, u32> = Default::default();
    let mut next_id: u16 = 1;
    loop {
        while in_flight.len() < window {
            let Some(number) = todo.next() else { break };
            let id = next_id;
            next_id = next_id.checked_add(1).unwrap_or(1);
            wire.send(&numbered_publish(topic, number, id)).await?;
            in_flight.insert(id, number);
        }
        if in_flight.is_empty() {
            return Ok(());
        }
        match wire.recv(Duration::from_secs(5)).await? {
            Some(Packet::PubAck(a)) => {
                if let Some(number) = in_flight.remove(&a.packet_id) {
                    on_ack(number);
                }
            }
            Some(other) => panic!("unexpected packet to a publisher: {other:?}"),
            None => return Err(std::io::ErrorKind::TimedOut.into()),
        }
    }
}

/// A QoS 1 PUBLISH whose payload is `number` (4 bytes, big endian).
pub fn numbered_publish(topic: &str, number: u32, packet_id: u16) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: topic.into(),
        packet_id: Some(packet_id),
        payload: Bytes::from(number.to_be_bytes().to_vec()),
        properties: None,
    })
}

/// A durable broker (KahaDB directory under `dir`) with one plain MQTT connector on `port`, and
/// a pending-queue limit of `queue_limit` on `crash.>` topics (high enough that the slow-consumer
/// rule never drops what a crash test counts).
pub fn write_crash_config(dir: &Path, port: u16, queue_limit: u32) -> PathBuf {
    let path = dir.join("activemq.xml");
    let xml = broker_xml(&dir.join("kahadb"), port, true, "crash.>", queue_limit);
    std::fs::write(&path, xml).expect("write config");
    path
}

/// A broker with a KahaDB store in `store_dir` (a memory broker unless `persistent`), one plain
/// MQTT connector on `port` (0: any), and a pending-queue limit of `queue_limit` on the
/// ActiveMQ topic pattern `limited_topics`.
pub fn broker_xml(
    store_dir: &Path,
    port: u16,
    persistent: bool,
    limited_topics: &str,
    queue_limit: u32,
) -> String {
    BrokerXml::new()
        .name("persist-test")
        .child(&pending_limit_policy(limited_topics, queue_limit as usize))
        .kahadb(store_dir)
        .persistent(Some(persistent))
        .mqtt(port, &[])
        .build()
}

/// The `ferromq` binary on `config`, its warnings on the test's stderr.
pub fn spawn_broker(config: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ferromq"))
        .args(["run", "--config"])
        .arg(config)
        .args(["--log-level", "warn"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn ferromq")
}

/// Kills the broker process when dropped, so a failing crash test leaves no broker behind.
pub struct KillOnDrop(pub Arc<Mutex<Child>>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let mut child = self.0.lock();
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A durable `ferromq` process for a crash test, with a persistent subscriber's session that
/// stays offline until the test drains it. The process is killed when the rig is dropped.
pub struct CrashRig {
    pub addr: SocketAddr,
    pub broker: Arc<Mutex<Child>>,
    config: PathBuf,
    _kill_on_drop: KillOnDrop,
    _dir: tempfile::TempDir,
}

impl CrashRig {
    /// Start the broker (pending limit `queue_limit` on `crash.>`) and subscribe
    /// `subscriber` (clean session 0) to `topic` at `qos`, then disconnect it.
    pub async fn start(queue_limit: u32, subscriber: &str, topic: &str, qos: QoS) -> CrashRig {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let config = write_crash_config(dir.path(), port, queue_limit);
        let broker = Arc::new(Mutex::new(spawn_broker(&config)));
        let rig = CrashRig {
            addr: ([127, 0, 0, 1], port).into(),
            _kill_on_drop: KillOnDrop(broker.clone()),
            broker,
            config,
            _dir: dir,
        };
        let mut sub = Wire::connect(rig.addr, subscriber, false).await;
        subscribe(&mut sub, topic, qos).await;
        rig
    }

    /// SIGKILL and restart the broker `kills` times, at random values of `progress` below
    /// `limit` (see [`spawn_killer`]).
    /// Start the broker with a pending limit of `queue_limit` on the ActiveMQ topic pattern
    /// `limited_topics`, and no session set up.
    pub fn launch(limited_topics: &str, queue_limit: u32) -> CrashRig {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let config = dir.path().join("activemq.xml");
        let xml = broker_xml(
            &dir.path().join("kahadb"),
            port,
            true,
            limited_topics,
            queue_limit,
        );
        std::fs::write(&config, xml).expect("write config");
        let broker = Arc::new(Mutex::new(spawn_broker(&config)));
        CrashRig {
            addr: ([127, 0, 0, 1], port).into(),
            _kill_on_drop: KillOnDrop(broker.clone()),
            broker,
            config,
            _dir: dir,
        }
    }

    /// The broker's `activemq.xml` (to restart it).
    pub fn config(&self) -> &Path {
        &self.config
    }

    pub fn killer(
        &self,
        kills: u32,
        limit: usize,
        progress: Arc<AtomicUsize>,
    ) -> tokio::task::JoinHandle<Vec<usize>> {
        spawn_killer(
            self.broker.clone(),
            self.config.clone(),
            progress,
            random_kill_points(kills, limit),
        )
    }
}

/// `count` random kill points in `1..limit`, ascending.
pub fn random_kill_points(count: u32, limit: usize) -> Vec<usize> {
    let mut points: Vec<usize> = (0..count)
        .map(|_| rand::rng().random_range(1..limit))
        .collect();
    points.sort_unstable();
    points
}

/// SIGKILL the broker (and start it again) each time `progress` reaches the next of
/// `kill_points`, a random 0-3 ms later so kills land anywhere in a group commit. Returns the
/// progress seen at each kill.
pub fn spawn_killer(
    broker: Arc<Mutex<Child>>,
    config: PathBuf,
    progress: Arc<AtomicUsize>,
    kill_points: Vec<usize>,
) -> tokio::task::JoinHandle<Vec<usize>> {
    tokio::spawn(async move {
        let mut progress_at_kill = Vec::new();
        for point in kill_points {
            while progress.load(Ordering::Relaxed) < point {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let delay_us = rand::rng().random_range(0..3000);
            tokio::time::sleep(Duration::from_micros(delay_us)).await;
            progress_at_kill.push(progress.load(Ordering::Relaxed));
            let mut child = broker.lock();
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
            *child = spawn_broker(&config);
        }
        progress_at_kill
    })
}

/// SUBSCRIBE `topic` at `qos` on `wire` and wait for the SUBACK.
pub async fn subscribe(wire: &mut Wire, topic: &str, qos: QoS) {
    wire.send(&Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![(
            topic.into(),
            SubscriptionOptions {
                qos,
                no_local: false,
                retain_as_published: false,
                retain_handling: RetainHandling::SendAtSubscribe,
            },
        )],
        properties: None,
    }))
    .await
    .expect("subscribe");
    assert!(matches!(
        wire.recv(Duration::from_secs(5)).await,
        Ok(Some(Packet::SubAck(_)))
    ));
}

/// The number a [`numbered_publish`] payload carries.
pub fn payload_number(payload: &[u8]) -> u32 {
    u32::from_be_bytes(<[u8; 4]>::try_from(payload).expect("4-byte payload"))
}
