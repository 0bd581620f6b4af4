//! MQTT over WebSocket: the HTTP upgrade with sub-protocol negotiation, and an adapter that turns
//! the WebSocket message stream back into the byte stream the MQTT codec reads.
//!
//! ActiveMQ's `ws://` connector serves MQTT when the client offers a sub-protocol starting with
//! `mqtt` (`mqtt` for 3.1.1, `mqttv3.1` for 3.1) and STOMP otherwise: the highest of `v12.stomp`,
//! `v11.stomp`, `v10.stomp`, `stomp` offered is echoed, and a client offering none of these (or
//! nothing) gets STOMP without an echoed sub-protocol, as ActiveMQ does. Any request path is
//! accepted.
//!
//! MQTT packets may span several binary messages or share one; the adapter concatenates them.
//! Each write becomes one message, sent at once (no flush needed, as on TCP): binary for MQTT;
//! for STOMP text when it is UTF-8 (what browser clients expect), else binary. Pings are
//! answered by tungstenite, a close frame ends the stream, a text frame is an error for MQTT
//! (binary only) and bytes like any other for STOMP.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{header, HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::error::TransportError;

/// Read buffer size per WebSocket connection. tungstenite's default (128 KiB, eagerly
/// allocated) costs too much memory with thousands of mostly idle MQTT clients.
const WS_READ_BUFFER_BYTES: usize = 16 * 1024;

/// The largest MQTT fixed header (1 type byte + 4 remaining-length bytes): a WebSocket message
/// holding one maximal packet is this much longer than `maxFrameSize`.
const MQTT_FIXED_HEADER_MAX_BYTES: u64 = 5;

/// Pick the sub-protocol to answer with: the client's first offer starting with `mqtt`.
pub fn choose_subprotocol<'a>(offered: &[&'a str]) -> Option<&'a str> {
    offered.iter().copied().find(|p| p.starts_with("mqtt"))
}

/// The STOMP sub-protocols ActiveMQ's WebSocket transport knows.
const STOMP_SUBPROTOCOLS: &[&str] = &["v12.stomp", "v11.stomp", "v10.stomp", "stomp"];

/// What a WebSocket connection speaks, decided by its offered sub-protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsApp {
    Mqtt,
    Stomp,
}

/// The application protocol and the sub-protocol to echo: MQTT for an `mqtt*` offer, else
/// STOMP (echoing the highest STOMP sub-protocol offered, if any), as ActiveMQ decides.
pub fn choose_app<'a>(offered: &[&'a str]) -> (WsApp, Option<&'a str>) {
    if let Some(mqtt) = choose_subprotocol(offered) {
        return (WsApp::Mqtt, Some(mqtt));
    }
    // The highest STOMP version offered, whatever the order: the version CONNECT's
    // `accept-version` negotiates is the highest common one, and the echo must agree with it.
    let stomp = STOMP_SUBPROTOCOLS
        .iter()
        .find_map(|known| offered.iter().copied().find(|p| p == known));
    (WsApp::Stomp, stomp)
}

/// Every sub-protocol the request offers, in order.
fn offered_subprotocols(request: &Request) -> Vec<&str> {
    request
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

fn bad_request(reason: &str) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(format!("{reason}\n")));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    response
}

/// WebSocket limits for a connector whose MQTT packets may be `max_frame_size_bytes` long.
pub fn websocket_config(max_frame_size_bytes: u64) -> WebSocketConfig {
    let limit = max_frame_size_bytes.saturating_add(MQTT_FIXED_HEADER_MAX_BYTES);
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER_BYTES)
        // 0: each message goes to the socket when written, so that a write reaches the client
        // without a flush, as it does on TCP and TLS streams
        .write_buffer_size(0)
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit))
}

/// Run the server side of the WebSocket upgrade on `stream` (plain TCP or TLS).
pub async fn accept_websocket<S>(
    stream: S,
    max_frame_size_bytes: u64,
) -> Result<WsByteStream<S>, TransportError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut refusal: Option<String> = None;
    let mut app = WsApp::Mqtt;
    // the callback's signature, with its large error type, is tungstenite's
    #[allow(clippy::result_large_err)]
    let negotiate = |request: &Request, mut response: Response| {
        let offered = offered_subprotocols(request);
        let (chosen_app, chosen) = choose_app(&offered);
        app = chosen_app;
        let Some(chosen) = chosen else {
            return Ok(response);
        };
        match HeaderValue::from_str(chosen) {
            Ok(value) => {
                response
                    .headers_mut()
                    .insert(header::SEC_WEBSOCKET_PROTOCOL, value);
                Ok(response)
            }
            Err(_) => {
                let reason = format!("sub-protocol {chosen:?} cannot be echoed");
                let response = bad_request(&reason);
                refusal = Some(reason);
                Err(response)
            }
        }
    };
    let config = websocket_config(max_frame_size_bytes);
    match tokio_tungstenite::accept_hdr_async_with_config(stream, negotiate, Some(config)).await {
        Ok(ws) => {
            let mut stream = WsByteStream::new(ws);
            stream.stomp = app == WsApp::Stomp;
            Ok(stream)
        }
        Err(e) => Err(match refusal {
            Some(reason) => TransportError::WebSocketRefused { reason },
            None => TransportError::WebSocketHandshake {
                reason: e.to_string(),
            },
        }),
    }
}

