//! Broker-wide counters: cheap relaxed atomics bumped on the hot path, read as a snapshot by
//! tests, benchmarks and (later) a metrics endpoint.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::protocol::stomp::Command;
use crate::protocol::QoS;

/// Size of the per-command STOMP frame counters (every [`Command`], client and server).
const STOMP_COMMANDS: usize = 16;

/// Live counters shared by every task of one broker.
#[derive(Debug, Default)]
pub struct Counters {
    connections_accepted: AtomicU64,
    connections_refused_limit: AtomicU64,
    connections_current: AtomicU64,
    /// Connections parked now (idle, no task of their own; see
    /// `broker::connection::parking`). Included in `connections_current`.
    connections_parked: AtomicU64,
    /// Per QoS (index 0, 1, 2): messages and payload bytes received and sent.
    messages_in: [AtomicU64; 3],
    bytes_in: [AtomicU64; 3],
    messages_out: [AtomicU64; 3],
    bytes_out: [AtomicU64; 3],
    /// STOMP frames received, by command (indexed by `stomp::Command as usize`).
    stomp_frames_in: [AtomicU64; STOMP_COMMANDS],
    dropped_queue_full: AtomicU64,
    dropped_offline_qos0: AtomicU64,
    dropped_dollar_topic: AtomicU64,
    dropped_not_authorized: AtomicU64,
    dropped_not_created: AtomicU64,
    protocol_errors: AtomicU64,
    wills_published: AtomicU64,
    refused_store_full: AtomicU64,
    refused_store_unavailable: AtomicU64,
    refused_memory_full: AtomicU64,
    dropped_memory_full: AtomicU64,
    dropped_packet_too_large: AtomicU64,
    dropped_expired: AtomicU64,
    cluster_claims: AtomicU64,
    cluster_claims_confirmed: AtomicU64,
    cluster_record_reads: AtomicU64,
    cluster_record_writes: AtomicU64,
    cluster_records_unchanged: AtomicU64,
}

/// A point-in-time copy of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CountersSnapshot {
    /// Sockets accepted and handed to a connection task.
    pub connections_accepted: u64,
    /// Sockets closed at accept because `maximumConnections` was reached.
    pub connections_refused_limit: u64,
    /// Connection tasks currently running.
    pub connections_current: u64,
    /// PUBLISH packets received from clients (including re-sent duplicates).
    pub messages_in: u64,
    /// PUBLISH packets written to clients (including retransmissions).
    pub messages_out: u64,
    /// [`CountersSnapshot::messages_in`] per QoS (index 0, 1, 2).
    pub messages_in_by_qos: [u64; 3],
    /// Payload bytes of the messages received, per QoS.
    pub bytes_in_by_qos: [u64; 3],
    /// [`CountersSnapshot::messages_out`] per QoS.
    pub messages_out_by_qos: [u64; 3],
    /// Payload bytes of the messages sent, per QoS.
    pub bytes_out_by_qos: [u64; 3],
    /// STOMP frames received, indexed by `stomp::Command as usize`.
    pub stomp_frames_in: [u64; STOMP_COMMANDS],
    /// Messages not queued because a session's pending queue was full (slow consumer).
    pub dropped_queue_full: u64,
    /// QoS 0 messages for sessions that were offline.
    pub dropped_offline_qos0: u64,
    /// Publishes to `$` topics dropped because `transport.publishDollarTopics` is false.
    pub dropped_dollar_topic: u64,
    /// Publishes or deliveries refused by authorization (acknowledged, then dropped).
    pub dropped_not_authorized: u64,
    /// Publishes dropped because their topic does not exist and the publisher may not create
    /// it (no `admin`; acknowledged to MQTT 3, refused with 0x87 to MQTT 5).
    pub dropped_not_created: u64,
    /// Connections closed for a malformed packet or a protocol violation.
    pub protocol_errors: u64,
    /// Will messages published.
    pub wills_published: u64,
    /// QoS 1/2 publishes held (not acknowledged yet; the publisher paused) because the durable
    /// store reached its `storeUsage` limit or the disk its free-space reserve.
    pub refused_store_full: u64,
    /// QoS 1/2 publishes held because the durable store could not write (I/O error, reopening).
    pub refused_store_unavailable: u64,
    /// QoS 1/2 publishes held (not acknowledged yet; the publisher paused) because the messages
    /// held in memory reached the `memoryUsage` limit.
    pub refused_memory_full: u64,
    /// QoS 0 publishes dropped because the `memoryUsage` limit was reached.
    pub dropped_memory_full: u64,
    /// Deliveries dropped for an MQTT 5 client because they exceed its Maximum Packet Size.
    pub dropped_packet_too_large: u64,
    /// Queued messages dropped because their MQTT 5 Message Expiry Interval passed.
    pub dropped_expired: u64,
    /// Cluster node: CONNECTs (and STOMP durable subscriptions) that claimed their session.
    pub cluster_claims: u64,
    /// ... of which answered from this node's recent confirmation that it owns the session,
    /// without reading its record.
    pub cluster_claims_confirmed: u64,
    /// Cluster node: reads of session records (claims, fencing checks, ends).
    pub cluster_record_reads: u64,
    /// Cluster node: writes and deletes of session records sent (claims, saves, progress,
    /// hand-overs, ends).
    pub cluster_record_writes: u64,
    /// Cluster node: session saves not written because the record already held them.
    pub cluster_records_unchanged: u64,
}

