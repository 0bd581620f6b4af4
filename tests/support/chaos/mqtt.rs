//! The load's MQTT client: rumqttc's MQTT 3.1.1 client (clean session 0) or its MQTT 5 client
//! (clean start 0, session expiry 3600 s), behind one small interface so the load is written
//! once. Only what the load uses is exposed.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{ConnectProperties, Packet as V5Packet};
use rumqttc::v5::mqttbytes::QoS as V5QoS;
use rumqttc::{Incoming, Outgoing, QoS};

/// Which MQTT version the load speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    V311,
    V5,
}

/// Session Expiry Interval of the MQTT 5 clients, seconds.
pub const SESSION_EXPIRY_S: u32 = 3600;

/// What one client needs to (re)connect.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    pub protocol: Protocol,
    pub client_id: String,
    pub keep_alive: Duration,
    /// Bound of a TCP connect + CONNACK, whole seconds (rumqttc's unit).
    pub connect_timeout_s: u64,
}

/// What the load reacts to, from either client.
#[derive(Debug)]
pub enum MqttEvent {
    ConnAck {
        session_present: bool,
    },
    /// PUBACK, or the PUBCOMP that ends a QoS 2 exchange.
    PubAck(u16),
    /// QoS 2: the broker took the message (PUBREC); rumqttc answers PUBREL.
    PubRec(u16),
    /// QoS 2: the broker released a message it sent (PUBREL); rumqttc answers PUBCOMP.
    PubRel(u16),
    /// rumqttc wrote a QoS 1 PUBLISH with this packet id (a new one or a re-send).
    OutgoingPublish(u16),
    /// rumqttc holds a PUBLISH back until this packet id is acknowledged.
    AwaitAck(u16),
    SubAck,
    Publish {
        payload: Bytes,
        dup: bool,
        /// Packet id (0 for QoS 0) and QoS.
        pkid: u16,
        qos: u8,
    },
    OutgoingDisconnect,
    Other,
}

