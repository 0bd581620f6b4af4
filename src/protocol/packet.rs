//! MQTT control packets as values. Shared by 3.1 (level 3), 3.1.1 (level 4) and 5.0 (level 5):
//! fields only 5.0 carries (properties, reason codes) are simply absent/default for v3.

use bytes::Bytes;

/// Protocol level byte of CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProtocolVersion {
    /// MQTT 3.1, protocol name `MQIsdp`, level 3.
    V31 = 3,
    /// MQTT 3.1.1, protocol name `MQTT`, level 4.
    V311 = 4,
    /// MQTT 5.0, protocol name `MQTT`, level 5.
    V5 = 5,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QoS {
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl QoS {
    pub fn from_u8(v: u8) -> Option<QoS> {
        match v {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// MQTT 5 properties. One struct for every packet type; the codec rejects a property that is not
/// allowed on the packet it appears in. Absent = `None` / empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    pub payload_format_indicator: Option<u8>,
    pub message_expiry_interval: Option<u32>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Bytes>,
    pub subscription_identifiers: Vec<u32>,
    pub session_expiry_interval: Option<u32>,
    pub assigned_client_identifier: Option<String>,
    pub server_keep_alive: Option<u16>,
    pub authentication_method: Option<String>,
    pub authentication_data: Option<Bytes>,
    pub request_problem_information: Option<u8>,
    pub will_delay_interval: Option<u32>,
    pub request_response_information: Option<u8>,
    pub response_information: Option<String>,
    pub server_reference: Option<String>,
    pub reason_string: Option<String>,
    pub receive_maximum: Option<u16>,
    pub topic_alias_maximum: Option<u16>,
    pub topic_alias: Option<u16>,
    pub maximum_qos: Option<u8>,
    pub retain_available: Option<u8>,
    pub user_properties: Vec<(String, String)>,
    pub maximum_packet_size: Option<u32>,
    pub wildcard_subscription_available: Option<u8>,
    pub subscription_identifier_available: Option<u8>,
    pub shared_subscription_available: Option<u8>,
}

/// A copy of `bytes` in an allocation of its own. The decoder's binary fields are slices of
/// the buffer they were read from; a field kept longer than its packet (a will, a message
/// waiting for room) is detached so that it does not keep that whole buffer in memory.
fn detached(bytes: &Bytes) -> Bytes {
    Bytes::copy_from_slice(bytes)
}

impl Properties {
    /// The bytes its strings, binary data and lists take on the heap (their contents and,
    /// for user properties, the two `String`s of each pair): what keeping it costs beyond the
    /// struct itself.
    pub fn heap_bytes(&self) -> usize {
        let strings = [
            &self.content_type,
            &self.response_topic,
            &self.assigned_client_identifier,
            &self.authentication_method,
            &self.response_information,
            &self.server_reference,
            &self.reason_string,
        ]
        .into_iter()
        .flatten()
        .map(String::len);
        let binary = [&self.correlation_data, &self.authentication_data]
            .into_iter()
            .flatten()
            .map(Bytes::len);
        let user = self
            .user_properties
            .iter()
            .map(|(k, v)| k.len() + v.len() + 2 * std::mem::size_of::<String>());
        strings.chain(binary).chain(user).sum::<usize>()
            + self.subscription_identifiers.len() * std::mem::size_of::<u32>()
    }

    /// Copy the binary properties (correlation data, authentication data) into allocations of
    /// their own, so that keeping them does not keep the buffer they were decoded from.
    pub fn detach(&mut self) {
        for data in [&mut self.correlation_data, &mut self.authentication_data]
            .into_iter()
            .flatten()
        {
            *data = detached(data);
        }
    }
}

/// [`detached`] a payload and the binary properties that come with it.
fn detach_body(payload: &mut Bytes, properties: Option<&mut Box<Properties>>) {
    *payload = detached(payload);
    if let Some(properties) = properties {
        properties.detach();
    }
}

impl LastWill {
    /// Detach the will's payload and binary properties from the CONNECT they came in, which
    /// was read into a buffer of 8 KiB or more that the connection would otherwise keep for
    /// its whole life.
    pub fn detach(&mut self) {
        detach_body(&mut self.payload, self.properties.as_mut());
    }
}

impl Publish {
    /// Detach the payload and binary properties from the read they came in.
    pub fn detach(&mut self) {
        detach_body(&mut self.payload, self.properties.as_mut());
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Connect(Box<Connect>),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(Ack),
    PubRec(Ack),
    PubRel(Ack),
    PubComp(Ack),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    /// MQTT 5 AUTH.
    Auth(Auth),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub protocol: ProtocolVersion,
    /// "clean session" in 3.x, "clean start" in 5.0.
    pub clean_start: bool,
    pub keep_alive_secs: u16,
    /// May be empty (the broker decides what that means).
    pub client_id: String,
    pub will: Option<LastWill>,
    pub username: Option<String>,
    pub password: Option<Bytes>,
    pub properties: Option<Box<Properties>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    pub properties: Option<Box<Properties>>,
}

/// CONNACK result. The encoder maps it to the v3 return code (0-5) or the v5 reason code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectReason {
    Success,
    /// v3 code 1 / v5 0x84
    UnsupportedProtocolVersion,
    /// v3 code 2 / v5 0x85
    ClientIdentifierNotValid,
    /// v3 code 3 / v5 0x88
    ServerUnavailable,
    /// v3 code 4 / v5 0x86
    BadUserNameOrPassword,
    /// v3 code 5 / v5 0x87
    NotAuthorized,
    // v5 only (a v3 encoder maps them to the closest v3 code):
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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    pub session_present: bool,
    pub reason: ConnectReason,
    pub properties: Option<Box<Properties>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// May be empty in v5 when a topic alias is used.
    pub topic: String,
    /// `Some` exactly when qos > 0.
    pub packet_id: Option<u16>,
    pub payload: Bytes,
    pub properties: Option<Box<Properties>>,
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP. `reason` is a v5 reason code (0 = success); v3 ignores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub packet_id: u16,
    pub reason: u8,
    pub properties: Option<Box<Properties>>,
}

impl Ack {
    pub fn new(packet_id: u16) -> Self {
        Ack {
            packet_id,
            reason: 0,
            properties: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetainHandling {
    SendAtSubscribe = 0,
    SendAtSubscribeIfNew = 1,
    DoNotSend = 2,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionOptions {
    pub qos: QoS,
    /// v5 only (false in v3).
    pub no_local: bool,
    /// v5 only (false in v3).
    pub retain_as_published: bool,
    /// v5 only (SendAtSubscribe in v3).
    pub retain_handling: RetainHandling,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    pub packet_id: u16,
    pub filters: Vec<(String, SubscriptionOptions)>,
    pub properties: Option<Box<Properties>>,
}

/// SUBACK return codes: v3 uses 0, 1, 2 and 0x80; v5 adds the other reason codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    pub packet_id: u16,
    pub return_codes: Vec<u8>,
    pub properties: Option<Box<Properties>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    pub packet_id: u16,
    pub filters: Vec<String>,
    pub properties: Option<Box<Properties>>,
}

/// v3 UNSUBACK carries only the packet id; v5 has one reason code per filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    pub packet_id: u16,
    pub reason_codes: Vec<u8>,
    pub properties: Option<Box<Properties>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// v5 reason code (0 = normal); v3 DISCONNECT has none.
    pub reason: u8,
    pub properties: Option<Box<Properties>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    pub reason: u8,
    pub properties: Option<Box<Properties>>,
}
