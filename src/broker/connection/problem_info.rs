//! Request Problem Information (MQTT 5 3.1.2.11.7): a client that sets it to 0 gets no Reason
//! String and no User Property on any packet but PUBLISH, CONNACK and DISCONNECT
//! (3.1.2-28/-29). The broker adds Reason Strings to refusing PUBACK/PUBREC packets
//! (`inbound::with_reason`), kept only for a client that set Request Problem Information to 1
//! explicitly (clients that leave it out may not parse acknowledgements with properties);
//! this is the one place that removes them again, on the way to the
//! socket, so no sender has to remember the rule. The same removal keeps a packet within the
//! client's Maximum Packet Size (`Conn::send`).

use crate::protocol::{Packet, Properties};

/// Remove the problem information of `packet` where 3.1.2-29 forbids it; `true` when there
/// was some to remove.
pub(super) fn strip_problem_information(packet: &mut Packet) -> bool {
    let properties = match packet {
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            &mut a.properties
        }
        Packet::SubAck(s) => &mut s.properties,
        Packet::UnsubAck(u) => &mut u.properties,
        Packet::Auth(a) => &mut a.properties,
        // PUBLISH, CONNACK and DISCONNECT may carry it (3.1.2-29); nothing else has
        // properties.
        _ => return false,
    };
    let Some(p) = properties.as_deref_mut() else {
        return false;
    };
    let had_some = p.reason_string.is_some() || !p.user_properties.is_empty();
    p.reason_string = None;
    p.user_properties.clear();
    if *p == Properties::default() {
        *properties = None;
    }
    had_some
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Ack;

    #[test]
    fn reason_strings_leave_acks_but_not_disconnects() {
        let mut puback = Packet::PubAck(Ack {
            packet_id: 1,
            reason: 0x87,
            properties: Some(Box::new(Properties {
                reason_string: Some("no".into()),
                user_properties: vec![("k".into(), "v".into())],
                ..Properties::default()
            })),
        });
        assert!(strip_problem_information(&mut puback));
        assert!(!strip_problem_information(&mut puback), "nothing left");
        assert_eq!(
            puback,
            Packet::PubAck(Ack {
                packet_id: 1,
                reason: 0x87,
                properties: None
            })
        );
        let disconnect = Packet::Disconnect(crate::protocol::Disconnect {
            reason: 0x93,
            properties: Some(Box::new(Properties {
                reason_string: Some("kept".into()),
                ..Properties::default()
            })),
        });
        let mut kept = disconnect.clone();
        assert!(!strip_problem_information(&mut kept));
        assert_eq!(kept, disconnect);
    }
}
