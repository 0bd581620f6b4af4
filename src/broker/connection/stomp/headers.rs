//! What the headers ActiveMQ 5.17's STOMP support gives meaning to (its `Stomp.Headers`) do
//! here: honoured, accepted because they mean nothing on a topic (as in ActiveMQ), or refused
//! with an ERROR frame, never silently ignored. docs/stomp.md has the table.

use crate::protocol::stomp::Frame;

use super::Close;

/// SUBSCRIBE headers refused (their feature is not served); the text goes into the ERROR.
const REFUSED_ON_SUBSCRIBE: &[(&str, &str)] = &[
    (
        "activemq.maximumPendingMessageLimit",
        "activemq.maximumPendingMessageLimit is not supported: the pending limit of a topic \
         subscription comes from the destination policy (pendingMessageLimitStrategy)",
    ),
    (
        "transformation",
        "message transformations (transformation header) are not supported",
    ),
];

/// SEND headers refused.
const REFUSED_ON_SEND: &[(&str, &str)] = &[
    (
        "AMQ_SCHEDULED_DELAY",
        "scheduled delivery (AMQ_SCHEDULED_DELAY) is not supported",
    ),
    (
        "AMQ_SCHEDULED_PERIOD",
        "scheduled delivery (AMQ_SCHEDULED_PERIOD) is not supported",
    ),
    (
        "AMQ_SCHEDULED_REPEAT",
        "scheduled delivery (AMQ_SCHEDULED_REPEAT) is not supported",
    ),
    (
        "AMQ_SCHEDULED_CRON",
        "scheduled delivery (AMQ_SCHEDULED_CRON) is not supported",
    ),
    (
        "transformation",
        "message transformations (transformation header) are not supported",
    ),
];

/// The durable subscription name of a SUBSCRIBE or UNSUBSCRIBE: `activemq.subscriptionName`,
/// or the misspelt `activemq.subcriptionName` ActiveMQ also reads.
pub fn subscription_name(frame: &Frame) -> Option<&str> {
    frame
        .header("activemq.subscriptionName")
        .or_else(|| frame.header("activemq.subcriptionName"))
}

/// An ERROR for the first refused header of a SUBSCRIBE.
pub fn check_subscribe(frame: &Frame) -> Result<(), Close> {
    check(frame, REFUSED_ON_SUBSCRIBE)
}

/// SEND headers ActiveMQ 5.17 parses as numbers (`LegacyFrameTranslator`: `Long.parseLong`
/// for `expires` and `timestamp`, `Integer.parseInt` for `priority` and `JMSXGroupSeq`); a
/// value that is not one is an ERROR that ends the connection there, so it is here.
/// (`persistent` is `"true".equals(value)` there: any other value is non-persistent.)
const NUMERIC_ON_SEND: &[(&str, Numeric)] = &[
    ("expires", Numeric::Long),
    ("timestamp", Numeric::Long),
    ("priority", Numeric::Int),
    ("JMSXGroupSeq", Numeric::Int),
];

#[derive(Clone, Copy)]
enum Numeric {
    Long,
    Int,
}

/// An ERROR for the first refused header of a SEND, or the first numeric header that is not
/// a number (ActiveMQ's `NumberFormatException` text).
pub fn check_send(frame: &Frame) -> Result<(), Close> {
    check(frame, REFUSED_ON_SEND)?;
    for (name, kind) in NUMERIC_ON_SEND {
        let Some(value) = frame.header(name) else {
            continue;
        };
        let ok = match kind {
            Numeric::Long => value.parse::<i64>().is_ok(),
            Numeric::Int => value.parse::<i32>().is_ok(),
        };
        if !ok {
            let shown: String = value.chars().take(200).collect();
            return Err(Close::error(
                format!("For input string: \"{shown}\" (header {name})"),
                Some(frame),
            ));
        }
    }
    Ok(())
}

fn check(frame: &Frame, refused: &[(&str, &str)]) -> Result<(), Close> {
    match refused
        .iter()
        .find(|(name, _)| frame.header(name).is_some())
    {
        Some((_, why)) => Err(Close::error(*why, Some(frame))),
        None => Ok(()),
    }
}
