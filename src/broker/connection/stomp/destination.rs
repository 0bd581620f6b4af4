//! STOMP destinations as ActiveMQ names them (`/topic/a.b`, `/queue/q`, `/temp-topic/t`,
//! `/temp-queue/t`) and their MQTT form for topics (`a/b`, ActiveMQ's exact character swap:
//! `.` <-> `/`, `*` <-> `+`, `>` <-> `#`).

use crate::security::destination::swap_chars;

/// A parsed `destination` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// `/topic/<name>`: shared with MQTT (the name in ActiveMQ form, `a.b.c`).
    Topic(String),
    /// `/queue/<name>`.
    Queue(String),
    /// `/temp-topic/<name>`: scoped to the connection that uses it first.
    TempTopic(String),
    /// `/temp-queue/<name>`.
    TempQueue(String),
}

/// Why a destination header is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    #[error(
        "destination {0:?} does not start with /topic/, /queue/, /temp-topic/ or /temp-queue/"
    )]
    UnknownPrefix(String),
    #[error("destination {0:?} has an empty name")]
    Empty(String),
    #[error("destination {0:?} has an empty level (`..`, or a leading or trailing `.`)")]
    EmptyLevel(String),
}

impl Destination {
    /// Parse a STOMP `destination` header.
    pub fn parse(header: &str) -> Result<Destination, DestinationError> {
        let (make, name): (fn(String) -> Destination, &str) =
            if let Some(name) = header.strip_prefix("/topic/") {
                (Destination::Topic, name)
            } else if let Some(name) = header.strip_prefix("/queue/") {
                (Destination::Queue, name)
            } else if let Some(name) = header.strip_prefix("/temp-topic/") {
                (Destination::TempTopic, name)
            } else if let Some(name) = header.strip_prefix("/temp-queue/") {
                (Destination::TempQueue, name)
            } else {
                return Err(DestinationError::UnknownPrefix(bounded(header)));
            };
        if name.is_empty() {
            return Err(DestinationError::Empty(bounded(header)));
        }
        Ok(make(name.to_owned()))
    }
}

/// The MQTT topic (or filter) of ActiveMQ topic name `name` (`a.*.c` -> `a/+/c`). An empty
/// level is refused: ActiveMQ and MQTT would disagree on it.
pub fn topic_to_mqtt(name: &str) -> Result<String, DestinationError> {
    if name.split('.').any(str::is_empty) {
        return Err(DestinationError::EmptyLevel(bounded(name)));
    }
    Ok(swap_chars(name))
}

/// The STOMP destination of a message routed on MQTT topic `topic`: `/topic/a.b.c`.
pub fn stomp_destination_of(topic: &str) -> String {
    format!("/topic/{}", swap_chars(topic))
}

/// `reply-to` of a message: a STOMP destination as written, or an MQTT 5 Response Topic
/// (`a/b` -> `/topic/a.b`).
pub fn reply_to_of(response_topic: &str) -> String {
    if ["/topic/", "/queue/", "/temp-topic/", "/temp-queue/"]
        .iter()
        .any(|p| response_topic.starts_with(p))
    {
        response_topic.to_owned()
    } else {
        stomp_destination_of(response_topic)
    }
}

/// Whether an MQTT topic filter has a wildcard level.
pub fn is_wildcard(mqtt: &str) -> bool {
    mqtt.split('/').any(|l| l == "+" || l == "#")
}

fn bounded(s: &str) -> String {
    s.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_parse_and_map_as_activemq_does() {
        assert_eq!(
            Destination::parse("/topic/a.b.c"),
            Ok(Destination::Topic("a.b.c".into()))
        );
        assert_eq!(
            Destination::parse("/queue/q"),
            Ok(Destination::Queue("q".into()))
        );
        assert!(Destination::parse("/topic/").is_err());
        assert!(Destination::parse("foo").is_err());
        assert_eq!(topic_to_mqtt("a.*.c").as_deref(), Ok("a/+/c"));
        assert_eq!(topic_to_mqtt("a.>").as_deref(), Ok("a/#"));
        assert!(topic_to_mqtt("a..b").is_err());
        assert_eq!(stomp_destination_of("a/b/c"), "/topic/a.b.c");
        assert_eq!(reply_to_of("/queue/replies"), "/queue/replies");
        assert_eq!(reply_to_of("a/b"), "/topic/a.b");
    }
}
