//! One message type for both protocols: a STOMP SEND becomes the broker's [`Message`] (MQTT
//! form), and a routed message becomes a STOMP MESSAGE frame.
//!
//! SEND -> message: `persistent:true` -> QoS 1, else QoS 0 (ActiveMQ's STOMP default is
//! non-persistent); `content-type` -> MQTT 5 Content Type, `reply-to` -> Response Topic (the
//! STOMP destination as written), `correlation-id` -> Correlation Data, `expires` (ms since
//! the epoch, 0 = never) -> the message's expiry; every other header (except those of the
//! frame itself: `destination`, `content-length`, `receipt`, `transaction`) -> a user
//! property, in order. Message -> MESSAGE: the reverse, with an MQTT QoS 1/2 message
//! persistent.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::broker::durability::now_ms;
use crate::broker::message::{Message, SampleStamp, V5Extras};
use crate::protocol::stomp::{Command, Frame};
use crate::protocol::{Properties, QoS};

use super::destination::{reply_to_of, stomp_destination_of, topic_to_mqtt};

/// Headers of a SEND that belong to the frame, not the message.
const FRAME_HEADERS: &[&str] = &[
    "destination",
    "content-length",
    "receipt",
    "transaction",
    "persistent",
    "content-type",
    "reply-to",
    "correlation-id",
    "expires",
];

/// Headers a MESSAGE frame sets itself: a user property of the same name is not repeated.
const MESSAGE_HEADERS: &[&str] = &[
    "destination",
    "subscription",
    "message-id",
    "ack",
    "persistent",
    "content-type",
    "content-length",
    "reply-to",
    "correlation-id",
    "expires",
    "priority",
    "timestamp",
    "redelivered",
];

/// The message a SEND to MQTT topic `topic` carries. `now`: its arrival.
pub fn message_of_send(frame: &Frame, topic: Arc<str>, now: Instant) -> Message {
    let persistent = frame.header("persistent") == Some("true");
    let mut properties = Properties::default();
    let mut expires_at = None;
    for (i, (name, value)) in frame.headers.iter().enumerate() {
        // A repeated header's first value is its value (STOMP 1.2 "Repeated Header Entries"),
        // the one ActiveMQ keeps: later ones are not forwarded.
        let repeated = frame.headers[..i].iter().any(|(n, _)| n == name);
        if !repeated && !FRAME_HEADERS.contains(&name.as_str()) {
            properties
                .user_properties
                .push((name.clone(), value.clone()));
        }
    }
    if let Some(v) = frame.header("content-type") {
        properties.content_type = Some(v.to_owned());
    }
    if let Some(v) = frame.header("reply-to") {
        properties.response_topic = Some(response_topic_of(v));
    }
    if let Some(v) = frame.header("correlation-id") {
        properties.correlation_data = Some(Bytes::copy_from_slice(v.as_bytes()));
    }
    if let Some(ms) = frame
        .header("expires")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|ms| *ms > 0)
    {
        let wall = now_ms();
        let left = Duration::from_millis(ms.saturating_sub(wall));
        expires_at = Some(now.checked_add(left).unwrap_or(now));
    }
    let v5 = (properties != Properties::default() || expires_at.is_some()).then(|| {
        Arc::new(V5Extras {
            properties,
            expires_at,
        })
    });
    Message {
        stamp: SampleStamp::NONE,
        topic,
        payload: frame.body.clone(),
        qos: if persistent {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        },
        retain: false,
        v5,
    }
}

/// The MQTT 5 Response Topic of a STOMP `reply-to`: a `/topic/` destination becomes the MQTT
/// name of that topic (`/topic/app.reply` -> `app/reply`, so an MQTT 5 responder publishes
/// where the requester listens); any other destination (`/queue/`, `/temp-*`), or a topic
/// name with a wildcard (a Response Topic may not have one, MQTT 5 3.3.2.3.5), stays the
/// STOMP string as written: only a STOMP client can answer it. [`reply_to_of`] is the reverse.
pub fn response_topic_of(reply_to: &str) -> String {
    reply_to
        .strip_prefix("/topic/")
        .filter(|name| !name.is_empty())
        .and_then(|name| topic_to_mqtt(name).ok())
        .filter(|topic| !topic.contains(['+', '#']))
        .unwrap_or_else(|| reply_to.to_owned())
}

/// What identifies one delivery in its MESSAGE frame.
pub struct Delivery<'a> {
    /// The receiving connection's session name (its temporary topics show as its own).
    pub session: &'a str,
    pub subscription: &'a str,
    pub message_id: &'a str,
    /// The `ack` header (STOMP 1.2, ack mode not auto).
    pub ack: Option<&'a str>,
    /// The delivered QoS: 1/2 is `persistent:true`.
    pub qos: QoS,
    pub redelivered: bool,
}

