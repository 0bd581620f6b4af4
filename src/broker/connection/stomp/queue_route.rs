//! Queues (`/queue/x`, `/temp-queue/x`, `/remote-temp-queue/ID:...`) as seen from a STOMP
//! connection: the one place the queue engine ([`crate::broker::queues`]) is called from.
//!
//! - SEND: `write` on the queue (`queue=` entries; creating it needs `admin`), then
//!   [`Queues::send`]; the RECEIPT leaves once a persistent message is kept. A send the broker
//!   cannot keep (`memoryUsage`, `storeUsage`) is an ERROR frame: nothing was accepted.
//! - SUBSCRIBE: `read`, then a consumer of the queue with the subscription's
//!   `activemq.prefetchSize` (else the queue's `queuePrefetch`, 1000), `activemq.exclusive`,
//!   `activemq.priority` and `selector`. Its wake-up is the connection's own.
//! - ACK / NACK of a queue message: [`QueueConsumer::ack`] (`client`: cumulative) or
//!   [`QueueConsumer::nack`] (ActiveMQ's poison ack: the dead-letter queue, or the
//!   redelivery plugin's policy); the RECEIPT after the removal is kept.
//! - UNSUBSCRIBE and the connection's end close the consumers: what they held unacknowledged
//!   goes back to its queue, redelivered.
//! - Temporary queues: `/temp-queue/x` names a queue of this connection (`<session>:x` in
//!   the engine, as temporary topics are named), created on first use (a SEND, SUBSCRIBE or
//!   `reply-to` naming it; `tempDestinationAuthorizationEntry` decides, with `admin` to
//!   create) and deleted when the connection ends; a `reply-to:/temp-queue/x` of a SEND is
//!   rewritten to `/remote-temp-queue/<session>:x` (as ActiveMQ does) so another client can
//!   send the reply there; only the owning connection may consume from it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use crate::broker::connection::flow_control::HELD_RETRY;
use crate::broker::durability::{Commit, DurabilityError, QueueSeq};
use crate::broker::message::{Message, SampleStamp};
use crate::broker::queues::{
    ConsumerSpec, QueueConsumer, QueueRefusal, QueueStaging, Queues, SelectorFilter, SendError,
    TakenDeliveries,
};
use crate::broker::runtime::Refusal;
use crate::metrics::latency::DeliveredBy;
use crate::protocol::stomp::{Frame, Version};
use crate::security::Action;

use super::destination::{remote_temp_name, Destination};
use super::frames::unkept_text;
use super::mapping::{message_frame, message_of_send, Delivery};
use super::subscribe::AckMode;
use super::{Close, Ready, StompConn, OUT_HIGH_WATER_BYTES};

/// Deliveries taken from one queue consumer per call.
const PUMP_BATCH: usize = 64;

/// This connection's queue subscriptions and temporary queues (allocated on first use).
#[derive(Default)]
pub(crate) struct QueueSubs {
    subs: Vec<QueueSub>,
    /// Deliveries of UNSUBSCRIBEd consumers that open transactions acknowledged.
    parked: Vec<Parked>,
    /// Browse subscriptions (`browse.rs`).
    browsers: Vec<super::browse::Browser>,
    /// The client's temporary queue names -> the engine's (`ID:<session>:<name>`).
    temporary: HashMap<String, Arc<str>>,
}

impl QueueSubs {
    /// Queue subscriptions held.
    pub(super) fn len(&self) -> usize {
        self.subs.len()
    }
}

/// One subscription to a queue.
struct QueueSub {
    /// The client's `id` header.
    id: String,
    /// The destination as the client named it (the MESSAGE frames' `destination`).
    destination: String,
    ack: AckMode,
    consumer: QueueConsumer,
    /// (message number, queue entry) sent and not acknowledged, in delivery order.
    unacked: VecDeque<(u64, QueueSeq)>,
}

