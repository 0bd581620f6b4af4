//! The test clients: a raw client (a socket, or any stream, and ferromq's own codec) for what a
//! real client library will not do (malformed packets, DUP checks, exact timing), the packets it
//! sends, and a rumqttc client for the tests that want a real client library.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use ferromq::protocol::{
    decode, encode, Ack, ConnAck, Connect, LastWill, Packet, Properties, ProtocolVersion, Publish,
    QoS, RetainHandling, Subscribe, SubscriptionOptions,
};

use super::STEP;

pub fn connect_packet(client_id: &str, clean: bool, keep_alive_secs: u16) -> Connect {
    Connect {
        protocol: ProtocolVersion::V311,
        clean_start: clean,
        keep_alive_secs,
        client_id: client_id.into(),
        will: None,
        username: None,
        password: None,
        properties: None,
    }
}

/// An MQTT 5 CONNECT; `expiry_secs` is the Session Expiry Interval property (absent = 0).
pub fn connect_v5(client_id: &str, clean_start: bool, expiry_secs: Option<u32>) -> Connect {
    Connect {
        protocol: ProtocolVersion::V5,
        clean_start,
        keep_alive_secs: 0,
        client_id: client_id.into(),
        will: None,
        username: None,
        password: None,
        properties: expiry_secs.map(|secs| {
            Box::new(Properties {
                session_expiry_interval: Some(secs),
                ..Properties::default()
            })
        }),
    }
}

pub fn will(topic: &str, payload: &'static [u8], qos: QoS, retain: bool) -> LastWill {
    LastWill {
        topic: topic.into(),
        payload: Bytes::from_static(payload),
        qos,
        retain,
        properties: None,
    }
}

pub fn subscribe_packet(packet_id: u16, filters: &[(&str, QoS)]) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id,
        filters: filters
            .iter()
            .map(|(f, qos)| {
                (
                    f.to_string(),
                    SubscriptionOptions {
                        qos: *qos,
                        no_local: false,
                        retain_as_published: false,
                        retain_handling: RetainHandling::SendAtSubscribe,
                    },
                )
            })
            .collect(),
        properties: None,
    })
}

pub fn publish_packet(
    topic: &str,
    payload: &[u8],
    qos: QoS,
    packet_id: Option<u16>,
    retain: bool,
) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain,
        topic: topic.into(),
        packet_id,
        payload: Bytes::copy_from_slice(payload),
        properties: None,
    })
}

pub fn ack(packet_id: u16) -> Ack {
    Ack::new(packet_id)
}

/// A raw client on a TCP socket, or on any other stream (an in-process `tokio::io::duplex`
/// served by `ferromq::broker::connection::serve`, see [`super::TestBroker::duplex`]).
pub struct RawClient<S = TcpStream> {
    pub stream: S,
    buf: BytesMut,
    pub version: ProtocolVersion,
}

