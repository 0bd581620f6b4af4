//! Opening STOMP connections with the load generator's own STOMP codec (`stomp_wire.rs`): TCP connect (and TLS with `--tls`),
//! CONNECT/CONNECTED in STOMP 1.2 without heart-beats, SUBSCRIBE confirmed by a RECEIPT; every
//! step bounded by a timeout so that a broker that never answers cannot hang a run.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::conn::ConnectParams;
use crate::stomp_wire::{self, encode, Command, Frame};
use crate::stream::Stream;

/// How a STOMP subscriber acknowledges (STOMP 1.2 "SUBSCRIBE ack Header").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// The broker counts a message as delivered when it sends it.
    Auto,
    /// The subscriber sends an ACK for each MESSAGE.
    ClientIndividual,
}

impl AckMode {
    fn header(self) -> &'static str {
        match self {
            AckMode::Auto => "auto",
            AckMode::ClientIndividual => "client-individual",
        }
    }
}

/// STOMP settings of a run.
#[derive(Debug, Clone, Copy)]
pub struct StompParams {
    /// The broker's STOMP connector.
    pub addr: SocketAddr,
    /// SEND with `persistent:true`.
    pub persistent: bool,
    /// SEND with a `receipt` header; publishers then keep at most `--inflight` SENDs without a
    /// RECEIPT, as MQTT QoS 1 publishers do with PUBACKs.
    pub receipt: bool,
    pub ack: AckMode,
}

/// An established STOMP 1.2 connection: the socket and the bytes read past the last frame.
pub struct StompConn {
    pub stream: Stream,
    pub rbuf: BytesMut,
}

impl StompConn {
    /// Connects and waits for CONNECTED.
    pub async fn open(
        params: &ConnectParams,
        addr: SocketAddr,
        client_id: &str,
    ) -> Result<StompConn, String> {
        tokio::time::timeout(
            params.timeout,
            Self::open_unbounded(params, addr, client_id),
        )
        .await
        .map_err(|_| format!("{client_id}: no CONNECTED within {:?}", params.timeout))?
    }

    async fn open_unbounded(
        params: &ConnectParams,
        addr: SocketAddr,
        client_id: &str,
    ) -> Result<StompConn, String> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        tcp.set_nodelay(true)
            .map_err(|e| format!("{client_id}: set_nodelay: {e}"))?;
        let stream = match &params.tls {
            Some(tls) => tls
                .handshake(tcp)
                .await
                .map_err(|e| format!("{client_id}: {e}"))?,
            None => Stream::Plain(tcp),
        };
        let mut conn = StompConn {
            stream,
            rbuf: BytesMut::with_capacity(params.read_buf_bytes),
        };
        let connect = Frame::new(Command::Connect)
            .with_header("accept-version", "1.2")
            .with_header("host", "localhost")
            .with_header("heart-beat", "0,0")
            .with_header("client-id", client_id);
        conn.send(&connect, Instant::now() + params.timeout).await?;
        let connected = conn.next_frame().await?;
        match connected.command {
            Command::Connected if connected.header("version") == Some("1.2") => Ok(conn),
            Command::Connected => Err(format!(
                "{client_id}: the broker chose STOMP {:?}, not 1.2",
                connected.header("version")
            )),
            _ => Err(format!("{client_id}: {}", describe(&connected))),
        }
    }

    /// SUBSCRIBE to `destination` with subscription id `id`, and wait for its RECEIPT.
    pub async fn subscribe(
        &mut self,
        destination: &str,
        id: &str,
        ack: AckMode,
        timeout: Duration,
    ) -> Result<(), String> {
        let subscribe = Frame::new(Command::Subscribe)
            .with_header("destination", destination)
            .with_header("id", id)
            .with_header("ack", ack.header())
            .with_header("receipt", "subscribed");
        self.send(&subscribe, Instant::now() + timeout).await?;
        let frame = tokio::time::timeout(timeout, self.next_frame())
            .await
            .map_err(|_| format!("no RECEIPT for SUBSCRIBE {destination} within {timeout:?}"))??;
        match (frame.command, frame.header("receipt-id")) {
            (Command::Receipt, Some("subscribed")) => Ok(()),
            _ => Err(format!("SUBSCRIBE {destination}: {}", describe(&frame))),
        }
    }

    pub async fn send(&mut self, frame: &Frame, deadline: Instant) -> Result<(), String> {
        let mut out = BytesMut::new();
        encode(frame, &mut out);
        self.write(&out, deadline).await
    }

    /// Writes all of `bytes`, giving up at `deadline` (a broker that stops reading must not
    /// hang the run).
    pub async fn write(&mut self, bytes: &[u8], deadline: Instant) -> Result<(), String> {
        match tokio::time::timeout_at(deadline.into(), self.stream.send_all(bytes)).await {
            Ok(result) => result.map_err(|e| format!("write to broker: {e}")),
            Err(_) => Err(
                "the broker stopped reading: a write was still blocked at the deadline".to_owned(),
            ),
        }
    }

    /// Takes the next complete frame out of what has been read (heart-beats skipped).
    pub fn buffered_frame(&mut self) -> Result<Option<Frame>, String> {
        stomp_wire::decode(&mut self.rbuf).map_err(|e| format!("from broker: {e}"))
    }

    /// Reads until one whole frame is buffered (setup only).
    async fn next_frame(&mut self) -> Result<Frame, String> {
        loop {
            if let Some(frame) = self.buffered_frame()? {
                return Ok(frame);
            }
            let n = self
                .stream
                .read_buf(&mut self.rbuf)
                .await
                .map_err(|e| format!("read from broker: {e}"))?;
            if n == 0 {
                return Err("broker closed the connection during setup".to_owned());
            }
        }
    }

    /// DISCONNECT, best effort, bounded to one second.
    pub async fn disconnect(&mut self) {
        let _ = self
            .send(
                &Frame::new(Command::Disconnect),
                Instant::now() + Duration::from_secs(1),
            )
            .await;
    }
}

/// A frame the load generator did not expect, for an error message (an ERROR's `message`).
pub fn describe(frame: &Frame) -> String {
    match frame.command {
        Command::Error => format!(
            "broker sent ERROR: {}",
            frame.header("message").unwrap_or("(no message)")
        ),
        other => format!("unexpected {} frame from broker", other.as_str()),
    }
}
