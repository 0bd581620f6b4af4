//! The `selector` header of SUBSCRIBE: a JMS message selector ([`crate::broker::selector`]),
//! parsed as ActiveMQ's STOMP connector parses it (string headers compared with numbers are
//! converted). A topic subscription evaluates it when a message is delivered to it: a message
//! it does not select is acknowledged at once and never sent (nor counted in the prefetch
//! window). A queue subscription hands it to the queue engine as the consumer's filter
//! ([`crate::broker::queues::SelectorFilter`]), so a message it does not select stays queued
//! for the other consumers (docs/selectors.md).

use crate::broker::message::Message;
use crate::broker::selector::{DeliveryInfo, Selector};
use crate::protocol::stomp::Frame;

use super::destination::stomp_destination_of;
use super::Close;

/// The subscription's selector; `None` without a `selector` header. An invalid one (an empty
/// one too, as in ActiveMQ) is an ERROR frame with the parser's message.
pub(super) fn of_subscribe(frame: &Frame) -> Result<Option<Box<Selector>>, Close> {
    let Some(text) = frame.header("selector") else {
        return Ok(None);
    };
    Selector::parse_stomp(text)
        .map(|selector| Some(Box::new(selector)))
        .map_err(|e| Close::error(e.to_string(), Some(frame)))
}

/// Whether a topic subscription's `selector` selects `message` for the connection `session`.
/// `message_id` gives the id its MESSAGE frame will carry (built only when the selector reads
/// `JMSMessageID`); `now_ms` is the delivery's timestamp.
pub(super) fn topic_selects(
    selector: &Selector,
    message: &Message,
    session: &str,
    message_id: impl FnOnce() -> String,
    now_ms: u64,
) -> bool {
    let id = selector.reads_message_id().then(message_id);
    let destination = selector
        .reads_destination()
        .then(|| jms_destination(&stomp_destination_of(&message.topic, session)));
    selector.matches(
        message,
        &DeliveryInfo {
            redelivery_count: 0,
            message_id: id.as_deref(),
            timestamp_ms: now_ms,
            destination: destination.as_deref(),
        },
    )
}

/// A STOMP destination as ActiveMQ prints a JMS destination: `/topic/a.b` -> `topic://a.b`,
/// `/temp-topic/x` and `/remote-temp-topic/x` -> `temp-topic://x`.
fn jms_destination(stomp: &str) -> String {
    let rest = stomp.strip_prefix('/').unwrap_or(stomp);
    match rest.split_once('/') {
        Some(("remote-temp-topic", name)) => format!("temp-topic://{name}"),
        Some((kind, name)) => format!("{kind}://{name}"),
        None => stomp.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::jms_destination;

    #[test]
    fn destinations_print_as_activemq_prints_them() {
        assert_eq!(jms_destination("/topic/a.b"), "topic://a.b");
        assert_eq!(jms_destination("/temp-topic/r.x"), "temp-topic://r.x");
        assert_eq!(
            jms_destination("/remote-temp-topic/ID:c:r"),
            "temp-topic://ID:c:r"
        );
    }
}
