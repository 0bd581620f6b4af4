//! Persistent sessions in `FMQ_SESS`: the claim of a CONNECT (take over from the owner,
//! fence it with a new epoch), record writes (compare-and-set on the KV revision: a node
//! that lost the session can never write it again), kicks between nodes, and the changes the
//! broker core commits. This module: commits, saves and session ends; `claim.rs`: a
//! CONNECT's claim and restore; `record.rs`: record writes and fencing; `kick.rs`: kicks
//! between nodes and hand-overs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::Operation;
use futures_util::StreamExt;

use super::claims::NewSession;
use super::codec::{decode_message, SessionRecord};
use super::engine::{refuses_owner, Inner};
use super::shard_stream;
use super::subject::client_key;
use super::tracker::{Entry, Tracked};
use crate::broker::durability::{
    now_ms, Change, ClaimRequest, Claimed, Commit, DurabilityError, QueueOwner, SessionData,
    SessionImage,
};
use crate::broker::session::inflight::{InflightEntry, InflightStage};
use crate::broker::session::SessionState;
use crate::protocol::QoS;

/// How long a claim waits for the old owner to hand a session over.
pub const KICK_TIMEOUT: Duration = Duration::from_secs(2);
/// How often dirty records (acknowledgement progress) are written.
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// Attempts of a claim against concurrent writers of the same record.
const CLAIM_ATTEMPTS: usize = 6;
/// The first pause after a claim's write lost to another writer; doubled each time (at most
/// 16 times: 80 ms).
const CLAIM_RETRY_PAUSE: Duration = Duration::from_millis(5);

fn unavailable(what: impl std::fmt::Display) -> DurabilityError {
    DurabilityError::Unavailable(format!("cluster store: {what}"))
}

/// The subject a node answers kicks on.
fn kick_subject(node_id: &str) -> String {
    format!(
        "fmq.node.{}.kick",
        super::subject::topic_subject("n", node_id)
    )
}

/// The changes the broker core commits, applied to the tracker and NATS.
pub fn commit(inner: &Arc<Inner>, changes: Vec<Change>) -> Commit {
    let mut waits = Vec::new();
    // A persistent session's QoS 2 PUBLISH comes with the packet id to remember.
    let inbound_qos2 = changes.iter().find_map(|c| match c {
        Change::InboundQos2Received {
            client_id,
            packet_id,
            connection,
        } => Some((client_id.clone(), *packet_id, connection.clone())),
        _ => None,
    });
    for change in changes {
        match change {
            // The publisher is named from the broker's registry, which no longer has a
            // session this node handed over while its connection is still open: the packet
            // id's change names the session instead. Stored as a plain publish, such a
            // QoS 2 message was delivered at once, and again when its client re-sent it
            // where the session resumed.
            Change::Published {
                message,
                retained,
                publisher,
                store_id: _,
            } if message.qos == QoS::ExactlyOnce
                && inbound_qos2
                    .as_ref()
                    .is_some_and(|(c, _, _)| publisher.as_ref().is_none_or(|p| p == c)) =>
            {
                let Some((client_id, packet_id, connection)) = inbound_qos2.clone() else {
                    continue;
                };
                waits.push(crate::cluster::qos2::received(
                    inner, message, retained, client_id, packet_id, connection,
                ))
            }
            Change::Published {
                message,
                retained,
                publisher,
                store_id,
            } => waits.push(super::publish::publish(
                inner,
                message,
                retained,
                publisher.as_deref(),
                store_id,
            )),
            Change::InboundQos2Released {
                client_id,
                packet_id,
            } => waits.push(crate::cluster::qos2::released(inner, client_id, packet_id)),
            Change::Sent {
                owner: QueueOwner::Session(client_id),
                seq,
                packet_id,
            } => waits.push(crate::cluster::qos2::delivery_state(
                inner, client_id, seq, packet_id, false,
            )),
            Change::Released {
                owner: QueueOwner::Session(client_id),
                seq,
                packet_id,
            } => waits.push(crate::cluster::qos2::delivery_state(
                inner, client_id, seq, packet_id, true,
            )),
            Change::Removed {
                owner: QueueOwner::Session(client_id),
                seq,
            } => inner.tracker.lock().removed(&client_id, seq),
            Change::SessionSaved(data) => waits.push(save(inner, data, true)),
            Change::SessionEnded { client_id } => waits.push(end(inner, client_id)),
            Change::QueueDeclared { owner } if refuses_owner(&owner) => {
                return Commit::Done(Err(DurabilityError::Unavailable(
                    "a single node's subscription group is not kept by a cluster".into(),
                )))
            }
            // Retained messages sent because of a SUBSCRIBE are not in the log (their queue
            // entries are not tracked); other changes are node-local.
            _ => {}
        }
    }
    join(waits)
}

