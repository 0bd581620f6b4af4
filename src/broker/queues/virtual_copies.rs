//! Copies of a message published to a topic for queues: ActiveMQ's virtual topics
//! (`Consumer.*.VirtualTopic.X` gets what is sent to topic `VirtualTopic.X`) and composite
//! topics forwarding to queues (`config::virtual_destinations` has the rules).
//!
//! The copies are planned with the topic's route (`runtime/route.rs`): their queue entries are
//! kept by the same commit as the route's session entries, so a QoS 1/2 publish is
//! acknowledged only once every copy is kept, and they enter their queues when the route
//! completes. ActiveMQ's forward is internal: only the publisher's `write` on the topic is
//! authorized (the interceptor sits below the authorization broker).
//!
//! Cost for a topic that is not virtual: one relaxed atomic load while no queue is a consumer
//! queue of a virtual topic and no composite topic is configured; otherwise one hash lookup by
//! the topic's MQTT name. The index maps each topic to its consumer queues and is updated when
//! a queue is created, recovered or deleted (queues that exist: a consumer's SUBSCRIBE, a
//! SEND, `<destinations>`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::RwLock;

use super::landing::Reservation;
use super::{Entry, Queue, Queues, SendError};
use crate::broker::durability::{Change, Commit, QueueOwner, QueuedFor, RetainedChange};
use crate::broker::message::{Message, V5Extras};
use crate::config::virtual_destinations::{VirtualDestinations, VirtualTopic};
use crate::protocol::QoS;
use crate::security::destination::swap_chars;

/// A composite's target queue names and its `forwardOnly`.
type Forward = (Vec<Arc<str>>, bool);

/// A composite topic's target queue names, `forwardOnly`, and target topics (MQTT names).
type TopicForward = (Vec<Arc<str>>, bool, Vec<Arc<str>>);

/// What a topic (by MQTT name) forwards to queues.
#[derive(Default, Clone)]
struct Targets {
    /// Consumer queues of virtual topics, each once, with whether only a consumer's accepting
    /// selector lets a copy in (`selectorAware`).
    queues: Vec<(Arc<Queue>, bool)>,
    /// A composite topic's queues (created when first forwarded to, as ActiveMQ's send
    /// creates them), its `forwardOnly`, and the topics (MQTT names) it forwards to.
    composite: Option<TopicForward>,
}

impl Targets {
    fn is_empty(&self) -> bool {
        self.queues.is_empty() && self.composite.is_none()
    }
}

/// The virtual destinations in force and, per topic, the queues that take its messages.
#[derive(Default)]
pub(super) struct VirtualIndex {
    topics: RwLock<Vec<VirtualTopic>>,
    /// Read by every publish while `any`: swapped whole on a change (a queue created or
    /// deleted, rare), so a publish reads it without a lock word shared by all publishers.
    by_topic: ArcSwap<HashMap<Box<str>, Targets>>,
    /// Serializes the changes of `by_topic`.
    changing: parking_lot::Mutex<()>,
    /// `by_topic` is not empty: the only check a publish pays otherwise.
    any: AtomicBool,
    /// Composite queues: name -> (the queues it forwards to, `forwardOnly`).
    composite_queues: RwLock<HashMap<Arc<str>, Forward>>,
    /// `composite_queues` is not empty: the only check a queue send pays otherwise.
    any_composite_queue: AtomicBool,
}

/// A message's copies for queues, planned with its topic route.
pub struct QueueCopies {
    /// The message every copy carries (see [`copy_of`]).
    message: Message,
    copies: Vec<(Arc<Queue>, Entry)>,
    /// The places of the kept copies in their queues' order, reserved when the copies were
    /// made (`landing.rs`): given up if the copies are dropped unkept.
    places: Vec<Reservation>,
    /// A composite topic with `forwardOnly`: the topic's own subscribers get nothing.
    pub forward_only: bool,
    /// The topics (MQTT names) a composite topic forwards to: routed as published there.
    pub forward_topics: Vec<Arc<str>>,
    /// The copy (an index of `copies`) that is the original itself: a composite queue's own,
    /// without `forwardOnly`. Its entry carries the message as sent.
    own: Option<usize>,
}

