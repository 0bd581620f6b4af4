//! The QoS 2 subscriber of the chaos load, on ferromq's own codec rather than rumqttc:
//! rumqttc 0.24 forgets its incoming QoS 2 state at every reconnection and then closes the
//! connection on the PUBREL a broker must re-send for a resumed session (MQTT 5 4.4; rumqttc
//! issue 664), so a rumqttc subscriber whose session moves reconnects for ever. This one does
//! what the specification asks of a receiver: PUBREC for every QoS 2 PUBLISH, a PUBLISH whose
//! packet id awaits its PUBREL taken as the re-send it is (not a new message), and PUBCOMP for
//! every PUBREL, known or not (MQTT 5 4.3.3). Otherwise it behaves as the rumqttc subscriber:
//! persistent session (3.1.1 clean session 0, or MQTT 5 clean start 0 with expiry 3600 s),
//! the next address of its list whenever a connection fails, the same records.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use ferromq::protocol::{
    decode, encode, Ack, Connect, Packet, Properties, ProtocolVersion, QoS, RetainHandling,
    Subscribe, SubscriptionOptions,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::load::LoadConfig;
use super::mqtt::{ClientSettings, Protocol, SESSION_EXPIRY_S};
use super::recorder::{
    decode_payload, trace_deliveries, ClientRef, Clock, ConnectRecord, ConnectionLog, Delivery,
    DisconnectRecord,
};

/// What the subscriber needs from the load.
pub struct Qos2Subscriber {
    pub id: u32,
    pub filter: String,
    pub settings: ClientSettings,
    pub addresses: Arc<[SocketAddr]>,
    /// Index of its first address.
    pub start: usize,
    pub config: LoadConfig,
    pub clock: Clock,
    pub log: ConnectionLog,
    pub publishing_over: Arc<AtomicBool>,
    pub ready: tokio::sync::mpsc::Sender<()>,
}

/// One connection.
struct Wire {
    stream: TcpStream,
    buf: BytesMut,
    version: ProtocolVersion,
}

impl Wire {
    async fn send(&mut self, packet: Packet) -> Result<(), String> {
        let mut out = BytesMut::new();
        encode(&packet, self.version, &mut out).map_err(|e| e.to_string())?;
        self.stream.write_all(&out).await.map_err(|e| e.to_string())
    }

    /// The next packet; `Ok(None)` when nothing came within `within`.
    async fn recv(&mut self, within: Duration) -> Result<Option<Packet>, String> {
        let deadline = Instant::now() + within;
        loop {
            match decode(&mut self.buf, Some(self.version), usize::MAX) {
                Ok(Some(p)) => return Ok(Some(p)),
                Ok(None) => {}
                Err(e) => return Err(format!("malformed packet: {e}")),
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return Ok(None),
                Ok(Ok(0)) => return Err("connection closed".into()),
                Ok(Err(e)) => return Err(e.to_string()),
                Ok(Ok(_)) => {}
            }
        }
    }
}

impl Qos2Subscriber {
    async fn connect(&self, address: SocketAddr) -> Result<(Wire, bool), String> {
        let bound = Duration::from_secs(self.settings.connect_timeout_s.max(1));
        let stream = tokio::time::timeout(bound, TcpStream::connect(address))
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let version = match self.settings.protocol {
            Protocol::V311 => ProtocolVersion::V311,
            Protocol::V5 => ProtocolVersion::V5,
        };
        let mut wire = Wire {
            stream,
            buf: BytesMut::new(),
            version,
        };
        let connect = Connect {
            protocol: version,
            clean_start: false,
            keep_alive_secs: u16::try_from(self.settings.keep_alive.as_secs()).unwrap_or(60),
            client_id: self.settings.client_id.clone(),
            will: None,
            username: None,
            password: None,
            properties: (version == ProtocolVersion::V5).then(|| {
                Box::new(Properties {
                    session_expiry_interval: Some(SESSION_EXPIRY_S),
                    ..Properties::default()
                })
            }),
        };
        wire.send(Packet::Connect(Box::new(connect))).await?;
        match wire.recv(bound).await? {
            Some(Packet::ConnAck(ack))
                if ack.reason == ferromq::protocol::ConnectReason::Success =>
            {
                Ok((wire, ack.session_present))
            }
            Some(Packet::ConnAck(ack)) => Err(format!("CONNACK {:?}", ack.reason)),
            Some(other) => Err(format!("expected CONNACK, got {other:?}")),
            None => Err("no CONNACK in time".into()),
        }
    }