impl RawClient<TcpStream> {
    /// A connected socket that has sent nothing yet.
    pub async fn tcp(addr: SocketAddr) -> RawClient {
        let stream = tokio::time::timeout(STEP, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("tcp connect");
        RawClient {
            stream,
            buf: BytesMut::new(),
            version: ProtocolVersion::V311,
        }
    }

    /// CONNECT and return the CONNACK.
    pub async fn connect(addr: SocketAddr, connect: Connect) -> (RawClient, ConnAck) {
        let stream = tokio::time::timeout(STEP, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("tcp connect");
        RawClient::handshake(stream, connect).await
    }

    /// CONNECT, expecting success.
    pub async fn connect_ok(addr: SocketAddr, connect: Connect) -> (RawClient, ConnAck) {
        let (c, ack) = RawClient::connect(addr, connect).await;
        assert_eq!(
            ack.reason,
            ferromq::protocol::ConnectReason::Success,
            "{ack:?}"
        );
        (c, ack)
    }

    /// An MQTT 3.1.1 CONNECT with a client id and clean flag (keep-alive off), expecting success.
    pub async fn connected(addr: SocketAddr, client_id: &str, clean: bool) -> (RawClient, ConnAck) {
        RawClient::connect_ok(addr, connect_packet(client_id, clean, 0)).await
    }

    /// An MQTT 5 CONNECT with clean start and no properties, expecting success.
    pub async fn connected_v5(addr: SocketAddr, client_id: &str) -> RawClient {
        RawClient::connect_ok(addr, connect_v5(client_id, true, None))
            .await
            .0
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawClient<S> {
    /// A client on `stream` that has sent nothing yet.
    pub fn over(stream: S) -> RawClient<S> {
        RawClient {
            stream,
            buf: BytesMut::new(),
            version: ProtocolVersion::V311,
        }
    }

    /// CONNECT on `stream` and return the CONNACK.
    pub async fn handshake(stream: S, connect: Connect) -> (RawClient<S>, ConnAck) {
        let mut c = RawClient::over(stream);
        c.version = connect.protocol;
        c.send(Packet::Connect(Box::new(connect))).await;
        match c.recv().await {
            Packet::ConnAck(ack) => (c, ack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    pub async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        encode(&packet, self.version, &mut out).expect("encode");
        self.send_raw(&out).await;
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// The next packet, or `None` after `within` (or if the connection closed).
    pub async fn recv_within(&mut self, within: Duration) -> Option<Packet> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match decode(&mut self.buf, Some(self.version), usize::MAX) {
                Ok(Some(p)) => return Some(p),
                Ok(None) => {}
                Err(e) => panic!("broker sent a malformed packet: {e}"),
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return None,
                Ok(Ok(0)) | Ok(Err(_)) => return None,
                Ok(Ok(_)) => {}
            }
        }
    }

    pub async fn recv(&mut self) -> Packet {
        self.recv_within(STEP)
            .await
            .expect("a packet from the broker")
    }

    pub async fn recv_publish(&mut self) -> Publish {
        match self.recv().await {
            Packet::Publish(p) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    pub async fn subscribe(&mut self, packet_id: u16, filters: &[(&str, QoS)]) -> Vec<u8> {
        self.send(subscribe_packet(packet_id, filters)).await;
        match self.recv().await {
            Packet::SubAck(s) => {
                assert_eq!(s.packet_id, packet_id);
                s.return_codes
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// As [`Self::subscribe`], but PUBLISHes that arrive before the SUBACK are skipped: a
    /// server may start sending matching messages before it (MQTT 5 3.8.4), and a cluster
    /// node does when a message stored just before the SUBSCRIBE comes back from its stream
    /// after the subscription is in place.
    pub async fn subscribe_skipping(&mut self, packet_id: u16, filters: &[(&str, QoS)]) -> Vec<u8> {
        self.send(subscribe_packet(packet_id, filters)).await;
        loop {
            match self.recv().await {
                Packet::SubAck(s) if s.packet_id == packet_id => return s.return_codes,
                Packet::Publish(_) => {}
                other => panic!("expected SUBACK {packet_id}, got {other:?}"),
            }
        }
    }

    /// Wait until the broker closes the connection; returns how long that took (on tokio's
    /// clock: exact when the test runs with paused time). Any packets that arrive first are
    /// skipped.
    pub async fn closed_within(&mut self, within: Duration) -> Option<Duration> {
        let start = tokio::time::Instant::now();
        let mut scratch = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut scratch)).await {
                Err(_) => return None,
                Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
                Ok(Ok(_)) => {}
            }
        }
    }

    pub async fn expect_closed(&mut self) {
        assert!(
            self.closed_within(STEP).await.is_some(),
            "the broker should have closed the connection"
        );
    }
}

/// A rumqttc client whose event loop runs in a task; incoming PUBLISH packets arrive on a
/// channel. The loop stops at the first connection error (no silent reconnects).
pub struct Client {
    pub client: rumqttc::AsyncClient,
    publishes: mpsc::UnboundedReceiver<rumqttc::Publish>,
    /// Every other incoming packet (SUBACK, PUBACK ...), to wait for acknowledgements.
    incoming: mpsc::UnboundedReceiver<rumqttc::Packet>,
    pub session_present: bool,
    task: tokio::task::JoinHandle<()>,
}

pub fn options(addr: SocketAddr, client_id: &str) -> rumqttc::MqttOptions {
    let mut o = rumqttc::MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(1 << 20, 1 << 20);
    o
}

impl Client {
    pub async fn connect(addr: SocketAddr, client_id: &str) -> Client {
        Client::connect_with(options(addr, client_id)).await
    }

    /// CONNECT with a user name and password, expecting success.
    pub async fn login(addr: SocketAddr, client_id: &str, user: &str, password: &str) -> Client {
        let mut o = options(addr, client_id);
        o.set_credentials(user, password);
        Client::connect_with(o).await
    }

    /// CONNECT, expecting success.
    pub async fn connect_with(options: rumqttc::MqttOptions) -> Client {
        match Client::try_connect_with(options).await {
            Ok(client) => client,
            Err(code) => panic!("CONNECT refused: {code:?}"),
        }
    }

    /// CONNECT; the CONNACK code when the broker refuses.
    pub async fn try_connect_with(
        options: rumqttc::MqttOptions,
    ) -> Result<Client, rumqttc::ConnectReturnCode> {
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 1000);
        let (tx, publishes) = mpsc::unbounded_channel();
        let (incoming_tx, incoming) = mpsc::unbounded_channel();
        let (connack_tx, connack_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut connack_tx = Some(connack_tx);
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(ack))) => {
                        if let Some(t) = connack_tx.take() {
                            let _ = t.send(Ok(ack));
                        }
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        let _ = tx.send(p);
                    }
                    Ok(rumqttc::Event::Incoming(other)) => {
                        let _ = incoming_tx.send(other);
                    }
                    Ok(_) => {}
                    Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
                        if let Some(t) = connack_tx.take() {
                            let _ = t.send(Err(code));
                        }
                        break;
                    }
                    Err(_) => break,
                }
            }
        });
        let ack = tokio::time::timeout(STEP, connack_rx)
            .await
            .expect("CONNACK in time")
            .expect("connected")?;
        if ack.code != rumqttc::ConnectReturnCode::Success {
            return Err(ack.code);
        }
        Ok(Client {
            client,
            publishes,
            incoming,
            session_present: ack.session_present,
            task,
        })
    }

