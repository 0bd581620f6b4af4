//! The broker over TLS (`mqtt+ssl://`) and WebSocket (`ws://`) connectors: the same MQTT
//! session semantics as plain TCP, with messages crossing between transports.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::support::{connect_packet, publish_packet, BrokerXml, RawClient, TestBroker, STEP};
use bytes::{Bytes, BytesMut};
use ferromq::protocol::{decode, encode, Ack, ConnectReason, Packet, ProtocolVersion, QoS};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

fn xml(dir: &std::path::Path) -> String {
    BrokerXml::new()
        .name("t")
        .key_store(&format!("{}/server.pem", dir.display()))
        .connector("plain", "mqtt://127.0.0.1:0")
        .connector("tls", "mqtt+ssl://127.0.0.1:0")
        .connector("ws", "ws://127.0.0.1:0")
        .build()
}

fn addr_of(broker: &TestBroker, name: &str) -> SocketAddr {
    broker
        .handle
        .listener_addrs()
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, a)| *a)
        .expect("listener")
}

fn encoded(packet: Packet) -> Bytes {
    let mut out = BytesMut::new();
    encode(&packet, ProtocolVersion::V311, &mut out).expect("encode");
    out.freeze()
}

async fn next_ws_packet(
    ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>,
    received: &mut BytesMut,
) -> Packet {
    loop {
        if let Some(p) = decode(received, Some(ProtocolVersion::V311), usize::MAX).expect("valid") {
            return p;
        }
        match tokio::time::timeout(STEP, ws.next())
            .await
            .expect("in time")
        {
            Some(Ok(Message::Binary(data))) => received.extend_from_slice(&data),
            other => panic!("unexpected websocket message {other:?}"),
        }
    }
}

#[tokio::test]
async fn tls_and_websocket_clients_share_topics_with_plain_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
    let pem = format!(
        "{}{}",
        certified.cert.pem(),
        certified.key_pair.serialize_pem()
    );
    std::fs::write(dir.path().join("server.pem"), pem).expect("write pem");
    let broker = TestBroker::from_xml(&xml(dir.path())).await;

    let (mut plain, _) = RawClient::connected(addr_of(&broker, "plain"), "plain", true).await;
    assert_eq!(
        plain.subscribe(1, &[("x/#", QoS::AtLeastOnce)]).await,
        vec![1]
    );

    // TLS client, trusting the self-signed certificate.
    let mut roots = RootCertStore::empty();
    roots.add(certified.cert.der().clone()).expect("root");
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    let tcp = TcpStream::connect(addr_of(&broker, "tls"))
        .await
        .expect("tcp");
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let (mut tls, ack) = RawClient::handshake(tls, connect_packet("tls", true, 0)).await;
    assert_eq!(ack.reason, ConnectReason::Success);
    tls.send(publish_packet(
        "x/tls",
        b"over tls",
        QoS::AtLeastOnce,
        Some(1),
        false,
    ))
    .await;
    assert_eq!(tls.recv().await, Packet::PubAck(Ack::new(1)));
    let p = plain.recv_publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("x/tls", &b"over tls"[..])
    );

    // WebSocket client offering the `mqtt` sub-protocol.
    let mut request = "ws://localhost/mqtt"
        .into_client_request()
        .expect("request");
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
    let tcp = TcpStream::connect(addr_of(&broker, "ws"))
        .await
        .expect("tcp");
    let (mut ws, _) = tokio_tungstenite::client_async(request, tcp)
        .await
        .expect("ws handshake");
    ws.send(Message::Binary(encoded(Packet::Connect(Box::new(
        connect_packet("ws", true, 0),
    )))))
    .await
    .expect("send");
    let mut received = BytesMut::new();
    match next_ws_packet(&mut ws, &mut received).await {
        Packet::ConnAck(a) => assert_eq!(a.reason, ConnectReason::Success),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    ws.send(Message::Binary(encoded(publish_packet(
        "x/ws",
        b"over ws",
        QoS::AtMostOnce,
        None,
        false,
    ))))
    .await
    .expect("send");
    let p = plain.recv_publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("x/ws", &b"over ws"[..])
    );
    broker.shutdown().await;
}
