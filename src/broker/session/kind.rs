//! What a session stands for, read from its client id. MQTT sessions have the client's own
//! id. STOMP keeps its topic subscriptions as sessions too, under ids that start with U+0000
//! (no MQTT client id can: MQTT strings exclude it, MQTT 3.1.1 1.5.3): a durable subscription
//! (`activemq.subscriptionName` under the CONNECT's `client-id`) is a persistent one; a
//! non-durable subscription and the hold on a connected client's `client-id` are not.

/// How a STOMP durable subscription's session id starts: then the length of the client-id,
/// the client-id and the subscription's name, `:` between them (the length keeps two pairs
/// from making the same id).
pub const STOMP_DURABLE_PREFIX: &str = "\u{0}stomp-durable:";

/// How the readable form of a STOMP durable subscription's id starts (`session list`, the
/// console): `stomp:<client-id>:<name>`.
pub const STOMP_READABLE_PREFIX: &str = "stomp:";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind<'a> {
    /// An MQTT client's session.
    Mqtt,
    /// A STOMP durable topic subscription.
    StompDurable { client_id: &'a str, name: &'a str },
    /// Another internal STOMP session: a non-durable topic subscription, a connected client's
    /// `client-id` hold.
    StompInternal,
}

impl<'a> SessionKind<'a> {
    pub fn of(session_id: &'a str) -> SessionKind<'a> {
        if !session_id.starts_with('\0') {
            return SessionKind::Mqtt;
        }
        match durable_parts(session_id) {
            Some((client_id, name)) => SessionKind::StompDurable { client_id, name },
            None => SessionKind::StompInternal,
        }
    }
}

/// The session id of durable subscription `name` of STOMP client `client_id`.
pub fn stomp_durable_id(client_id: &str, name: &str) -> String {
    format!(
        "{STOMP_DURABLE_PREFIX}{}:{client_id}:{name}",
        client_id.len()
    )
}

/// (client-id, subscription name) of a durable subscription's session id.
pub fn durable_parts(session_id: &str) -> Option<(&str, &str)> {
    let rest = session_id.strip_prefix(STOMP_DURABLE_PREFIX)?;
    let (len, rest) = rest.split_once(':')?;
    let len: usize = len.parse().ok()?;
    let client_id = rest.get(..len)?;
    let name = rest.get(len..)?.strip_prefix(':')?;
    Some((client_id, name))
}

/// The registry id of the hold a connected STOMP client has on its `client-id` (present
/// while that client is connected).
pub fn stomp_client_hold_id(client_id: &str) -> String {
    format!("\u{0}stomp-client:{client_id}")
}

/// The readable id of a STOMP durable subscription, `stomp:<client-id>:<name>`.
pub fn stomp_readable_id(client_id: &str, name: &str) -> String {
    format!("{STOMP_READABLE_PREFIX}{client_id}:{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_told_apart_by_the_id() {
        assert_eq!(SessionKind::of("sensor-1"), SessionKind::Mqtt);
        let id = stomp_durable_id("app:1", "orders");
        assert_eq!(
            SessionKind::of(&id),
            SessionKind::StompDurable {
                client_id: "app:1",
                name: "orders"
            }
        );
        assert_eq!(
            SessionKind::of("\u{0}stomp-client:app"),
            SessionKind::StompInternal
        );
        assert_eq!(
            SessionKind::of("\u{0}stomp-durable:99:x:y"),
            SessionKind::StompInternal,
            "a length past the end is no durable id"
        );
        assert_eq!(
            SessionKind::of("\u{0}stomp-durable:1:é:y"),
            SessionKind::StompInternal,
            "a length inside a character is none either"
        );
    }
}
