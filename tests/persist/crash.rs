//! Crash safety of acknowledged messages: the `ferromq` binary is killed with SIGKILL at random
//! moments while a QoS 1 publisher streams numbered messages to a persistent subscriber's
//! (offline) session, then restarted. At the end every message the broker PUBACKed must reach
//! the subscriber (duplicates allowed at QoS 1).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferromq::protocol::{Ack, Packet, QoS};

use crate::support::wire::{payload_number, publish_numbers, CrashRig, Wire};

const MESSAGES: u32 = 10_000;
const KILLS: u32 = 10;
/// QoS 1 PUBLISHes the publisher keeps unacknowledged (pipelining, so kills hit mid-batch).
const WINDOW: usize = 64;
const TOPIC: &str = "crash/t";
/// Bounds the whole test (it normally takes a few seconds).
const DEADLINE: Duration = Duration::from_secs(60);

/// One publisher connection's run: sends not-yet-acknowledged numbers with a window; records
/// PUBACKs in `acked`. Returns when all are acknowledged or the connection dies.
async fn publish_some(
    wire: &mut Wire,
    acked: &mut BTreeSet<u32>,
    progress: &AtomicUsize,
) -> std::io::Result<()> {
    let todo: Vec<u32> = (0..MESSAGES).filter(|n| !acked.contains(n)).collect();
    publish_numbers(wire, TOPIC, todo, WINDOW, |number| {
        acked.insert(number);
        progress.store(acked.len(), Ordering::Relaxed);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_message_survives_random_sigkills() {
    let started = Instant::now();
    // The persistent subscriber's session stays offline for the whole run; its queue limit
    // must not drop any message.
    let rig = CrashRig::start(MESSAGES * 2, "crash-sub", TOPIC, QoS::AtLeastOnce).await;
    let addr = rig.addr;
    // Kill points: random numbers of acknowledged messages, so every kill lands mid-stream
    // (plus a random few ms, so it hits anywhere in a group commit).
    let progress = Arc::new(AtomicUsize::new(0));
    let killer = rig.killer(KILLS, MESSAGES as usize, progress.clone());

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
                received.insert(payload_number(&p.payload));
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
    assert_eq!(losses, 0, "acknowledged messages lost");
    assert_eq!(acked.len(), MESSAGES as usize);
}
