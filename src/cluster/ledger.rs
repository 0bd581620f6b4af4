//! The ledger of a node's acknowledged stores of message shards: each is kept (id, subject,
//! payload) until the stream shows that it holds it, and stored again under a fresh id when it
//! does not (a duplicate at worst, never a loss).
//!
//! - **Read back.** An acknowledged store waits ("pending") until the node's reader of the
//!   shard reads its sequence. When the stream holds another message there, or none (the
//!   reader passed it), the acknowledgement was not kept.
//! - **Settling.** A store the reader read back is kept [`SETTLE_FOR`] more. A raft entry that
//!   was acknowledged, and read, can still be taken back when the stream's leader changes after
//!   a partition heals (nats-io/nats-server#7545: the entry is truncated and its sequence
//!   reused). So when the leader of a shard's stream changes (its leader advisory; another
//!   leader, or a shorter stream, at the reader's periodic look; a reconnection to NATS), every
//!   settling store of that shard is read again from the stream's leader, [`RECHECK_AFTER`]
//!   the change, and one no longer there is stored again. Pending stores are read then too: one
//!   taken back before the reader reached it, with nothing stored after it, would otherwise
//!   wait for the next store of its shard to reuse its sequence.
//!
//! Bounds: [`LEDGER_LIMIT`] / [`LEDGER_BYTES`] pending, [`SETTLING_LIMIT`] / [`SETTLING_BYTES`]
//! settling (past them the oldest settling stores stop being kept: under a load that fills
//! them the window is shorter than [`SETTLE_FOR`]).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::Context;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::time::Instant;

use super::store_ack::{store_again, Again, TARGET};

/// Acknowledged stores kept at most before the oldest are given up on (a reader stalled that
/// long cannot confirm them; they are logged).
const LEDGER_LIMIT: usize = 200_000;
/// Payload bytes the ledger keeps at most (payloads up to NATS's `max_payload` would make
/// [`LEDGER_LIMIT`] entries many GiB): past it the oldest are given up on the same way.
const LEDGER_BYTES: usize = 64 * 1024 * 1024;
/// Per shard, how many of the last read (sequence, id) pairs are remembered for an
/// acknowledgement that arrives after the reader read its message.
const RECENT: usize = 16_384;
/// How long a re-store keeps trying.
const RESTORE_FOR: Duration = Duration::from_secs(120);

/// How long a store read back stays settling. The losses this guards against were
/// acknowledged 10-14 s after a partition healed, while the majority's leaders changed again.
pub const SETTLE_FOR: Duration = Duration::from_secs(30);
/// Settling stores kept at most, all shards together.
const SETTLING_LIMIT: usize = 100_000;
/// Payload bytes of settling stores kept at most, all shards together.
const SETTLING_BYTES: usize = 32 * 1024 * 1024;
/// When, after a leader change, the settling stores are read again: once the new leader had a
/// moment, and once more for stores the reader read back during the change.
const RECHECK_AFTER: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(5)];
/// Reads of the stream in flight at once during a recheck.
const RECHECK_READS: usize = 32;
/// How long a recheck keeps asking a stream that does not answer.
const RECHECK_FOR: Duration = Duration::from_secs(30);
/// The longest one read of the stream may take.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// A store acknowledged and not yet shown to be held.
struct Pending {
    id: String,
    subject: String,
    payload: Bytes,
    /// A QoS 2 release: the held copy's sequence (see [`Again::expect`]).
    expect: Option<u64>,
}

/// A store read back, kept until [`SETTLE_FOR`] after that.
struct Settling {
    since: Instant,
    seq: u64,
    store: Pending,
}

#[derive(Default)]
struct Shard {
    /// By sequence.
    pending: BTreeMap<u64, Pending>,
    /// The payload bytes of `pending`.
    pending_bytes: usize,
    /// The last sequence the node's reader read.
    read_upto: u64,
    /// The last [`RECENT`] sequences read, with the id of the message (if it had one).
    recent: VecDeque<(u64, Option<String>)>,
    /// In the order they were read back.
    settling: VecDeque<Settling>,
    /// The payload bytes of `settling`.
    settling_bytes: usize,
    /// `Some` while a recheck runs; `Some(true)`: the leader changed again meanwhile.
    recheck: Option<bool>,
}

