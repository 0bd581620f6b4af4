//! WebSocket transports (`ws`, `wss`) with a real tokio-tungstenite client on 127.0.0.1:
//! sub-protocol negotiation, MQTT packets spanning and sharing WebSocket messages, control
//! frames, limits, and TLS underneath.
//!
//! Run: `cargo test --test transport ws::`

use std::time::Duration;

use crate::support::tls::*;
use bytes::Bytes;
use ferromq::config::Scheme;
use ferromq::transport::{SharedTls, UpgradeLimits};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

async fn ws_server(limits: UpgradeLimits, mode: EchoMode) -> EchoServer {
    echo_server(Scheme::Ws, None, limits, mode).await
}

fn default_limits() -> UpgradeLimits {
    limits(Duration::from_secs(5))
}

/// Open a WebSocket on `stream` for `path`, offering `protocols` (none when empty). Returns the
/// socket and the sub-protocol the server chose.
async fn ws_connect<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    path: &str,
    protocols: &str,
) -> Result<(WebSocketStream<S>, Option<String>), WsError> {
    let mut request = format!("ws://localhost{path}")
        .into_client_request()
        .expect("request");
    if !protocols.is_empty() {
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_str(protocols).expect("header"),
        );
    }
    let (ws, response) = within(
        "ws handshake",
        tokio_tungstenite::client_async(request, stream),
    )
    .await?;
    let chosen = response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Ok((ws, chosen))
}

