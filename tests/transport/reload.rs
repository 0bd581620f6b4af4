//! Certificate renewal on disk: new connections get the new certificate, established ones keep
//! working, a broken renewal keeps the old material.
//!
//! Run: `cargo test --test transport reload::`

use std::time::{Duration, Instant};

use crate::support::tls::*;
use ferromq::config::Scheme;
use ferromq::control::{Control, ControlEvent, Signals, WatchSettings};
use ferromq::transport::{ReloadOutcome, SharedTls, TlsError};

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

#[tokio::test]
async fn explicit_reload_swaps_only_changed_valid_material() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("test CA");
    let ssl = pem_ssl_context(dir.path(), &ca.server(1), &ca);
    let shared = SharedTls::load(&ssl, &options(false, false)).expect("load");
    let first = shared.server_config();

    assert_eq!(shared.reload().expect("reload"), ReloadOutcome::Unchanged);
    assert!(std::sync::Arc::ptr_eq(&first, &shared.server_config()));

    // a half-done renewal: new certificate, old key. Refused; the old material stays.
    let one = ca.server(1);
    let two = ca.server(2);
    let path = dir.path().join("server.pem");
    replace_file(
        &path,
        format!("{}{}", two.cert.pem(), one.key.serialize_pem()),
    );
    assert!(matches!(
        shared.reload(),
        Err(TlsError::BadCertifiedKey { .. })
    ));
    assert!(std::sync::Arc::ptr_eq(&first, &shared.server_config()));

    // a missing file is an error too, and changes nothing
    std::fs::remove_file(&path).expect("remove");
    assert!(matches!(shared.reload(), Err(TlsError::Read { .. })));
    assert!(std::sync::Arc::ptr_eq(&first, &shared.server_config()));

    replace_file(&path, two.combined_pem());
    assert_eq!(shared.reload().expect("reload"), ReloadOutcome::Reloaded);
    assert!(!std::sync::Arc::ptr_eq(&first, &shared.server_config()));
}

#[tokio::test]
async fn renewed_certificate_is_picked_up_while_old_connection_keeps_working() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("test CA");
    let old_leaf = ca.server(1);
    let ssl = pem_ssl_context(dir.path(), &old_leaf, &ca);
    let shared = SharedTls::load(&ssl, &options(true, false)).expect("load");
    // What a broker does: its control task watches the TLS files, each renewal re-reads them.
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let control = Control::start(&[], WatchSettings::default(), Signals::default(), events_tx);
    control.watch_tls_files(&shared.files());
    control.synced().await;
    let renewing = shared.clone();
    let _renewals = tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let ControlEvent::TlsRenewed { .. } = event {
                let _ = renewing.reload();
            }
        }
    });
    let server = echo_server(
        Scheme::MqttSsl,
        Some(shared.clone()),
        limits(Duration::from_secs(5)),
        EchoMode::Bytes,
    )
    .await;
    let client_leaf = ca.client("client");
    let connector = tls_connector(&ca, Some(&client_leaf));

    let mut old = within("connect", tls_connect(server.addr, &connector))
        .await
        .expect("handshake");
    within("echo", round_trip(&mut old, b"before"))
        .await
        .expect("echo");
    assert_eq!(presented(&old), old_leaf.der().as_ref());

    let new_leaf = ca.server(2);
    replace_file(&dir.path().join("server.pem"), new_leaf.combined_pem());

    // new connections get the new certificate once the watcher has reloaded (bounded wait)
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut fresh = within("connect", tls_connect(server.addr, &connector))
            .await
            .expect("handshake");
        within("echo", round_trip(&mut fresh, b"fresh"))
            .await
            .expect("echo");
        if presented(&fresh) == new_leaf.der().as_ref() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was not picked up within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // the connection made before the renewal still works, on its own session
    within("echo", round_trip(&mut old, b"after renewal"))
        .await
        .expect("old connection still echoes");
    assert_eq!(presented(&old), old_leaf.der().as_ref());
}
