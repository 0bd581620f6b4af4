//! Hot reload of `<sslContext>` on a running TLS connector: new handshakes get the newly named
//! key store, the socket is not rebound.

use crate::support::live::LiveBroker;
use crate::support::tls::{tls_connect, tls_connector, Ca};
use crate::support::BrokerXml;

/// The certificate the server presented on `stream`.
fn presented(stream: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> Vec<u8> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .map(|c| c.as_ref().to_vec())
        .expect("server certificate")
}

fn tls_broker_xml(key_store: &std::path::Path) -> String {
    BrokerXml::new()
        .key_store(&key_store.display().to_string())
        .plugins("")
        .connector("tls", "mqtt+ssl://127.0.0.1:0")
        .build()
}

#[tokio::test]
async fn a_new_key_store_applies_to_new_handshakes() {
    let ca = Ca::new("reload CA");
    let (first, second) = (ca.server(1), ca.server(2));
    let certs = tempfile::tempdir().expect("tempdir");
    let (first_path, second_path) = (certs.path().join("one.pem"), certs.path().join("two.pem"));
    std::fs::write(&first_path, first.combined_pem()).expect("write");
    std::fs::write(&second_path, second.combined_pem()).expect("write");
    let connector = tls_connector(&ca, None);

    let mut live = LiveBroker::start(&tls_broker_xml(&first_path), true).await;
    let addr = live.addr("tls").await.expect("listening");
    let before = tls_connect(addr, &connector).await.expect("handshake");
    assert_eq!(presented(&before), first.der().as_ref());

    let stats = live.edit(&tls_broker_xml(&second_path)).await;
    assert_eq!(
        (stats.reloads_ok, stats.reloads_failed),
        (1, 0),
        "{stats:?}"
    );
    assert_eq!(live.addr("tls").await, Some(addr), "not rebound");
    let after = tls_connect(addr, &connector).await.expect("handshake");
    assert_eq!(presented(&after), second.der().as_ref());
    live.shutdown().await;
}