/// Deliveries an open transaction ACKed whose subscription was UNSUBSCRIBEd before the
/// transaction ended: they stay with the transaction (acknowledged at its COMMIT, given back,
/// redelivered, at its ABORT or when the connection closes), as ActiveMQ keeps the
/// acknowledgement it took when the ACK arrived, whatever becomes of its consumer.
struct Parked {
    transaction: String,
    /// The message numbers the ACK covered (a `client` ACK covers those before it too).
    numbers: Vec<u64>,
    taken: TakenDeliveries,
}

/// The prefix of another connection's temporary queue (ActiveMQ's name for it in headers).
pub(super) const REMOTE_TEMP_QUEUE: &str = "/remote-temp-queue/";

impl StompConn {
    fn queue_subs(&mut self) -> &mut QueueSubs {
        self.queues.get_or_insert_with(Box::default)
    }

    /// Whether a queue subscription has this `id` (ids are unique over all subscriptions).
    pub(super) fn has_queue_sub(&self, id: &str) -> bool {
        self.queues.as_ref().is_some_and(|q| {
            q.subs.iter().any(|s| s.id == id) || q.browsers.iter().any(|b| b.id == id)
        })
    }

    /// This connection's browse subscriptions.
    pub(super) fn browsers(&self) -> &[super::browse::Browser] {
        self.queues.as_ref().map_or(&[], |q| &q.browsers)
    }

    pub(super) fn browsers_mut(&mut self) -> &mut Vec<super::browse::Browser> {
        &mut self.queue_subs().browsers
    }

    /// The engine's name of this connection's temporary queue `name`, created (after the
    /// temporary-destination authorization) when new.
    fn own_temporary(&mut self, name: &str, frame: &Frame) -> Result<Arc<str>, Close> {
        if let Some(full) = self.queues.as_ref().and_then(|q| q.temporary.get(name)) {
            return Ok(full.clone());
        }
        let full: Arc<str> = Arc::from(remote_temp_name(&self.session_name, name));
        let security = self.core.current_security();
        self.core
            .queues
            .may_use_temporary(&security, &self.principal, Action::Admin, &full)
            .map_err(|r| refused(r, &self.principal.user, "temp-queue", &full, frame))?;
        self.core.queues.create_temporary(&full);
        self.queue_subs()
            .temporary
            .insert(name.to_owned(), full.clone());
        Ok(full)
    }

    /// A SEND whose `reply-to` is `/temp-queue/x` creates that temporary queue of this
    /// connection (as ActiveMQ does when it rewrites the header), so the reply has a queue to
    /// go to before this client subscribes to it.
    pub(super) fn reply_temp_queue(&mut self, frame: &Frame) -> Result<(), Close> {
        if let Some(name) = frame
            .header("reply-to")
            .and_then(|r| r.strip_prefix("/temp-queue/"))
        {
            let name = name.to_owned();
            self.own_temporary(&name, frame)?;
        }
        Ok(())
    }