impl Shard {
    fn settle(&mut self, seq: u64, store: Pending) {
        let now = Instant::now();
        while self
            .settling
            .front()
            .is_some_and(|s| now.duration_since(s.since) > SETTLE_FOR)
        {
            self.pop_settling();
        }
        self.settling_bytes += store.payload.len();
        self.settling.push_back(Settling {
            since: now,
            seq,
            store,
        });
    }

    fn pop_settling(&mut self) -> Option<Settling> {
        let s = self.settling.pop_front()?;
        self.settling_bytes = self.settling_bytes.saturating_sub(s.store.payload.len());
        Some(s)
    }

    /// Take the store `id` at `seq` out, settling or still pending (`None`: neither, e.g. the
    /// reader or another recheck took it first).
    fn take_unconfirmed(&mut self, seq: u64, id: &str) -> Option<Pending> {
        if let Some(at) = self
            .settling
            .iter()
            .position(|s| s.seq == seq && s.store.id == id)
        {
            let s = self.settling.remove(at)?;
            self.settling_bytes = self.settling_bytes.saturating_sub(s.store.payload.len());
            return Some(s.store);
        }
        if self.pending.get(&seq).is_some_and(|p| p.id == id) {
            let p = self.pending.remove(&seq)?;
            self.pending_bytes = self.pending_bytes.saturating_sub(p.payload.len());
            return Some(p);
        }
        None
    }
}

/// Past the settling bounds, the oldest settling stores (of any shard) stop being kept.
fn bound_settling(shards: &mut [Shard]) {
    loop {
        let (entries, bytes) = shards.iter().fold((0, 0), |(n, b), s| {
            (n + s.settling.len(), b + s.settling_bytes)
        });
        if entries <= SETTLING_LIMIT && bytes <= SETTLING_BYTES {
            return;
        }
        let oldest = shards
            .iter_mut()
            .filter(|s| !s.settling.is_empty())
            .min_by_key(|s| s.settling.front().map(|f| f.since));
        match oldest.and_then(Shard::pop_settling) {
            Some(_) => {}
            None => return,
        }
    }
}

/// What a read of a settling store's sequence found.
enum Found {
    Held,
    /// Older than the stream's first message: removed by the stream's limits, not lost.
    AgedOut,
    Missing,
    Unknown,
}

/// Acknowledged stores of message shards waiting to be shown held (see the module).
pub struct Ledger {
    shards: parking_lot::Mutex<Vec<Shard>>,
}

impl Ledger {
    pub fn new(shards: usize) -> Self {
        Ledger {
            shards: parking_lot::Mutex::new((0..shards).map(|_| Shard::default()).collect()),
        }
    }

    /// The reader of shard `k` starts at `last` (what is older was not stored by this node).
    pub fn start(&self, k: usize, last: u64) {
        if let Some(shard) = self.shards.lock().get_mut(k) {
            shard.read_upto = shard.read_upto.max(last);
        }
    }

    /// Per shard, the highest sequence of a store this node had acknowledged that its reader
    /// has not read back yet (0: none).
    pub fn unread_high(&self) -> Vec<u64> {
        self.shards
            .lock()
            .iter()
            .map(|shard| shard.pending.last_key_value().map_or(0, |(seq, _)| *seq))
            .collect()
    }

    /// The stream acknowledged `id` at `seq` of shard `k`.
    pub(super) fn acknowledged(
        self: &Arc<Self>,
        js: &Context,
        k: usize,
        seq: u64,
        id: &str,
        again: &Again,
    ) {
        let store = Pending {
            id: id.to_owned(),
            subject: again.subject.clone(),
            payload: again.payload.clone(),
            expect: again.expect,
        };
        let missing = {
            let mut shards = self.shards.lock();
            let Some(shard) = shards.get_mut(k) else {
                return;
            };
            if seq > shard.read_upto {
                shard.pending_bytes += store.payload.len();
                if let Some(old) = shard.pending.insert(seq, store) {
                    shard.pending_bytes = shard.pending_bytes.saturating_sub(old.payload.len());
                }
                bound_pending(&mut shards);
                return;
            }
            let read_back = shard
                .recent
                .iter()
                .find(|(s, _)| *s == seq)
                .is_some_and(|(_, read)| read.as_deref() == Some(id));
            if read_back {
                shard.settle(seq, store);
                bound_settling(&mut shards);
                return;
            }
            store
        };
        self.clone().restore(js.clone(), k, seq, missing);
    }

