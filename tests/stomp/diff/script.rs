//! What a script runs with: STOMP connections and MQTT clients on one broker that write every
//! frame they send and receive into one transcript, normalised so that two brokers' transcripts
//! are equal when the brokers behave the same.
//!
//! Normalisation (what legitimately differs between two correct brokers):
//! - `message-id`, `ack` (STOMP 1.2's acknowledgement id), `session`, `server`, `timestamp`:
//!   values are the broker's own; shown as `<message-id>` etc. A script that needs a value (to
//!   ACK it) takes it from the frame, not the transcript;
//! - `expires`: `0` (never) stays, any other value is computed from the sending time: `<time>`;
//! - header order: sorted by name (STOMP does not order headers; a repeated header keeps the
//!   order of its occurrences);
//! - ERROR frames: the `message` header and the body are free text (ActiveMQ's body is a Java
//!   stack trace): shown as `<text>` when present;
//! - `content-length` on MESSAGE and ERROR frames is not shown: ferromq writes it on every one
//!   (STOMP 1.2: SHOULD), ActiveMQ only on bytes messages (docs/compatibility.md); the body is
//!   compared byte for byte, so a wrong length still shows.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};

use super::wire::{show_bytes, Read, WireConn, WireFrame};

/// Longest wait for a frame the script expects; nothing may hang longer.
pub const WAIT: Duration = Duration::from_secs(5);

/// The addresses of one broker's connectors.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub stomp: SocketAddr,
    pub mqtt: SocketAddr,
}

/// The transcript of one script on one broker: a line per thing seen.
#[derive(Debug, Clone, Default)]
pub struct Transcript(Arc<Mutex<Vec<String>>>);

impl Transcript {
    pub fn note(&self, line: impl Into<String>) {
        if let Ok(mut lines) = self.0.lock() {
            lines.push(line.into());
        }
    }