    pub(super) fn queue_send(&mut self, dest: &Destination, frame: &Frame) -> Result<(), Close> {
        self.reply_temp_queue(frame)?;
        let frame = self
            .reply_to_rewritten(frame)
            .unwrap_or_else(|| frame.clone());
        let security = self.core.current_security();
        // `remote`: another node's temporary queue, in a cluster (`cluster/temp_queues.rs`).
        let (name, temporary, remote) = match dest {
            Destination::Queue(name) => {
                check_name(name, &frame)?;
                self.cluster_queue_fits(name, &frame)?;
                self.cluster_message_fits(name, &frame)?;
                self.core
                    .queues
                    .may_use(&security, &self.principal, Action::Write, name)
                    .map_err(|r| refused(r, &self.principal.user, "queue", name, &frame))?;
                (Arc::from(name.as_str()), false, false)
            }
            Destination::TempQueue(name) => (self.own_temporary(name, &frame)?, true, false),
            Destination::RemoteTempQueue(name) => {
                let remote = !self.core.queues.is_temporary(name);
                if remote && !self.core.queues.is_shared() {
                    return Err(Close::error(
                        format!("Cannot publish to a deleted Destination: temp-queue://{name}"),
                        Some(&frame),
                    ));
                }
                self.core
                    .queues
                    .may_use_temporary(&security, &self.principal, Action::Write, name)
                    .map_err(|r| refused(r, &self.principal.user, "temp-queue", name, &frame))?;
                (Arc::from(name.as_str()), true, remote)
            }
            Destination::Topic(_) | Destination::TempTopic(_) | Destination::RemoteTempTopic(_) => {
                return Err(Close::error("not a queue destination", Some(&frame)))
            }
        };
        drop(security);
        let mut message = message_of_send(&frame, name.clone(), Instant::now());
        let received = self
            .core
            .counters
            .message_in(message.qos, message.payload.len());
        message.stamp = SampleStamp::for_publish(received);
        if remote {
            let Some(commit) = self.core.queues.send_remote_temporary(&name, &message) else {
                return Err(Close::error(
                    format!("Cannot publish to a deleted Destination: temp-queue://{name}"),
                    Some(&frame),
                ));
            };
            self.after_commit(
                commit,
                Self::receipt_for(&frame),
                ("message", "not delivered"),
            );
            return Ok(());
        }
        if let Some(staging) = self
            .transactions
            .as_mut()
            .and_then(|t| t.staging.as_deref_mut())
        {
            // Kept with the rest of its transaction, in the queue once all of it is kept.
            return self
                .core
                .queues
                .stage_send(&mut staging.queues, &name, temporary, message)
                .map_err(|e| {
                    Close::error(
                        format!("message to queue://{name} refused: {e}"),
                        Some(&frame),
                    )
                });
        }
        let sent = if self.applying_transaction() {
            self.core
                .queues
                .send_admitted(&name, temporary, message.clone())
                .unwrap_or_else(|| {
                    Err(SendError::Durability(DurabilityError::Unavailable(
                        "the temporary queue was deleted".into(),
                    )))
                })
        } else {
            send_to(&self.core.queues, &name, temporary, message.clone())
        };
        match sent {
            Ok(commit) => {
                self.after_commit(commit, Self::receipt_for(&frame), ("message", "not stored"));
                Ok(())
            }
            Err(SendError::MemoryFull) => {
                self.hold_queue_send(name, temporary, message, &frame, Refusal::MemoryFull);
                Ok(())
            }
            Err(SendError::Durability(e @ DurabilityError::Full(_))) => {
                let refusal = Refusal::Durability(e);
                self.hold_queue_send(name, temporary, message, &frame, refusal);
                Ok(())
            }
            Err(SendError::Durability(e)) if e.outcome_unknown() => Err(Close::error(
                unkept_text("message", "not stored", &e),
                Some(&frame),
            )),
            Err(e) => Err(Close::error(
                format!("message to queue://{name} refused: {e}"),
                Some(&frame),
            )),
        }
    }

    /// A SEND that `memoryUsage` or `storeUsage` stopped: reading stops (producer flow
    /// control, as for topics) and it is tried again until the queue takes it, or refused
    /// with an ERROR past `sendFailIfNoSpace[AfterTimeout]`.
    fn hold_queue_send(
        &mut self,
        name: Arc<str>,
        temporary: bool,
        message: Message,
        frame: &Frame,
        refusal: Refusal,
    ) {
        self.core.count_held(&format!("queue://{name}"), &refusal);
        self.held += 1;
        let receipt = Self::receipt_for(frame);
        let core = self.core.clone();
        let deadline = self
            .core
            .send_fail_after
            .lock()
            .map(|d| tokio::time::Instant::now() + d);
        self.pending.push_back(Box::pin(async move {
            // The SEND's `receipt` names the frame the ERROR answers (STOMP 1.2).
            let fail = |why: String| Ready {
                fail: Some(Close::error_answering(why, receipt.as_ref())),
                released_hold: true,
                ..Ready::default()
            };
            let commit = loop {
                if deadline.is_some_and(|at| tokio::time::Instant::now() >= at) {
                    return fail(format!(
                        "the broker's memory or store limit is reached: message to \
                         queue://{name} refused"
                    ));
                }
                tokio::time::sleep(HELD_RETRY).await;
                match send_to(&core.queues, &name, temporary, message.clone()) {
                    Ok(commit) => break commit,
                    Err(
                        SendError::MemoryFull | SendError::Durability(DurabilityError::Full(_)),
                    ) => {}
                    Err(e) => return fail(format!("message to queue://{name} refused: {e}")),
                }
            };
            match commit.wait().await {
                Ok(()) => Ready {
                    frames: receipt.into_iter().collect(),
                    released_hold: true,
                    ..Ready::default()
                },
                Err(e) => fail(unkept_text("message", "not stored", &e)),
            }
        }));
    }

