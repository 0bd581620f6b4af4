//! Queue browsing: a SUBSCRIBE to a queue with `browser:true` (ActiveMQ's
//! `StompQueueBrowserSubscription`, a JMS `QueueBrowser`) gets the messages the queue holds
//! when it subscribes, without taking them: at most the queue's `maxBrowsePageSize` (its
//! policy entry's, 400 by default, as ActiveMQ's `Queue.doBrowse`), in queue order (waiting, dispatched and delivered ones),
//! those its `selector` accepts, each as a MESSAGE of the subscription; then one MESSAGE
//! with `browser:end`, `message-id:0` and no body, as ActiveMQ ends a browse. Nothing more
//! comes on that subscription. The messages stay in the queue for its consumers.
//!
//! An ACK of a browsed message changes nothing (the browser takes nothing); a NACK is an
//! ERROR, as in ActiveMQ ("Cannot Nack a message on a Queue Browser Subscription."). A
//! cluster node reads the queue's messages from NATS JetStream by sequence
//! (`cluster/queue_browse.rs`).

use std::collections::HashMap;
use std::future::Future;
use std::ops::RangeInclusive;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use super::destination::Destination;
use super::mapping::{message_frame, Delivery};
use super::queue_route::{check_name, refused, set_header};
use super::subscribe::AckMode;
use super::{Close, Ready, StompConn};
use crate::broker::durability::{DurabilityError, QueueSeq};
use crate::broker::message::Message;
use crate::broker::queues::{MessageFilter, SelectorFilter};
use crate::config::delivery_policy::Destination as PolicyDestination;
use crate::protocol::stomp::{Command, Frame, Version};
use crate::security::Action;

/// A browse's messages, each with whether it was delivered before.
type Snapshot = Pin<Box<dyn Future<Output = Result<Vec<(Message, bool)>, DurabilityError>> + Send>>;

/// A browse subscription: its `id` and the numbers of the messages it was sent.
pub(super) struct Browser {
    pub id: String,
    pub numbers: RangeInclusive<u64>,
}

/// Whether a SUBSCRIBE asks to browse (`browser:true`, as ActiveMQ reads it).
pub(super) fn asks_to_browse(frame: &Frame) -> bool {
    frame
        .header("browser")
        .is_some_and(|b| b.eq_ignore_ascii_case("true"))
}

impl StompConn {
    /// SUBSCRIBE `id` with `browser:true` to `dest` (see the module documentation).
    pub(super) fn queue_browse(
        &mut self,
        dest: &Destination,
        frame: &Frame,
        id: String,
        ack: AckMode,
    ) -> Result<(), Close> {
        let Destination::Queue(name) = dest else {
            return Err(Close::error(
                "browser subscriptions are served on queues (/queue/...) only",
                Some(frame),
            ));
        };
        check_name(name, frame)?;
        let security = self.core.current_security();
        self.core
            .queues
            .may_use(&security, &self.principal, Action::Read, name)
            .map_err(|r| refused(r, &self.principal.user, "queue", name, frame))?;
        drop(security);
        let filter =
            super::selector::of_subscribe(frame)?.map(|s| SelectorFilter::for_queue(s, name));
        let page = self
            .core
            .queues
            .delivery_policy()
            .max_browse_page_size_for(&PolicyDestination::queue(name.as_str()));
        let page = usize::try_from(page).unwrap_or(usize::MAX);
        let snapshot = if self.core.queues.is_shared() {
            let Some(read) = self.core.queues.shared_browse(name, page, filter) else {
                return Err(Close::error(
                    "queue browsing (browser:true) is not served by this broker's store",
                    Some(frame),
                ));
            };
            Box::pin(async move {
                Ok(read
                    .await?
                    .into_iter()
                    .map(|d| (d.message, d.redelivered))
                    .collect())
            })
        } else {
            self.local_snapshot(name, page, filter)
        };
        // Numbers for as many messages as a browse may send (those not sent stay unused).
        let first = self.next_message_id + 1;
        self.next_message_id += page as u64;
        let numbers = first..=self.next_message_id;
        self.browsers_mut().push(Browser {
            id: id.clone(),
            numbers,
        });
        self.receipt(frame);
        let session: Arc<str> = Arc::from(&*self.session_name);
        let version = self.version;
        let destination = format!("/queue/{name}");
        self.pending.push_back(Box::pin(async move {
            let found = match snapshot.await {
                Ok(found) => found,
                Err(e) => {
                    return Ready {
                        fail: Some(Close::error(
                            format!("queue browse: messages not read from the store: {e}"),
                            None,
                        )),
                        ..Ready::default()
                    }
                }
            };
            let now = Instant::now();
            let mut frames = Vec::with_capacity(found.len() + 1);
            for (number, (message, redelivered)) in (first..).zip(found) {
                let message_id = format!("{session}:{number}");
                let ack_header = (ack != AckMode::Auto && version == Version::V1_2)
                    .then_some(message_id.as_str());
                let mut f = message_frame(
                    &message,
                    &Delivery {
                        session: &session,
                        subscription: &id,
                        message_id: &message_id,
                        ack: ack_header,
                        qos: message.qos,
                        redelivered,
                    },
                    now,
                );
                set_header(&mut f, "destination", &destination);
                frames.push(f);
            }
            frames.push(
                Frame::new(Command::Message)
                    .with_header("subscription", id.as_str())
                    .with_header("browser", "end")
                    .with_header("destination", destination.as_str())
                    .with_header("message-id", "0"),
            );
            Ready {
                frames,
                ..Ready::default()
            }
        }));
        Ok(())
    }

    /// The browse of queue `name` on this broker: its messages (with whether each was
    /// delivered before), paged-out ones read back from the store.
    fn local_snapshot(
        &self,
        name: &str,
        page: usize,
        filter: Option<Arc<dyn MessageFilter>>,
    ) -> Snapshot {
        let (owner, found) = self
            .core
            .queues
            .browse_selected(name, page, filter.as_deref())
            .map_or((None, Vec::new()), |(owner, found)| (Some(owner), found));
        let paged: Vec<QueueSeq> = found
            .iter()
            .filter(|(_, paged)| *paged)
            .map(|(d, _)| d.seq)
            .collect();
        let read = match (&owner, paged.is_empty()) {
            (Some(owner), false) => Some(
                self.core
                    .durability()
                    .read_queue_payloads(owner, paged.clone()),
            ),
            _ => None,
        };
        Box::pin(async move {
            let mut bodies = HashMap::new();
            if let Some(read) = read {
                let list = read.await?;
                bodies.extend(
                    paged
                        .into_iter()
                        .zip(list)
                        .filter_map(|(seq, body)| Some((seq, body?))),
                );
            }
            Ok(found
                .into_iter()
                .filter_map(|(delivery, paged)| {
                    if !paged {
                        return Some((delivery.message, delivery.redelivered));
                    }
                    // Acknowledged since the snapshot: no longer in the queue.
                    let body = bodies.remove(&delivery.seq)?;
                    Some((
                        Message::read_back(&delivery.message, body),
                        delivery.redelivered,
                    ))
                })
                .collect())
        })
    }

    /// Whether message number `n` was sent to one of this connection's browse subscriptions.
    pub(super) fn browsed(&self, n: u64) -> bool {
        self.browsers().iter().any(|b| b.numbers.contains(&n))
    }
}