async fn next_binary<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) -> Bytes {
    loop {
        match within("ws message", ws.next()).await {
            Some(Ok(Message::Binary(data))) => return data,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a binary message, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn packets_spanning_and_sharing_messages_round_trip() {
    let mut server = ws_server(default_limits(), EchoMode::MqttPackets).await;
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    let (mut ws, chosen) = ws_connect(tcp, "/mqtt", "mqtt").await.expect("upgrade");
    assert_eq!(chosen.as_deref(), Some("mqtt"));
    assert!(matches!(
        server.next_event().await,
        ServerEvent::Upgraded(None)
    ));

    // one packet split over three messages (the split falls inside the remaining length)
    let spanning = mqtt_publish("sensors/one", &[7u8; 300]);
    for part in [&spanning[..2], &spanning[2..150], &spanning[150..]] {
        ws.send(Message::Binary(Bytes::copy_from_slice(part)))
            .await
            .expect("send part");
    }
    // two packets in one message
    let second = mqtt_publish("a", b"x");
    let third = mqtt_publish("b/c", b"yz");
    ws.send(Message::Binary(Bytes::from(
        [second.clone(), third.clone()].concat(),
    )))
    .await
    .expect("send shared");

    // the server read whole packets and wrote each back with one write: one message each
    assert_eq!(next_binary(&mut ws).await.as_ref(), spanning.as_slice());
    assert_eq!(next_binary(&mut ws).await.as_ref(), second.as_slice());
    assert_eq!(next_binary(&mut ws).await.as_ref(), third.as_slice());

    ws.close(None).await.expect("close");
    assert!(matches!(server.next_event().await, ServerEvent::Eof));
}

#[tokio::test]
async fn mqtt_sub_protocols_are_negotiated_and_any_path_is_accepted() {
    let mut server = ws_server(default_limits(), EchoMode::Bytes).await;
    for (path, offered, expected) in [
        ("/", "mqttv3.1", "mqttv3.1"),
        ("/mqtt", "v12.stomp, mqtt", "mqtt"),
        ("/any/path?x=1", "mqtt, mqttv3.1", "mqtt"),
    ] {
        let tcp = TcpStream::connect(server.addr).await.expect("connect");
        let (mut ws, chosen) = ws_connect(tcp, path, offered).await.expect("upgrade");
        assert_eq!(chosen.as_deref(), Some(expected), "offered {offered}");
        assert!(matches!(
            server.next_event().await,
            ServerEvent::Upgraded(None)
        ));
        ws.send(Message::Binary(Bytes::from_static(b"\xc0\x00")))
            .await
            .expect("send");
        assert_eq!(next_binary(&mut ws).await.as_ref(), b"\xc0\x00");
        ws.close(None).await.expect("close");
        assert!(matches!(server.next_event().await, ServerEvent::Eof));
    }
}

#[tokio::test]
async fn clients_without_an_mqtt_sub_protocol_get_stomp_as_from_activemq() {
    let mut server = ws_server(default_limits(), EchoMode::Bytes).await;
    // (An offer of only unknown sub-protocols also gets STOMP, with none echoed, as the unit
    // tests of `transport::ws` show; tungstenite's client refuses such an answer.)
    for (offered, echoed) in [
        ("chat, v12.stomp, v11.stomp", Some("v12.stomp")),
        ("", None),
    ] {
        let tcp = TcpStream::connect(server.addr).await.expect("connect");
        let (mut ws, chosen) = ws_connect(tcp, "/", offered).await.expect("upgrade");
        assert_eq!(chosen.as_deref(), echoed, "offered {offered:?}");
        assert!(matches!(
            server.next_event().await,
            ServerEvent::Upgraded(None)
        ));
        // STOMP over WebSocket: text messages are read as bytes and written back as text.
        ws.send(Message::Text("SEND\n\n\0".into()))
            .await
            .expect("send");
        match within("echo", ws.next()).await {
            Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), "SEND\n\n\0"),
            other => panic!("expected a text echo, got {other:?}"),
        }
        ws.close(None).await.expect("close");
        assert!(matches!(server.next_event().await, ServerEvent::Eof));
    }
}

#[tokio::test]
async fn pings_are_answered_and_text_frames_are_errors() {
    let mut server = ws_server(default_limits(), EchoMode::Bytes).await;

    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    let (mut ws, _) = ws_connect(tcp, "/", "mqtt").await.expect("upgrade");
    assert!(matches!(
        server.next_event().await,
        ServerEvent::Upgraded(None)
    ));
    ws.send(Message::Ping(Bytes::from_static(b"are you there")))
        .await
        .expect("ping");
    match within("pong", ws.next()).await {
        Some(Ok(Message::Pong(data))) => assert_eq!(data.as_ref(), b"are you there"),
        other => panic!("expected a pong, got {other:?}"),
    }

    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    let (mut text_client, _) = ws_connect(tcp, "/", "mqtt").await.expect("upgrade");
    assert!(matches!(
        server.next_event().await,
        ServerEvent::Upgraded(None)
    ));
    text_client
        .send(Message::text("CONNECT"))
        .await
        .expect("send text");
    match server.next_event().await {
        ServerEvent::ReadError(e) => assert!(e.contains("binary messages only"), "{e}"),
        other => panic!("expected a read error, got {other:?}"),
    }

    // the first client was not affected
    ws.send(Message::Binary(Bytes::from_static(b"\xc0\x00")))
        .await
        .expect("send");
    assert_eq!(next_binary(&mut ws).await.as_ref(), b"\xc0\x00");
}

#[tokio::test]
async fn messages_larger_than_max_frame_size_are_refused() {
    let small = UpgradeLimits {
        handshake_timeout: Duration::from_secs(5),
        max_frame_size_bytes: 1000,
    };
    let mut server = ws_server(small, EchoMode::Bytes).await;
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    let (mut ws, _) = ws_connect(tcp, "/", "mqtt").await.expect("upgrade");
    assert!(matches!(
        server.next_event().await,
        ServerEvent::Upgraded(None)
    ));
    // up to maxFrameSize plus the fixed header is fine
    let fits = vec![1u8; 1005];
    ws.send(Message::Binary(Bytes::from(fits.clone())))
        .await
        .expect("send");
    let mut echoed = Vec::new();
    while echoed.len() < fits.len() {
        echoed.extend_from_slice(&next_binary(&mut ws).await);
    }
    assert_eq!(echoed, fits);
    // beyond it the connection is closed with an error
    let _ = ws.send(Message::Binary(Bytes::from(vec![1u8; 5000]))).await;
    match server.next_event().await {
        ServerEvent::ReadError(e) => assert!(e.contains("too large"), "{e}"),
        other => panic!("expected a read error, got {other:?}"),
    }
}

#[tokio::test]
async fn wss_carries_mqtt_and_the_client_subject() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("test CA");
    let ssl = pem_ssl_context(dir.path(), &ca.server(1), &ca);
    let shared = SharedTls::load(&ssl, &options(true, false)).expect("load");
    let mut server =
        echo_server(Scheme::Wss, Some(shared), default_limits(), EchoMode::Bytes).await;

    let leaf = ca.client("client");
    let tls = tls_connect(server.addr, &tls_connector(&ca, Some(&leaf)))
        .await
        .expect("TLS handshake");
    let (mut ws, chosen) = ws_connect(tls, "/mqtt", "mqtt").await.expect("upgrade");
    assert_eq!(chosen.as_deref(), Some("mqtt"));
    match server.next_event().await {
        ServerEvent::Upgraded(Some(subject)) => assert_eq!(subject, "CN=client,O=Org,C=US"),
        other => panic!("expected a subject, got {other:?}"),
    }
    ws.send(Message::Binary(Bytes::from_static(b"\xc0\x00")))
        .await
        .expect("send");
    assert_eq!(next_binary(&mut ws).await.as_ref(), b"\xc0\x00");

    // a ws:// client on the wss:// port is told apart from a TLS client
    let plain = TcpStream::connect(server.addr).await.expect("connect");
    assert!(ws_connect(plain, "/", "mqtt").await.is_err());
    match server.next_event().await {
        ServerEvent::Refused(e) => assert!(e.contains("HTTP request"), "{e}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}
