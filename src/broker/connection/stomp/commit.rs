//! COMMIT of a STOMP transaction as one store commit (docs/stomp.md, "Transactions").
//!
//! Every persistent SEND of the transaction (to queues, and to topics for durable
//! subscriptions and persistent MQTT sessions) and every ACK is kept by a single
//! [`Durability::commit`](crate::broker::durability::Durability::commit), which the store
//! applies all or nothing (one write transaction). Nothing of the transaction is visible before
//! that commit is kept: its messages reach their queues and subscribers after it, its
//! acknowledgements take effect after it, and its RECEIPT follows. If the commit fails, nothing
//! of it is applied: its messages are dropped, the messages it acknowledged stay
//! unacknowledged (and go back to be redelivered once the connection closes), and the client
//! gets an ERROR, which closes the connection, as any store failure does.
//!
//! While the frames of an admitted COMMIT are applied, `publish` and `queue_send` (SEND),
//! `on_ack` and `queue_ack` (ACK) put what they would commit into [`Staging`] instead of
//! committing it. The commit and what follows it run in a task of their own, so that once
//! the store has kept the transaction its messages reach their queues and subscribers even if
//! the connection is gone by then.
//!
//! On a cluster node a COMMIT is staged here when it is SENDs to queues and topics and ACKs
//! of queue messages ([`StompConn::staged_on_cluster`]): its queue SENDs, a record of each
//! persistent topic SEND and a record of its ACKs are stored in the cluster's queue stream as
//! one atomic batch; once that batch is kept its topic messages are stored in their shard
//! streams and its ACKs applied (by any node, if this one dies first). Any other COMMIT there
//! (with an ACK of a topic message, or a temporary destination) is applied frame by frame
//! (`frames.rs`, `apply_in_order`): durable subscriptions' acknowledgements live in session
//! records, which no batch of the queue stream spans (docs/stomp.md, "What a COMMIT keeps,
//! and when").

use std::collections::HashSet;
use std::sync::Arc;

use super::destination::Destination;
use super::frames::STALE_REPLANS;
use super::subscribe::Unacked;
use super::{Close, Ready, StompConn};
use crate::broker::durability::{Change, Commit, DurabilityError, RetainedChange};
use crate::broker::queues::{QueueStaging, TopicSend};
use crate::broker::runtime::{BrokerCore, RoutePlan, Routed};
use crate::broker::session::SessionId;
use crate::protocol::stomp::{Command, Frame};
use crate::protocol::QoS;

/// What the frames of a COMMIT being applied would commit, gathered for one commit.
#[derive(Default)]
pub(crate) struct Staging {
    /// Topic SENDs in order: where each goes, and what keeps it (planned again if a receiving
    /// session ended before the commit).
    routes: Vec<(RoutePlan, Vec<Change>)>,
    /// Queue SENDs and the ACKs of queue messages.
    pub(super) queues: QueueStaging,
    /// The removals the ACKs of topic messages keep (durable subscriptions' and persistent
    /// sessions' entries).
    topic_removals: Vec<Change>,
    /// The topic deliveries those ACKs took out of their subscriptions' windows, by
    /// subscription key: back in the window if the commit fails.
    topic_acked: Vec<(u64, Vec<Unacked>)>,
    /// Message numbers the transaction acknowledged so far: an ACK of one of them again (an
    /// earlier cumulative ACK covered it) changes nothing, as in ActiveMQ, where the messages
    /// a transaction acknowledges stay dispatched until it commits.
    acked: HashSet<u64>,
}

impl Staging {
    /// A topic SEND: its plan and the changes that keep it.
    pub(super) fn route(&mut self, planned: (RoutePlan, Vec<Change>)) {
        self.routes.push(planned);
    }

    /// An ACK of topic deliveries `done` of subscription `key`, kept by `removals`.
    pub(super) fn topic_acked(&mut self, key: u64, done: Vec<Unacked>, removals: Vec<Change>) {
        self.acked.extend(done.iter().map(|u| u.message_id));
        self.topic_removals.extend(removals);
        self.topic_acked.push((key, done));
    }

    /// Queue deliveries numbered `numbers` were acknowledged (staged in [`Self::queues`]).
    pub(super) fn queue_acked(&mut self, numbers: impl IntoIterator<Item = u64>) {
        self.acked.extend(numbers);
    }

    /// Whether message number `n` was acknowledged by an earlier ACK of the transaction.
    pub(super) fn acknowledged(&self, n: u64) -> bool {
        self.acked.contains(&n)
    }
}

/// What the connection does once a transaction's commit is settled (rare: boxed in
/// [`Ready`]).
pub(crate) struct Committed {
    /// The routes of its topic SENDs (kept): subscribers they overfilled pause this client.
    routed: Routed,
    /// Its topic ACKs, when the commit failed: back in their subscriptions' windows, so a
    /// durable subscription keeps them as delivered and not acknowledged.
    give_back: Vec<(u64, Vec<Unacked>)>,
}