macro_rules! bump {
    ($($name:ident),* $(,)?) => {
        $(
            /// Add one; returns the new total.
            #[inline]
            pub(crate) fn $name(&self) -> u64 {
                self.$name.fetch_add(1, Ordering::Relaxed) + 1
            }
        )*
    };
}

impl Counters {
    bump!(
        connections_accepted,
        connections_refused_limit,
        dropped_queue_full,
        dropped_offline_qos0,
        dropped_dollar_topic,
        dropped_not_authorized,
        dropped_not_created,
        protocol_errors,
        wills_published,
        refused_store_full,
        refused_store_unavailable,
        refused_memory_full,
        dropped_memory_full,
        dropped_packet_too_large,
        dropped_expired,
        cluster_claims,
        cluster_claims_confirmed,
        cluster_record_reads,
        cluster_record_writes,
        cluster_records_unchanged,
    );

    /// A message of `qos` with `payload_bytes` received from a client (PUBLISH, SEND); returns
    /// the new count of messages of that QoS (what delivery latency sampling keys on).
    #[inline]
    pub(crate) fn message_in(&self, qos: QoS, payload_bytes: usize) -> u64 {
        let q = qos as usize;
        self.bytes_in[q].fetch_add(payload_bytes as u64, Ordering::Relaxed);
        self.messages_in[q].fetch_add(1, Ordering::Relaxed) + 1
    }

    /// A message of `qos` with `payload_bytes` written to a client.
    #[inline]
    pub(crate) fn message_out(&self, qos: QoS, payload_bytes: usize) {
        let q = qos as usize;
        self.messages_out[q].fetch_add(1, Ordering::Relaxed);
        self.bytes_out[q].fetch_add(payload_bytes as u64, Ordering::Relaxed);
    }

    /// A STOMP frame received from a client.
    #[inline]
    pub(crate) fn stomp_frame_in(&self, command: Command) {
        if let Some(c) = self.stomp_frames_in.get(command as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A batch written to a client: messages and payload bytes per QoS.
    #[inline]
    pub(crate) fn batch_out(&self, messages: [u64; 3], bytes: [u64; 3]) {
        for q in 0..3 {
            if messages[q] != 0 {
                self.messages_out[q].fetch_add(messages[q], Ordering::Relaxed);
                self.bytes_out[q].fetch_add(bytes[q], Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn connection_opened(&self) {
        self.connections_current.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connection_closed(&self) {
        self.connections_current.fetch_sub(1, Ordering::Relaxed);
    }

    /// An idle connection parked (`true`) or woke up (`false`).
    pub fn connection_parked(&self, parked: bool) {
        if parked {
            self.connections_parked.fetch_add(1, Ordering::Relaxed);
        } else {
            self.connections_parked.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// How many connections are parked now (counted in the current connections too).
    pub fn connections_parked(&self) -> u64 {
        self.connections_parked.load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> CountersSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CountersSnapshot {
            connections_accepted: get(&self.connections_accepted),
            connections_refused_limit: get(&self.connections_refused_limit),
            connections_current: get(&self.connections_current),
            messages_in: self.messages_in.iter().map(get).sum(),
            messages_out: self.messages_out.iter().map(get).sum(),
            messages_in_by_qos: self.messages_in.each_ref().map(get),
            bytes_in_by_qos: self.bytes_in.each_ref().map(get),
            messages_out_by_qos: self.messages_out.each_ref().map(get),
            bytes_out_by_qos: self.bytes_out.each_ref().map(get),
            stomp_frames_in: self.stomp_frames_in.each_ref().map(get),
            dropped_queue_full: get(&self.dropped_queue_full),
            dropped_offline_qos0: get(&self.dropped_offline_qos0),
            dropped_dollar_topic: get(&self.dropped_dollar_topic),
            dropped_not_authorized: get(&self.dropped_not_authorized),
            dropped_not_created: get(&self.dropped_not_created),
            protocol_errors: get(&self.protocol_errors),
            wills_published: get(&self.wills_published),
            refused_store_full: get(&self.refused_store_full),
            refused_store_unavailable: get(&self.refused_store_unavailable),
            refused_memory_full: get(&self.refused_memory_full),
            dropped_memory_full: get(&self.dropped_memory_full),
            dropped_packet_too_large: get(&self.dropped_packet_too_large),
            dropped_expired: get(&self.dropped_expired),
            cluster_claims: get(&self.cluster_claims),
            cluster_claims_confirmed: get(&self.cluster_claims_confirmed),
            cluster_record_reads: get(&self.cluster_record_reads),
            cluster_record_writes: get(&self.cluster_record_writes),
            cluster_records_unchanged: get(&self.cluster_records_unchanged),
        }
    }
}
