//! What a cluster node cannot carry over NATS, refused at once with an ERROR (as the MQTT
//! side refuses it, see `inbound.rs`): a destination whose NATS subject would pass the
//! server's control line (nats-server drops the node's connection over one), and a SEND
//! larger than NATS's `max_payload` less the frame around a message. Nothing of a refused
//! frame reaches NATS or a local subscriber. Off a cluster node everything passes.

use super::destination::Destination as StompDestination;
use super::subscribe::{durable_dead_letter_queue, subscription_key};
use super::{Close, StompConn};
use crate::config::delivery_policy::{DeadLetterReason, DeliveryPolicy, Destination};
use crate::config::JetStreamSettings;
use crate::protocol::stomp::{BodyInProgress, Command, Frame};

impl StompConn {
    /// A topic SEND's `topic` (or a queue's name: queue subjects are shorter than a topic's
    /// longest) must fit the cluster's NATS subjects; the ERROR gives the length of the
    /// destination as the client wrote it (`destination_bytes`).
    pub(super) fn cluster_topic_fits(
        &self,
        topic: &str,
        destination_bytes: usize,
        frame: &Frame,
    ) -> Result<(), Close> {
        match self.core.backplane() {
            Some(b) if !b.topic_fits(topic) => Err(too_long(
                destination_bytes,
                b.topic_bytes_carried(topic),
                frame,
            )),
            _ => Ok(()),
        }
    }

    /// Queue `name` (a SEND or a SUBSCRIBE) must fit the cluster's NATS subjects, and so must
    /// the dead-letter queue its policy names for it (ActiveMQ's `ActiveMQ.DLQ`, or an
    /// `individualDeadLetterStrategy`'s prefix + name + suffix): a message NACKed or expired
    /// there would otherwise be refused by NATS long after its SEND was acknowledged.
    pub(super) fn cluster_queue_fits(&self, name: &str, frame: &Frame) -> Result<(), Close> {
        let Some(backplane) = self.core.backplane() else {
            return Ok(());
        };
        if !backplane.topic_fits(name) {
            return Err(too_long(
                queue_destination_bytes(name),
                backplane.topic_bytes_carried(name),
                frame,
            ));
        }
        let policy = self.core.queues.delivery_policy();
        match dead_letter_queue(&policy, name) {
            Some(dlq) if !backplane.topic_fits(&dlq) => {
                tracing::info!(
                    queue_bytes = name.len(),
                    dead_letter_queue_bytes = dlq.len(),
                    "STOMP frame refused: the queue's dead-letter queue is too long for the \
                     cluster's NATS subjects"
                );
                Err(Close::error(
                    dead_letter_too_long(name.len(), backplane.topic_bytes_carried(&dlq)),
                    Some(frame),
                ))
            }
            _ => Ok(()),
        }
    }

    /// A durable topic SUBSCRIBE (subscription `name` of client `client_id`) to MQTT filter
    /// `filter`: the queue a message NACKed there is dead-lettered to must fit the cluster's
    /// NATS subjects too (an `individualDeadLetterStrategy`'s prefix and suffix around the
    /// topic's name, with `destinationPerDurableSubscriber` the client id and subscription
    /// name as well), or every NACK there would fail long after the SUBSCRIBE was accepted.
    /// A wildcard filter is checked as written; a message on a longer topic it matches is
    /// refused at its NACK ([`Self::cluster_dead_letter_fits`]).
    pub(super) fn cluster_durable_fits(
        &self,
        filter: &str,
        client_id: &str,
        name: &str,
        frame: &Frame,
    ) -> Result<(), Close> {
        let Some(backplane) = self.core.backplane() else {
            return Ok(());
        };
        let key = subscription_key(client_id, name);
        let policy = self.core.queues.delivery_policy();
        match durable_dead_letter_queue(&policy, filter, true, Some(&key)) {
            Some(dlq) if !backplane.topic_fits(&dlq) => {
                tracing::info!(
                    topic_bytes = filter.len(),
                    subscription_key_bytes = key.len(),
                    dead_letter_queue_bytes = dlq.len(),
                    "STOMP SUBSCRIBE refused: the durable subscription's dead-letter queue is \
                     too long for the cluster's NATS subjects"
                );
                Err(Close::error(
                    durable_dead_letter_too_long(
                        filter.len(),
                        key.len(),
                        backplane.topic_bytes_carried(&dlq),
                    ),
                    Some(frame),
                ))
            }
            _ => Ok(()),
        }
    }