#[derive(Clone)]
pub enum Client {
    V311(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// A PUBLISH handed to rumqttc and never written (see [`Connection::take_unwritten_publishes`]).
#[derive(Clone, Debug)]
pub struct Unwritten {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
}

/// Boxed: the two event loops differ in size, and there is one per client.
pub enum Connection {
    V311(Box<rumqttc::EventLoop>),
    V5(Box<rumqttc::v5::EventLoop>),
}

/// Unacknowledged requests the client can buffer (a broker outage at the full rate).
const REQUEST_CAPACITY: usize = 100_000;
/// QoS 1 PUBLISHes in flight per client.
const INFLIGHT: u16 = 100;

fn v311_options(settings: &ClientSettings, address: SocketAddr) -> rumqttc::MqttOptions {
    let mut options = rumqttc::MqttOptions::new(
        &settings.client_id,
        address.ip().to_string(),
        address.port(),
    );
    options
        .set_clean_session(false)
        .set_keep_alive(settings.keep_alive)
        .set_inflight(INFLIGHT)
        .set_request_channel_capacity(REQUEST_CAPACITY);
    options
}

fn v5_options(settings: &ClientSettings, address: SocketAddr) -> rumqttc::v5::MqttOptions {
    let mut options = rumqttc::v5::MqttOptions::new(
        &settings.client_id,
        address.ip().to_string(),
        address.port(),
    );
    let mut properties = ConnectProperties::new();
    properties.session_expiry_interval = Some(SESSION_EXPIRY_S);
    options
        .set_clean_start(false)
        .set_keep_alive(settings.keep_alive)
        .set_connection_timeout(settings.connect_timeout_s)
        .set_outgoing_inflight_upper_limit(INFLIGHT)
        .set_request_channel_capacity(REQUEST_CAPACITY)
        .set_connect_properties(properties);
    options
}

/// A client and its connection to `address` (connected by the first poll).
pub fn client(settings: &ClientSettings, address: SocketAddr) -> (Client, Connection) {
    match settings.protocol {
        Protocol::V311 => {
            let (client, mut connection) =
                rumqttc::AsyncClient::new(v311_options(settings, address), REQUEST_CAPACITY);
            connection
                .network_options
                .set_connection_timeout(settings.connect_timeout_s);
            (Client::V311(client), Connection::V311(Box::new(connection)))
        }
        Protocol::V5 => {
            let (client, connection) =
                rumqttc::v5::AsyncClient::new(v5_options(settings, address), REQUEST_CAPACITY);
            (Client::V5(client), Connection::V5(Box::new(connection)))
        }
    }
}

impl Client {
    pub fn try_publish(&self, topic: &str, payload: Vec<u8>) -> Result<(), String> {
        match self {
            Client::V311(c) => c
                .try_publish(topic, QoS::AtLeastOnce, false, payload)
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .try_publish(topic, V5QoS::AtLeastOnce, false, payload)
                .map_err(|e| e.to_string()),
        }
    }

    /// A QoS 1 PUBLISH with the RETAIN flag.
    pub fn try_publish_retained(&self, topic: &str, payload: Vec<u8>) -> Result<(), String> {
        match self {
            Client::V311(c) => c
                .try_publish(topic, QoS::AtLeastOnce, true, payload)
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .try_publish(topic, V5QoS::AtLeastOnce, true, payload)
                .map_err(|e| e.to_string()),
        }
    }

    pub fn try_subscribe(&self, filter: &str) -> Result<(), String> {
        match self {
            Client::V311(c) => c
                .try_subscribe(filter, QoS::AtLeastOnce)
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .try_subscribe(filter, V5QoS::AtLeastOnce)
                .map_err(|e| e.to_string()),
        }
    }

    /// [`Client::try_publish`] at QoS `qos` (1 or 2).
    pub fn try_publish_qos(&self, topic: &str, payload: Vec<u8>, qos: u8) -> Result<(), String> {
        match self {
            Client::V311(c) => c
                .try_publish(topic, v311_qos(qos), false, payload)
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .try_publish(topic, v5_qos(qos), false, payload)
                .map_err(|e| e.to_string()),
        }
    }

    /// [`Client::try_subscribe`] at QoS `qos` (1 or 2).
    pub fn try_subscribe_qos(&self, filter: &str, qos: u8) -> Result<(), String> {
        match self {
            Client::V311(c) => c
                .try_subscribe(filter, v311_qos(qos))
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .try_subscribe(filter, v5_qos(qos))
                .map_err(|e| e.to_string()),
        }
    }

    pub fn try_disconnect(&self) -> Result<(), String> {
        match self {
            Client::V311(c) => c.try_disconnect().map_err(|e| e.to_string()),
            Client::V5(c) => c.try_disconnect().map_err(|e| e.to_string()),
        }
    }
}

impl Connection {
    /// The next event; an error is a failed or lost connection (the text says why, including
    /// an MQTT 5 DISCONNECT's reason code), after which the next poll connects again.
    pub async fn poll(&mut self) -> Result<MqttEvent, String> {
        match self {
            Connection::V311(c) => {
                let event = c.poll().await.map_err(|e| e.to_string())?;
                Ok(match event {
                    rumqttc::Event::Incoming(incoming) => match incoming {
                        Incoming::ConnAck(ack) => MqttEvent::ConnAck {
                            session_present: ack.session_present,
                        },
                        Incoming::PubAck(ack) => MqttEvent::PubAck(ack.pkid),
                        Incoming::PubComp(ack) => MqttEvent::PubAck(ack.pkid),
                        Incoming::PubRec(ack) => MqttEvent::PubRec(ack.pkid),
                        Incoming::PubRel(rel) => MqttEvent::PubRel(rel.pkid),
                        Incoming::SubAck(_) => MqttEvent::SubAck,
                        Incoming::Publish(publish) => MqttEvent::Publish {
                            payload: publish.payload,
                            dup: publish.dup,
                            pkid: publish.pkid,
                            qos: publish.qos as u8,
                        },
                        _ => MqttEvent::Other,
                    },
                    rumqttc::Event::Outgoing(outgoing) => outgoing_event(outgoing),
                })
            }
            Connection::V5(c) => {
                let event = c.poll().await.map_err(|e| e.to_string())?;
                Ok(match event {
                    rumqttc::v5::Event::Incoming(incoming) => match incoming {
                        V5Packet::ConnAck(ack) => MqttEvent::ConnAck {
                            session_present: ack.session_present,
                        },
                        V5Packet::PubAck(ack) => MqttEvent::PubAck(ack.pkid),
                        V5Packet::PubComp(ack) => MqttEvent::PubAck(ack.pkid),
                        V5Packet::PubRec(ack) => MqttEvent::PubRec(ack.pkid),
                        V5Packet::PubRel(rel) => MqttEvent::PubRel(rel.pkid),
                        V5Packet::SubAck(_) => MqttEvent::SubAck,
                        V5Packet::Publish(publish) => MqttEvent::Publish {
                            payload: publish.payload,
                            dup: publish.dup,
                            pkid: publish.pkid,
                            qos: publish.qos as u8,
                        },
                        _ => MqttEvent::Other,
                    },
                    rumqttc::v5::Event::Outgoing(outgoing) => outgoing_event(outgoing),
                })
            }
        }
    }

    /// Take out of rumqttc's pending list the PUBLISHes it was handed and never wrote (no
    /// packet id yet), in order, for the caller to hand them over again.
    ///
    /// At a lost connection rumqttc moves every request still in its channel into that list,
    /// after the PUBLISHes in flight, and at the next connection writes the whole list without
    /// its in-flight window: the new PUBLISHes then take packet ids still in flight, each such
    /// collision replaces the one before (which is never written), and a new PUBLISH can take
    /// the packet id of a retransmission still waiting in the list. A broker outage thus
    /// silently dropped most of what a publisher queued meanwhile, and the recorder, which maps
    /// packet ids to messages from rumqttc's events, credited PUBACKs to the wrong messages
    /// (some never written). Handed over again through the channel, they wait for the window.
    pub fn take_unwritten_publishes(&mut self) -> Vec<Unwritten> {
        match self {
            Connection::V311(c) => {
                let mut taken = Vec::new();
                c.pending.retain(|request| match request {
                    rumqttc::Request::Publish(p) if p.pkid == 0 => {
                        taken.push(Unwritten {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            qos: p.qos as u8,
                            retain: p.retain,
                        });
                        false
                    }
                    _ => true,
                });
                taken
            }
            Connection::V5(c) => {
                let mut taken = Vec::new();
                c.pending.retain(|request| match request {
                    rumqttc::v5::Request::Publish(p) if p.pkid == 0 => {
                        taken.push(Unwritten {
                            topic: String::from_utf8_lossy(&p.topic).into_owned(),
                            payload: p.payload.to_vec(),
                            qos: p.qos as u8,
                            retain: p.retain,
                        });
                        false
                    }
                    _ => true,
                });
                taken
            }
        }
    }

    /// Point the next connection attempt at `address` (the session state stays: unacknowledged
    /// PUBLISHes are re-sent there).
    pub fn set_address(&mut self, settings: &ClientSettings, address: SocketAddr) {
        match self {
            Connection::V311(c) => c.mqtt_options = v311_options(settings, address),
            Connection::V5(c) => c.options = v5_options(settings, address),
        }
    }
}

fn outgoing_event(outgoing: Outgoing) -> MqttEvent {
    match outgoing {
        Outgoing::Publish(pkid) => MqttEvent::OutgoingPublish(pkid),
        Outgoing::AwaitAck(pkid) => MqttEvent::AwaitAck(pkid),
        Outgoing::Disconnect => MqttEvent::OutgoingDisconnect,
        _ => MqttEvent::Other,
    }
}

fn v311_qos(qos: u8) -> QoS {
    if qos >= 2 {
        QoS::ExactlyOnce
    } else {
        QoS::AtLeastOnce
    }
}

fn v5_qos(qos: u8) -> V5QoS {
    if qos >= 2 {
        V5QoS::ExactlyOnce
    } else {
        V5QoS::AtLeastOnce
    }
}
