//! Opening MQTT connections: TCP connect (and TLS handshake with `--tls`), CONNECT/CONNACK, SUBSCRIBE/SUBACK, each bounded by a
//! timeout so that a broker that never answers cannot hang a benchmark run.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::stream::{Stream, TlsParams};
use crate::wire::{self, kind, Version};

/// An established MQTT session: the socket plus bytes already read past the last handled packet.
pub struct Conn {
    pub stream: Stream,
    pub rbuf: BytesMut,
    pub version: Version,
    pub session_present: bool,
}

/// Connection parameters shared by every client of a run.
#[derive(Debug, Clone)]
pub struct ConnectParams {
    pub addr: SocketAddr,
    pub version: Version,
    pub keep_alive_secs: u16,
    pub timeout: Duration,
    /// Initial read buffer per connection: large for traffic (one read drains many packets),
    /// small for idle connections (thousands of them).
    pub read_buf_bytes: usize,
    /// `Some` with `--tls`: every connection starts with a TLS handshake.
    pub tls: Option<TlsParams>,
    /// CONNECT's clean session flag (false: an MQTT 3.1.1 persistent session).
    pub clean_session: bool,
}

impl Conn {
    /// TCP connect (plus TLS handshake), send CONNECT (clean session unless
    /// `params.clean_session` is false), wait for CONNACK 0.
    pub async fn open(params: &ConnectParams, client_id: &str) -> Result<Conn, String> {
        let fut = Self::open_unbounded(params, client_id);
        tokio::time::timeout(params.timeout, fut)
            .await
            .map_err(|_| format!("{client_id}: no CONNACK within {:?}", params.timeout))?
    }

    async fn open_unbounded(params: &ConnectParams, client_id: &str) -> Result<Conn, String> {
        let stream = TcpStream::connect(params.addr)
            .await
            .map_err(|e| connect_error(params.addr, e))?;
        // Packets are batched by the callers; Nagle would only add latency on top.
        stream
            .set_nodelay(true)
            .map_err(|e| format!("{client_id}: set_nodelay: {e}"))?;
        let stream = match &params.tls {
            Some(tls) => tls
                .handshake(stream)
                .await
                .map_err(|e| format!("{client_id}: {e}"))?,
            None => Stream::Plain(stream),
        };
        let mut conn = Conn {
            stream,
            rbuf: BytesMut::with_capacity(params.read_buf_bytes),
            version: params.version,
            session_present: false,
        };
        let mut out = BytesMut::new();
        wire::connect(
            &mut out,
            params.version,
            client_id,
            params.clean_session,
            params.keep_alive_secs,
        );
        conn.write(&out, Instant::now() + params.timeout).await?;
        let (kind_seen, body) = conn.next_packet().await?;
        if kind_seen != kind::CONNACK {
            return Err(format!(
                "{client_id}: expected CONNACK, got packet type {kind_seen}"
            ));
        }
        let (session_present, code) = wire::connack(&body).map_err(|e| format!("CONNACK: {e}"))?;
        if code != 0 {
            return Err(format!(
                "{client_id}: broker refused the connection, CONNACK code {code}"
            ));
        }
        conn.session_present = session_present;
        Ok(conn)
    }

    /// SUBSCRIBE to `filter` and wait for a SUBACK granting it.
    pub async fn subscribe(
        &mut self,
        filter: &str,
        qos: u8,
        timeout: Duration,
    ) -> Result<u8, String> {
        let mut out = BytesMut::new();
        wire::subscribe(&mut out, self.version, 1, filter, qos);
        self.write(&out, Instant::now() + timeout).await?;
        let (kind_seen, body) = tokio::time::timeout(timeout, self.next_packet())
            .await
            .map_err(|_| format!("no SUBACK for {filter} within {timeout:?}"))??;
        if kind_seen != kind::SUBACK {
            return Err(format!(
                "expected SUBACK for {filter}, got packet type {kind_seen}"
            ));
        }
        let (_, codes) = wire::suback(self.version, &body).map_err(|e| format!("SUBACK: {e}"))?;
        match codes.first() {
            Some(&granted) if granted < 0x80 => Ok(granted),
            Some(&code) => Err(format!(
                "broker refused the subscription to {filter} (code {code:#04x})"
            )),
            None => Err(format!("SUBACK for {filter} has no return code")),
        }
    }

    /// Writes all of `bytes`, giving up at `deadline`: a broker that stops reading (ActiveMQ's
    /// producer flow control does) must not hang the run.
    pub async fn write(&mut self, bytes: &[u8], deadline: Instant) -> Result<(), String> {
        match tokio::time::timeout_at(deadline.into(), self.stream.send_all(bytes)).await {
            Ok(result) => result.map_err(|e| format!("write to broker: {e}")),
            Err(_) => Err(
                "the broker stopped reading: a write was still blocked at the deadline".to_owned(),
            ),
        }
    }

    /// Reads until one whole packet is buffered; returns its type and an owned copy of its body.
    /// Used only during setup, where copying a few bytes does not matter.
    async fn next_packet(&mut self) -> Result<(u8, Vec<u8>), String> {
        loop {
            if let Some((frame, used)) =
                wire::parse_frame(&self.rbuf).map_err(|e| format!("from broker: {e}"))?
            {
                let result = (frame.kind, frame.body.to_vec());
                let _ = self.rbuf.split_to(used);
                return Ok(result);
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
}

fn connect_error(addr: SocketAddr, e: std::io::Error) -> String {
    if e.raw_os_error() == Some(libc::EMFILE) || e.raw_os_error() == Some(libc::ENFILE) {
        format!("connect to {addr}: {e} (raise the open-file limit: ulimit -n)")
    } else {
        format!("connect to {addr}: {e}")
    }
}