    /// A message NACKed on a durable subscription goes to dead-letter queue `to` only if its
    /// name fits the cluster's NATS subjects (a wildcard subscription's message may have a
    /// topic longer than the filter checked at SUBSCRIBE): nats-server drops the node's
    /// connection over a subject too long.
    pub(super) fn cluster_dead_letter_fits(&self, to: &str, frame: &Frame) -> Result<(), Close> {
        match self.core.backplane() {
            Some(b) if !b.topic_fits(to) => {
                let (subject_bytes, max_subject_bytes) = b.topic_bytes_carried(to);
                Err(Close::error(
                    format!(
                        "the NACKed message could not be dead-lettered: its dead-letter queue \
                         would take {subject_bytes} bytes as the cluster's NATS subject, above \
                         the {max_subject_bytes} bytes a subject may take ({ESCAPED})"
                    ),
                    Some(frame),
                ))
            }
            _ => Ok(()),
        }
    }

    /// A topic SUBSCRIBE's `filter` must fit the cluster's NATS subjects.
    pub(super) fn cluster_filter_fits(
        &self,
        filter: &str,
        destination_bytes: usize,
        frame: &Frame,
    ) -> Result<(), Close> {
        match self.core.backplane() {
            Some(b) if !b.filter_fits(filter) => Err(too_long(
                destination_bytes,
                b.topic_bytes_carried(filter),
                frame,
            )),
            _ => Ok(()),
        }
    }

    /// A SEND (to `topic`: an MQTT topic or a queue name) must fit the cluster's cap on a
    /// message: its destination, headers (they travel as properties) and body.
    pub(super) fn cluster_message_fits(&self, topic: &str, frame: &Frame) -> Result<(), Close> {
        let Some(backplane) = self.core.backplane() else {
            return Ok(());
        };
        let max = backplane.maximum_message_bytes();
        let size = send_size(topic, frame);
        if size <= max {
            return Ok(());
        }
        tracing::info!(
            size,
            max,
            "STOMP SEND refused: larger than the cluster carries"
        );
        let what = format!("message of {size} bytes (destination, headers and body)");
        Err(Close::error(too_large_message(&what, max), Some(frame)))
    }

    /// A SEND whose body is still arriving: refused as soon as its `content-length`, or the
    /// body bytes buffered so far, pass the cluster's cap on a message (its destination and
    /// headers only add to it), so that the node never buffers a body it would refuse. Only
    /// the destinations [`Self::cluster_message_fits`] is asked about are capped: a local
    /// temporary queue's messages never cross NATS.
    pub(super) fn cluster_body_fits(&self, body: &BodyInProgress<'_>) -> Result<(), Close> {
        let Some(backplane) = self.core.backplane() else {
            return Ok(());
        };
        if body.command != Command::Send {
            return Ok(());
        }
        let size = body.content_length.unwrap_or(body.received);
        let max = backplane.maximum_message_bytes();
        if size <= max {
            return Ok(());
        }
        let destination = body
            .headers
            .iter()
            .find(|(name, _)| name == "destination")
            .and_then(|(_, value)| StompDestination::parse(value).ok());
        let carried = matches!(
            destination,
            Some(
                StompDestination::Queue(_)
                    | StompDestination::Topic(_)
                    | StompDestination::TempTopic(_)
                    | StompDestination::RemoteTempTopic(_)
            )
        );
        if !carried {
            return Ok(());
        }
        tracing::info!(
            body_bytes = size,
            announced = body.content_length.is_some(),
            max,
            "STOMP SEND refused before its body was read: larger than the cluster carries"
        );
        let what = match body.content_length {
            Some(length) => format!("message body of {length} bytes (its content-length)"),
            None => format!("message body of more than {size} bytes (read so far)"),
        };
        // For the ERROR's receipt-id and the frame it names: no body is kept.
        let frame = Frame {
            command: body.command,
            headers: body.headers.to_vec(),
            body: bytes::Bytes::new(),
        };
        Err(Close::error(too_large_message(&what, max), Some(&frame)))
    }
}

