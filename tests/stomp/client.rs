//! A raw STOMP client for the tests: frames as text over TCP or WebSocket, parsed by a small
//! parser of its own (independent of the broker's codec), with timeouts on every wait.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::support::STEP;

/// A frame as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub command: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

enum Transport {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Ws(Box<WebSocketStream<TcpStream>>),
}

pub struct StompClient {
    transport: Transport,
    buf: BytesMut,
    /// WebSocket messages received, each checked to hold whole frames.
    pub ws_messages: usize,
}

/// `COMMAND\nname:value...\n\nbody\0`.
pub fn frame(command: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut s = format!("{command}\n");
    for (n, v) in headers {
        s.push_str(&format!("{n}:{v}\n"));
    }
    s.push('\n');
    s.push_str(body);
    s.push('\0');
    s
}

impl StompClient {
    pub async fn tcp(addr: SocketAddr) -> StompClient {
        let stream = tokio::time::timeout(STEP, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("tcp connect");
        StompClient {
            transport: Transport::Tcp(stream),
            buf: BytesMut::new(),
            ws_messages: 0,
        }
    }

    /// A client over an established TLS stream.
    pub fn tls(stream: tokio_rustls::client::TlsStream<TcpStream>) -> StompClient {
        StompClient {
            transport: Transport::Tls(Box::new(stream)),
            buf: BytesMut::new(),
            ws_messages: 0,
        }
    }

    /// A WebSocket client offering `subprotocols` (comma-separated; empty: none); returns the
    /// sub-protocol the server chose too.
    pub async fn ws(addr: SocketAddr, subprotocols: &str) -> (StompClient, Option<String>) {
        let tcp = TcpStream::connect(addr).await.expect("tcp connect");
        let mut request = format!("ws://{addr}/")
            .into_client_request()
            .expect("request");
        if !subprotocols.is_empty() {
            request.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_str(subprotocols).expect("header"),
            );
        }
        let (ws, response) =
            tokio::time::timeout(STEP, tokio_tungstenite::client_async(request, tcp))
                .await
                .expect("upgrade in time")
                .expect("upgrade");
        let chosen = response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (
            StompClient {
                transport: Transport::Ws(Box::new(ws)),
                buf: BytesMut::new(),
                ws_messages: 0,
            },
            chosen,
        )
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.try_send_raw(bytes).await.expect("write");
    }

    /// [`Self::send_raw`] for a test whose broker may die under it: the write's error
    /// instead of a panic.
    pub async fn try_send_raw(&mut self, bytes: &[u8]) -> Result<(), String> {
        match &mut self.transport {
            Transport::Tcp(s) => s.write_all(bytes).await.map_err(|e| e.to_string()),
            Transport::Tls(s) => {
                s.write_all(bytes).await.map_err(|e| e.to_string())?;
                s.flush().await.map_err(|e| e.to_string())
            }
            Transport::Ws(ws) => ws
                .send(Message::Text(
                    String::from_utf8(bytes.to_vec()).expect("utf-8").into(),
                ))
                .await
                .map_err(|e| e.to_string()),
        }
    }

    pub async fn send(&mut self, command: &str, headers: &[(&str, &str)], body: &str) {
        self.send_raw(frame(command, headers, body).as_bytes())
            .await;
    }