/// Every change of the transaction, for one commit.
fn changes(
    routes: &[(RoutePlan, Vec<Change>)],
    queues: &QueueStaging,
    topic_removals: &[Change],
) -> Vec<Change> {
    routes
        .iter()
        .flat_map(|(_, changes)| changes.iter())
        .chain(queues.changes())
        .chain(topic_removals)
        .cloned()
        .collect()
}

/// The persistent topic SENDs of a transaction a shared store keeps in its unit of queue
/// work ([`split_in_unit`]).
#[derive(Default)]
struct InUnit {
    sends: Vec<TopicSend>,
    plans: Vec<RoutePlan>,
}

/// Take out of `routes` the persistent topic publishes a shared store keeps in the
/// transaction's unit: those a backplane planned as one publish of the whole message to
/// every broker ([`Change::Published`], no retained change). The rest (non-persistent
/// messages) is committed, that is published, once the unit is kept.
fn split_in_unit(routes: Vec<(RoutePlan, Vec<Change>)>) -> (Vec<(RoutePlan, Vec<Change>)>, InUnit) {
    let mut kept = Vec::with_capacity(routes.len());
    let mut in_unit = InUnit::default();
    for (plan, changes) in routes {
        match changes.as_slice() {
            [Change::Published {
                message,
                retained: RetainedChange::Unchanged,
                publisher,
                ..
            }] if message.qos != QoS::AtMostOnce => {
                in_unit.sends.push(TopicSend {
                    message: message.clone(),
                    publisher: publisher.clone(),
                });
                in_unit.plans.push(plan);
            }
            _ => kept.push((plan, changes)),
        }
    }
    (kept, in_unit)
}

impl StompConn {
    /// The COMMIT whose frames are being staged, if there is one.
    pub(super) fn staging(&mut self) -> Option<&mut Staging> {
        self.transactions.as_mut()?.staging.as_deref_mut()
    }

    /// Commit everything `staging` gathered for transaction `id` as one unit; apply it once
    /// kept, then send `receipt` (in order with the work already waiting). A failed commit
    /// applies nothing and closes the connection with an ERROR naming the COMMIT's receipt.
    pub(super) fn commit_staged(&mut self, id: String, staging: Staging, receipt: Option<Frame>) {
        let Staging {
            routes,
            mut queues,
            topic_removals,
            topic_acked,
            acked: _,
        } = staging;
        // The sends' places in their queues, before anything the connection sends next.
        self.core.queues.reserve_staged(&mut queues);
        // A shared store that keeps the queue work as one unit keeps the persistent topic
        // SENDs in it too, and publishes them itself once it is kept.
        let (routes, in_unit) = if self.core.queues.shared_stores_as_one() > 0 {
            split_in_unit(routes)
        } else {
            (routes, InUnit::default())
        };
        // Submitted now: the store keeps it after what this connection committed before and
        // before what it commits next. Sends to queues a shared store keeps go first, as one
        // unit; the rest (the acknowledgements) is committed once they are kept.
        let stored = self.core.queues.store_staged(&queues, &in_unit.sends);
        let shared = queues.has_shared_sends() || !in_unit.sends.is_empty();
        let commit = (!shared).then(|| {
            self.core
                .durability()
                .commit(changes(&routes, &queues, &topic_removals))
        });
        // The unit's topic messages are stored once it is kept, after this point: the
        // connection's next frames wait for that, or a SEND after the COMMIT could be stored
        // before the transaction's.
        let hold = !in_unit.sends.is_empty();
        if hold {
            self.held += 1;
        }
        let task = tokio::spawn(keep(
            self.core.clone(),
            self.origin(),
            (stored, commit, shared),
            routes,
            queues,
            topic_removals,
            in_unit.plans,
        ));
        self.pending.push_back(Box::pin(async move {
            let kept = task
                .await
                .unwrap_or_else(|e| Err(format!("not committed: its task failed: {e}")));
            match kept {
                Ok(routed) => Ready {
                    frames: receipt.into_iter().collect(),
                    committed: Some(Box::new(Committed {
                        routed,
                        give_back: Vec::new(),
                    })),
                    released_hold: hold,
                    ..Ready::default()
                },
                Err(e) => {
                    let mut error = Close::error(format!("transaction {id} {e}"), None);
                    let receipt_id = receipt.as_ref().and_then(|r| r.header("receipt-id"));
                    if let (Close::Error(frame), Some(r)) = (&mut error, receipt_id) {
                        frame.headers.push(("receipt-id".to_owned(), r.to_owned()));
                    }
                    Ready {
                        fail: Some(error),
                        released_hold: hold,
                        committed: Some(Box::new(Committed {
                            routed: Routed::default(),
                            give_back: topic_acked,
                        })),
                        ..Ready::default()
                    }
                }
            }
        }));
    }

    /// A frame of the COMMIT was refused while it was applied: nothing of the transaction is
    /// committed, and what its ACKs took out of their windows goes back.
    pub(super) fn abandon_staged(&mut self, staging: Staging) {
        self.core.queues.undo_staged(staging.queues);
        self.give_back(staging.topic_acked);
    }