/// The queue a message of queue `name` is dead-lettered to (a dead-letter topic is served as
/// the queue of that name); `None` when none is (a discarding strategy, or `name` is a
/// dead-letter queue itself, out of which nothing is dead-lettered). A persistent message's
/// answer: the name does not depend on the message, only whether one is kept.
fn dead_letter_queue(policy: &DeliveryPolicy, name: &str) -> Option<String> {
    let queue = Destination::queue(name);
    if policy.is_dead_letter_destination(&queue) {
        return None;
    }
    policy
        .dead_letter_for(&queue)
        .destination_for(&queue, true, DeadLetterReason::Rejected, None)
        .map(|to| to.name)
}

fn dead_letter_too_long(
    queue_bytes: usize,
    (subject_bytes, max_subject_bytes): (usize, usize),
) -> String {
    format!(
        "the dead-letter queue of this queue (a name of {queue_bytes} bytes) would take \
         {subject_bytes} bytes as the cluster's NATS subject (its deadLetterStrategy's prefix \
         and suffix around the queue's name), above the {max_subject_bytes} bytes a subject may \
         take ({ESCAPED}): a message dead-lettered there could not be kept; use a shorter queue \
         name, or a sharedDeadLetterStrategy for it"
    )
}

fn durable_dead_letter_too_long(
    topic_bytes: usize,
    key_bytes: usize,
    (subject_bytes, max_subject_bytes): (usize, usize),
) -> String {
    format!(
        "the dead-letter queue of this durable subscription (a topic of {topic_bytes} bytes; \
         client-id, ':' and subscription name of {key_bytes} bytes) would take {subject_bytes} \
         bytes as the cluster's NATS subject (its deadLetterStrategy's prefix and suffix around \
         the topic's name, and with destinationPerDurableSubscriber the client-id and \
         subscription name), above the {max_subject_bytes} bytes a subject may take \
         ({ESCAPED}): a message NACKed there could not be dead-lettered; use a shorter topic, \
         client-id or subscription name, or a sharedDeadLetterStrategy for the topic"
    )
}

/// How a name grows as a NATS subject, for the ERRORs of names too long.
const ESCAPED: &str = "a byte other than A-Z, a-z, 0-9, '_' and '-' takes three, escaped";

/// The length of queue `name`'s destination as a client writes it (`/queue/<name>`), for the
/// ERROR of a name too long.
pub(super) fn queue_destination_bytes(name: &str) -> usize {
    "/queue/".len() + name.len()
}

/// The bytes of a SEND as the cluster carries it: destination, headers and body.
fn send_size(topic: &str, frame: &Frame) -> usize {
    let headers: usize = frame
        .headers
        .iter()
        .filter(|(n, _)| n != "destination")
        .map(|(n, v)| n.len() + v.len())
        .sum();
    topic.len() + headers + frame.body.len()
}

/// `what`: the message and its size, e.g. `message of N bytes (destination, headers and
/// body)`.
fn too_large_message(what: &str, max: usize) -> String {
    format!(
        "{what} exceeds the maximum of {max} \
         bytes this cluster node carries (NATS's max_payload less {} bytes of frame; raise \
         max_payload in the NATS servers' configuration to accept it)",
        JetStreamSettings::MESSAGE_FRAME_MARGIN
    )
}

/// `carried`: the destination's length as the cluster's NATS subject (its longest; for a
/// filter, with its wildcards as written) and the most a subject may take, in bytes.
fn too_long(
    destination_bytes: usize,
    (subject_bytes, max_subject_bytes): (usize, usize),
    frame: &Frame,
) -> Close {
    tracing::info!(
        destination_bytes,
        subject_bytes,
        max_subject_bytes,
        "STOMP frame refused: the destination is too long for the cluster's NATS subjects"
    );
    Close::error(
        format!(
            "destination of {destination_bytes} bytes is too long for the cluster's NATS \
             subjects: it takes {subject_bytes} bytes as a subject, above the \
             {max_subject_bytes} bytes a subject may take ({ESCAPED}); use a shorter name"
        ),
        Some(frame),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_send_counts_its_destination_headers_and_body() {
        let frame = Frame::new(Command::Send)
            .with_header("destination", "/topic/a")
            .with_header("k", "vv");
        let mut frame = frame;
        frame.body = bytes::Bytes::from_static(b"12345");
        assert_eq!(send_size("a", &frame), 1 + 3 + 5);
        assert!(too_large_message("message of 10 bytes", 9).contains("max_payload"));
    }
}
