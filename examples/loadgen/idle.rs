//! Idle connections: open N connections that only keep their session alive, then measure how much
//! broker memory each one costs and how fast the broker accepted them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch, Semaphore};

use crate::conn::{Conn, ConnectParams};
use crate::proc_stats::{self, CpuSample, Target};
use crate::report::{BrokerReport, IdleReport};
use crate::wire;

/// Pause between the last CONNACK and the RSS reading, so the broker's allocations settle.
const SETTLE: Duration = Duration::from_secs(1);

pub struct IdleSettings {
    pub params: ConnectParams,
    pub connections: usize,
    /// Connection attempts in flight at once (`--connect-concurrency`). Below the broker's
    /// listen backlog, or an overflowing backlog drops SYNs and the 1 s SYN retransmit
    /// dominates the rate (mosquitto listens with a backlog of 100).
    pub connect_concurrency: usize,
    pub hold: Duration,
    pub broker_pid: Option<u32>,
    pub run_id: String,
}

pub struct IdleResult {
    pub idle: IdleReport,
    pub broker: Option<BrokerReport>,
    pub own_cpu_secs: f64,
    pub own_wall_secs: f64,
}

pub async fn run(s: &IdleSettings) -> Result<IdleResult, String> {
    let broker = s.broker_pid.map(Target::Pid);
    let rss_before_kib = broker.map(proc_stats::rss_kib).transpose()?;
    let broker_cpu_before = broker.map(CpuSample::take).transpose()?;
    let own_before = CpuSample::take(Target::Current)?;

    let gate = Arc::new(Semaphore::new(s.connect_concurrency));
    let dropped = Arc::new(AtomicUsize::new(0));
    let pings = Arc::new(AtomicUsize::new(0));
    let (release_tx, release_rx) = watch::channel(false);
    let (result_tx, mut result_rx) = mpsc::channel::<Result<(), String>>(1024);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(s.connections);
    for i in 0..s.connections {
        let params = s.params.clone();
        let client_id = format!("lg{}-i{i}", s.run_id);
        let gate = gate.clone();
        let dropped = dropped.clone();
        let pings = pings.clone();
        let result_tx = result_tx.clone();
        let release = release_rx.clone();
        tasks.push(tokio::spawn(async move {
            let conn = {
                let Ok(_permit) = gate.acquire().await else {
                    return;
                };
                Conn::open(&params, &client_id).await
            };
            match conn {
                Ok(conn) => {
                    let _ = result_tx.send(Ok(())).await;
                    drop(result_tx);
                    let keep_alive = Duration::from_secs(u64::from(params.keep_alive_secs.max(1)));
                    if hold(conn, keep_alive, release, &pings).await.is_err() {
                        dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(e) => {
                    let _ = result_tx.send(Err(e)).await;
                }
            }
        }));
    }
    drop(result_tx);
    let (mut connected, mut failed, mut first_error) = (0usize, 0usize, None);
    while let Some(result) = result_rx.recv().await {
        match result {
            Ok(()) => connected += 1,
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    let connect_secs = start.elapsed().as_secs_f64().max(1e-9);
    tokio::time::sleep(SETTLE).await;
    // The broker's CPU from the first connect to the end of the settle: what a connect costs
    // it, with the work a broker does after the CONNACK of an idle connection (ferromq parks
    // it) counted for every broker alike.
    let broker_connect_cpu_secs = match (broker, &broker_cpu_before) {
        (Some(target), Some(before)) => Some(before.since(target)?.0),
        _ => None,
    };
    let rss_after_kib = broker.map(proc_stats::rss_kib).transpose()?;
    // The hold: every connection only keeps alive, so the broker's CPU over it is what its
    // keep-alive traffic costs (PINGREQ in, PINGRESP out, the keep-alive timer reset).
    let hold_cpu_before = broker.map(CpuSample::take).transpose()?;
    let pings_before = pings.load(Ordering::Relaxed);
    tokio::time::sleep(s.hold).await;
    let hold_pings = pings.load(Ordering::Relaxed) - pings_before;
    let broker_cpu_us_per_ping = match (broker, hold_cpu_before) {
        (Some(target), Some(before)) if hold_pings > 0 => {
            Some(before.since(target)?.0 * 1e6 / hold_pings as f64)
        }
        _ => None,
    };
    let (own_cpu_secs, own_wall_secs) = own_before.since(Target::Current)?;
    let broker_cpu_secs = match (broker, broker_cpu_before) {
        (Some(target), Some(before)) => Some(before.since(target)?.0),
        _ => None,
    };
    let _ = release_tx.send(true);
    for task in tasks {
        let _ = tokio::time::timeout(s.params.timeout, task).await;
    }
    let kib_per_connection = match (rss_before_kib, rss_after_kib) {
        (Some(before), Some(after)) if connected > 0 => {
            Some((after as f64 - before as f64) / connected as f64)
        }
        _ => None,
    };
    Ok(IdleResult {
        idle: IdleReport {
            requested: s.connections,
            connected,
            failed,
            dropped: dropped.load(Ordering::Relaxed),
            connect_secs,
            connects_per_sec: connected as f64 / connect_secs,
            rss_before_kib,
            rss_after_kib,
            kib_per_connection,
            hold_pings,
            broker_cpu_us_per_ping,
            broker_cpu_ms_per_connect: broker_connect_cpu_secs
                .filter(|_| connected > 0)
                .map(|cpu| cpu * 1000.0 / connected as f64),
            first_error,
        },
        broker: s.broker_pid.map(|pid| BrokerReport {
            pid,
            cpu_secs: broker_cpu_secs,
            cpu_secs_per_million_msgs: None,
            rss_kib: rss_after_kib,
        }),
        own_cpu_secs,
        own_wall_secs,
    })
}

/// Keeps one connection open with PINGREQs until released. Err means the broker closed it.
async fn hold(
    mut conn: Conn,
    keep_alive: Duration,
    mut release: watch::Receiver<bool>,
    pings: &AtomicUsize,
) -> Result<(), String> {
    let mut ping = tokio::time::interval(keep_alive / 2);
    ping.tick().await; // the first tick is immediate; CONNECT just counted as activity
    let mut out = BytesMut::with_capacity(2);
    loop {
        if *release.borrow() {
            break;
        }
        tokio::select! {
            _ = release.changed() => break,
            _ = ping.tick() => {
                out.clear();
                wire::pingreq(&mut out);
                conn.write(&out, Instant::now() + keep_alive).await?;
                pings.fetch_add(1, Ordering::Relaxed);
            }
            read = conn.stream.read_buf(&mut conn.rbuf) => {
                match read {
                    Ok(0) | Err(_) => return Err("closed by broker".to_owned()),
                    // PINGRESPs; nothing else is expected on an idle connection.
                    Ok(_) => conn.rbuf.clear(),
                }
            }
        }
    }
    out.clear();
    wire::disconnect(&mut out);
    conn.write(&out, Instant::now() + keep_alive).await
}