    /// Send `receipt` (if any) once `commit` is done, in order with what waits already; a
    /// failed commit closes the connection with an ERROR saying what was not kept (`what`:
    /// noun and failure, see [`unkept_text`]).
    fn after_commit(
        &mut self,
        commit: Commit,
        receipt: Option<Frame>,
        what: (&'static str, &'static str),
    ) {
        match commit {
            Commit::Done(Ok(())) => {
                if let Some(receipt) = receipt {
                    self.send_ordered(receipt);
                }
            }
            commit => self.pending.push_back(Box::pin(async move {
                match commit.wait().await {
                    Ok(()) => Ready {
                        frames: receipt.into_iter().collect(),
                        ..Ready::default()
                    },
                    Err(e) => Ready {
                        fail: Some(Close::error_answering(
                            unkept_text(what.0, what.1, &e),
                            receipt.as_ref(),
                        )),
                        ..Ready::default()
                    },
                }
            })),
        }
    }

    /// A SUBSCRIBE to a queue destination (`id` and `ack` already checked by the caller).
    pub(super) fn queue_subscribe(
        &mut self,
        dest: &Destination,
        frame: &Frame,
        id: String,
        ack: AckMode,
    ) -> Result<(), Close> {
        if self.has_queue_sub(&id) {
            return Err(Close::error(
                format!("Duplicate subscription id: {id}"),
                Some(frame),
            ));
        }
        let security = self.core.current_security();
        let (name, destination) = match dest {
            Destination::Queue(name) => {
                check_name(name, frame)?;
                self.cluster_queue_fits(name, frame)?;
                self.core
                    .queues
                    .may_use(&security, &self.principal, Action::Read, name)
                    .map_err(|r| refused(r, &self.principal.user, "queue", name, frame))?;
                (Arc::from(name.as_str()), format!("/queue/{name}"))
            }
            Destination::TempQueue(name) => {
                drop(security);
                (
                    self.own_temporary(name, frame)?,
                    format!("/temp-queue/{name}"),
                )
            }
            Destination::RemoteTempQueue(name) => {
                let own = self
                    .queues
                    .as_ref()
                    .is_some_and(|q| q.temporary.values().any(|n| **n == **name));
                if !own {
                    return Err(Close::error(
                        format!("Cannot subscribe to a remote temporary destination: {name}"),
                        Some(frame),
                    ));
                }
                (
                    Arc::from(name.as_str()),
                    format!("{REMOTE_TEMP_QUEUE}{name}"),
                )
            }
            Destination::Topic(_) | Destination::TempTopic(_) | Destination::RemoteTempTopic(_) => {
                return Err(Close::error("not a queue destination", Some(frame)))
            }
        };
        // 0 is taken as 1 by the engine (a STOMP consumer cannot pull), as for topics.
        // Values that do not convert are ignored, as ActiveMQ ignores them (options.rs).
        let prefetch = super::options::prefetch_size(frame.header("activemq.prefetchSize"));
        let priority = super::options::consumer_priority(frame.header("activemq.priority"));
        let exclusive = super::options::java_boolean(frame.header("activemq.exclusive"));
        let filter =
            super::selector::of_subscribe(frame)?.map(|s| SelectorFilter::for_queue(s, &name));
        let consumer = self.core.queues.subscribe(
            &name,
            ConsumerSpec {
                prefetch,
                exclusive,
                priority,
                filter,
                wake: self.wake.clone(),
            },
        );
        self.queue_subs().subs.push(QueueSub {
            id,
            destination,
            ack,
            consumer,
            unacked: VecDeque::new(),
        });
        self.out.pump_wanted = true;
        self.receipt(frame);
        Ok(())
    }