    /// The node's reader of shard `k` read `seq`, a message with `id` (its `Nats-Msg-Id`).
    pub fn read(self: &Arc<Self>, js: &Context, k: usize, seq: u64, id: Option<&str>) {
        let mut missing = Vec::new();
        {
            let mut shards = self.shards.lock();
            let Some(shard) = shards.get_mut(k) else {
                return;
            };
            if seq <= shard.read_upto {
                return;
            }
            shard.read_upto = seq;
            shard.recent.push_back((seq, id.map(str::to_owned)));
            if shard.recent.len() > RECENT {
                shard.recent.pop_front();
            }
            let mut settled = false;
            while let Some(entry) = shard.pending.first_entry() {
                if *entry.key() > seq {
                    break;
                }
                let (at, pending) = entry.remove_entry();
                shard.pending_bytes = shard.pending_bytes.saturating_sub(pending.payload.len());
                if at == seq && id == Some(pending.id.as_str()) {
                    shard.settle(at, pending);
                    settled = true;
                    continue;
                }
                missing.push((at, pending));
            }
            if settled {
                bound_settling(&mut shards);
            }
        }
        for (at, pending) in missing {
            self.clone().restore(js.clone(), k, at, pending);
        }
    }

    /// The leader of shard `k`'s stream changed (`why`): read its settling stores again.
    pub fn leader_changed(self: &Arc<Self>, js: &Context, k: usize, why: &'static str) {
        {
            let mut shards = self.shards.lock();
            let Some(shard) = shards.get_mut(k) else {
                return;
            };
            if let Some(again) = &mut shard.recheck {
                *again = true;
                return;
            }
            shard.recheck = Some(false);
        }
        tracing::debug!(target: TARGET, shard = k, why, "reading settling stores again");
        let ledger = self.clone();
        let js = js.clone();
        tokio::spawn(async move { ledger.recheck(js, k).await });
    }

    async fn recheck(self: Arc<Self>, js: Context, k: usize) {
        loop {
            let mut waited = Duration::ZERO;
            for after in RECHECK_AFTER {
                tokio::time::sleep(after.saturating_sub(waited)).await;
                waited = after;
                self.recheck_once(&js, k).await;
            }
            let mut shards = self.shards.lock();
            let Some(shard) = shards.get_mut(k) else {
                return;
            };
            if shard.recheck == Some(true) {
                shard.recheck = Some(false);
                continue;
            }
            shard.recheck = None;
            return;
        }
    }

