//! proptest generators of valid packets for each protocol version. What is "valid" is restated
//! here from the spec (Table 2-4 for properties), independently of the codec's own tables.

use bytes::Bytes;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::{BoxedStrategy, Union};

use ferromq::protocol::*;

pub const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V31,
    ProtocolVersion::V311,
    ProtocolVersion::V5,
];

pub fn version() -> impl Strategy<Value = ProtocolVersion> {
    select(VERSIONS.to_vec())
}

pub fn topic_name() -> impl Strategy<Value = String> {
    "[a-z0-9 $ü€]{0,4}(/[a-z0-9 ü€]{0,4}){0,3}".prop_filter("non-empty", |s| !s.is_empty())
}

pub fn topic_filter() -> impl Strategy<Value = String> {
    let levels = vec(
        prop_oneof![3 => "[a-z0-9ü]{0,3}", 1 => Just("+".to_string())],
        1..4,
    );
    prop_oneof![
        1 => Just("#".to_string()),
        8 => (levels, any::<bool>()).prop_map(|(levels, hash)| {
            let mut filter = levels.join("/");
            if hash {
                filter.push_str("/#");
            }
            filter
        }),
    ]
    .prop_filter("non-empty", |s| !s.is_empty())
}

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 ü€-]{0,8}"
}

fn binary() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..16).prop_map(Bytes::from)
}

fn flag() -> impl Strategy<Value = Option<u8>> {
    option::weighted(0.2, 0u8..=1)
}

fn maybe<T: std::fmt::Debug>(s: impl Strategy<Value = T>) -> impl Strategy<Value = Option<T>> {
    option::weighted(0.2, s)
}

/// Where a property block is; decides which properties a generated block may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Connect,
    Will,
    ConnAck,
    Publish,
    Ack,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

/// Every property with a valid value, before restriction to a place.
fn any_properties() -> impl Strategy<Value = Properties> {
    let message = (
        flag(),
        maybe(any::<u32>()),
        maybe(text()),
        maybe(topic_name()),
        maybe(binary()),
        vec(1u32..=268_435_455, 0..3),
        maybe(any::<u32>()),
        maybe(text()),
        maybe(any::<u16>()),
        maybe(text()),
        maybe(binary()),
        flag(),
    );
    let session = (
        maybe(any::<u32>()),
        flag(),
        maybe(text()),
        maybe(text()),
        maybe(text()),
        maybe(1u16..),
        maybe(any::<u16>()),
        maybe(1u16..),
        flag(),
        flag(),
        vec((text(), text()), 0..3),
        maybe(1u32..),
    );
    let available = (flag(), flag(), flag());
    (message, session, available).prop_map(|(m, s, a)| {
        let mut p = Properties {
            payload_format_indicator: m.0,
            message_expiry_interval: m.1,
            content_type: m.2,
            response_topic: m.3,
            correlation_data: m.4,
            subscription_identifiers: m.5,
            session_expiry_interval: m.6,
            assigned_client_identifier: m.7,
            server_keep_alive: m.8,
            authentication_method: m.9,
            authentication_data: m.10,
            request_problem_information: m.11,
            will_delay_interval: s.0,
            request_response_information: s.1,
            response_information: s.2,
            server_reference: s.3,
            reason_string: s.4,
            receive_maximum: s.5,
            topic_alias_maximum: s.6,
            topic_alias: s.7,
            maximum_qos: s.8,
            retain_available: s.9,
            user_properties: s.10,
            maximum_packet_size: s.11,
            wildcard_subscription_available: a.0,
            subscription_identifier_available: a.1,
            shared_subscription_available: a.2,
        };
        // Authentication data needs an authentication method (MQTT-3.1.2.11.10).
        if p.authentication_data.is_some() && p.authentication_method.is_none() {
            p.authentication_method = Some("SCRAM".into());
        }
        p
    })
}

/// Clears what `place` may not carry (MQTT 5.0 Table 2-4); `None` when nothing is left, as the
/// decoder reports an empty block.
fn restrict(mut p: Properties, place: Place) -> Option<Box<Properties>> {
    use Place::*;
    let message = matches!(place, Publish | Will);
    let connect_or_connack = matches!(place, Connect | ConnAck);
    if !message {
        p.payload_format_indicator = None;
        p.message_expiry_interval = None;
        p.content_type = None;
        p.response_topic = None;
        p.correlation_data = None;
    }
    match place {
        Publish => {}
        Subscribe => p.subscription_identifiers.truncate(1),
        _ => p.subscription_identifiers.clear(),
    }
    if !matches!(place, Connect | ConnAck | Disconnect) {
        p.session_expiry_interval = None;
    }
    if place != ConnAck {
        p.assigned_client_identifier = None;
        p.server_keep_alive = None;
        p.response_information = None;
        p.maximum_qos = None;
        p.retain_available = None;
        p.wildcard_subscription_available = None;
        p.subscription_identifier_available = None;
        p.shared_subscription_available = None;
    }
    if !matches!(place, Connect | ConnAck | Auth) {
        p.authentication_method = None;
        p.authentication_data = None;
    }
    if place != Connect {
        p.request_problem_information = None;
        p.request_response_information = None;
    }
    if place != Will {
        p.will_delay_interval = None;
    }
    if !matches!(place, ConnAck | Disconnect) {
        p.server_reference = None;
    }
    if matches!(place, Connect | Will | Publish | Subscribe | Unsubscribe) {
        p.reason_string = None;
    }
    if !connect_or_connack {
        p.receive_maximum = None;
        p.topic_alias_maximum = None;
        p.maximum_packet_size = None;
    }
    if place != Publish {
        p.topic_alias = None;
    }
    (p != Properties::default()).then(|| Box::new(p))
}