    /// UNSUBSCRIBE of queue subscription `id`: `false` when there is none. What it held goes
    /// back to its queue.
    pub(super) fn queue_unsubscribe(&mut self, id: &str) -> bool {
        let Some(subs) = self.queues.as_mut() else {
            return false;
        };
        if let Some(at) = subs.browsers.iter().position(|b| b.id == id) {
            subs.browsers.remove(at);
            return true;
        }
        let Some(at) = subs.subs.iter().position(|s| s.id == id) else {
            return false;
        };
        let mut sub = subs.subs.remove(at);
        for (transaction, n) in self.transacted_acks() {
            let Some(at) = sub.unacked.iter().position(|(number, _)| *number == n) else {
                continue;
            };
            let done: Vec<(u64, QueueSeq)> = if sub.ack == AckMode::Client {
                sub.unacked.drain(..=at).collect()
            } else {
                sub.unacked.remove(at).into_iter().collect()
            };
            let seqs: Vec<QueueSeq> = done.iter().map(|(_, seq)| *seq).collect();
            match sub.consumer.take_for_transaction(&seqs) {
                Ok(taken) => self.queue_subs().parked.push(Parked {
                    transaction,
                    numbers: done.into_iter().map(|(n, _)| n).collect(),
                    taken,
                }),
                // No longer its consumer's (a purge): nothing to keep for the transaction.
                Err(e) => tracing::debug!("a transacted ACK's delivery not kept: {e}"),
            }
        }
        sub.consumer.close();
        true
    }

    /// What transaction `id` parked and did not use (it ended, or its COMMIT stopped before
    /// its ACK), or every transaction's (`None`: the connection ends): given back.
    pub(super) fn release_parked(&mut self, id: Option<&str>) {
        let Some(subs) = self.queues.as_mut() else {
            return;
        };
        let (released, kept): (Vec<Parked>, Vec<Parked>) = std::mem::take(&mut subs.parked)
            .into_iter()
            .partition(|p| id.is_none_or(|id| p.transaction == id));
        subs.parked = kept;
        for parked in released {
            self.core.queues.give_back_taken(parked.taken);
        }
    }

    /// The parked deliveries an ACK with message number `n` names, taken out of the parked
    /// list.
    fn unpark(&mut self, n: u64) -> Option<Parked> {
        let subs = self.queues.as_mut()?;
        let at = subs.parked.iter().position(|p| p.numbers.contains(&n))?;
        Some(subs.parked.remove(at))
    }

    /// The connection ends: its queue consumers close (unacknowledged messages go back,
    /// redelivered) and its temporary queues are deleted.
    pub(super) fn release_queues(&mut self) {
        let Some(subs) = self.queues.take() else {
            return;
        };
        for sub in subs.subs {
            sub.consumer.close();
        }
        for parked in subs.parked {
            self.core.queues.give_back_taken(parked.taken);
        }
        for name in subs.temporary.values() {
            self.core.queues.delete(name);
        }
    }

