//! One STOMP publishing connection: SEND frames in batches, as fast as the broker takes them (or
//! at a fixed rate). With receipts (`plan.qos` > 0) every SEND asks for a RECEIPT and at most
//! `inflight` SENDs wait for theirs, as an MQTT QoS 1 publisher waits for PUBACKs.
//!
//! Like the MQTT publisher it never blocks on reading: receipts are harvested with non-blocking
//! reads between batches.

use std::time::{Duration, Instant};

use crate::stomp_wire::{encode, Command, Frame};
use bytes::{Bytes, BytesMut};

use crate::publisher::{PublisherOutcome, PublisherPlan, PAYLOAD_HEADER_BYTES};
use crate::stomp_conn::{describe, StompConn, StompParams};

struct State {
    sent: u64,
    acked: u64,
    acks_out_of_order: u64,
}

pub async fn run(mut conn: StompConn, plan: PublisherPlan, stomp: StompParams) -> PublisherOutcome {
    let mut st = State {
        sent: 0,
        acked: 0,
        acks_out_of_order: 0,
    };
    let receipts = plan.qos > 0;
    let mut result = publish(&mut conn, &plan, stomp, &mut st).await;
    if result.is_ok() && receipts {
        result = drain(&mut conn, &plan, &mut st).await;
    }
    if result.is_ok() {
        conn.disconnect().await;
    }
    PublisherOutcome {
        index: plan.index,
        sent: st.sent,
        acked: st.acked,
        acks_out_of_order: st.acks_out_of_order,
        ran_full_window: result.is_ok() && st.sent < plan.max_messages.min(u64::from(u32::MAX)),
        ack_latency_ns: None,
        error: result
            .err()
            .map(|e| format!("STOMP publisher {}: {e}", plan.index)),
    }
}

/// The SEND frame, reused for every message: only the body and the receipt id change.
fn send_frame(plan: &PublisherPlan, stomp: StompParams) -> Frame {
    let mut frame = Frame::new(Command::Send).with_header(
        "destination",
        String::from_utf8_lossy(&plan.topic).into_owned(),
    );
    if stomp.persistent {
        frame = frame.with_header("persistent", "true");
    }
    if plan.qos > 0 {
        frame = frame.with_header("receipt", "0");
    }
    frame
}

async fn publish(
    conn: &mut StompConn,
    plan: &PublisherPlan,
    stomp: StompParams,
    st: &mut State,
) -> Result<(), String> {
    let cap = plan.max_messages.min(u64::from(u32::MAX));
    let receipts = plan.qos > 0;
    let mut payload = vec![b'x'; plan.payload_bytes.max(PAYLOAD_HEADER_BYTES)];
    let mut frame = send_frame(plan, stomp);
    let receipt_slot = frame.headers.len() - 1;
    let mut out = BytesMut::with_capacity(64 * 1024);
    let started = Instant::now();
    loop {
        harvest(conn, st)?;
        let now = Instant::now();
        if now >= plan.stop_at || st.sent >= cap {
            return Ok(());
        }
        let room = if receipts {
            (plan.inflight as u64)
                .saturating_sub(st.sent - st.acked)
                .min(plan.batch as u64)
        } else {
            plan.batch as u64
        };
        let due = match plan.rate_per_sec {
            Some(rate) => {
                let due_total = (now.duration_since(started).as_secs_f64() * rate) as u64 + 1;
                due_total.saturating_sub(st.sent)
            }
            None => u64::MAX,
        };
        let n = room.min(due).min(cap - st.sent);
        if n == 0 {
            // No heart-beats were negotiated, so an idle publisher owes the broker nothing.
            let wake = if room == 0 {
                plan.stop_at
            } else {
                let rate = plan.rate_per_sec.unwrap_or(1.0);
                started + Duration::from_secs_f64(st.sent as f64 / rate)
            };
            let wake = wake.min(plan.stop_at);
            if room == 0 {
                let _ = tokio::time::timeout_at(wake.into(), conn.stream.readable()).await;
            } else {
                tokio::time::sleep_until(wake.into()).await;
            }
            continue;
        }
        let ts_ns = plan.clock_origin.elapsed().as_nanos() as u64;
        payload[0..8].copy_from_slice(&ts_ns.to_le_bytes());
        payload[8..12].copy_from_slice(&plan.index.to_le_bytes());
        for _ in 0..n {
            payload[12..16].copy_from_slice(&(st.sent as u32).to_le_bytes());
            if receipts {
                frame.headers[receipt_slot].1 = st.sent.to_string();
            }
            frame.body = Bytes::copy_from_slice(&payload);
            encode(&frame, &mut out);
            st.sent += 1;
        }
        conn.write(&out, plan.drain_until).await?;
        out.clear();
    }
}

/// After publishing stops: wait for every outstanding RECEIPT (bounded).
async fn drain(conn: &mut StompConn, plan: &PublisherPlan, st: &mut State) -> Result<(), String> {
    loop {
        harvest(conn, st)?;
        if st.acked >= st.sent || Instant::now() >= plan.drain_until {
            return Ok(());
        }
        let _ = tokio::time::timeout_at(plan.drain_until.into(), conn.stream.readable()).await;
    }
}

/// Reads whatever the broker has sent without blocking and counts the receipts.
fn harvest(conn: &mut StompConn, st: &mut State) -> Result<(), String> {
    loop {
        conn.rbuf.reserve(4096);
        match conn.stream.try_read_buf(&mut conn.rbuf) {
            Ok(0) => return Err("broker closed the connection".to_owned()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(format!("read from broker: {e}")),
        }
    }
    while let Some(frame) = conn.buffered_frame()? {
        if frame.command != Command::Receipt {
            return Err(describe(&frame));
        }
        let id = frame
            .header("receipt-id")
            .and_then(|v| v.parse::<u64>().ok());
        if id != Some(st.acked) {
            st.acks_out_of_order += 1;
        }
        st.acked += 1;
    }
    Ok(())
}
