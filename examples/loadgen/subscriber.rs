//! One subscribing connection: reads PUBLISH packets in large chunks, acknowledges them at
//! QoS 1/2, and counts each message exactly once (a bitset per publisher), so that loss and
//! duplicates are exact numbers rather than differences of counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use hdrhistogram::Histogram;

use crate::conn::Conn;
use crate::publisher::PAYLOAD_HEADER_BYTES;
use crate::wire::{self, kind};

/// Latencies are recorded in nanoseconds, up to one hour, with 3 significant digits.
pub fn new_histogram() -> Result<Histogram<u64>, String> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).map_err(|e| format!("histogram: {e}"))
}

/// Set by the coordinator once every publisher has stopped: how many distinct messages this
/// subscriber should end up with. `u64::MAX` until then.
pub struct Expected(AtomicU64);

impl Expected {
    pub fn unknown() -> Arc<Self> {
        Arc::new(Expected(AtomicU64::new(u64::MAX)))
    }
    pub fn set(&self, n: u64) {
        self.0.store(n, Ordering::Release);
    }
    pub fn get(&self) -> Option<u64> {
        match self.0.load(Ordering::Acquire) {
            u64::MAX => None,
            n => Some(n),
        }
    }
}

pub struct SubscriberPlan {
    pub index: usize,
    /// Number of publishers in the run (payloads name their publisher by index).
    pub publishers: usize,
    pub expected: Arc<Expected>,
    pub clock_origin: Instant,
    /// Once the expected count is known, give up after this long without a new message.
    pub quiet: Duration,
    /// Messages received up to this instant (the end of publishing) count as `in_window`.
    pub window_end: Instant,
    /// Stop receiving here even if messages are still missing (they are reported as lost). A
    /// broker that queues a large backlog at QoS 0 would otherwise stretch the run unboundedly.
    pub drain_deadline: Instant,
    pub keep_alive: Duration,
    /// Distinct messages received by all members of this subscriber's shared subscription; the
    /// expected count is then the group's, not this member's. `None` for a plain subscription.
    pub group_unique: Option<Arc<AtomicU64>>,
}

pub struct SubscriberOutcome {
    pub unique: u64,
    /// Distinct messages received before `window_end`: the steady-state delivery rate.
    pub in_window: u64,
    pub duplicates: u64,
    /// Payloads that do not carry this run's header (shorter, or an unknown publisher).
    pub foreign: u64,
    pub latency_ns: Histogram<u64>,
    pub last_receive: Option<Instant>,
    pub error: Option<String>,
}

/// What one subscriber has received so far (shared by the MQTT and STOMP subscribers).
pub struct Tally {
    seen: Vec<Vec<u64>>,
    pub out: SubscriberOutcome,
    group_unique: Option<Arc<AtomicU64>>,
    expected_known_at: Option<Instant>,
    last_progress: Instant,
}

impl Tally {
    /// `latency_ns` is an empty histogram (from `new_histogram`) that this tally fills.
    pub fn new(plan: &SubscriberPlan, latency_ns: Histogram<u64>) -> Tally {
        Tally {
            seen: vec![Vec::new(); plan.publishers],
            out: SubscriberOutcome {
                unique: 0,
                in_window: 0,
                duplicates: 0,
                foreign: 0,
                latency_ns,
                last_receive: None,
                error: None,
            },
            group_unique: plan.group_unique.clone(),
            expected_known_at: None,
            last_progress: Instant::now(),
        }
    }

    /// True when the subscriber can stop: it (or its group) has every expected message, or
    /// nothing new came for `plan.quiet` once the expected count was known, or the drain
    /// deadline passed.
    pub fn finished(&mut self, plan: &SubscriberPlan) -> bool {
        if let Some(expected) = plan.expected.get() {
            let known_at = *self.expected_known_at.get_or_insert_with(Instant::now);
            let have = match &self.group_unique {
                Some(group) => group.load(Ordering::Relaxed),
                None => self.out.unique,
            };
            if have >= expected {
                return true;
            }
            if known_at.max(self.last_progress).elapsed() >= plan.quiet {
                return true; // the rest is lost; the report says how many
            }
        }
        Instant::now() >= plan.drain_deadline
    }

    /// After handling a read at `now`: new distinct messages since `unique_before` count as
    /// progress (and as in-window ones before the end of publishing).
    pub fn progressed(&mut self, plan: &SubscriberPlan, unique_before: u64, now: Instant) {
        if self.out.unique > unique_before {
            self.last_progress = now;
            self.out.last_receive = Some(now);
            if now <= plan.window_end {
                self.out.in_window += self.out.unique - unique_before;
            }
        }
    }