impl QueueCopies {
    /// The message as forwarded: not retained, with the topic it was published to as
    /// `original-destination` (what a composite topic's forward to another topic carries).
    pub fn forwarded_message(&self) -> &Message {
        &self.message
    }
}

impl std::fmt::Debug for QueueCopies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueCopies")
            .field("queues", &self.copies.len())
            .field("forward_only", &self.forward_only)
            .finish()
    }
}

impl Queues {
    /// Apply the configuration's virtual destinations (at start; a change needs a restart)
    /// and index the queues that exist.
    pub fn set_virtual_destinations(&self, config: &VirtualDestinations) {
        *self.virtual_index.topics.write() = config.topics.clone();
        {
            let _changing = self.virtual_index.changing.lock();
            let mut by_topic = HashMap::new();
            for composite in &config.composite_topics {
                let queues = composite
                    .forward_to_queues
                    .iter()
                    .map(|q| Arc::from(q.as_str()))
                    .collect();
                let topics = composite
                    .forward_to_topics
                    .iter()
                    .map(|t| Arc::from(swap_chars(t)))
                    .collect();
                by_topic
                    .entry(swap_chars(&composite.name).into_boxed_str())
                    .or_insert_with(Targets::default)
                    .composite = Some((queues, composite.forward_only, topics));
            }
            self.virtual_index.by_topic.store(Arc::new(by_topic));
        }
        {
            let mut composites = self.virtual_index.composite_queues.write();
            composites.clear();
            for composite in &config.composite_queues {
                let targets = composite
                    .forward_to_queues
                    .iter()
                    .map(|q| Arc::from(q.as_str()))
                    .collect();
                composites.insert(
                    Arc::from(composite.name.as_str()),
                    (targets, composite.forward_only),
                );
            }
            self.virtual_index
                .any_composite_queue
                .store(!composites.is_empty(), Ordering::Release);
        }
        let existing: Vec<Arc<Queue>> = self.queues.read().values().cloned().collect();
        for queue in &existing {
            self.index_virtual(queue);
        }
        self.update_any();
    }

    fn update_any(&self) {
        let any = !self.virtual_index.by_topic.load().is_empty();
        self.virtual_index.any.store(any, Ordering::Release);
    }

    /// Index `queue` under the topics whose virtual topic copies onto it (a new, recovered
    /// or declared queue; temporary queues are never consumer queues).
    pub(super) fn index_virtual(&self, queue: &Arc<Queue>) {
        if queue.temporary {
            return;
        }
        let topics: Vec<(String, bool)> = self
            .virtual_index
            .topics
            .read()
            .iter()
            .filter_map(|t| Some((t.topic_of_queue(&queue.name)?, t.selector_aware)))
            .collect();
        if topics.is_empty() {
            return;
        }
        {
            let _changing = self.virtual_index.changing.lock();
            let mut by_topic = HashMap::clone(&self.virtual_index.by_topic.load());
            for (topic, selector_aware) in topics {
                let targets = by_topic
                    .entry(swap_chars(&topic).into_boxed_str())
                    .or_default();
                match targets
                    .queues
                    .iter_mut()
                    .find(|(q, _)| Arc::ptr_eq(q, queue))
                {
                    // Two virtual topics map it to this topic: one copy, selector-aware only
                    // when both are.
                    Some((_, aware)) => *aware &= selector_aware,
                    None => targets.queues.push((queue.clone(), selector_aware)),
                }
            }
            self.virtual_index.by_topic.store(Arc::new(by_topic));
        }
        tracing::debug!(queue = %queue.name, "queue takes copies of a virtual topic");
        self.update_any();
    }

    /// Forget a deleted queue in the index.
    pub(super) fn unindex_virtual(&self, queue: &Arc<Queue>) {
        if !self.virtual_index.any.load(Ordering::Acquire) {
            return;
        }
        {
            let _changing = self.virtual_index.changing.lock();
            let current = self.virtual_index.by_topic.load();
            let indexed = current
                .values()
                .any(|t| t.queues.iter().any(|(q, _)| Arc::ptr_eq(q, queue)));
            if indexed {
                let mut by_topic = HashMap::clone(&current);
                by_topic.retain(|_, targets| {
                    targets.queues.retain(|(q, _)| !Arc::ptr_eq(q, queue));
                    !targets.is_empty()
                });
                self.virtual_index.by_topic.store(Arc::new(by_topic));
            }
        }
        self.update_any();
    }

