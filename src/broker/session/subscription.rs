//! One subscription's options as the broker keeps them: in the session's state, in the
//! subscription tree (its value) and in the store's session record.
//!
//! Compact and `Copy` (8 bytes): the tree holds one per subscription and routing copies the
//! matching ones on every publish.

use std::num::NonZeroU32;

use serde::{Deserialize, Serialize};

use crate::broker::message::qos_serde;
use crate::protocol::{self, QoS, RetainHandling};

const NO_LOCAL: u8 = 1;
const RETAIN_AS_PUBLISHED: u8 = 1 << 1;
/// Retain Handling (0, 1 or 2) in bits 2-3.
const RETAIN_HANDLING_SHIFT: u8 = 2;

/// Granted QoS, No Local, Retain As Published, Retain Handling (MQTT 5 3.8.3.1) and the
/// Subscription Identifier (MQTT 5 3.8.2.1.2) of one subscription. An MQTT 3.1.1
/// subscription has only its QoS (the flags clear, no identifier).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionOptions {
    /// The granted (maximum) QoS.
    #[serde(with = "qos_serde")]
    pub qos: QoS,
    #[serde(default)]
    flags: u8,
    /// 1 to 268,435,455 (a variable byte integer); 0 is a protocol error at SUBSCRIBE.
    #[serde(default)]
    pub id: Option<NonZeroU32>,
}

impl SubscriptionOptions {
    /// An MQTT 3.1.1 subscription: QoS only.
    pub fn qos(qos: QoS) -> Self {
        SubscriptionOptions {
            qos,
            flags: 0,
            id: None,
        }
    }

    /// The options of a SUBSCRIBE's filter, with the packet's Subscription Identifier.
    pub fn from_subscribe(options: &protocol::SubscriptionOptions, id: Option<NonZeroU32>) -> Self {
        let mut flags = (options.retain_handling as u8) << RETAIN_HANDLING_SHIFT;
        if options.no_local {
            flags |= NO_LOCAL;
        }
        if options.retain_as_published {
            flags |= RETAIN_AS_PUBLISHED;
        }
        SubscriptionOptions {
            qos: options.qos,
            flags,
            id,
        }
    }

    /// The options in the codec's (and the store record's) shape.
    pub fn to_protocol(self) -> protocol::SubscriptionOptions {
        protocol::SubscriptionOptions {
            qos: self.qos,
            no_local: self.no_local(),
            retain_as_published: self.retain_as_published(),
            retain_handling: self.retain_handling(),
        }
    }

    /// No Local (MQTT 5 3.8.3-3): never delivered a message its own session published.
    pub fn no_local(self) -> bool {
        self.flags & NO_LOCAL != 0
    }

    /// Retain As Published (MQTT 5 3.3.1-12/-13): live deliveries keep the publisher's RETAIN.
    pub fn retain_as_published(self) -> bool {
        self.flags & RETAIN_AS_PUBLISHED != 0
    }

    /// When retained messages are sent at SUBSCRIBE time.
    pub fn retain_handling(self) -> RetainHandling {
        match (self.flags >> RETAIN_HANDLING_SHIFT) & 0b11 {
            1 => RetainHandling::SendAtSubscribeIfNew,
            2 => RetainHandling::DoNotSend,
            _ => RetainHandling::SendAtSubscribe,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_round_trip_through_the_codec_shape_and_stay_small() {
        for retain_handling in [
            RetainHandling::SendAtSubscribe,
            RetainHandling::SendAtSubscribeIfNew,
            RetainHandling::DoNotSend,
        ] {
            for (no_local, retain_as_published) in
                [(false, false), (true, false), (false, true), (true, true)]
            {
                let wire = protocol::SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    no_local,
                    retain_as_published,
                    retain_handling,
                };
                let kept = SubscriptionOptions::from_subscribe(&wire, NonZeroU32::new(7));
                assert_eq!(kept.to_protocol(), wire);
                assert_eq!(kept.id, NonZeroU32::new(7));
            }
        }
        assert_eq!(std::mem::size_of::<SubscriptionOptions>(), 8);
    }

    #[test]
    fn v3_options_have_no_flags() {
        let o = SubscriptionOptions::qos(QoS::ExactlyOnce);
        assert!(!o.no_local() && !o.retain_as_published() && o.id.is_none());
        assert_eq!(o.retain_handling(), RetainHandling::SendAtSubscribe);
    }
}