    pub fn record(&mut self, payload: &[u8], now_ns: u64) {
        let header = payload.get(..PAYLOAD_HEADER_BYTES).and_then(|h| {
            let ts = u64::from_le_bytes(h[0..8].try_into().ok()?);
            let publisher = u32::from_le_bytes(h[8..12].try_into().ok()?) as usize;
            let seq = u32::from_le_bytes(h[12..16].try_into().ok()?) as usize;
            Some((ts, publisher, seq))
        });
        let Some((ts, publisher, seq)) = header else {
            self.out.foreign += 1;
            return;
        };
        let Some(bits) = self.seen.get_mut(publisher) else {
            self.out.foreign += 1;
            return;
        };
        let (word, bit) = (seq / 64, 1u64 << (seq % 64));
        if word >= bits.len() {
            bits.resize((word + 1).next_power_of_two(), 0);
        }
        if bits[word] & bit != 0 {
            self.out.duplicates += 1;
            return;
        }
        bits[word] |= bit;
        self.out.unique += 1;
        if let Some(group) = &self.group_unique {
            group.fetch_add(1, Ordering::Relaxed);
        }
        self.out
            .latency_ns
            .saturating_record(now_ns.saturating_sub(ts).max(1));
    }
}

/// `latency_ns` is an empty histogram (from `new_histogram`) that this subscriber fills.
pub async fn run(
    mut conn: Conn,
    plan: SubscriberPlan,
    latency_ns: Histogram<u64>,
) -> SubscriberOutcome {
    let mut tally = Tally::new(&plan, latency_ns);
    if let Err(e) = receive(&mut conn, &plan, &mut tally).await {
        tally.out.error = Some(format!("subscriber {}: {e}", plan.index));
    }
    let mut out = BytesMut::new();
    wire::disconnect(&mut out);
    let _ = conn
        .write(&out, Instant::now() + Duration::from_secs(1))
        .await;
    tally.out
}

async fn receive(conn: &mut Conn, plan: &SubscriberPlan, tally: &mut Tally) -> Result<(), String> {
    let mut out = BytesMut::with_capacity(16 * 1024);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut last_write = Instant::now();
    loop {
        let unique_before = tally.out.unique;
        if tally.finished(plan) {
            return Ok(());
        }
        conn.rbuf.reserve(64 * 1024);
        tokio::select! {
            read = tokio::io::AsyncReadExt::read_buf(&mut conn.stream, &mut conn.rbuf) => {
                match read {
                    Ok(0) => return Err("broker closed the connection".to_owned()),
                    Ok(_) => {}
                    Err(e) => return Err(format!("read from broker: {e}")),
                }
            }
            _ = tick.tick() => {
                if last_write.elapsed() >= plan.keep_alive / 2 {
                    wire::pingreq(&mut out);
                    conn.write(&out, plan.drain_deadline).await?;
                    out.clear();
                    last_write = Instant::now();
                }
                continue;
            }
        }
        let now = Instant::now();
        let now_ns = now.duration_since(plan.clock_origin).as_nanos() as u64;
        let mut consumed = 0;
        while let Some((frame, used)) =
            wire::parse_frame(&conn.rbuf[consumed..]).map_err(|e| format!("from broker: {e}"))?
        {
            consumed += used;
            match frame.kind {
                kind::PUBLISH => {
                    let publish = wire::parse_publish(conn.version, frame.flags, frame.body)
                        .map_err(|e| format!("PUBLISH from broker: {e}"))?;
                    tally.record(publish.payload, now_ns);
                    match publish.qos {
                        1 => wire::ack(&mut out, kind::PUBACK, publish.packet_id),
                        2 => wire::ack(&mut out, kind::PUBREC, publish.packet_id),
                        _ => {}
                    }
                }
                kind::PUBREL => {
                    let id = wire::packet_id(frame.body).map_err(|e| e.to_string())?;
                    wire::ack(&mut out, kind::PUBCOMP, id);
                }
                kind::PINGRESP => {}
                kind::DISCONNECT => return Err("broker sent DISCONNECT".to_owned()),
                other => return Err(format!("unexpected packet type {other} from broker")),
            }
        }
        conn.rbuf.advance(consumed);
        tally.progressed(plan, unique_before, now);
        if !out.is_empty() {
            conn.write(&out, plan.drain_deadline).await?;
            out.clear();
            last_write = Instant::now();
        }
    }
}