    /// The next non-PUBLISH packet matching `pred` (others are skipped).
    pub async fn wait_for(&mut self, pred: impl Fn(&rumqttc::Packet) -> bool) -> rumqttc::Packet {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let p = tokio::time::timeout_at(deadline, self.incoming.recv())
                .await
                .expect("the awaited packet in time")
                .expect("event loop alive");
            if pred(&p) {
                return p;
            }
        }
    }

    /// SUBSCRIBE and wait for the SUBACK; returns its return codes.
    pub async fn subscribe(
        &mut self,
        filter: &str,
        qos: rumqttc::QoS,
    ) -> Vec<rumqttc::SubscribeReasonCode> {
        self.client.subscribe(filter, qos).await.expect("subscribe");
        match self
            .wait_for(|p| matches!(p, rumqttc::Packet::SubAck(_)))
            .await
        {
            rumqttc::Packet::SubAck(s) => s.return_codes,
            _ => unreachable!(),
        }
    }

    pub async fn unsubscribe(&mut self, filter: &str) {
        self.client.unsubscribe(filter).await.expect("unsubscribe");
        self.wait_for(|p| matches!(p, rumqttc::Packet::UnsubAck(_)))
            .await;
    }

    /// PUBLISH and, for QoS 1/2, wait until the broker acknowledged it (PUBACK / PUBCOMP).
    pub async fn publish(&mut self, topic: &str, qos: rumqttc::QoS, retain: bool, payload: &[u8]) {
        self.client
            .publish(topic, qos, retain, payload.to_vec())
            .await
            .expect("publish");
        match qos {
            rumqttc::QoS::AtMostOnce => {}
            rumqttc::QoS::AtLeastOnce => {
                self.wait_for(|p| matches!(p, rumqttc::Packet::PubAck(_)))
                    .await;
            }
            rumqttc::QoS::ExactlyOnce => {
                self.wait_for(|p| matches!(p, rumqttc::Packet::PubComp(_)))
                    .await;
            }
        }
    }

    pub async fn next_publish(&mut self) -> rumqttc::Publish {
        tokio::time::timeout(STEP, self.publishes.recv())
            .await
            .expect("a PUBLISH in time")
            .expect("event loop alive")
    }

    /// The next PUBLISH, or `None` when nothing arrives for `within`.
    pub async fn publish_within(&mut self, within: Duration) -> Option<rumqttc::Publish> {
        tokio::time::timeout(within, self.publishes.recv())
            .await
            .ok()
            .flatten()
    }

    /// Asserts that nothing arrives for `within`.
    pub async fn no_publish_within(&mut self, within: Duration) {
        if let Ok(Some(p)) = tokio::time::timeout(within, self.publishes.recv()).await {
            panic!("unexpected PUBLISH on {}: {:?}", p.topic, p.payload);
        }
    }

    /// Close with DISCONNECT (no will).
    pub async fn disconnect(self) {
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(STEP, self.task).await;
    }

    /// Drop the connection without DISCONNECT (abnormal close: the will is published).
    pub fn kill(self) {
        self.task.abort();
    }
}