    /// Read every settling and pending store of shard `k` from its stream's leader; store
    /// again what is missing. Pending stores are read too: one taken back before the node's
    /// reader reached it, with nothing stored after it, leaves no message at its sequence for
    /// the reader to find, so only this read shows it missing. Sequences the stream does not
    /// answer for are asked again, for [`RECHECK_FOR`].
    async fn recheck_once(self: &Arc<Self>, js: &Context, k: usize) {
        let mut ask: Vec<(u64, String)> = {
            let shards = self.shards.lock();
            let Some(shard) = shards.get(k) else {
                return;
            };
            let settling = shard.settling.iter().map(|s| (s.seq, s.store.id.clone()));
            let pending = shard.pending.iter().map(|(seq, p)| (*seq, p.id.clone()));
            settling.chain(pending).collect()
        };
        let started = Instant::now();
        let (mut held, mut lost) = (0usize, 0usize);
        while !ask.is_empty() {
            let found = read_back(js, k, &ask).await;
            let mut unknown = Vec::new();
            for ((seq, id), found) in ask.into_iter().zip(found) {
                match found {
                    Found::Held | Found::AgedOut => held += 1,
                    Found::Unknown => unknown.push((seq, id)),
                    Found::Missing => {
                        let store = self
                            .shards
                            .lock()
                            .get_mut(k)
                            .and_then(|s| s.take_unconfirmed(seq, &id));
                        if let Some(store) = store {
                            lost += 1;
                            self.clone().restore(js.clone(), k, seq, store);
                        }
                    }
                }
            }
            ask = unknown;
            if ask.is_empty() || started.elapsed() >= RECHECK_FOR {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        if !ask.is_empty() {
            tracing::warn!(
                target: TARGET,
                shard = k,
                unread = ask.len(),
                "settling stores not read again: the stream did not answer"
            );
        }
        tracing::debug!(target: TARGET, shard = k, held, lost, "settling stores read again");
    }

    /// Store again a message whose acknowledgement the stream did not keep.
    fn restore(self: Arc<Self>, js: Context, k: usize, seq: u64, missing: Pending) {
        tracing::warn!(
            target: TARGET,
            shard = k,
            seq,
            id = %missing.id,
            "an acknowledged store is not in its stream (another message or none at its \
             sequence): storing it again"
        );
        let again = Again {
            subject: missing.subject,
            payload: missing.payload,
            expect: missing.expect,
            ledger: self.clone(),
        };
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let mut pause = Duration::from_millis(200);
            loop {
                match store_again(&js, &missing.id, &again).await {
                    Ok(Some((seq, fresh))) => {
                        again.ledger.acknowledged(&js, k, seq, &fresh, &again);
                        return;
                    }
                    Ok(None) => return,
                    Err(e) if started.elapsed() < RESTORE_FOR => {
                        tracing::debug!(target: TARGET, "storing again: {e}; retrying");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(2));
                    }
                    Err(e) => {
                        tracing::error!(
                            target: TARGET,
                            id = %missing.id,
                            "an acknowledged message could not be stored again: {e}"
                        );
                        return;
                    }
                }
            }
        });
    }
}

/// Past the pending bounds, the shard with the most waiting gives up its oldest entry.
fn bound_pending(shards: &mut [Shard]) {
    loop {
        let (entries, bytes) = shards.iter().fold((0, 0), |(n, b), s| {
            (n + s.pending.len(), b + s.pending_bytes)
        });
        if entries <= LEDGER_LIMIT && bytes <= LEDGER_BYTES {
            return;
        }
        let Some((k, shard)) = shards
            .iter_mut()
            .enumerate()
            .max_by_key(|(_, s)| s.pending.len())
        else {
            return;
        };
        let Some((seq, p)) = shard.pending.pop_first() else {
            return;
        };
        shard.pending_bytes = shard.pending_bytes.saturating_sub(p.payload.len());
        tracing::warn!(
            target: TARGET,
            shard = k,
            seq,
            id = %p.id,
            "acknowledged store not confirmed: the reader is too far behind"
        );
    }
}

/// Whether a stream's `max_age` can remove a store while it is settling (one read back within
/// [`SETTLE_FOR`], stored shortly before; a minute's margin).
fn ages_out_settling(max_age: Duration) -> bool {
    !max_age.is_zero() && max_age <= SETTLE_FOR + Duration::from_secs(60)
}