fn join(waits: Vec<Commit>) -> Commit {
    let mut pending = Vec::new();
    for wait in waits {
        match wait {
            Commit::Done(Ok(())) => {}
            Commit::Done(Err(e)) => return Commit::Done(Err(e)),
            Commit::Pending(f) => pending.push(f),
        }
    }
    if pending.is_empty() {
        return Commit::done();
    }
    Commit::Pending(Box::pin(async move {
        for f in pending {
            f.await?;
        }
        Ok(())
    }))
}

/// A persistent session's client left.
pub fn session_offline(inner: &Arc<Inner>, state: &SessionState) -> Commit {
    let data = SessionData::of(state);
    save(inner, data, false)
}

/// A session's own data changed (attach, SUBSCRIBE, UNSUBSCRIBE, offline): write its record.
fn save(inner: &Arc<Inner>, data: SessionData, connected: bool) -> Commit {
    let client_id = data.client_id.clone();
    if inner.drain.is_released(&client_id) {
        // Handed over by the drain: the record is no longer this node's to write (a change
        // of a still connected client is refused, so that no SUBACK promises it).
        return if connected {
            Commit::Done(Err(unavailable("this node is draining")))
        } else {
            Commit::done()
        };
    }
    let covering = {
        let mut tracker = inner.tracker.lock();
        let mut tracked = tracker.sessions.get_mut(&client_id);
        // Read first: the claims' lock is not held past the verdict.
        let verdict = match tracked {
            None if connected => inner.claims.lock().new_session(&client_id),
            _ => NewSession::NotClaimedNew,
        };
        match save_route(tracked.as_deref(), &data, connected, verdict) {
            SaveRoute::Unchanged => {
                drop(tracker);
                super::confirmed::count(inner, |c| c.cluster_records_unchanged());
                return Commit::done();
            }
            SaveRoute::Skip(why) => {
                drop(tracker);
                tracing::debug!(client_id = %client_id, "offline save skipped: {why}");
                return Commit::done();
            }
            SaveRoute::Refuse(why) => {
                drop(tracker);
                tracing::info!(
                    client_id = %client_id,
                    "a session this node's claim did not start is not made new here: refusing its CONNECT ({why})"
                );
                return Commit::Done(Err(unavailable(why)));
            }
            SaveRoute::Start => {
                // A new session: it is fed from where the node's reader is now.
                let mut t = Tracked::new(data, inner.shards, &inner.routed());
                t.claim = inner.claims.lock().local(&client_id);
                let covering = t.data_changes;
                tracker.sessions.insert(client_id.clone(), t);
                covering
            }
            SaveRoute::Update => {
                let Some(t) = tracked.take() else {
                    return Commit::done();
                };
                if t.data != data || t.connected != connected {
                    t.data_changes += 1;
                }
                t.data = data;
                if t.connected && !connected {
                    t.offline_since_ms = now_ms();
                }
                if connected {
                    t.offline_since_ms = 0;
                }
                t.connected = connected;
                t.dirty = true;
                t.data_changes
            }
        }
    };
    let inner = inner.clone();
    Commit::Pending(Box::pin(async move {
        write_record_covering(&inner, &client_id, Some(covering)).await
    }))
}