    /// Whether any topic forwards to queues: when false, no publish needs
    /// [`Queues::virtual_copies`]. One atomic load.
    #[inline]
    pub fn has_virtual_copies(&self) -> bool {
        self.virtual_index.any.load(Ordering::Acquire)
    }

    /// The copies of `message` (published to its topic, MQTT name) for the queues that take
    /// that topic's messages, each charged to `memoryUsage`, persistent when its QoS is 1 or
    /// 2 (a STOMP `persistent:true` SEND); `None` when the topic forwards to no queue.
    pub fn virtual_copies(&self, message: &Message) -> Option<QueueCopies> {
        let (mut queues, composite) = {
            let by_topic = self.virtual_index.by_topic.load();
            let targets = by_topic.get(&*message.topic)?;
            (targets.queues.clone(), targets.composite.clone())
        };
        let mut forward_only = false;
        let mut forward_topics = Vec::new();
        if let Some((names, only, topics)) = composite {
            forward_only = only;
            forward_topics = topics;
            for name in names {
                let queue = self.get_or_create(&name);
                if !queues.iter().any(|(q, _)| Arc::ptr_eq(q, &queue)) {
                    queues.push((queue, false));
                }
            }
        }
        let persistent = message.qos != QoS::AtMostOnce;
        let live = copy_of(message, format!("/topic/{}", swap_chars(&message.topic)));
        let copies: Vec<(Arc<Queue>, Entry)> = queues
            .into_iter()
            .filter_map(|(queue, selector_aware)| {
                let entry = self.new_entry(&queue, live.clone(), persistent);
                // SelectorAwareVirtualTopicInterceptor: only a queue one of whose consumers
                // would take it (none without consumers).
                let wanted = !selector_aware || queue.state.lock().any_consumer_accepts(&entry);
                wanted.then_some((queue, entry))
            })
            .collect();
        if copies.is_empty() && !forward_only && forward_topics.is_empty() {
            return None;
        }
        Some(QueueCopies {
            message: live,
            places: self.reserve_kept(&copies),
            copies,
            forward_only,
            forward_topics,
            own: None,
        })
    }

    /// What keeps `copies`: queue records not known to exist yet, then one message with an
    /// entry per kept copy (stored apart from the topic route's: the copies carry
    /// `original-destination`). Empty when no copy is persistent.
    pub fn keep_copies(&self, copies: &QueueCopies) -> Vec<Change> {
        let mut changes = Vec::new();
        let mut queued_for = Vec::new();
        let mut own = Vec::new();
        for (i, (queue, entry)) in copies.copies.iter().enumerate() {
            if !entry.kept {
                continue;
            }
            if !queue.declared.load(Ordering::Relaxed) {
                changes.push(Change::QueueDeclared {
                    owner: queue.owner.clone(),
                });
            }
            let kept = QueuedFor {
                owner: QueueOwner::Queue(queue.name.clone()),
                seq: entry.seq,
                qos: QoS::AtLeastOnce,
                retain: false,
                subscription_id: None,
            };
            if copies.own == Some(i) {
                own.push(Change::Message {
                    message: entry.message.clone(),
                    retained: RetainedChange::Unchanged,
                    queued_for: vec![kept],
                });
            } else {
                queued_for.push(kept);
            }
        }
        changes.extend(own);
        if !queued_for.is_empty() {
            changes.push(Change::Message {
                message: copies.message.clone(),
                retained: RetainedChange::Unchanged,
                queued_for,
            });
        }
        changes
    }

    /// Put `copies` in their queues: after what [`Queues::keep_copies`] described is kept.
    /// Each enters after the sends reserved before it in its queue (`landing.rs`).
    pub fn insert_copies(&self, copies: QueueCopies) {
        for (queue, entry) in copies.copies {
            if entry.kept {
                queue.declared.store(true, Ordering::Relaxed);
            }
            let ((), out) = queue.with(|s, now, ctx, out| s.land(entry, now, ctx, out));
            self.settle_in_background(&queue, out);
        }
        copies.places.into_iter().for_each(Reservation::landed);
    }

