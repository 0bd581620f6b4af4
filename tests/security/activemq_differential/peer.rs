//! One MQTT 3.1.1 connection of the differential, over ferromq's codec, that tolerates the broker
//! closing it (ActiveMQ closes connections on some refusals) and records every PUBLISH it receives
//! (acknowledging QoS 1) while it waits for something else.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use ferromq::protocol::{
    decode, encode, Ack, Connect, ConnectReason, Disconnect, Packet, ProtocolVersion, Publish, QoS,
    RetainHandling, Subscribe, SubscriptionOptions,
};

/// The topic every user may read and write; its messages end a publisher's traffic.
pub const MARKER_TOPIC: &str = "zz/zz/zz/zz";

/// The answer to one SUBSCRIBE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SubOutcome {
    /// The SUBACK return code.
    Code(u8),
    /// The broker closed the connection instead of answering.
    Closed,
    /// Neither within the wait.
    Silent,
}

/// The answer to one QoS 1 PUBLISH.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PubOutcome {
    Acked,
    Closed,
    Silent,
}

/// How long one answer may take.
const ANSWER: Duration = Duration::from_secs(5);

pub struct Peer {
    addr: SocketAddr,
    connect: Connect,
    stream: Option<TcpStream>,
    buf: BytesMut,
    next_id: u16,
    /// (topic, payload) of every PUBLISH received off the marker topic.
    pub received: BTreeSet<(String, String)>,
    /// Payloads received on the marker topic.
    pub markers: BTreeSet<String>,
    /// Filters granted so far, subscribed again after a reconnection.
    granted: Vec<String>,
    /// How often the broker closed this peer's connection.
    pub closes: usize,
}

impl Peer {
    /// Connect as `user` (password `pw`; no credentials at all for `None`) with a clean
    /// session; panics when refused.
    pub async fn open(addr: SocketAddr, client_id: &str, user: Option<&str>) -> Peer {
        let connect = Connect {
            protocol: ProtocolVersion::V311,
            clean_start: true,
            keep_alive_secs: 0,
            client_id: client_id.into(),
            will: None,
            username: user.map(str::to_owned),
            password: user.map(|_| Bytes::from_static(b"pw")),
            properties: None,
        };
        let mut peer = Peer {
            addr,
            connect,
            stream: None,
            buf: BytesMut::new(),
            next_id: 0,
            received: BTreeSet::new(),
            markers: BTreeSet::new(),
            granted: Vec::new(),
            closes: 0,
        };
        peer.reconnect().await;
        peer
    }

    async fn reconnect(&mut self) {
        let stream = tokio::time::timeout(ANSWER, TcpStream::connect(self.addr))
            .await
            .expect("TCP connect in time")
            .expect("TCP connect");
        self.stream = Some(stream);
        self.buf.clear();
        self.send(Packet::Connect(Box::new(self.connect.clone())))
            .await;
        match self.next_packet(Instant::now() + ANSWER).await {
            Ok(Some(Packet::ConnAck(ack))) if ack.reason == ConnectReason::Success => {}
            other => panic!("{} CONNECT: {other:?}", self.connect.client_id),
        }
        for filter in std::mem::take(&mut self.granted) {
            let outcome = self.subscribe(&filter).await;
            assert!(
                matches!(outcome, SubOutcome::Code(0..=2)),
                "{filter} granted before, now {outcome:?}"
            );
        }
    }

    fn packet_id(&mut self) -> u16 {
        self.next_id = self.next_id % 60000 + 1;
        self.next_id
    }