    pub fn lines(&self) -> Vec<String> {
        self.0.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

/// A script's view of a broker.
pub struct Ctx {
    pub target: Target,
    pub log: Transcript,
}

impl Ctx {
    pub fn new(target: Target) -> Ctx {
        Ctx {
            target,
            log: Transcript::default(),
        }
    }

    /// A STOMP connection named `name` in the transcript, not yet connected.
    pub async fn open(&self, name: &str) -> Conn {
        Conn {
            name: name.to_owned(),
            wire: WireConn::open(self.target.stomp).await,
            log: self.log.clone(),
        }
    }

    /// A STOMP connection that sent CONNECT with `accept-version` (if given), `login`/`passcode`
    /// (if given) and `extra` headers; the answer is in the transcript.
    pub async fn connect(
        &self,
        name: &str,
        version: Option<&str>,
        login: Option<(&str, &str)>,
        extra: &[(&str, &str)],
    ) -> (Conn, Option<WireFrame>) {
        let mut conn = self.open(name).await;
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(v) = version {
            headers.push(("accept-version", v));
        }
        headers.push(("host", "localhost"));
        if let Some((user, pass)) = login {
            headers.push(("login", user));
            headers.push(("passcode", pass));
        }
        headers.extend_from_slice(extra);
        conn.send("CONNECT", &headers, b"").await;
        let answer = conn.next().await;
        (conn, answer)
    }

    /// [`Ctx::connect`] as `admin` (who may do everything) with STOMP `version`.
    pub async fn admin(&self, name: &str, version: &str) -> Conn {
        let (conn, answer) = self
            .connect(name, Some(version), Some(("admin", "secret")), &[])
            .await;
        assert_eq!(
            answer.as_ref().map(|f| f.command.as_str()),
            Some("CONNECTED"),
            "{name}: admin's CONNECT"
        );
        conn
    }

    /// An MQTT 3.1.1 client (rumqttc) logged in as `admin`, named `name` in the transcript.
    pub async fn mqtt(&self, name: &str, client_id: &str) -> Mqtt {
        let mut options = MqttOptions::new(
            client_id,
            self.target.mqtt.ip().to_string(),
            self.target.mqtt.port(),
        );
        options.set_credentials("admin", "secret");
        options.set_keep_alive(Duration::from_secs(30));
        let (client, events) = AsyncClient::new(options, 16);
        let mut mqtt = Mqtt {
            name: name.to_owned(),
            client,
            events,
            log: self.log.clone(),
        };
        let connack = mqtt
            .wait(|p| matches!(p, Packet::ConnAck(_)))
            .await
            .unwrap_or_else(|| panic!("{name}: no CONNACK"));
        self.log.note(format!("{name} <- {connack:?}"));
        mqtt
    }
}

/// One STOMP connection of a script.
pub struct Conn {
    pub name: String,
    wire: WireConn,
    log: Transcript,
}

impl Conn {
    /// Send a frame (headers written as given) and note it.
    pub async fn send(&mut self, command: &str, headers: &[(&str, &str)], body: &[u8]) {
        // The id an ACK or NACK names is the broker's own: not part of the comparison.
        let acking = command == "ACK" || command == "NACK";
        let shown: Vec<String> = headers
            .iter()
            .map(|(n, v)| match *n {
                "id" | "message-id" if acking => format!("{n}:<{n}>"),
                // A time computed from now.
                "expires" if *v != "0" => format!("{n}:<time>"),
                _ => format!("{n}:{v}"),
            })
            .collect();
        self.log.note(format!(
            "{} -> {command} [{}] {:?}",
            self.name,
            shown.join(", "),
            show_bytes(body)
        ));
        self.wire.send(command, headers, body).await;
    }

    /// Send bytes as they are and note them.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.log
            .note(format!("{} -> raw {:?}", self.name, show_bytes(bytes)));
        self.wire.send_raw(bytes).await;
    }

    /// The next frame (noted), or `None` when the connection closed or nothing came within
    /// [`WAIT`] (noted too).
    pub async fn next(&mut self) -> Option<WireFrame> {
        self.next_within(WAIT).await
    }

    async fn next_within(&mut self, within: Duration) -> Option<WireFrame> {
        match self.wire.read(within).await {
            Read::Frame(frame) => {
                self.log
                    .note(format!("{} <- {}", self.name, normalise(&frame)));
                Some(frame)
            }
            Read::Closed => {
                self.log.note(format!("{} closed", self.name));
                None
            }
            Read::Timeout => {
                self.log
                    .note(format!("{} <- nothing within {within:?}", self.name));
                None
            }
            Read::Garbage(what) => {
                self.log.note(format!("{} <- garbage {what}", self.name));
                None
            }
        }
    }

    /// `n` frames (fewer when the connection closes or one does not come).
    pub async fn take(&mut self, n: usize) -> Vec<WireFrame> {
        let mut frames = Vec::new();
        for _ in 0..n {
            match self.next().await {
                Some(frame) => frames.push(frame),
                None => break,
            }
        }
        frames
    }

    /// Frames up to the RECEIPT for `receipt` (or an ERROR, or the end of the connection).
    pub async fn until_receipt(&mut self, receipt: &str) -> Vec<WireFrame> {
        let mut frames = Vec::new();
        while let Some(frame) = self.next().await {
            let done = frame.command == "ERROR"
                || (frame.command == "RECEIPT" && frame.header("receipt-id") == Some(receipt));
            frames.push(frame);
            if done {
                break;
            }
        }
        frames
    }

    /// MESSAGE frames until `ends` of them have the body `end` (a script's marker, sent last),
    /// noted sorted by `subscription` (stable: each subscription's own order is kept), since
    /// two brokers may interleave subscriptions differently; a frame the reader could not parse
    /// stays after the frame before it. Stops early at a frame that is not a MESSAGE, the end of
    /// the connection or after [`WAIT`] (noted).
    pub async fn gather(&mut self, ends: usize) -> Vec<WireFrame> {
        let mut frames: Vec<WireFrame> = Vec::new();
        // (subscription, line) in arrival order.
        let mut lines: Vec<(String, String)> = Vec::new();
        let mut seen = 0;
        let mut stop = None;
        while seen < ends {
            match self.wire.read(WAIT).await {
                Read::Frame(frame) if frame.command == "MESSAGE" => {
                    if frame.body == b"end" {
                        seen += 1;
                    }
                    let key = frame.header("subscription").unwrap_or_default().to_owned();
                    lines.push((key, format!("{} <- {}", self.name, normalise(&frame))));
                    frames.push(frame);
                }
                Read::Frame(frame) => {
                    stop = Some(format!("{} <- {}", self.name, normalise(&frame)));
                    break;
                }
                Read::Closed => {
                    stop = Some(format!("{} closed", self.name));
                    break;
                }
                Read::Timeout => {
                    stop = Some(format!(
                        "{} <- nothing more within {WAIT:?} ({seen} of {ends} ends)",
                        self.name
                    ));
                    break;
                }
                // A frame the reader could not parse: noted, the next ones still count.
                Read::Garbage(what) => {
                    let key = lines.last().map(|(k, _)| k.clone()).unwrap_or_default();
                    lines.push((key, format!("{} <- garbage {what}", self.name)));
                }
            }
        }
        lines.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, line) in lines {
            self.log.note(line);
        }
        if let Some(stop) = stop {
            self.log.note(stop);
        }
        frames
    }

    /// Is the connection still served? A DISCONNECT with a receipt: a RECEIPT says yes, the end
    /// of the connection says it was closed (both noted). The connection is done after this.
    pub async fn probe_alive(mut self) {
        self.send("DISCONNECT", &[("receipt", "alive?")], b"").await;
        self.until_receipt("alive?").await;
    }

    /// DISCONNECT with a receipt and wait for it (so that everything sent before is processed).
    pub async fn disconnect(mut self) {
        self.send("DISCONNECT", &[("receipt", "bye")], b"").await;
        self.until_receipt("bye").await;
    }