/// The MESSAGE frame of `message` for one subscription, at `now`.
pub fn message_frame(message: &Message, delivery: &Delivery<'_>, now: Instant) -> Frame {
    let mut f = Frame::new(Command::Message)
        .with_header(
            "destination",
            stomp_destination_of(&message.topic, delivery.session),
        )
        .with_header("subscription", delivery.subscription)
        .with_header("message-id", delivery.message_id);
    if let Some(ack) = delivery.ack {
        f = f.with_header("ack", ack);
    }
    if delivery.qos != QoS::AtMostOnce {
        f = f.with_header("persistent", "true");
    }
    if delivery.redelivered {
        f = f.with_header("redelivered", "true");
    }
    let v5 = message.v5.as_deref();
    let props = v5.map(|v| &v.properties);
    let expires = v5
        .and_then(|v| v.expires_at)
        .map(|at| now_ms().saturating_add(millis(at.saturating_duration_since(now))))
        .unwrap_or(0);
    f = f.with_header("expires", expires.to_string());
    let priority = props
        .and_then(|p| p.user_properties.iter().find(|(n, _)| n == "priority"))
        .map_or("4", |(_, v)| v.as_str())
        .to_owned();
    f = f
        .with_header("priority", priority)
        .with_header("timestamp", now_ms().to_string());
    if let Some(p) = props {
        if let Some(ct) = &p.content_type {
            f = f.with_header("content-type", ct.clone());
        }
        if let Some(rt) = &p.response_topic {
            f = f.with_header("reply-to", reply_to_of(rt));
        }
        if let Some(cd) = &p.correlation_data {
            f = f.with_header("correlation-id", String::from_utf8_lossy(cd).into_owned());
        }
        for (name, value) in &p.user_properties {
            if !MESSAGE_HEADERS.contains(&name.as_str()) {
                f = f.with_header(name.clone(), value.clone());
            }
        }
    }
    f.body = message.payload.clone();
    f
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_headers_become_mqtt5_properties_and_back() {
        let send = Frame::new(Command::Send)
            .with_header("destination", "/topic/a.b")
            .with_header("persistent", "true")
            .with_header("content-type", "text/plain")
            .with_header("reply-to", "/queue/replies")
            .with_header("correlation-id", "c-1")
            .with_header("priority", "7")
            .with_header("x-custom", "v")
            .with_header("receipt", "r1");
        let now = Instant::now();
        let m = message_of_send(&send, Arc::from("a/b"), now);
        assert_eq!(m.qos, QoS::AtLeastOnce);
        let p = &m.v5.as_ref().expect("v5").properties;
        assert_eq!(p.content_type.as_deref(), Some("text/plain"));
        assert_eq!(p.response_topic.as_deref(), Some("/queue/replies"));
        assert_eq!(p.correlation_data.as_deref(), Some(&b"c-1"[..]));
        assert_eq!(
            p.user_properties,
            vec![
                ("priority".to_owned(), "7".to_owned()),
                ("x-custom".to_owned(), "v".to_owned())
            ]
        );
        let d = Delivery {
            session: "S",
            subscription: "s",
            message_id: "m1",
            ack: None,
            qos: QoS::AtLeastOnce,
            redelivered: false,
        };
        let f = message_frame(&m, &d, now);
        assert_eq!(f.header("destination"), Some("/topic/a.b"));
        assert_eq!(f.header("persistent"), Some("true"));
        assert_eq!(f.header("reply-to"), Some("/queue/replies"));
        assert_eq!(f.header("correlation-id"), Some("c-1"));
        assert_eq!(f.header("priority"), Some("7"));
        assert_eq!(f.header("x-custom"), Some("v"));
        assert_eq!(f.header("receipt"), None);
    }

    #[test]
    fn topic_reply_to_is_the_mqtt_topic_and_maps_back() {
        assert_eq!(response_topic_of("/topic/app.reply"), "app/reply");
        assert_eq!(
            reply_to_of(&response_topic_of("/topic/app.reply")),
            "/topic/app.reply"
        );
        assert_eq!(response_topic_of("/queue/replies"), "/queue/replies");
        assert_eq!(response_topic_of("/temp-queue/r"), "/temp-queue/r");
        assert_eq!(response_topic_of("/topic/a.*"), "/topic/a.*");
        assert_eq!(response_topic_of("/topic/"), "/topic/");
    }

    #[test]
    fn non_persistent_send_is_qos0_without_properties() {
        let send = Frame::new(Command::Send).with_header("destination", "/topic/a");
        let m = message_of_send(&send, Arc::from("a"), Instant::now());
        assert_eq!(m.qos, QoS::AtMostOnce);
        assert!(m.v5.is_none());
    }
}
