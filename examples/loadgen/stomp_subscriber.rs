//! One STOMP subscribing connection: reads MESSAGE frames in large chunks, sends an ACK for each
//! one with `ack:client-individual`, and counts every message once with the MQTT subscriber's
//! tally (payloads are the same: send time, publisher, sequence number).

use std::time::Instant;

use crate::stomp_wire::{encode, Command, Frame};
use bytes::BytesMut;
use hdrhistogram::Histogram;

use crate::stomp_conn::{describe, AckMode, StompConn};
use crate::subscriber::{SubscriberOutcome, SubscriberPlan, Tally};

pub async fn run(
    mut conn: StompConn,
    plan: SubscriberPlan,
    ack: AckMode,
    latency_ns: Histogram<u64>,
) -> SubscriberOutcome {
    let mut tally = Tally::new(&plan, latency_ns);
    if let Err(e) = receive(&mut conn, &plan, ack, &mut tally).await {
        tally.out.error = Some(format!("STOMP subscriber {}: {e}", plan.index));
    }
    conn.disconnect().await;
    tally.out
}

async fn receive(
    conn: &mut StompConn,
    plan: &SubscriberPlan,
    ack: AckMode,
    tally: &mut Tally,
) -> Result<(), String> {
    let mut out = BytesMut::with_capacity(16 * 1024);
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(50));
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
            // Wake up now and then to notice the end of the run while nothing arrives.
            _ = tick.tick() => continue,
        }
        let now = Instant::now();
        let now_ns = now.duration_since(plan.clock_origin).as_nanos() as u64;
        while let Some(frame) = conn.buffered_frame()? {
            if frame.command != Command::Message {
                return Err(describe(&frame));
            }
            tally.record(&frame.body, now_ns);
            if ack == AckMode::ClientIndividual {
                let id = frame
                    .header("ack")
                    .ok_or("MESSAGE without an ack header under client-individual")?;
                encode(&Frame::new(Command::Ack).with_header("id", id), &mut out);
            }
        }
        tally.progressed(plan, unique_before, now);
        if !out.is_empty() {
            conn.write(&out, plan.drain_deadline).await?;
            out.clear();
        }
    }
}
