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
    /// `/remote-temp-topic/<connection>:<name>`: another connection's temporary topic, as
    /// its `reply-to` shows it to others (send only).
    RemoteTempTopic(String),
    /// `/remote-temp-queue/<connection>:<name>`.
    RemoteTempQueue(String),
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
    #[error("destination {0:?} contains NUL")]
    Nul(String),
    #[error("temporary destination {0:?} may not contain `*`, `>`, `+` or `#`")]
    TempWildcard(String),
    /// ActiveMQ reads `,` as a composite destination (`/queue/a,b`: both queues); not
    /// served here, and refused rather than taken as one destination named `a,b`.
    #[error("composite destination {0:?} (a `,` in the name) is not supported")]
    Composite(String),
}

/// Where temporary topics live among MQTT topics: `$` first, so no wildcard at the first
/// level matches them (MQTT 4.7.2-1), and U+0000, which no MQTT topic nor STOMP `/topic/` name
/// may contain, so no client can name them except through `/temp-topic/` and
/// `/remote-temp-topic/`.
const TEMP_TOPICS: &str = "$\u{0}temp/";

/// The name other connections use for temporary topic `local` of connection `session`
/// (`/remote-temp-topic/<this>`).
pub fn remote_temp_name(session: &str, local: &str) -> String {
    format!("{session}:{local}")
}

/// The MQTT topic of the temporary topic named `remote` (see [`remote_temp_name`]).
pub fn temp_topic_to_mqtt(remote: &str) -> Result<String, DestinationError> {
    if remote.contains(['*', '>', '+', '#']) {
        return Err(DestinationError::TempWildcard(bounded(remote)));
    }
    if remote.contains('\0') {
        return Err(DestinationError::Nul(bounded(remote)));
    }
    Ok(format!("{TEMP_TOPICS}{}", swap_chars(remote)))
}

/// The `/remote-temp-topic/` name of an MQTT topic made by [`temp_topic_to_mqtt`]; `None` for
/// any other topic.
pub fn mqtt_temp_topic_name(topic: &str) -> Option<String> {
    topic.strip_prefix(TEMP_TOPICS).map(swap_chars)
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Topic(n) => write!(f, "/topic/{n}"),
            Destination::Queue(n) => write!(f, "/queue/{n}"),
            Destination::TempTopic(n) => write!(f, "/temp-topic/{n}"),
            Destination::TempQueue(n) => write!(f, "/temp-queue/{n}"),
            Destination::RemoteTempTopic(n) => write!(f, "/remote-temp-topic/{n}"),
            Destination::RemoteTempQueue(n) => write!(f, "/remote-temp-queue/{n}"),
        }
    }
}

impl Destination {
    /// A queue destination (the queue engine's, see `queue_route.rs`).
    pub fn is_queue(&self) -> bool {
        matches!(
            self,
            Destination::Queue(_) | Destination::TempQueue(_) | Destination::RemoteTempQueue(_)
        )
    }

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
            } else if let Some(name) = header.strip_prefix("/remote-temp-topic/") {
                (Destination::RemoteTempTopic, name)
            } else if let Some(name) = header.strip_prefix("/remote-temp-queue/") {
                (Destination::RemoteTempQueue, name)
            } else {
                return Err(DestinationError::UnknownPrefix(bounded(header)));
            };
        if name.is_empty() {
            return Err(DestinationError::Empty(bounded(header)));
        }
        if name.contains(',') {
            return Err(DestinationError::Composite(bounded(header)));
        }
        Ok(make(name.to_owned()))
    }
}

/// The MQTT topic (or filter) of ActiveMQ topic name `name` (`a.*.c` -> `a/+/c`). Empty
/// levels are kept, as ActiveMQ keeps them: `.devices.x` is MQTT `/devices/x`, `a..b` is
/// `a//b` (MQTT 4.7.1: a zero-length level is valid). Only NUL is refused.
pub fn topic_to_mqtt(name: &str) -> Result<String, DestinationError> {
    if name.contains('\0') {
        return Err(DestinationError::Nul(bounded(name)));
    }
    Ok(swap_chars(name))
}

/// The STOMP destination of a message routed on MQTT topic `topic`: `/topic/a.b.c`; a
/// temporary topic is `/temp-topic/<name>` for the connection `session` that owns it and
/// `/remote-temp-topic/<connection>:<name>` for others.
pub fn stomp_destination_of(topic: &str, session: &str) -> String {
    if let Some(temp) = topic.strip_prefix(TEMP_TOPICS) {
        let remote = swap_chars(temp);
        return match remote
            .strip_prefix(session)
            .and_then(|rest| rest.strip_prefix(':'))
        {
            Some(local) => format!("/temp-topic/{local}"),
            None => format!("/remote-temp-topic/{remote}"),
        };
    }
    format!("/topic/{}", swap_chars(topic))
}

/// `reply-to` of a message: a STOMP destination as written, or an MQTT 5 Response Topic
/// (`a/b` -> `/topic/a.b`).
pub fn reply_to_of(response_topic: &str) -> String {
    if [
        "/topic/",
        "/queue/",
        "/temp-topic/",
        "/temp-queue/",
        "/remote-temp-topic/",
        "/remote-temp-queue/",
    ]
    .iter()
    .any(|p| response_topic.starts_with(p))
    {
        response_topic.to_owned()
    } else {
        format!("/topic/{}", swap_chars(response_topic))
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
            Destination::parse("/queue/a,b"),
            Err(DestinationError::Composite("/queue/a,b".into()))
        );
        assert_eq!(
            Destination::parse("/queue/q"),
            Ok(Destination::Queue("q".into()))
        );
        assert!(Destination::parse("/topic/").is_err());
        assert!(Destination::parse("foo").is_err());
        assert_eq!(topic_to_mqtt("a.*.c").as_deref(), Ok("a/+/c"));
        assert_eq!(topic_to_mqtt("a.>").as_deref(), Ok("a/#"));
        assert_eq!(topic_to_mqtt("a..b").as_deref(), Ok("a//b"));
        assert_eq!(topic_to_mqtt(".devices.x").as_deref(), Ok("/devices/x"));
        assert_eq!(stomp_destination_of("/devices/x", "S"), "/topic/.devices.x");
        assert_eq!(stomp_destination_of("a/b/c", "S"), "/topic/a.b.c");
        let temp = temp_topic_to_mqtt(&remote_temp_name("ID:s-1", "r.x")).expect("valid");
        assert_eq!(stomp_destination_of(&temp, "ID:s-1"), "/temp-topic/r.x");
        assert_eq!(
            stomp_destination_of(&temp, "ID:s-2"),
            "/remote-temp-topic/ID:s-1:r.x"
        );
        assert!(temp_topic_to_mqtt("a*").is_err());
        assert!(topic_to_mqtt("a\0b").is_err());
        assert_eq!(reply_to_of("/queue/replies"), "/queue/replies");
        assert_eq!(reply_to_of("a/b"), "/topic/a.b");
    }
}