    /// Whether a COMMIT of `frames` on a cluster node is staged and kept as one unit: every
    /// SEND goes to a queue the cluster keeps or to a topic (not a temporary destination,
    /// which lives on its connection's node), every ACK is of a queue message, and the SENDs
    /// fit in one atomic batch of the shared store.
    pub(super) fn staged_on_cluster(&self, frames: &[Frame]) -> bool {
        let mut sends = 0;
        let queue_work = frames.iter().all(|frame| match frame.command {
            Command::Send => {
                sends += 1;
                frame
                    .header("destination")
                    .and_then(|d| Destination::parse(d).ok())
                    .is_some_and(|d| matches!(d, Destination::Queue(_) | Destination::Topic(_)))
            }
            _ => self
                .ack_id(frame)
                .and_then(|id| self.acked_number(id))
                .is_some_and(|n| self.queue_unacked(n)),
        });
        queue_work && sends <= self.core.queues.shared_stores_as_one()
    }

    /// A transaction's commit is settled (see [`Committed`]).
    pub(super) fn committed(&mut self, done: Committed) {
        self.give_back(done.give_back);
        self.pause_for(done.routed);
        self.out.pump_wanted = true;
    }

    /// [`Committed`] while the connection closes: only what its subscriptions keep matters.
    pub(super) fn committed_at_close(&mut self, done: Committed) {
        self.give_back(done.give_back);
    }

    /// Topic deliveries an ACK took out, back in their subscriptions' windows in delivery
    /// order.
    fn give_back(&mut self, acked: Vec<(u64, Vec<Unacked>)>) {
        for (key, done) in acked {
            if let Some(sub) = self.subs.iter_mut().find(|s| s.key == key) {
                sub.unacked.extend(done);
                sub.unacked
                    .make_contiguous()
                    .sort_unstable_by_key(|u| u.message_id);
            }
        }
    }
}

/// Wait for the transaction's commit (planned again, its topic SENDs, when a receiving
/// session ended meanwhile); once it is kept, the queue SENDs enter their queues, the queue
/// ACKs count and the topic SENDs are routed; when it is not, the queue ACKs are undone.
/// `(stored, first, shared)`: the unit a shared store keeps (sends to its queues, topic
/// SENDs of `in_unit`), the commit of the rest when it was submitted with it (`None`: it is
/// submitted once `stored` is done), and whether that unit holds anything. The error says
/// what was kept.
async fn keep(
    core: Arc<BrokerCore>,
    origin: Vec<SessionId>,
    (stored, first, shared): (Commit, Option<Commit>, bool),
    routes: Vec<(RoutePlan, Vec<Change>)>,
    queues: QueueStaging,
    topic_removals: Vec<Change>,
    in_unit: Vec<RoutePlan>,
) -> Result<Routed, String> {
    if let Err(e) = stored.wait().await {
        core.queues.undo_staged(queues);
        return Err(format!(
            "not confirmed: the cluster store did not confirm its messages ({e}); the \
             messages it acknowledged go with them: acknowledged if they were kept, else \
             delivered again"
        ));
    }
    for plan in in_unit {
        // Stored by the shared store: nothing is routed here (a persistent message reaches
        // this broker's subscribers from the store too).
        core.complete_route(plan);
    }
    let first = first.unwrap_or_else(|| {
        core.durability()
            .commit(changes(&routes, &queues, &topic_removals))
    });
    keep_rest(core, origin, first, routes, queues, topic_removals)
        .await
        .map_err(|e| {
            if shared {
                format!(
                    "committed in part: its messages are stored, its acknowledgements \
                     were not kept ({e}): the messages it acknowledged are delivered again"
                )
            } else {
                format!("not committed, nothing of it applied: {e}")
            }
        })
}

/// [`keep`] once the shared store kept the transaction's queue sends (or it had none).
async fn keep_rest(
    core: Arc<BrokerCore>,
    origin: Vec<SessionId>,
    first: Commit,
    mut routes: Vec<(RoutePlan, Vec<Change>)>,
    queues: QueueStaging,
    topic_removals: Vec<Change>,
) -> Result<Routed, DurabilityError> {
    let mut result = first.wait().await;
    let mut replans = 0;
    while let Err(DurabilityError::Stale(_)) = &result {
        if replans == STALE_REPLANS {
            break;
        }
        replans += 1;
        routes = routes
            .into_iter()
            .map(|(plan, _)| core.plan_route_from(plan.into_message(), &origin))
            .collect();
        let again = changes(&routes, &queues, &topic_removals);
        result = core.durability().commit(again).wait().await;
    }
    match result {
        Ok(()) => {
            core.queues.apply_staged(queues);
            let mut routed = Routed::default();
            for (plan, _) in routes {
                let done = core.complete_route(plan);
                routed.offered += done.offered;
                routed.overfilled.extend(done.overfilled);
            }
            Ok(routed)
        }
        Err(e) => {
            core.queues.undo_staged(queues);
            for (plan, kept) in &routes {
                if !kept.is_empty() {
                    core.publish_refused(&plan.message().topic, &e);
                }
            }
            Err(e)
        }
    }
}