/// A property block for `place` in `version` (always `None` before MQTT 5).
pub fn properties(
    version: ProtocolVersion,
    place: Place,
) -> BoxedStrategy<Option<Box<Properties>>> {
    if version != ProtocolVersion::V5 {
        return Just(None).boxed();
    }
    prop_oneof![
        1 => Just(None),
        2 => any_properties().prop_map(move |p| restrict(p, place)),
    ]
    .boxed()
}

fn qos() -> impl Strategy<Value = QoS> {
    select(vec![QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce])
}

fn packet_id() -> impl Strategy<Value = u16> {
    1u16..
}

fn reason(version: ProtocolVersion, v5_codes: &[u8]) -> BoxedStrategy<u8> {
    if version == ProtocolVersion::V5 {
        select(v5_codes.to_vec()).boxed()
    } else {
        Just(0).boxed()
    }
}

fn connect(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let v5 = version == ProtocolVersion::V5;
    let will = (
        topic_name(),
        binary(),
        qos(),
        any::<bool>(),
        properties(version, Place::Will),
    )
        .prop_map(|(topic, payload, qos, retain, properties)| LastWill {
            topic,
            payload,
            qos,
            retain,
            properties,
        });
    (
        any::<bool>(),
        any::<u16>(),
        text(),
        option::of(will),
        option::of(text()),
        option::of(binary()),
        properties(version, Place::Connect),
    )
        .prop_map(
            move |(
                clean_start,
                keep_alive_secs,
                client_id,
                will,
                username,
                password,
                properties,
            )| {
                // MQTT 3.x forbids a password without a user name.
                let password = if v5 || username.is_some() {
                    password
                } else {
                    None
                };
                Packet::Connect(Box::new(Connect {
                    protocol: version,
                    clean_start,
                    keep_alive_secs,
                    client_id,
                    will,
                    username,
                    password,
                    properties,
                }))
            },
        )
        .boxed()
}

fn connack(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    use ConnectReason::*;
    let mut reasons = vec![
        Success,
        UnsupportedProtocolVersion,
        ClientIdentifierNotValid,
        ServerUnavailable,
        BadUserNameOrPassword,
        NotAuthorized,
    ];
    if version == ProtocolVersion::V5 {
        reasons.extend([
            UnspecifiedError,
            MalformedPacket,
            ProtocolError,
            ImplementationSpecificError,
            Banned,
            ServerBusy,
            BadAuthenticationMethod,
            TopicNameInvalid,
            PacketTooLarge,
            QuotaExceeded,
            PayloadFormatInvalid,
            RetainNotSupported,
            QoSNotSupported,
            UseAnotherServer,
            ServerMoved,
            ConnectionRateExceeded,
        ]);
    }
    (
        select(reasons),
        any::<bool>(),
        properties(version, Place::ConnAck),
    )
        .prop_map(move |(reason, session_present, properties)| {
            Packet::ConnAck(ConnAck {
                // Only an accepted 3.1.1 / 5.0 connection can have a session.
                session_present: session_present
                    && reason == Success
                    && version != ProtocolVersion::V31,
                reason,
                properties,
            })
        })
        .boxed()
}

fn publish(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let v5 = version == ProtocolVersion::V5;
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        topic_name(),
        packet_id(),
        vec(any::<u8>(), 0..100),
        properties(version, Place::Publish),
        any::<bool>(),
    )
        .prop_map(
            move |(qos, dup, retain, topic, id, payload, mut properties, aliased)| {
                // MQTT 5: an empty topic is allowed when a topic alias stands for it.
                let topic = if v5 && aliased {
                    properties.get_or_insert_with(Default::default).topic_alias = Some(7);
                    String::new()
                } else {
                    topic
                };
                let at_least_once = qos != QoS::AtMostOnce;
                Packet::Publish(Publish {
                    dup: dup && at_least_once,
                    qos,
                    retain,
                    topic,
                    packet_id: at_least_once.then_some(id),
                    payload: Bytes::from(payload),
                    properties,
                })
            },
        )
        .boxed()
}