    /// Move messages the queue engine dispatched to this connection's consumers into MESSAGE
    /// frames, until the output high-water mark.
    pub(super) fn pump_queues(&mut self) {
        let Some(mut subs) = self.queues.take() else {
            return;
        };
        let now = Instant::now();
        'subs: for sub in &mut subs.subs {
            loop {
                if self.out.bytes >= OUT_HIGH_WATER_BYTES {
                    self.out.pump_wanted = true;
                    break 'subs;
                }
                let Ok(batch) = sub.consumer.take(PUMP_BATCH) else {
                    break;
                };
                let taken = batch.len();
                for delivery in batch {
                    self.next_message_id += 1;
                    let n = self.next_message_id;
                    let message_id = format!("{}:{n}", self.session_name);
                    let ack_header = (sub.ack != AckMode::Auto && self.version == Version::V1_2)
                        .then_some(message_id.as_str());
                    let mut frame = message_frame(
                        &delivery.message,
                        &Delivery {
                            session: &self.session_name,
                            subscription: &sub.id,
                            message_id: &message_id,
                            ack: ack_header,
                            qos: delivery.message.qos,
                            redelivered: delivery.redelivered,
                        },
                        now,
                    );
                    set_header(&mut frame, "destination", &sub.destination);
                    self.send(&frame);
                    self.core
                        .counters
                        .message_out(delivery.message.qos, delivery.message.payload.len());
                    if !delivery.redelivered {
                        self.core
                            .metrics
                            .delivery_latency
                            .record(DeliveredBy::Stomp, delivery.message.stamp);
                    }
                    if sub.ack == AckMode::Auto {
                        // Acknowledged as sent (ActiveMQ's auto ack); kept in the background.
                        let _ = sub.consumer.ack(delivery.seq);
                    } else {
                        sub.unacked.push_back((n, delivery.seq));
                    }
                }
                if taken < PUMP_BATCH {
                    break;
                }
            }
        }
        self.queues = Some(subs);
    }

    /// ACK or NACK of message number `n` if it is a queue message: `Ok(false)` when it is
    /// not one of this connection's queue deliveries.
    /// Whether message number `n` was delivered to a queue subscription of this connection
    /// and is not acknowledged yet.
    pub(super) fn queue_unacked(&self, n: u64) -> bool {
        self.queues.as_ref().is_some_and(|q| {
            q.subs.iter().any(|s| s.unacked.iter().any(|u| u.0 == n))
                || q.parked.iter().any(|p| p.numbers.contains(&n))
        })
    }

    /// Whether message number `n` is kept aside for an open transaction (its subscription
    /// UNSUBSCRIBEd after the transaction ACKed it).
    pub(super) fn parked(&self, n: u64) -> bool {
        self.queues
            .as_ref()
            .is_some_and(|q| q.parked.iter().any(|p| p.numbers.contains(&n)))
    }

    /// The ack mode of the queue subscription holding message number `n` unacknowledged.
    pub(super) fn queue_ack_mode(&self, n: u64) -> Option<AckMode> {
        self.queues.as_ref().and_then(|q| {
            q.subs
                .iter()
                .find(|s| s.unacked.iter().any(|u| u.0 == n))
                .map(|s| s.ack)
        })
    }

    /// The checks of a SEND to queue `name` made when it arrives inside a transaction
    /// (name, authorization), so that a refused one fails then, not at COMMIT.
    pub(super) fn check_queue_send(&mut self, name: &str, frame: &Frame) -> Result<(), Close> {
        check_name(name, frame)?;
        self.cluster_queue_fits(name, frame)?;
        self.cluster_message_fits(name, frame)?;
        let security = self.core.current_security();
        self.core
            .queues
            .may_use(&security, &self.principal, Action::Write, name)
            .map_err(|r| refused(r, &self.principal.user, "queue", name, frame))
    }

    pub(super) fn queue_ack(&mut self, n: u64, frame: &Frame) -> Result<bool, Close> {
        let Some(subs) = self.queues.as_mut() else {
            return Ok(false);
        };
        let found = subs.subs.iter().enumerate().find_map(|(i, s)| {
            s.unacked
                .iter()
                .position(|(number, _)| *number == n)
                .map(|at| (i, at))
        });
        let Some((index, at)) = found else {
            return self.ack_parked(n, frame);
        };
        let sub = &mut subs.subs[index];
        let seq = sub.unacked[at].1;
        let nack = frame.command == crate::protocol::stomp::Command::Nack;
        let staging = self
            .transactions
            .as_mut()
            .and_then(|t| t.staging.as_deref_mut());
        if let (false, Some(staging)) = (nack, staging) {
            // Kept with the rest of its transaction; counted once all of it is kept.
            let done: Vec<(u64, QueueSeq)> = if sub.ack == AckMode::Client {
                sub.unacked.drain(..=at).collect()
            } else {
                sub.unacked.remove(at).into_iter().collect()
            };
            let seqs: Vec<QueueSeq> = done.iter().map(|(_, seq)| *seq).collect();
            sub.consumer
                .stage_ack(&mut staging.queues, &seqs)
                .map_err(|e| Close::error(e.to_string(), Some(frame)))?;
            staging.queue_acked(done.into_iter().map(|(n, _)| n));
            return Ok(true);
        }
        let result = if nack {
            sub.unacked.remove(at);
            sub.consumer.nack(seq)
        } else if sub.ack == AckMode::Client {
            sub.unacked.drain(..=at);
            sub.consumer.ack_through(seq)
        } else {
            sub.unacked.remove(at);
            sub.consumer.ack(seq)
        };
        let commit = result.map_err(|e| Close::error(e.to_string(), Some(frame)))?;
        self.out.pump_wanted = true;
        self.after_commit(
            commit,
            Self::receipt_for(frame),
            ("acknowledgement", "not stored"),
        );
        Ok(true)
    }
}