    /// [`Self::send`] returning the write's error (see [`Self::try_send_raw`]).
    pub async fn try_send(
        &mut self,
        command: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<(), String> {
        self.try_send_raw(frame(command, headers, body).as_bytes())
            .await
    }

    /// A client connected (CONNECT with `headers`) once a broker that is starting listens
    /// on `addr`.
    pub async fn connected_when_up(addr: SocketAddr, headers: &[(&str, &str)]) -> StompClient {
        let addr = crate::support::listening(addr.port()).await;
        let mut c = StompClient::tcp(addr).await;
        c.connect(headers).await;
        c
    }

    /// CONNECT (1.2 unless `headers` say otherwise) and expect CONNECTED.
    pub async fn connect(&mut self, headers: &[(&str, &str)]) -> Received {
        let mut all: Vec<(&str, &str)> = vec![("host", "localhost")];
        if !headers.iter().any(|(n, _)| *n == "accept-version") {
            all.push(("accept-version", "1.2"));
        }
        all.extend_from_slice(headers);
        self.send("CONNECT", &all, "").await;
        let f = self.recv().await;
        assert_eq!(f.command, "CONNECTED", "{f:?}");
        f
    }

    /// The next frame within `within`; `None` when nothing came or the connection closed.
    pub async fn recv_within(&mut self, within: Duration) -> Option<Received> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(f) = self.parse() {
                return Some(f);
            }
            let read = tokio::time::timeout_at(deadline, self.read_more()).await;
            match read {
                Ok(true) => {}
                Ok(false) | Err(_) => return None,
            }
        }
    }

    /// The bodies of browse subscription `id`'s MESSAGE frames, up to its `browser:end`
    /// (`message-id:0`, no body; not returned).
    pub async fn browsed(&mut self, id: &str) -> Vec<String> {
        let mut bodies = Vec::new();
        loop {
            let f = self
                .recv_within(Duration::from_secs(10))
                .await
                .expect("a MESSAGE before browser:end");
            assert_eq!(f.command, "MESSAGE", "{f:?}");
            assert_eq!(f.header("subscription"), Some(id), "{f:?}");
            if f.header("browser") == Some("end") {
                assert_eq!(f.header("message-id"), Some("0"));
                assert!(f.body.is_empty());
                return bodies;
            }
            bodies.push(f.body_text());
        }
    }

    pub async fn recv(&mut self) -> Received {
        self.recv_within(STEP).await.expect("a frame in time")
    }

    /// Expect the server to close the connection within `within` (frames before are skipped).
    pub async fn expect_closed_within(&mut self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            self.buf.clear();
            match tokio::time::timeout_at(deadline, self.read_more()).await {
                Ok(false) => return,
                Ok(true) => {}
                Err(_) => panic!("connection still open after {within:?}"),
            }
        }
    }

    /// How many heart-beat EOLs arrive within `within` (the connection must send nothing else).
    pub async fn heart_beats_within(&mut self, within: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + within;
        let mut count = 0;
        loop {
            count += self.buf.iter().filter(|&&b| b == b'\n').count();
            assert!(
                self.buf.iter().all(|&b| b == b'\n' || b == b'\r'),
                "only heart-beats expected: {:?}",
                self.buf
            );
            self.buf.clear();
            match tokio::time::timeout_at(deadline, self.read_more()).await {
                Ok(true) => {}
                Ok(false) | Err(_) => return count,
            }
        }
    }

    /// Read more bytes; false at EOF or a socket error.
    async fn read_more(&mut self) -> bool {
        match &mut self.transport {
            Transport::Tcp(s) => {
                let mut chunk = [0u8; 8192];
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => false,
                    Ok(n) => {
                        self.buf.extend_from_slice(&chunk[..n]);
                        true
                    }
                }
            }
            Transport::Tls(s) => {
                let mut chunk = [0u8; 8192];
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => false,
                    Ok(n) => {
                        self.buf.extend_from_slice(&chunk[..n]);
                        true
                    }
                }
            }
            Transport::Ws(ws) => loop {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => {
                        self.ws_messages += 1;
                        self.buf.extend_from_slice(t.as_bytes());
                        return true;
                    }
                    Some(Ok(Message::Binary(b))) => {
                        self.ws_messages += 1;
                        self.buf.extend_from_slice(&b);
                        return true;
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return false,
                    Some(Ok(_)) => {}
                }
            },
        }
    }

    /// One complete frame from the buffer (heart-beat EOLs skipped).
    fn parse(&mut self) -> Option<Received> {
        while matches!(self.buf.first(), Some(b'\n') | Some(b'\r')) {
            self.buf.advance(1);
        }
        let head_end = self.buf.windows(2).position(|w| w == b"\n\n")?;
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let mut lines = head.lines();
        let command = lines.next()?.to_owned();
        // STOMP 1.1+ escaping (every frame of these tests but CONNECTED is escaped).
        let escaped = command != "CONNECTED";
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| {
                if escaped {
                    (unescape(n), unescape(v))
                } else {
                    (n.to_owned(), v.to_owned())
                }
            })
            .collect();
        let body_start = head_end + 2;
        let length = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok());
        let body_end = match length {
            Some(len) if self.buf.len() > body_start + len => body_start + len,
            Some(_) => return None,
            None => body_start + self.buf[body_start..].iter().position(|&b| b == 0)?,
        };
        let body = self.buf[body_start..body_end].to_vec();
        self.buf.advance(body_end + 1);
        Some(Received {
            command,
            headers,
            body,
        })
    }
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (c, c == '\\') {
            (_, false) => out.push(c),
            _ => match chars.next() {
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some('c') => out.push(':'),
                Some(other) => out.push(other),
                None => {}
            },
        }
    }
    out
}