    async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        encode(&packet, ProtocolVersion::V311, &mut out).expect("encode");
        if let Some(stream) = self.stream.as_mut() {
            if stream.write_all(&out).await.is_err() {
                self.stream = None;
            }
        }
    }

    /// The next packet (a PUBLISH is recorded and acknowledged first); `Ok(None)` at the
    /// deadline, `Err(())` when the connection is closed.
    async fn next_packet(&mut self, deadline: Instant) -> Result<Option<Packet>, ()> {
        loop {
            match decode(&mut self.buf, Some(ProtocolVersion::V311), usize::MAX) {
                Ok(Some(Packet::Publish(publish))) => {
                    self.record(&publish).await;
                    return Ok(Some(Packet::Publish(publish)));
                }
                Ok(Some(packet)) => return Ok(Some(packet)),
                Ok(None) => {}
                Err(e) => panic!("malformed packet from the broker: {e}"),
            }
            let Some(stream) = self.stream.as_mut() else {
                return Err(());
            };
            match tokio::time::timeout_at(deadline, stream.read_buf(&mut self.buf)).await {
                Err(_) => return Ok(None),
                Ok(Ok(0)) | Ok(Err(_)) => {
                    self.stream = None;
                    return Err(());
                }
                Ok(Ok(_)) => {}
            }
        }
    }

    async fn record(&mut self, publish: &Publish) {
        let payload = String::from_utf8_lossy(&publish.payload).into_owned();
        if publish.topic == MARKER_TOPIC {
            self.markers.insert(payload);
        } else {
            self.received.insert((publish.topic.clone(), payload));
        }
        if let Some(id) = publish.packet_id {
            self.send(Packet::PubAck(Ack::new(id))).await;
        }
    }

    /// SUBSCRIBE `filter` at QoS 1 alone; reconnects (and subscribes again to what was
    /// granted) when the broker closed the connection.
    pub async fn subscribe(&mut self, filter: &str) -> SubOutcome {
        self.subscribe_all(&[filter]).await[0]
    }

    /// One SUBSCRIBE with every filter of `filters` at QoS 1: one outcome per filter (the same
    /// `Closed` or `Silent` for all when no SUBACK came).
    pub async fn subscribe_all(&mut self, filters: &[&str]) -> Vec<SubOutcome> {
        let packet_id = self.packet_id();
        let options = SubscriptionOptions {
            qos: QoS::AtLeastOnce,
            no_local: false,
            retain_as_published: false,
            retain_handling: RetainHandling::SendAtSubscribe,
        };
        self.send(Packet::Subscribe(Subscribe {
            packet_id,
            filters: filters
                .iter()
                .map(|f| (f.to_string(), options.clone()))
                .collect(),
            properties: None,
        }))
        .await;
        let deadline = Instant::now() + ANSWER;
        let outcomes = loop {
            match self.next_packet(deadline).await {
                Ok(Some(Packet::SubAck(ack))) if ack.packet_id == packet_id => {
                    assert_eq!(
                        ack.return_codes.len(),
                        filters.len(),
                        "one SUBACK code per filter"
                    );
                    break ack
                        .return_codes
                        .iter()
                        .map(|c| SubOutcome::Code(*c))
                        .collect();
                }
                Ok(Some(_)) => {}
                Ok(None) => break vec![SubOutcome::Silent; filters.len()],
                Err(()) => break vec![SubOutcome::Closed; filters.len()],
            }
        };
        for (filter, outcome) in filters.iter().zip(&outcomes) {
            if let SubOutcome::Code(0..=2) = outcome {
                self.granted.push(filter.to_string());
            }
        }
        if outcomes.contains(&SubOutcome::Closed) {
            self.closes += 1;
            Box::pin(self.reconnect()).await;
        }
        outcomes
    }

    /// PUBLISH at QoS 1 (retained or not) and wait for the PUBACK; reconnects when the broker closed the
    /// connection.
    pub async fn publish(&mut self, topic: &str, payload: &str, retain: bool) -> PubOutcome {
        let packet_id = self.packet_id();
        self.send(Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain,
            topic: topic.into(),
            packet_id: Some(packet_id),
            payload: Bytes::copy_from_slice(payload.as_bytes()),
            properties: None,
        }))
        .await;
        let deadline = Instant::now() + ANSWER;
        let outcome = loop {
            match self.next_packet(deadline).await {
                Ok(Some(Packet::PubAck(ack))) if ack.packet_id == packet_id => {
                    break PubOutcome::Acked
                }
                Ok(Some(_)) => {}
                Ok(None) => break PubOutcome::Silent,
                Err(()) => break PubOutcome::Closed,
            }
        };
        if outcome == PubOutcome::Closed {
            self.closes += 1;
            self.reconnect().await;
        }
        outcome
    }

    /// PUBLISH at QoS 2 and complete the exchange (PUBREC, PUBREL, PUBCOMP); `Acked` once the
    /// PUBCOMP arrived. Reconnects when the broker closed the connection.
    pub async fn publish_qos2(&mut self, topic: &str, payload: &str) -> PubOutcome {
        let packet_id = self.packet_id();
        self.send(Packet::Publish(Publish {
            dup: false,
            qos: QoS::ExactlyOnce,
            retain: false,
            topic: topic.into(),
            packet_id: Some(packet_id),
            payload: Bytes::copy_from_slice(payload.as_bytes()),
            properties: None,
        }))
        .await;
        let deadline = Instant::now() + ANSWER;
        let outcome = loop {
            match self.next_packet(deadline).await {
                Ok(Some(Packet::PubRec(ack))) if ack.packet_id == packet_id => {
                    self.send(Packet::PubRel(Ack::new(packet_id))).await;
                }
                Ok(Some(Packet::PubComp(ack))) if ack.packet_id == packet_id => {
                    break PubOutcome::Acked
                }
                Ok(Some(_)) => {}
                Ok(None) => break PubOutcome::Silent,
                Err(()) => break PubOutcome::Closed,
            }
        };
        if outcome == PubOutcome::Closed {
            self.closes += 1;
            self.reconnect().await;
        }
        outcome
    }

    /// Read (recording PUBLISH packets) until a marker from each of `publishers` arrived, or
    /// until `deadline`. Returns the publishers whose marker did not arrive.
    pub async fn collect(
        &mut self,
        publishers: &BTreeSet<String>,
        deadline: Instant,
    ) -> Vec<String> {
        loop {
            let missing: Vec<String> = publishers
                .iter()
                .filter(|p| !self.markers.contains(*p))
                .cloned()
                .collect();
            if missing.is_empty() {
                return missing;
            }
            match self.next_packet(deadline).await {
                Ok(Some(_)) => {}
                Ok(None) | Err(()) => return missing,
            }
        }
    }

    pub async fn close(mut self) {
        self.send(Packet::Disconnect(Disconnect {
            reason: 0,
            properties: None,
        }))
        .await;
    }
}
