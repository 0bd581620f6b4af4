//! Crash safety with an ONLINE persistent subscriber: every QoS 1 publish is PUBACKed only
//! after its commit is durable, and deliveries to the connected subscriber run meanwhile (a
//! change that routes or acknowledges before the commit must still pass this). The `ferromq` binary is
//! killed with SIGKILL at random moments while several publishers stream numbered messages
//! to the subscriber, which acknowledges everything and reconnects after each restart. At the
//! end every message the broker PUBACKed must have reached the subscriber: delivered before
//! a kill, or redelivered from the store after the restart (duplicates allowed at QoS 1).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferromq::protocol::{Ack, Packet, QoS};
use parking_lot::Mutex;

use crate::support::wire::{payload_number, publish_numbers, CrashRig, Wire};

const PUBLISHERS: u32 = 4;
const MESSAGES_PER_PUBLISHER: u32 = 5_000;
const KILLS: u32 = 8;
const WINDOW: usize = 64;
const TOPIC: &str = "crash/online";
const SUBSCRIBER: &str = "crash-online-sub";
const DEADLINE: Duration = Duration::from_secs(90);

/// Sends publisher `index`'s not-yet-acknowledged numbers with a window until all are
/// acknowledged or the connection dies; records PUBACKs in `acked`.
async fn publish_some(
    wire: &mut Wire,
    index: u32,
    acked: &Mutex<BTreeSet<u32>>,
    progress: &AtomicUsize,
) -> std::io::Result<()> {
    let first = index * MESSAGES_PER_PUBLISHER;
    let todo: Vec<u32> = {
        let acked = acked.lock();
        (first..first + MESSAGES_PER_PUBLISHER)
            .filter(|n| !acked.contains(n))
            .collect()
    };
    publish_numbers(wire, TOPIC, todo, WINDOW, |number| {
        acked.lock().insert(number);
        progress.fetch_add(1, Ordering::Relaxed);
    })
    .await
}

/// The online subscriber: acknowledges every delivery, reconnects (clean session 0) after each
/// restart, until `stop`.
async fn subscribe_until(
    addr: std::net::SocketAddr,
    received: Arc<Mutex<BTreeSet<u32>>>,
    deliveries: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        let mut sub = Wire::connect(addr, SUBSCRIBER, false).await;
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            match sub.recv(Duration::from_millis(200)).await {
                Ok(Some(Packet::Publish(p))) => {
                    deliveries.fetch_add(1, Ordering::Relaxed);
                    received.lock().insert(payload_number(&p.payload));
                    if let Some(id) = p.packet_id {
                        if sub.send(&Packet::PubAck(Ack::new(id))).await.is_err() {
                            break;
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_sigkills_with_an_online_subscriber() {
    let started = Instant::now();
    let total = (PUBLISHERS * MESSAGES_PER_PUBLISHER) as usize;
    let rig = CrashRig::start(
        MESSAGES_PER_PUBLISHER * PUBLISHERS * 2,
        SUBSCRIBER,
        TOPIC,
        QoS::AtLeastOnce,
    )
    .await;
    let addr = rig.addr;
    let received = Arc::new(Mutex::new(BTreeSet::new()));
    let deliveries = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let subscriber = tokio::spawn(subscribe_until(
        addr,
        received.clone(),
        deliveries.clone(),
        stop.clone(),
    ));
    let progress = Arc::new(AtomicUsize::new(0));
    let killer = rig.killer(KILLS, total, progress.clone());

    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|index| {
            let (acked, progress) = (acked.clone(), progress.clone());
            tokio::spawn(async move {
                let mut connections = 0u32;
                loop {
                    let done = {
                        let first = index * MESSAGES_PER_PUBLISHER;
                        let acked = acked.lock();
                        acked.range(first..first + MESSAGES_PER_PUBLISHER).count()
                            == MESSAGES_PER_PUBLISHER as usize
                    };
                    if done {
                        return connections;
                    }
                    assert!(started.elapsed() < DEADLINE, "crash test took too long");
                    let mut wire =
                        Wire::connect(addr, &format!("crash-online-pub-{index}"), true).await;
                    connections += 1;
                    let _ = publish_some(&mut wire, index, &acked, &progress).await;
                }
            })
        })
        .collect();
    let mut connections = 0;
    for publisher in publishers {
        connections += publisher.await.expect("publisher task");
    }
    let acked_at_kill = killer.await.expect("killer task");

    // After the last restart the subscriber gets what the store kept for it.
    let acked = acked.lock().clone();
    while !acked.is_subset(&received.lock()) && started.elapsed() < DEADLINE {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    subscriber.await.expect("subscriber task");
    let received = received.lock().clone();
    let losses = acked.difference(&received).count();
    println!(
        "online crash test: {PUBLISHERS} publishers x {MESSAGES_PER_PUBLISHER}, kills={KILLS} \
         (acked count at each kill: {acked_at_kill:?}), publisher connections={connections}, \
         acked={} delivered={} (with duplicates {}), losses={losses} in {:?}",
        acked.len(),
        received.len(),
        deliveries.load(Ordering::Relaxed),
        started.elapsed()
    );
    assert_eq!(losses, 0, "acknowledged messages lost");
    assert_eq!(acked.len(), total);
}