    fn subscribe_packet(&self) -> Packet {
        Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![(
                self.filter.clone(),
                SubscriptionOptions {
                    qos: QoS::ExactlyOnce,
                    no_local: false,
                    retain_as_published: false,
                    retain_handling: RetainHandling::SendAtSubscribe,
                },
            )],
            properties: None,
        })
    }

    /// Run until publishing is over and nothing arrived for `quiet` (or `drain` passed).
    pub async fn run(self) -> Vec<Delivery> {
        let me = ClientRef::Subscriber(self.id);
        let mut deliveries = Vec::new();
        let mut awaiting_release: HashSet<u16> = HashSet::new();
        let mut current = self.start;
        let mut connected_before = false;
        let mut subscribed = false;
        let mut over_since: Option<Instant> = None;
        let ping_every = (self.settings.keep_alive / 2).max(Duration::from_millis(500));
        'connections: loop {
            if self.publishing_over.load(Ordering::Relaxed)
                && over_since.is_some_and(|o| o.elapsed() >= self.config.drain)
            {
                break;
            }
            let index = current % self.addresses.len();
            let (mut wire, session_present) = match self.connect(self.addresses[index]).await {
                Ok(connected) => connected,
                Err(error) => {
                    self.lost(me, index, error);
                    current += 1;
                    tokio::time::sleep(self.config.retry_delay).await;
                    continue;
                }
            };
            self.log.connected(ConnectRecord {
                client: me,
                t_us: self.clock.now_us(),
                address: index,
                session_present,
                reconnect: connected_before,
            });
            connected_before = true;
            if !session_present {
                // A session the broker lost has no subscription and no exchange left.
                awaiting_release.clear();
            }
            // Until a SUBACK came, subscribe whatever the flag says: a first CONNECT answered
            // after the client's timeout made the session its retry resumes.
            if !session_present || !subscribed {
                if let Err(error) = wire.send(self.subscribe_packet()).await {
                    self.lost(me, index, error);
                    current += 1;
                    continue;
                }
            }
            let mut last_activity = Instant::now();
            let mut last_sent = Instant::now();
            loop {
                if self.publishing_over.load(Ordering::Relaxed) {
                    let over = *over_since.get_or_insert_with(Instant::now);
                    if last_activity.elapsed() >= self.config.quiet
                        || over.elapsed() >= self.config.drain
                    {
                        let _ = wire
                            .send(Packet::Disconnect(ferromq::protocol::Disconnect {
                                reason: 0,
                                properties: None,
                            }))
                            .await;
                        break 'connections;
                    }
                }
                if last_sent.elapsed() >= ping_every {
                    if let Err(error) = wire.send(Packet::PingReq).await {
                        self.lost(me, index, error);
                        break;
                    }
                    last_sent = Instant::now();
                }
                let packet = match wire.recv(Duration::from_millis(100)).await {
                    Ok(Some(packet)) => packet,
                    Ok(None) => continue,
                    Err(error) => {
                        self.lost(me, index, error);
                        break;
                    }
                };
                let now = self.clock.now_us();
                let answer = match packet {
                    Packet::SubAck(_) => {
                        if !subscribed {
                            subscribed = true;
                            let _ = self.ready.try_send(());
                        }
                        None
                    }
                    Packet::Publish(p) => {
                        last_activity = Instant::now();
                        let fresh = match (p.qos, p.packet_id) {
                            (QoS::ExactlyOnce, Some(id)) => awaiting_release.insert(id),
                            _ => true,
                        };
                        let decoded = decode_payload(&p.payload);
                        if let Some((publisher, seq, _)) = decoded.filter(|_| trace_deliveries()) {
                            eprintln!(
                                "delivery: subscriber {} publisher {publisher} seq {seq} packet \
                                 id {:?} qos {:?} dup {} fresh {fresh} at {} ms",
                                self.id,
                                p.packet_id,
                                p.qos,
                                p.dup,
                                now / 1000
                            );
                        }
                        if fresh {
                            if let Some((publisher, seq, _)) = decoded {
                                deliveries.push(Delivery {
                                    subscriber: self.id,
                                    publisher,
                                    seq,
                                    t_recv_us: now,
                                    dup: p.dup,
                                });
                            }
                        }
                        match (p.qos, p.packet_id) {
                            (QoS::ExactlyOnce, Some(id)) => Some(Packet::PubRec(Ack::new(id))),
                            (QoS::AtLeastOnce, Some(id)) => Some(Packet::PubAck(Ack::new(id))),
                            _ => None,
                        }
                    }
                    Packet::PubRel(a) => {
                        last_activity = Instant::now();
                        if trace_deliveries() {
                            eprintln!(
                                "delivery: subscriber {} PUBREL {} at {} ms",
                                self.id,
                                a.packet_id,
                                now / 1000
                            );
                        }
                        awaiting_release.remove(&a.packet_id);
                        Some(Packet::PubComp(Ack::new(a.packet_id)))
                    }
                    Packet::Disconnect(d) => {
                        self.lost(me, index, format!("DISCONNECT {:#04x}", d.reason));
                        break;
                    }
                    _ => None,
                };
                if let Some(answer) = answer {
                    if let Err(error) = wire.send(answer).await {
                        self.lost(me, index, error);
                        break;
                    }
                    last_sent = Instant::now();
                }
            }
            current += 1;
            tokio::time::sleep(self.config.retry_delay).await;
        }
        deliveries
    }

    fn lost(&self, client: ClientRef, address: usize, reason: String) {
        self.log.lost(DisconnectRecord {
            client,
            t_us: self.clock.now_us(),
            address,
            reason,
        });
    }
}
