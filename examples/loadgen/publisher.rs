//! One publishing connection: writes PUBLISH packets in batches as fast as the broker takes them
//! (or at a fixed rate), keeps at most `inflight` QoS 1/2 messages unacknowledged, and completes
//! the QoS 2 handshake.
//!
//! It runs as a single task that never blocks on reading: acknowledgements are harvested with
//! non-blocking reads between batches. That cannot deadlock, because at most `inflight` acks (a few
//! bytes each) can ever be waiting in the socket.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use hdrhistogram::Histogram;

use crate::conn::Conn;
use crate::wire::{self, kind};

/// Bytes at the start of every payload: send time (ns since the run's clock origin), publisher
/// index, sequence number. Subscribers use them for latency and exact loss/duplicate counts.
pub const PAYLOAD_HEADER_BYTES: usize = 16;

pub struct PublisherPlan {
    pub index: u32,
    pub topic: Vec<u8>,
    pub qos: u8,
    pub payload_bytes: usize,
    /// Stop after this many messages (also capped at u32::MAX, the sequence number's range).
    pub max_messages: u64,
    /// Stop publishing at this instant.
    pub stop_at: Instant,
    /// Stop waiting for acknowledgements at this instant.
    pub drain_until: Instant,
    /// Messages per second, or None for "as fast as the broker takes them".
    pub rate_per_sec: Option<f64>,
    pub batch: usize,
    pub inflight: usize,
    pub keep_alive: Duration,
    pub clock_origin: Instant,
}

#[derive(Debug, Default)]
pub struct PublisherOutcome {
    pub index: u32,
    pub sent: u64,
    /// Messages whose last acknowledgement (PUBACK, or PUBCOMP at QoS 2) arrived.
    pub acked: u64,
    /// Acknowledgements that did not come in publish order (MQTT 3.1.1 section 4.6 requires it).
    pub acks_out_of_order: u64,
    /// True when publishing ended at `stop_at` (not at `max_messages` or on an error).
    pub ran_full_window: bool,
    /// QoS 1/2: nanoseconds from the write of each PUBLISH to the read of its PUBACK (PUBCOMP
    /// at QoS 2), as this task sees them: acknowledgements are read between batches, so a
    /// value includes up to one batch write. `None` at QoS 0 or for STOMP publishers.
    pub ack_latency_ns: Option<Histogram<u64>>,
    pub error: Option<String>,
}

/// Packet id for the n-th message: 1..=65535 in turn. Reuse is safe because brokers acknowledge
/// in order and `inflight` is far below 65535.
fn packet_id_of(seq: u64) -> u16 {
    (seq % 65_535) as u16 + 1
}

struct State {
    sent: u64,
    acked: u64,
    acks_out_of_order: u64,
    pubrel_due: Vec<u16>,
    /// Write instants of the unacknowledged QoS 1/2 messages, oldest first (at most `inflight`).
    awaiting_ack: VecDeque<Instant>,
    ack_latency_ns: Option<Histogram<u64>>,
}

pub async fn run(mut conn: Conn, plan: PublisherPlan) -> PublisherOutcome {
    let mut st = State {
        sent: 0,
        acked: 0,
        acks_out_of_order: 0,
        pubrel_due: Vec::new(),
        awaiting_ack: VecDeque::with_capacity(if plan.qos > 0 { plan.inflight } else { 0 }),
        ack_latency_ns: if plan.qos > 0 {
            crate::subscriber::new_histogram().ok()
        } else {
            None
        },
    };
    let mut result = publish(&mut conn, &plan, &mut st).await;
    if result.is_ok() && plan.qos > 0 {
        result = drain(&mut conn, &plan, &mut st).await;
    }
    if result.is_ok() {
        let mut out = BytesMut::new();
        wire::disconnect(&mut out);
        let _ = conn
            .write(&out, Instant::now() + Duration::from_secs(1))
            .await;
    }
    PublisherOutcome {
        index: plan.index,
        sent: st.sent,
        acked: st.acked,
        acks_out_of_order: st.acks_out_of_order,
        ran_full_window: result.is_ok() && st.sent < plan.max_messages.min(u64::from(u32::MAX)),
        ack_latency_ns: st.ack_latency_ns,
        error: result
            .err()
            .map(|e| format!("publisher {}: {e}", plan.index)),
    }
}

