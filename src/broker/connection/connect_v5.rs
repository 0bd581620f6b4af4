//! MQTT 5 choices of the CONNECT exchange that the standard leaves to the server: the CONNACK
//! form of an unsupported protocol level and the Response Information we offer
//! (docs/mqtt5-protocol.md).

use crate::broker::runtime::BrokerCore;
use crate::protocol::ProtocolVersion;
use crate::security::{Action, AuthzCache, Principal};

/// The CONNACK form for a CONNECT whose protocol `name` and `level` are not served: MQTT 5's
/// (0x84) for a level above 5 under the name "MQTT", a client newer than us (MQTT 5 3.1.2-2);
/// MQTT 3's (return code 1) for the rest, which 3.1/3.1.1 clients understand (3.1.1 3.1.2-2).
pub(super) fn refusal_version(name: &str, level: u8) -> ProtocolVersion {
    if name == "MQTT" && level > 5 {
        ProtocolVersion::V5
    } else {
        ProtocolVersion::V311
    }
}

/// Where a client that asks for Response Information may receive responses: this prefix, its
/// client id and a `/` (MQTT 5 3.2.2.3.15; the spec leaves the form to the server).
pub const RESPONSE_TOPIC_PREFIX: &str = "reply/";

/// The Response Information for `client_id`: `reply/{client id}/`, given only when the client
/// may subscribe to `reply/{client id}/#` under the current authorization policy (it is a
/// promise the client can use) and the id makes a valid topic level (no `+`, `#` or `/`).
/// `None`: the property is left out, which the client must accept (3.1.2.11.6).
pub(super) fn response_information(
    core: &BrokerCore,
    client_id: &str,
    principal: &Principal,
) -> Option<String> {
    if client_id.contains(['+', '#', '/']) || client_id.is_empty() {
        return None;
    }
    let prefix = format!("{RESPONSE_TOPIC_PREFIX}{client_id}/");
    let filter = format!("{prefix}#");
    let security = core.current_security();
    AuthzCache::default()
        .allowed(&security, principal, Action::Read, &filter)
        .then_some(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_newer_mqtt_levels_are_refused_in_mqtt5_form() {
        for level in [6, 99, 255] {
            assert_eq!(refusal_version("MQTT", level), ProtocolVersion::V5);
        }
        for (name, level) in [
            ("MQTT", 3),
            ("MQTT", 0),
            ("MQIsdp", 4),
            ("MQIsdp", 9),
            ("hj", 9),
        ] {
            assert_eq!(refusal_version(name, level), ProtocolVersion::V311);
        }
    }
}