    /// Drop the TCP connection without DISCONNECT.
    pub fn drop_connection(self) {
        self.log.note(format!("{} dropped", self.name));
    }
}

/// One MQTT client of a script.
pub struct Mqtt {
    pub name: String,
    pub client: AsyncClient,
    events: EventLoop,
    log: Transcript,
}

impl Mqtt {
    /// Poll until a packet matches (`None` on a connection error or after [`WAIT`]).
    async fn wait(&mut self, mut pred: impl FnMut(&Packet) -> bool) -> Option<Packet> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.poll()).await {
                Err(_) => return None,
                Ok(Err(e)) => {
                    self.log.note(format!("{} error {e}", self.name));
                    return None;
                }
                Ok(Ok(Event::Incoming(packet))) if pred(&packet) => return Some(packet),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Subscribe and wait for the SUBACK (noted).
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) {
        self.log
            .note(format!("{} -> SUBSCRIBE {filter} {qos:?}", self.name));
        if let Err(e) = self.client.subscribe(filter, qos).await {
            panic!("{}: subscribe: {e}", self.name);
        }
        let suback = self.wait(|p| matches!(p, Packet::SubAck(_))).await;
        let codes = match suback {
            Some(Packet::SubAck(s)) => format!("{:?}", s.return_codes),
            other => format!("{other:?}"),
        };
        self.log.note(format!("{} <- SUBACK {codes}", self.name));
    }

    /// Publish and, at QoS 1, wait for the PUBACK.
    pub async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) {
        self.log.note(format!(
            "{} -> PUBLISH {topic} {qos:?} retain={retain} {:?}",
            self.name,
            show_bytes(payload)
        ));
        if let Err(e) = self
            .client
            .publish(topic, qos, retain, payload.to_vec())
            .await
        {
            panic!("{}: publish: {e}", self.name);
        }
        match qos {
            QoS::AtMostOnce => {
                // Flush the outgoing request: poll until the event loop has written it.
                let deadline = tokio::time::Instant::now() + WAIT;
                while let Ok(Ok(event)) =
                    tokio::time::timeout_at(deadline, self.events.poll()).await
                {
                    if matches!(event, Event::Outgoing(rumqttc::Outgoing::Publish(_))) {
                        break;
                    }
                }
            }
            _ => {
                let ack = self
                    .wait(|p| matches!(p, Packet::PubAck(_) | Packet::PubComp(_)))
                    .await;
                self.log.note(format!(
                    "{} <- {}",
                    self.name,
                    if ack.is_some() {
                        "acknowledged"
                    } else {
                        "no ack"
                    }
                ));
            }
        }
    }

    /// The next `n` PUBLISHes received (noted: topic, QoS, retain, payload).
    pub async fn take(&mut self, n: usize) {
        for _ in 0..n {
            match self.wait(|p| matches!(p, Packet::Publish(_))).await {
                Some(Packet::Publish(p)) => self.log.note(format!(
                    "{} <- PUBLISH {} {:?} retain={} {:?}",
                    self.name,
                    p.topic,
                    p.qos,
                    p.retain,
                    show_bytes(&p.payload)
                )),
                _ => {
                    self.log.note(format!("{} <- no PUBLISH", self.name));
                    return;
                }
            }
        }
    }

    pub async fn disconnect(mut self) {
        let _ = self.client.disconnect().await;
        let deadline = tokio::time::Instant::now() + WAIT;
        while let Ok(Ok(_)) = tokio::time::timeout_at(deadline, self.events.poll()).await {}
    }
}

/// A frame as one transcript line, normalised (see the module's documentation).
pub fn normalise(frame: &WireFrame) -> String {
    let error = frame.command == "ERROR";
    let mut headers: Vec<(String, String)> = frame
        .headers
        .iter()
        // ferromq writes `content-length` on every MESSAGE and ERROR (STOMP 1.2 says it SHOULD);
        // ActiveMQ only on bytes messages. The body itself is compared byte for byte.
        .filter(|(name, _)| !(name == "content-length" && (frame.command == "MESSAGE" || error)))
        .map(|(name, value)| {
            let value = match name.as_str() {
                "message-id" | "ack" | "session" | "server" | "timestamp" => {
                    format!("<{name}>")
                }
                "expires" if value != "0" => "<time>".to_owned(),
                "message" if error => "<text>".to_owned(),
                // Control characters (a CR a broker did not escape) shown visibly.
                _ => value
                    .chars()
                    .map(|c| {
                        if c.is_control() {
                            c.escape_default().to_string()
                        } else {
                            c.to_string()
                        }
                    })
                    .collect(),
            };
            (name.clone(), value)
        })
        .collect();
    headers.sort_by(|a, b| a.0.cmp(&b.0));
    let shown: Vec<String> = headers.iter().map(|(n, v)| format!("{n}:{v}")).collect();
    let body = if error && !frame.body.is_empty() {
        "<text>".to_owned()
    } else {
        format!("{:?}", show_bytes(&frame.body))
    };
    format!("{} [{}] {body}", frame.command, shown.join(", "))
}