async fn publish(conn: &mut Conn, plan: &PublisherPlan, st: &mut State) -> Result<(), String> {
    let cap = plan.max_messages.min(u64::from(u32::MAX));
    let mut payload = vec![b'x'; plan.payload_bytes.max(PAYLOAD_HEADER_BYTES)];
    let mut out = BytesMut::with_capacity(64 * 1024);
    let started = Instant::now();
    let mut last_write = started;
    loop {
        harvest(conn, plan.qos, st)?;
        let now = Instant::now();
        if now >= plan.stop_at || st.sent >= cap {
            return Ok(());
        }
        let room = if plan.qos == 0 {
            plan.batch as u64
        } else {
            (plan.inflight as u64)
                .saturating_sub(st.sent - st.acked)
                .min(plan.batch as u64)
        };
        let due = match plan.rate_per_sec {
            Some(rate) => {
                let due_total = (now.duration_since(started).as_secs_f64() * rate) as u64 + 1;
                due_total.saturating_sub(st.sent)
            }
            None => u64::MAX,
        };
        let n = room.min(due).min(cap - st.sent);
        queue_pubrels(&mut out, st);
        if n == 0 && out.is_empty() {
            if last_write.elapsed() >= plan.keep_alive / 2 {
                wire::pingreq(&mut out);
            } else {
                let wake = if room == 0 {
                    plan.stop_at
                } else {
                    let rate = plan.rate_per_sec.unwrap_or(1.0);
                    started + Duration::from_secs_f64(st.sent as f64 / rate)
                };
                let wake = wake.min(plan.stop_at).min(last_write + plan.keep_alive / 2);
                // Acknowledgements are read as they arrive, also while waiting for the next
                // message due at a fixed rate: the PUBACK latency is not rounded up to it.
                let _ = tokio::time::timeout_at(wake.into(), conn.stream.readable()).await;
                continue;
            }
        }
        let ts_ns = plan.clock_origin.elapsed().as_nanos() as u64;
        payload[0..8].copy_from_slice(&ts_ns.to_le_bytes());
        payload[8..12].copy_from_slice(&plan.index.to_le_bytes());
        for _ in 0..n {
            payload[12..16].copy_from_slice(&(st.sent as u32).to_le_bytes());
            let id = packet_id_of(st.sent);
            wire::publish(&mut out, conn.version, &plan.topic, plan.qos, id, &payload);
            st.sent += 1;
        }
        if plan.qos > 0 {
            let written_at = Instant::now();
            st.awaiting_ack
                .extend(std::iter::repeat_n(written_at, n as usize));
        }
        conn.write(&out, plan.drain_until).await?;
        out.clear();
        last_write = Instant::now();
    }
}

/// After publishing stops: wait for every outstanding QoS 1/2 acknowledgement (bounded).
async fn drain(conn: &mut Conn, plan: &PublisherPlan, st: &mut State) -> Result<(), String> {
    let mut out = BytesMut::new();
    loop {
        harvest(conn, plan.qos, st)?;
        queue_pubrels(&mut out, st);
        if !out.is_empty() {
            conn.write(&out, plan.drain_until).await?;
            out.clear();
        }
        if st.acked >= st.sent || Instant::now() >= plan.drain_until {
            return Ok(());
        }
        let _ = tokio::time::timeout_at(plan.drain_until.into(), conn.stream.readable()).await;
    }
}

fn queue_pubrels(out: &mut BytesMut, st: &mut State) {
    for id in st.pubrel_due.drain(..) {
        wire::ack(out, kind::PUBREL, id);
    }
}

/// Reads whatever the broker has sent without blocking and applies it.
fn harvest(conn: &mut Conn, qos: u8, st: &mut State) -> Result<(), String> {
    loop {
        conn.rbuf.reserve(4096);
        match conn.stream.try_read_buf(&mut conn.rbuf) {
            Ok(0) => return Err("broker closed the connection".to_owned()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(format!("read from broker: {e}")),
        }
    }
    let mut consumed = 0;
    while let Some((frame, used)) =
        wire::parse_frame(&conn.rbuf[consumed..]).map_err(|e| format!("from broker: {e}"))?
    {
        consumed += used;
        match (frame.kind, qos) {
            (kind::PUBACK, 1) | (kind::PUBCOMP, 2) => {
                let id = wire::packet_id(frame.body).map_err(|e| e.to_string())?;
                if id != packet_id_of(st.acked) {
                    st.acks_out_of_order += 1;
                }
                st.acked += 1;
                if let (Some(written_at), Some(h)) =
                    (st.awaiting_ack.pop_front(), st.ack_latency_ns.as_mut())
                {
                    h.saturating_record((written_at.elapsed().as_nanos() as u64).max(1));
                }
            }
            (kind::PUBREC, 2) => {
                let id = wire::packet_id(frame.body).map_err(|e| e.to_string())?;
                st.pubrel_due.push(id);
            }
            (kind::PINGRESP, _) => {}
            (kind::DISCONNECT, _) => return Err("broker sent DISCONNECT".to_owned()),
            (other, _) => return Err(format!("unexpected packet type {other} from broker")),
        }
    }
    conn.rbuf.advance(consumed);
    Ok(())
}