/// What a save of a persistent session's own data does with this node's copy (see
/// [`save_route`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SaveRoute {
    /// The record holds it already: nothing to write.
    Unchanged,
    /// The tracked copy takes the data and its record is written.
    Update,
    /// A new session starts here: tracked from now, its first record written.
    Start,
    /// An offline save of a copy that is not this node's to write: nothing written.
    Skip(&'static str),
    /// A connection's save (its attach) of a copy this node let go: its CONNECT is refused
    /// before any CONNACK, and its client connects again and claims where the session is.
    Refuse(&'static str),
}

/// How [`save`] treats `data` (`connected`: the client is attached) given this node's copy
/// `tracked` and, when there is none, `verdict`, what this node's latest claim allows.
///
/// - A copy the record holds already (a client reconnecting and taking its own connection
///   over, again and again) is left as it is; acknowledgement progress is the flusher's.
/// - A copy being handed over (another node's kick came after this node's claim found the
///   session its own) is the hand-over's to write, and the taking node's after. The broker's
///   registry let it go already, so a connection attaching now made a new, empty session:
///   written, it would replace the session's subscriptions and floors.
/// - No copy and going offline: a copy this node let go of (fenced, dropped, handed over)
///   whose connection closed after; a new session is always tracked from its attach.
///   Writing it would make a record with fresh floors over the session's own.
/// - No copy at an attach: a session starts here only when this node's latest claim found
///   none to resume. Any other untracked copy (restored, then let go before its connection
///   attached on another node's kick or a fence; confirmed, then dropped) made new would
///   replace the record's floors with fresh ones and skip what was stored meanwhile.
fn save_route(
    tracked: Option<&Tracked>,
    data: &SessionData,
    connected: bool,
    verdict: NewSession,
) -> SaveRoute {
    const TAKEN: &str = "the session was taken by another node during its CONNECT";
    match tracked {
        Some(t) if t.holds(data, connected) => SaveRoute::Unchanged,
        Some(t) if t.handed_over && connected => SaveRoute::Refuse(TAKEN),
        Some(t) if t.handed_over => SaveRoute::Skip("the session is being handed over"),
        Some(_) => SaveRoute::Update,
        None if !connected => SaveRoute::Skip("the session is not tracked here"),
        None => match verdict {
            NewSession::Allowed => SaveRoute::Start,
            NewSession::LetGo => SaveRoute::Refuse(TAKEN),
            NewSession::NotClaimedNew => {
                SaveRoute::Refuse("the session was let go here during its CONNECT")
            }
        },
    }
}

/// A persistent session ended here: delete its record (if this node still owns it).
fn end(inner: &Arc<Inner>, client_id: Arc<str>) -> Commit {
    inner.q2.forget(&client_id);
    let Some(t) = inner.tracker.lock().sessions.remove(&client_id) else {
        return Commit::done();
    };
    let inner = inner.clone();
    Commit::Pending(Box::pin(async move {
        let lock = inner.record_lock(&client_id);
        let _one_writer = lock.lock().await;
        if t.revision == 0 {
            return Ok(());
        }
        let key = client_key(&client_id);
        let mut revision = t.revision;
        for _ in 0..2 {
            super::confirmed::count(&inner, |c| c.cluster_record_writes());
            match tokio::time::timeout(
                inner.store_timeout,
                inner
                    .sessions_kv
                    .delete_expect_revision(&key, Some(revision)),
            )
            .await
            {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(_)) => {}
                Err(_) => return Err(unavailable("no answer ending a session")),
            }
            // A write of this node's that was under way when the session ended (its offline
            // record, written as its consumer left just before) moved the revision: still
            // this node's at this epoch, it is deleted at the new one. Another node's
            // (a higher epoch, or another owner): taken meanwhile, theirs, not ended.
            match read_record(&inner, &key).await? {
                Some(e) if e.operation == Operation::Put => {
                    let ours = SessionRecord::decode(&e.value)
                        .is_ok_and(|r| r.owner == inner.node_id && r.epoch == t.epoch);
                    if !ours {
                        return Ok(());
                    }
                    revision = e.revision;
                }
                _ => return Ok(()),
            }
        }
        Err(unavailable("session record changed while it was ended"))
    }))
}

mod claim;
mod kick;
mod record;

pub use claim::*;
pub use kick::*;
pub use record::*;

#[cfg(test)]
mod tests {
    use super::{fences, save_route, NewSession, SaveRoute, SessionData, Tracked};
    use crate::broker::session::SessionState;

    fn data() -> SessionData {
        SessionData::of(&SessionState::new("c", true))
    }

    #[test]
    fn a_copy_handed_over_during_a_connect_is_neither_made_new_nor_written() {
        let mut t = Tracked::new(data(), 2, &[0, 0]);
        // Another node's kick after this node's claim confirmed the session.
        t.freeze(&[5, 5]);
        let allowed = NewSession::Allowed;
        assert!(matches!(
            save_route(Some(&t), &data(), true, allowed),
            SaveRoute::Refuse(_)
        ));
        assert!(matches!(
            save_route(Some(&t), &data(), false, allowed),
            SaveRoute::Skip(_)
        ));
        // The copy this node still serves takes the change.
        let served = Tracked::new(data(), 2, &[0, 0]);
        assert_eq!(
            save_route(Some(&served), &data(), true, allowed),
            SaveRoute::Update
        );
    }

    #[test]
    fn an_untracked_session_starts_only_where_its_latest_claim_found_none() {
        assert_eq!(
            save_route(None, &data(), true, NewSession::Allowed),
            SaveRoute::Start
        );
        for verdict in [NewSession::LetGo, NewSession::NotClaimedNew] {
            assert!(matches!(
                save_route(None, &data(), true, verdict),
                SaveRoute::Refuse(_)
            ));
        }
        assert!(matches!(
            save_route(None, &data(), false, NewSession::Allowed),
            SaveRoute::Skip(_)
        ));
    }

    #[test]
    fn a_failed_write_fences_only_the_copy_it_was_written_for() {
        // Another node took the session: the copy written at epoch 3 goes.
        assert!(fences("n1", 3, Some(3), Some(("n2", 4))));
        // The record is gone (ended elsewhere): the copy goes.
        assert!(fences("n1", 3, Some(3), None));
        // A newer claim of the same client on this node (epoch 4) moved the record: the
        // failed write was of the old copy; the new one stays.
        assert!(!fences("n1", 3, Some(4), Some(("n1", 4))));
        // ... even when yet another node owns the record now: that is for the new copy's own
        // writes to find out.
        assert!(!fences("n1", 3, Some(4), Some(("n2", 5))));
        // The record is this node's at the written epoch: nothing to fence.
        assert!(!fences("n1", 3, Some(3), Some(("n1", 3))));
        // Nothing tracked any more: nothing to keep.
        assert!(fences("n1", 3, None, Some(("n2", 4))));
    }
}