fn ack(version: ProtocolVersion, codes: &[u8]) -> BoxedStrategy<Ack> {
    (
        packet_id(),
        reason(version, codes),
        properties(version, Place::Ack),
    )
        .prop_map(|(packet_id, reason, properties)| Ack {
            packet_id,
            reason,
            properties,
        })
        .boxed()
}

fn subscribe(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let v5 = version == ProtocolVersion::V5;
    let shared = if v5 { 0.3 } else { 0.0 };
    let option = (
        topic_filter(),
        proptest::bool::weighted(shared),
        qos(),
        any::<bool>(),
        any::<bool>(),
        select(vec![
            RetainHandling::SendAtSubscribe,
            RetainHandling::SendAtSubscribeIfNew,
            RetainHandling::DoNotSend,
        ]),
    )
        .prop_map(
            move |(filter, shared, qos, no_local, retain_as_published, retain_handling)| {
                let filter = if shared {
                    format!("$share/group/{filter}")
                } else {
                    filter
                };
                let options = if v5 {
                    SubscriptionOptions {
                        qos,
                        // MQTT-3.8.3-4: no local on a shared subscription is a protocol error.
                        no_local: no_local && !shared,
                        retain_as_published,
                        retain_handling,
                    }
                } else {
                    SubscriptionOptions {
                        qos,
                        no_local: false,
                        retain_as_published: false,
                        retain_handling: RetainHandling::SendAtSubscribe,
                    }
                };
                (filter, options)
            },
        );
    (
        packet_id(),
        vec(option, 1..4),
        properties(version, Place::Subscribe),
    )
        .prop_map(|(packet_id, filters, properties)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                filters,
                properties,
            })
        })
        .boxed()
}

fn suback(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let codes: Vec<u8> = if version == ProtocolVersion::V5 {
        vec![
            0, 1, 2, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
        ]
    } else {
        vec![0, 1, 2, 0x80]
    };
    (
        packet_id(),
        vec(select(codes), 1..4),
        properties(version, Place::SubAck),
    )
        .prop_map(|(packet_id, return_codes, properties)| {
            Packet::SubAck(SubAck {
                packet_id,
                return_codes,
                properties,
            })
        })
        .boxed()
}

fn unsubscribe(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    (
        packet_id(),
        vec(topic_filter(), 1..4),
        properties(version, Place::Unsubscribe),
    )
        .prop_map(|(packet_id, filters, properties)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                filters,
                properties,
            })
        })
        .boxed()
}

fn unsuback(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let count = if version == ProtocolVersion::V5 {
        1..4
    } else {
        0..1
    };
    let codes = vec(select(vec![0u8, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91]), count);
    (packet_id(), codes, properties(version, Place::UnsubAck))
        .prop_map(|(packet_id, reason_codes, properties)| {
            Packet::UnsubAck(UnsubAck {
                packet_id,
                reason_codes,
                properties,
            })
        })
        .boxed()
}

fn disconnect(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let codes: Vec<u8> = [0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B]
        .into_iter()
        .chain(0x8D..=0x90)
        .chain(0x93..=0xA2)
        .collect();
    (
        reason(version, &codes),
        properties(version, Place::Disconnect),
    )
        .prop_map(|(reason, properties)| Packet::Disconnect(Disconnect { reason, properties }))
        .boxed()
}

fn auth() -> BoxedStrategy<Packet> {
    (
        reason(ProtocolVersion::V5, &[0x00, 0x18, 0x19]),
        properties(ProtocolVersion::V5, Place::Auth),
    )
        .prop_map(|(reason, properties)| Packet::Auth(Auth { reason, properties }))
        .boxed()
}

/// Any packet type `version` has, with valid field values.
pub fn packet(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    const PUBACK_CODES: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
    const PUBREL_CODES: &[u8] = &[0x00, 0x92];
    let mut choices = vec![
        connect(version),
        connack(version),
        publish(version),
        publish(version),
        ack(version, PUBACK_CODES).prop_map(Packet::PubAck).boxed(),
        ack(version, PUBACK_CODES).prop_map(Packet::PubRec).boxed(),
        ack(version, PUBREL_CODES).prop_map(Packet::PubRel).boxed(),
        ack(version, PUBREL_CODES).prop_map(Packet::PubComp).boxed(),
        subscribe(version),
        suback(version),
        unsubscribe(version),
        unsuback(version),
        Just(Packet::PingReq).boxed(),
        Just(Packet::PingResp).boxed(),
        disconnect(version),
    ];
    if version == ProtocolVersion::V5 {
        choices.push(auth());
    }
    Union::new(choices).boxed()
}

/// A version and a packet of that version.
pub fn versioned_packet() -> impl Strategy<Value = (ProtocolVersion, Packet)> {
    version().prop_flat_map(|version| (Just(version), packet(version)))
}
