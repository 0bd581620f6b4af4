//! What the load clients saw, in microseconds since the run's [`Clock`] started: every QoS 1
//! publish with its PUBACK or why it had none, every delivery, every (re)connect with its
//! session-present flag, every lost connection, and the faults the scenario injected.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

/// The run's time origin, shared by every client and the fault hook.
#[derive(Clone, Copy, Debug)]
pub struct Clock(Instant);

impl Clock {
    pub fn start() -> Clock {
        Clock(Instant::now())
    }

    /// Microseconds since the clock started.
    pub fn now_us(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// The instant `at` after the clock started.
    pub fn at(&self, at: Duration) -> Instant {
        self.0 + at
    }
}

/// One QoS 1 PUBLISH handed to a publisher's client.
#[derive(Clone, Debug, Serialize)]
pub struct PublishRecord {
    pub publisher: u32,
    pub seq: u64,
    pub t_send_us: u64,
    /// When its PUBACK arrived; `None` with a `failure`.
    pub t_puback_us: Option<u64>,
    pub failure: Option<String>,
    /// How the acknowledgement was attributed to this message: `puback`, `pubrec`, or
    /// `collision` (rumqttc wrote another PUBLISH under its packet id, which the recorder
    /// takes as its PUBACK having arrived: the audit names these when they are missing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acked_via: Option<&'static str>,
}

/// One PUBLISH a subscriber received (its payload names the publisher and sequence).
#[derive(Clone, Debug, Serialize)]
pub struct Delivery {
    pub subscriber: u32,
    pub publisher: u32,
    pub seq: u64,
    pub t_recv_us: u64,
    /// The DUP flag of the PUBLISH (a redelivery the broker announced).
    pub dup: bool,
}

/// Which load client an event belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum ClientRef {
    Publisher(u32),
    Subscriber(u32),
}

/// An accepted CONNECT.
#[derive(Clone, Debug, Serialize)]
pub struct ConnectRecord {
    pub client: ClientRef,
    pub t_us: u64,
    /// Index of the broker address in the client's list.
    pub address: usize,
    pub session_present: bool,
    /// False for the client's first connection of the run.
    pub reconnect: bool,
}

/// A connection that failed or was lost.
#[derive(Clone, Debug, Serialize)]
pub struct DisconnectRecord {
    pub client: ClientRef,
    pub t_us: u64,
    pub address: usize,
    pub reason: String,
}

/// A fault the scenario injected (a SIGKILL, a SIGSTOP...), at `t_us`.
#[derive(Clone, Debug, Serialize)]
pub struct FaultRecord {
    pub name: String,
    pub t_us: u64,
}

/// The plan the load followed: the checker needs it to know who should have received what.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// The topic of each publisher, by publisher id.
    pub publisher_topics: Vec<String>,
    /// The filter of each subscriber, by subscriber id.
    pub subscriber_filters: Vec<String>,
}

/// Everything recorded during one run.
#[derive(Clone, Debug, Serialize)]
pub struct Recording {
    pub plan: Plan,
    pub publishes: Vec<PublishRecord>,
    pub deliveries: Vec<Delivery>,
    pub connects: Vec<ConnectRecord>,
    pub disconnects: Vec<DisconnectRecord>,
    pub faults: Vec<FaultRecord>,
    /// Length of the run, load start to the last client stopping.
    pub duration_us: u64,
}

/// The connection events of every client (shared by all of them; rare, so one lock is fine).
#[derive(Clone, Default)]
pub struct ConnectionLog {
    inner: Arc<Mutex<(Vec<ConnectRecord>, Vec<DisconnectRecord>)>>,
}

impl ConnectionLog {
    pub fn connected(&self, record: ConnectRecord) {
        self.inner.lock().0.push(record);
    }

    pub fn lost(&self, record: DisconnectRecord) {
        self.inner.lock().1.push(record);
    }

    pub fn take(&self) -> (Vec<ConnectRecord>, Vec<DisconnectRecord>) {
        std::mem::take(&mut *self.inner.lock())
    }
}

/// The hook a fault uses to say when it struck.
#[derive(Clone)]
pub struct FaultLog {
    clock: Clock,
    inner: Arc<Mutex<Vec<FaultRecord>>>,
}

impl FaultLog {
    pub fn new(clock: Clock) -> FaultLog {
        FaultLog {
            clock,
            inner: Arc::default(),
        }
    }

    /// Record the fault `name` as happening now.
    pub fn mark(&self, name: &str) {
        let t_us = self.clock.now_us();
        self.inner.lock().push(FaultRecord {
            name: name.into(),
            t_us,
        });
    }

    pub fn clock(&self) -> Clock {
        self.clock
    }

    pub fn take(&self) -> Vec<FaultRecord> {
        std::mem::take(&mut *self.inner.lock())
    }
}

/// The payload of a load message: publisher id (4 bytes), sequence (8), send time in
/// microseconds of the run's clock (8), all big endian, then zero padding up to `size`.
pub fn encode_payload(publisher: u32, seq: u64, t_send_us: u64, size: usize) -> Vec<u8> {
    let mut payload = Vec::with_capacity(size.max(PAYLOAD_HEADER));
    payload.extend_from_slice(&publisher.to_be_bytes());
    payload.extend_from_slice(&seq.to_be_bytes());
    payload.extend_from_slice(&t_send_us.to_be_bytes());
    payload.resize(size.max(PAYLOAD_HEADER), 0);
    payload
}

/// Bytes of the payload header of [`encode_payload`].
pub const PAYLOAD_HEADER: usize = 20;

/// `(publisher, seq, t_send_us)` of a load payload; `None` when it is not one.
pub fn decode_payload(payload: &[u8]) -> Option<(u32, u64, u64)> {
    let publisher = u32::from_be_bytes(payload.get(0..4)?.try_into().ok()?);
    let seq = u64::from_be_bytes(payload.get(4..12)?.try_into().ok()?);
    let t_send = u64::from_be_bytes(payload.get(12..20)?.try_into().ok()?);
    Some((publisher, seq, t_send))
}

/// `FERROMQ_CHAOS_TRACE_DELIVERIES` set: every delivery is printed (a run traced message by
/// message, beside the nodes' `ferromq::cluster::read` log).
pub fn trace_deliveries() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("FERROMQ_CHAOS_TRACE_DELIVERIES").is_some())
}
