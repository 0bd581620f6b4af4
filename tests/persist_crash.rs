//! Crash safety of acknowledged messages: the `ferromq` binary is killed with SIGKILL at random
//! moments while a QoS 1 publisher streams numbered messages to a persistent subscriber's
//! (offline) session, then restarted. At the end every message the broker PUBACKed must reach
//! the subscriber (duplicates allowed at QoS 1).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::Rng;

use ferromq::protocol::{Ack, Packet, QoS, RetainHandling, Subscribe, SubscriptionOptions};

mod persist_support;
use persist_support::{numbered_publish, Wire};

const MESSAGES: u32 = 10_000;
const KILLS: u32 = 10;
/// QoS 1 PUBLISHes the publisher keeps unacknowledged (pipelining, so kills hit mid-batch).
const WINDOW: usize = 64;
const TOPIC: &str = "crash/t";
/// Bounds the whole test (it normally takes a few seconds).
const DEADLINE: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn write_config(dir: &Path, port: u16) -> std::path::PathBuf {
    let path = dir.join("activemq.xml");
    let xml = format!(
        r#"<beans xmlns="http://www.springframework.org/schema/beans">
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="crash">
    <destinationPolicy><policyMap><policyEntries>
      <policyEntry topic="crash.>">
        <pendingMessageLimitStrategy>
          <constantPendingMessageLimitStrategy limit="{queue_limit}"/>
        </pendingMessageLimitStrategy>
      </policyEntry>
    </policyEntries></policyMap></destinationPolicy>
    <persistenceAdapter><kahaDB directory="{}"/></persistenceAdapter>
    <transportConnectors>
      <transportConnector name="mqtt" uri="mqtt://127.0.0.1:{port}"/>
    </transportConnectors>
  </broker>
</beans>
"#,
        dir.join("kahadb").display(),
        // The offline subscriber holds every message: its queue limit must not drop any (the
        // slow-consumer rule is not what this test is about).
        queue_limit = MESSAGES * 2,
    );
    std::fs::write(&path, xml).expect("write config");
    path
}

fn spawn_broker(config: &Path) -> Child {
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

/// One publisher connection's run: sends not-yet-acknowledged numbers with a window; records
/// PUBACKs in `acked`. Returns when all are acknowledged or the connection dies.
async fn publish_some(
    wire: &mut Wire,
    acked: &mut BTreeSet<u32>,
    progress: &AtomicUsize,
) -> std::io::Result<()> {
    let todo: Vec<u32> = (0..MESSAGES).filter(|n| !acked.contains(n)).collect();
    let mut todo = todo.into_iter();
    let mut in_flight: std::collections::HashMap<u16, u32> = Default::default();
    let mut next_id: u16 = 1;
    loop {
        while in_flight.len() < WINDOW {
            let Some(number) = todo.next() else { break };
            let id = next_id;
            next_id = next_id.checked_add(1).unwrap_or(1);
            wire.send(&numbered_publish(TOPIC, number, id)).await?;
            in_flight.insert(id, number);
        }
        if in_flight.is_empty() {
            return Ok(());
        }
        match wire.recv(Duration::from_secs(5)).await? {
            Some(Packet::PubAck(a)) => {
                if let Some(number) = in_flight.remove(&a.packet_id) {
                    acked.insert(number);
                    progress.store(acked.len(), Ordering::Relaxed);
                }
            }
            Some(other) => panic!("unexpected packet to the publisher: {other:?}"),
            None => return Err(std::io::ErrorKind::TimedOut.into()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_message_survives_random_sigkills() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = write_config(dir.path(), port);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let broker = Arc::new(Mutex::new(spawn_broker(&config)));

    // The persistent subscriber's session, then offline for the whole run.
    let mut sub = Wire::connect(addr, "crash-sub", false).await;
    sub.send(&Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![(
            TOPIC.into(),
            SubscriptionOptions {
                qos: QoS::AtLeastOnce,
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
        sub.recv(Duration::from_secs(5)).await,
        Ok(Some(Packet::SubAck(_)))
    ));
    drop(sub);

    // Kill points: random numbers of acknowledged messages, so every kill lands mid-stream
    // (plus a random few ms, so it hits anywhere in a group commit).
    let progress = Arc::new(AtomicUsize::new(0));
    let mut kill_points: Vec<usize> = (0..KILLS)
        .map(|_| rand::rng().random_range(1..MESSAGES as usize))
        .collect();
    kill_points.sort_unstable();
    let killer = {
        let (broker, config, progress) = (broker.clone(), config.clone(), progress.clone());
        let kill_points = kill_points.clone();
        tokio::spawn(async move {
            let mut acked_at_kill = Vec::new();
            for point in kill_points {
                while progress.load(Ordering::Relaxed) < point {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                let delay_us = rand::rng().random_range(0..3000);
                tokio::time::sleep(Duration::from_micros(delay_us)).await;
                acked_at_kill.push(progress.load(Ordering::Relaxed));
                let mut child = broker.lock();
                child.kill().expect("SIGKILL");
                child.wait().expect("reap");
                *child = spawn_broker(&config);
            }
            acked_at_kill
        })
    };

    let mut acked = BTreeSet::new();
    let mut connections = 0;
    while acked.len() < MESSAGES as usize {
        assert!(started.elapsed() < DEADLINE, "crash test took too long");
        let mut wire = Wire::connect(addr, "crash-pub", true).await;
        connections += 1;
        // A connection ends when the broker is killed; the next one sends what is unacked.
        let _ = publish_some(&mut wire, &mut acked, &progress).await;
    }
    let acked_at_kill = killer.await.expect("killer task");

    // Read the subscriber's session back after the last restart.
    let mut sub = Wire::connect(addr, "crash-sub", false).await;
    let mut received = BTreeSet::new();
    let mut deliveries = 0u64;
    while !acked.is_subset(&received) {
        assert!(started.elapsed() < DEADLINE, "draining took too long");
        match sub
            .recv(Duration::from_secs(5))
            .await
            .expect("subscriber connection")
        {
            Some(Packet::Publish(p)) => {
                deliveries += 1;
                let number = <[u8; 4]>::try_from(&p.payload[..]).map(u32::from_be_bytes);
                received.insert(number.expect("4-byte payload"));
                if let Some(id) = p.packet_id {
                    sub.send(&Packet::PubAck(Ack::new(id)))
                        .await
                        .expect("puback");
                }
            }
            Some(_) => {}
            None => break,
        }
    }
    let losses = acked.difference(&received).count();
    println!(
        "crash test: N={MESSAGES} kills={KILLS} (acked count at each kill: {acked_at_kill:?}) \
         publisher connections={connections} acked={} delivered={} \
         (with duplicates {deliveries}) losses={losses} in {:?}",
        acked.len(),
        received.len(),
        started.elapsed()
    );
    let mut child = broker.lock();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(losses, 0, "acknowledged messages lost");
    assert_eq!(acked.len(), MESSAGES as usize);
}