/// A WebSocket connection seen as a byte stream of MQTT packets.
pub struct WsByteStream<S> {
    inner: WebSocketStream<S>,
    /// The unread rest of the last binary message.
    pending: Bytes,
    /// A close frame or the end of the stream was seen: reads return EOF.
    read_closed: bool,
    /// The connection speaks STOMP: text messages are read as bytes, and each write is sent as
    /// a text message when it is UTF-8.
    stomp: bool,
}

impl<S> WsByteStream<S> {
    pub fn new(inner: WebSocketStream<S>) -> Self {
        WsByteStream {
            inner,
            pending: Bytes::new(),
            read_closed: false,
            stomp: false,
        }
    }

    /// The connection speaks STOMP (chosen by its sub-protocol offer).
    pub fn is_stomp(&self) -> bool {
        self.stomp
    }
}

fn io_error(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            io::Error::new(io::ErrorKind::BrokenPipe, "WebSocket connection closed")
        }
        WsError::Capacity(e) => io::Error::new(
            io::ErrorKind::InvalidData,
            format!("WebSocket message too large for maxFrameSize: {e}"),
        ),
        WsError::Protocol(e) => io::Error::new(
            io::ErrorKind::InvalidData,
            format!("WebSocket protocol error: {e}"),
        ),
        other => io::Error::other(format!("WebSocket error: {other}")),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsByteStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if !self.pending.is_empty() {
                let n = buf.remaining().min(self.pending.len());
                buf.put_slice(&self.pending[..n]);
                self.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            if self.read_closed {
                return Poll::Ready(Ok(()));
            }
            let message = ready!(Pin::new(&mut self.inner).poll_next(cx));
            match message {
                Some(Ok(Message::Binary(data))) => self.pending = data,
                // tungstenite queues the pong itself and sends it on the next read or write
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(text))) if self.stomp => {
                    self.pending = Bytes::from(text);
                }
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "WebSocket text message received; MQTT over WebSocket uses binary \
                         messages only",
                    )))
                }
                Some(Ok(Message::Close(_)))
                | None
                | Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                    self.read_closed = true;
                }
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsByteStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let stomp = self.stomp;
        let mut inner = Pin::new(&mut self.inner);
        ready!(inner.as_mut().poll_ready(cx)).map_err(io_error)?;
        let message = match std::str::from_utf8(buf) {
            Ok(text) if stomp => Message::Text(text.into()),
            _ => Message::Binary(Bytes::copy_from_slice(buf)),
        };
        inner.start_send(message).map_err(io_error)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx).map_err(io_error)
    }

    /// Sends a close frame; closing an already closed connection is not an error.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(Pin::new(&mut self.inner).poll_close(cx)) {
            Ok(()) | Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(io_error(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_mqtt_offer_wins() {
        assert_eq!(choose_subprotocol(&["mqtt"]), Some("mqtt"));
        assert_eq!(
            choose_subprotocol(&["stomp", "mqttv3.1", "mqtt"]),
            Some("mqttv3.1")
        );
        assert_eq!(choose_subprotocol(&["v12.stomp", "chat"]), None);
        assert_eq!(choose_subprotocol(&[]), None);
        assert_eq!(
            choose_subprotocol(&["MQTT"]),
            None,
            "ActiveMQ matches case-sensitively"
        );
    }

    #[test]
    fn stomp_is_served_when_no_mqtt_sub_protocol_is_offered() {
        assert_eq!(choose_app(&["stomp", "mqtt"]), (WsApp::Mqtt, Some("mqtt")));
        assert_eq!(
            choose_app(&["chat", "v11.stomp", "v12.stomp"]),
            (WsApp::Stomp, Some("v12.stomp"))
        );
        assert_eq!(
            choose_app(&["v10.stomp", "v12.stomp"]),
            (WsApp::Stomp, Some("v12.stomp"))
        );
        assert_eq!(choose_app(&["chat"]), (WsApp::Stomp, None));
        assert_eq!(choose_app(&[]), (WsApp::Stomp, None));
    }

    #[test]
    fn limits_follow_max_frame_size() {
        let config = websocket_config(1000);
        assert_eq!(config.max_message_size, Some(1005));
        assert_eq!(config.max_frame_size, Some(1005));
        assert_eq!(websocket_config(u64::MAX).max_frame_size, Some(usize::MAX));
    }
}