/// Read each `(seq, id)` of shard `k` from its stream's leader.
async fn read_back(js: &Context, k: usize, ask: &[(u64, String)]) -> Vec<Found> {
    let unknown = || ask.iter().map(|_| Found::Unknown).collect();
    let stream_name = super::shard_stream(k);
    let stream = tokio::time::timeout(READ_TIMEOUT, js.get_stream(&stream_name)).await;
    let Ok(Ok(mut stream)) = stream else {
        return unknown();
    };
    // The leader's answer. A sequence below its first message may have been removed by the
    // stream's `max_age`, not lost, when that is short enough to reach a settling store;
    // otherwise a missing head is as lost as a missing tail.
    let first_kept = match tokio::time::timeout(READ_TIMEOUT, stream.info()).await {
        Ok(Ok(info)) if ages_out_settling(info.config.max_age) => info.state.first_sequence,
        Ok(Ok(_)) => 0,
        _ => return unknown(),
    };
    let stream = Arc::new(stream);
    // Owned per read: a future spawned by `recheck` must not borrow across the reads.
    let reads: Vec<_> = ask
        .iter()
        .map(|(seq, id)| (stream.clone(), *seq, id.clone()))
        .collect();
    futures_util::stream::iter(reads)
        .map(|(stream, seq, id)| async move {
            let read = tokio::time::timeout(READ_TIMEOUT, stream.get_raw_message(seq)).await;
            match read {
                Ok(Ok(message)) => {
                    let same = message
                        .headers
                        .get("Nats-Msg-Id")
                        .is_some_and(|v| v.as_str() == id);
                    if same {
                        Found::Held
                    } else {
                        Found::Missing
                    }
                }
                Ok(Err(e))
                    if e.kind()
                        == async_nats::jetstream::stream::RawMessageErrorKind::NoMessageFound =>
                {
                    if seq < first_kept {
                        Found::AgedOut
                    } else {
                        Found::Missing
                    }
                }
                _ => Found::Unknown,
            }
        })
        .buffered(RECHECK_READS)
        .collect()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(id: &str, len: usize) -> Pending {
        Pending {
            id: id.to_owned(),
            subject: "fmq.m.0.a".to_owned(),
            payload: Bytes::from(vec![0u8; len]),
            expect: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn settling_stores_expire_after_the_window() {
        let mut shard = Shard::default();
        shard.settle(1, store("a", 10));
        tokio::time::advance(SETTLE_FOR + Duration::from_secs(1)).await;
        shard.settle(2, store("b", 20));
        assert_eq!(
            shard.settling.iter().map(|s| s.seq).collect::<Vec<_>>(),
            [2]
        );
        assert_eq!(shard.settling_bytes, 20);
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_bound_the_oldest_settling_store_of_any_shard_goes() {
        let mut shards: Vec<Shard> = (0..2).map(|_| Shard::default()).collect();
        let half = SETTLING_BYTES / 2;
        shards[1].settle(7, store("old", half));
        tokio::time::advance(Duration::from_millis(10)).await;
        shards[0].settle(8, store("new", half));
        tokio::time::advance(Duration::from_millis(10)).await;
        shards[0].settle(9, store("newer", 1));
        bound_settling(&mut shards);
        assert!(shards[1].settling.is_empty());
        assert_eq!(shards[0].settling.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_read_back_settles_and_can_be_taken_out_by_id() {
        let ledger = Arc::new(Ledger::new(1));
        {
            let mut shards = ledger.shards.lock();
            shards[0].pending.insert(5, store("m5", 3));
            shards[0].pending_bytes = 3;
        }
        // No NATS is needed: a store read back at its sequence with its id is not re-stored.
        let client_less = async_nats::jetstream::new(
            async_nats::ConnectOptions::new()
                .retry_on_initial_connect()
                .connect("127.0.0.1:1")
                .await
                .expect("a client that retries its connection in the background"),
        );
        ledger.read(&client_less, 0, 5, Some("m5"));
        let mut shards = ledger.shards.lock();
        assert!(shards[0].pending.is_empty());
        assert_eq!(shards[0].pending_bytes, 0);
        assert_eq!(shards[0].settling.len(), 1);
        assert!(shards[0].take_unconfirmed(5, "other").is_none());
        assert_eq!(
            shards[0].take_unconfirmed(5, "m5").map(|s| s.id),
            Some("m5".into())
        );
        assert_eq!(shards[0].settling_bytes, 0);
    }

    #[test]
    fn a_pending_store_can_be_taken_out_by_id() {
        let mut shard = Shard::default();
        shard.pending.insert(7, store("m7", 4));
        shard.pending_bytes = 4;
        assert!(shard.take_unconfirmed(7, "other").is_none());
        assert!(shard.take_unconfirmed(8, "m7").is_none());
        assert_eq!(
            shard.take_unconfirmed(7, "m7").map(|p| p.id),
            Some("m7".into())
        );
        assert!(shard.pending.is_empty());
        assert_eq!(shard.pending_bytes, 0);
        assert!(shard.take_unconfirmed(7, "m7").is_none(), "taken once");
    }
}