    /// The places of the kept entries of `copies` in their queues.
    fn reserve_kept(&self, copies: &[(Arc<Queue>, Entry)]) -> Vec<Reservation> {
        copies
            .iter()
            .filter(|(_, entry)| entry.kept)
            .map(|(queue, entry)| self.reserve(queue, entry.seq))
            .collect()
    }
}

/// A message forwarded from `origin` (`/topic/T`, `/queue/Q`) as its queues receive it: not
/// retained, and with `origin` as `original-destination` (ActiveMQ sets the copy's original
/// destination: `setOriginalDestination`, true by default, for a virtual topic; always for a
/// composite), which STOMP shows as that header.
fn copy_of(message: &Message, origin: String) -> Message {
    let mut extras = message.v5.as_deref().cloned().unwrap_or(V5Extras {
        properties: crate::protocol::Properties::default(),
        expires_at: None,
    });
    let props = &mut extras.properties.user_properties;
    props.retain(|(k, _)| k != super::dead_letter::ORIGINAL_DESTINATION);
    props.push((super::dead_letter::ORIGINAL_DESTINATION.into(), origin));
    Message {
        retain: false,
        v5: Some(Arc::new(extras)),
        ..message.clone()
    }
}

/// Where a send to a composite queue goes: its own queue first when `own`.
pub(super) struct CompositeTargets {
    pub(super) queues: Vec<Arc<Queue>>,
    pub(super) own: bool,
}

impl Queues {
    /// The queues a send to composite queue `name` goes to (its `forwardTo` queues, and
    /// itself unless `forwardOnly`), created if new; `None` when `name` is no composite queue.
    pub(super) fn composite_targets(&self, name: &str) -> Option<CompositeTargets> {
        if !self
            .virtual_index
            .any_composite_queue
            .load(Ordering::Acquire)
        {
            return None;
        }
        let (names, forward_only) = self
            .virtual_index
            .composite_queues
            .read()
            .get(name)?
            .clone();
        let mut targets: Vec<Arc<Queue>> = Vec::with_capacity(names.len() + 1);
        if !forward_only {
            targets.push(self.get_or_create(name));
        }
        for target in names {
            let queue = self.get_or_create(&target);
            if !targets.iter().any(|q| Arc::ptr_eq(q, &queue)) {
                targets.push(queue);
            }
        }
        Some(CompositeTargets {
            queues: targets,
            own: !forward_only,
        })
    }

    /// A send to a composite queue: one entry per target queue, all kept by one commit (the
    /// body once), in their queues once it is kept; nothing at all when it fails. As
    /// [`Queues::send_to`] otherwise.
    pub(super) fn send_fanned(
        &self,
        name: &str,
        targets: CompositeTargets,
        message: Message,
        persistent: bool,
    ) -> Result<Commit, SendError> {
        let copy = copy_of(&message, format!("/queue/{name}"));
        let copies: Vec<(Arc<Queue>, Entry)> = targets
            .queues
            .into_iter()
            .enumerate()
            .map(|(i, queue)| {
                let sent = if targets.own && i == 0 {
                    message.clone()
                } else {
                    copy.clone()
                };
                let entry = self.new_entry(&queue, sent, persistent);
                (queue, entry)
            })
            .collect();
        let copies = QueueCopies {
            message: copy,
            places: self.reserve_kept(&copies),
            copies,
            forward_only: true,
            forward_topics: Vec::new(),
            own: targets.own.then_some(0),
        };
        let changes = self.keep_copies(&copies);
        if changes.is_empty() {
            self.insert_copies(copies);
            return Ok(Commit::done());
        }
        match self.durability.commit(changes) {
            Commit::Done(Ok(())) => {
                self.insert_copies(copies);
                Ok(Commit::done())
            }
            Commit::Done(Err(e)) => Err(SendError::Durability(e)),
            Commit::Pending(done) => {
                let me = self.me.clone();
                Ok(self.spawned(async move {
                    done.await?;
                    if let Some(queues) = me.upgrade() {
                        queues.insert_copies(copies);
                    }
                    Ok(())
                }))
            }
        }
    }

    /// What a composite queue's targets receive of `message` sent to `name`.
    pub(super) fn composite_copy(&self, name: &str, message: &Message) -> Message {
        copy_of(message, format!("/queue/{name}"))
    }
}