impl StompConn {
    /// A COMMIT's ACK of deliveries parked when their subscription was UNSUBSCRIBEd: staged
    /// with the rest of the transaction, or (a cluster node applying it frame by frame)
    /// acknowledged now. `false` when `n` names none.
    fn ack_parked(&mut self, n: u64, frame: &Frame) -> Result<bool, Close> {
        // Outside its COMMIT the subscription is gone: ActiveMQ's "Unexpected ACK".
        if frame.command == crate::protocol::stomp::Command::Nack || !self.applying_transaction() {
            return Ok(false);
        }
        let Some(parked) = self.unpark(n) else {
            return Ok(false);
        };
        if let Some(staging) = self.staging() {
            staging.queues.stage_taken(parked.taken);
            staging.queue_acked(parked.numbers);
            return Ok(true);
        }
        let mut staging = QueueStaging::default();
        staging.stage_taken(parked.taken);
        let kept = self.core.durability().commit(staging.changes().to_vec());
        let core = self.core.clone();
        let applied = Commit::Pending(Box::pin(async move {
            let result = kept.wait().await;
            match &result {
                Ok(()) => core.queues.apply_staged(staging),
                Err(_) => core.queues.undo_staged(staging),
            }
            result
        }));
        self.after_commit(
            applied,
            Self::receipt_for(frame),
            ("acknowledgement", "not stored"),
        );
        Ok(true)
    }
}

/// Send `message` to queue `name` (a temporary one: it must still exist).
fn send_to(
    queues: &Queues,
    name: &str,
    temporary: bool,
    message: Message,
) -> Result<Commit, SendError> {
    if !temporary {
        return queues.send(name, message);
    }
    queues.send_temporary(name, message).unwrap_or_else(|| {
        Err(SendError::Durability(DurabilityError::Unavailable(
            "the temporary queue was deleted".into(),
        )))
    })
}

/// A queue name a client may send to or consume from: no wildcards (ActiveMQ composes
/// wildcard destinations; ferromq does not).
pub(super) fn check_name(name: &str, frame: &Frame) -> Result<(), Close> {
    if name.split('.').any(|level| level == "*" || level == ">") {
        return Err(Close::error(
            format!("wildcard queue destinations are not supported: /queue/{name}"),
            Some(frame),
        ));
    }
    Ok(())
}

/// The ERROR of a refused queue use, in ActiveMQ's words.
pub(super) fn refused(
    refusal: QueueRefusal,
    user: &str,
    scheme: &str,
    name: &str,
    frame: &Frame,
) -> Close {
    let what = match (refusal, frame.command) {
        (QueueRefusal::NotCreated, _) => "create",
        (QueueRefusal::NotAuthorized, crate::protocol::stomp::Command::Send) => "write to",
        (QueueRefusal::NotAuthorized, _) => "read from",
    };
    Close::error(
        format!("User {user} is not authorized to {what}: {scheme}://{name}"),
        Some(frame),
    )
}

/// Replace the value of header `name` (it is there once: the frame was built so).
pub(super) fn set_header(frame: &mut Frame, name: &str, value: &str) {
    for (n, v) in &mut frame.headers {
        if n == name {
            value.clone_into(v);
        }
    }
}
