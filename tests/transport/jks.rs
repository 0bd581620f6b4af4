//! Java key stores (JKS, JCEKS) made by the real `keytool` at test time, read directly: a TLS
//! MQTT listener from an `activemq.xml` `<sslContext>`, client certificates verified by a JKS
//! trust store, `keyStoreKeyPassword`, wrong passwords and several keys reported by
//! `ferromq check` at the attribute, `ferromq:keyAlias`, and renewal of a JKS file on disk.
//! Every store's magic number is asserted (`Keytool::assert_magic`), so the JKS and JCEKS
//! readers are really exercised: a modern keytool writes PKCS#12 unless told otherwise.
//!
//! Run: `cargo test --test transport jks::`

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use crate::support::client::{connect_packet, publish_packet, RawClient};
use crate::support::keytool::{Keytool, StoreType};
use crate::support::tls::{replace_file, within, Ca, Leaf};
use crate::support::xml::load_file;
use crate::support::TestBroker;
use ferromq::config::StoreKind;
use ferromq::protocol::{encode, Ack, ConnectReason, Packet, ProtocolVersion, QoS};
use ferromq::transport::{ReloadOutcome, SharedTls, TlsError};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

const STORE_PASS: &str = "storepw";
const KEY_PASS: &str = "keypass";
const TRUST_PASS: &str = "trustpw";

/// `activemq.xml` in `dir` with one `mqtt+ssl` connector (`uri_options` appended) and
/// `ssl_attrs` on the inner `<sslContext>`. The keyStore attribute is on line 5.
fn write_config(dir: &Path, ssl_attrs: &str, uri_options: &str) -> std::path::PathBuf {
    let xml = format!(
        r#"<beans xmlns="http://www.springframework.org/schema/beans" xmlns:ferromq="urn:ferromq">
    <broker xmlns="http://activemq.apache.org/schema/core" brokerName="jks" persistent="false">
        <sslContext>
            <sslContext
                {ssl_attrs}/>
        </sslContext>
        <transportConnectors>
            <transportConnector name="mqtts" uri="mqtt+ssl://127.0.0.1:0{uri_options}"/>
        </transportConnectors>
    </broker>
</beans>
"#
    );
    let path = dir.join("activemq.xml");
    std::fs::write(&path, xml).expect("write config");
    path
}

fn ferromq(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferromq"));
    command.args(args);
    for var in [
        "ACTIVEMQ_BASE",
        "ACTIVEMQ_CONF",
        "ACTIVEMQ_DATA",
        "ACTIVEMQ_HOME",
        "RUST_LOG",
    ] {
        command.env_remove(var);
    }
    command.output().expect("run ferromq")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `ferromq check` fails with an error at `config:line:` that contains every one of `needles`.
fn check_fails_at(config: &Path, line: u32, needles: &[&str]) {
    let out = ferromq(&["check", &config.display().to_string()]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    let located = format!("{}:{line}:", config.display());
    let error_line = all
        .lines()
        .find(|l| l.contains(&located))
        .unwrap_or_else(|| panic!("no error at {located}:\n{all}"));
    for needle in needles {
        assert!(
            all.contains(needle),
            "`{needle}` missing at {error_line}:\n{all}"
        );
    }
}

/// A TLS client trusting `root` (DER), presenting `client` when given.
fn connector(root: &[u8], client: Option<&Leaf>) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(root.to_vec()))
        .expect("trust anchor");
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots);
    let config = match client {
        Some(leaf) => builder
            .with_client_auth_cert(vec![leaf.der()], leaf.key_der())
            .expect("client certificate"),
        None => builder.with_no_client_auth(),
    };
    TlsConnector::from(Arc::new(config))
}

async fn tls(addr: SocketAddr, connector: &TlsConnector) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = within("tcp connect", TcpStream::connect(addr)).await?;
    let name = ServerName::try_from("localhost").expect("name");
    within("TLS handshake", connector.connect(name, tcp)).await
}

fn presented(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .expect("server certificate")
}

fn mqtts_addr(broker: &TestBroker) -> SocketAddr {
    broker
        .handle
        .listener_addrs()
        .iter()
        .find(|(n, _)| n == "mqtts")
        .map(|(_, a)| *a)
        .expect("mqtts listener")
}

/// CONNECT over `stream`, then a QoS 1 publish acknowledged: the broker serves MQTT on it.
async fn mqtt_round_trip(stream: TlsStream<TcpStream>, client_id: &str) {
    let (mut client, ack) = RawClient::handshake(stream, connect_packet(client_id, true, 0)).await;
    assert_eq!(ack.reason, ConnectReason::Success);
    client
        .send(publish_packet(
            "jks/t",
            b"hello",
            QoS::AtLeastOnce,
            Some(7),
            false,
        ))
        .await;
    assert_eq!(client.recv().await, Packet::PubAck(Ack::new(7)));
}

/// Whether the broker served MQTT on `stream` (a CONNACK came back) or closed it.
async fn served(stream: std::io::Result<TlsStream<TcpStream>>) -> bool {
    let Ok(mut stream) = stream else { return false };
    let mut connect = bytes::BytesMut::new();
    let packet = Packet::Connect(Box::new(connect_packet("nocert", true, 0)));
    encode(&packet, ProtocolVersion::V311, &mut connect).expect("encode");
    if stream.write_all(&connect).await.is_err() {
        return false;
    }
    let mut client = RawClient::over(stream);
    matches!(
        client.recv_within(crate::support::STEP).await,
        Some(Packet::ConnAck(_))
    )
}

#[tokio::test]
async fn jks_and_jceks_key_stores_serve_tls_mqtt_from_activemq_xml() {
    // JKS: an RSA key whose password differs from the store's (keyStoreKeyPassword).
    // JCEKS: an EC key under the store password (the fallback when keyStoreKeyPassword is unset).
    let cases = [
        (StoreType::Jks, "RSA", KEY_PASS, true),
        (StoreType::Jceks, "EC", STORE_PASS, false),
    ];
    for (store_type, key_alg, key_pass, with_key_password) in cases {
        let Some(keytool) = Keytool::new(store_type) else {
            return;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let ks = dir.path().join("broker.ks");
        keytool.genkeypair(&ks, "broker", "localhost", key_alg, STORE_PASS, key_pass);
        let server_cert = keytool.export_cert(&ks, "broker", STORE_PASS);
        let key_password = if with_key_password {
            format!(r#"keyStoreKeyPassword="{KEY_PASS}""#)
        } else {
            String::new()
        };
        let config = write_config(
            dir.path(),
            &format!(
                r#"keyStore="file:{}" keyStorePassword="{STORE_PASS}" {key_password}"#,
                ks.display()
            ),
            "",
        );
        let check = ferromq(&["check", &config.display().to_string()]);
        assert_eq!(
            check.status.code(),
            Some(0),
            "{store_type:?}: {}",
            text(&check)
        );
        assert!(
            text(&check).contains(&format!("({})", store_type.name())),
            "{}",
            text(&check)
        );

        let broker = TestBroker::start(load_file(&config)).await;
        let stream = tls(mqtts_addr(&broker), &connector(&server_cert, None))
            .await
            .expect("TLS handshake with the keytool certificate");
        assert_eq!(presented(&stream), server_cert, "{store_type:?}");
        mqtt_round_trip(stream, &format!("{store_type:?}")).await;
        broker.shutdown().await;
    }
}

/// `keyStore="file:.../broker.ks/"` names the file `broker.ks`, as `java.io.File` reads it in
/// ActiveMQ (seen in a published configuration that ActiveMQ 5.17 serves TLS with).
#[tokio::test]
async fn a_key_store_path_with_a_trailing_slash_names_the_file() {
    let Some(keytool) = Keytool::new(StoreType::Jks) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let ks = dir.path().join("broker.ks");
    keytool.genkeypair(&ks, "broker", "localhost", "RSA", STORE_PASS, STORE_PASS);
    let server_cert = keytool.export_cert(&ks, "broker", STORE_PASS);
    let config = write_config(
        dir.path(),
        &format!(
            r#"keyStore="file:{}/" keyStorePassword="{STORE_PASS}""#,
            ks.display()
        ),
        "",
    );
    let check = ferromq(&["check", &config.display().to_string()]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
    let broker = TestBroker::start(load_file(&config)).await;
    let stream = tls(mqtts_addr(&broker), &connector(&server_cert, None))
        .await
        .expect("TLS handshake");
    mqtt_round_trip(stream, "slash").await;
    broker.shutdown().await;
}

/// An EC P-521 key made by keytool (`-groupname secp521r1`, which Java serves) is served too;
/// the client verifies its signature with a provider that knows P-521.
#[tokio::test]
async fn an_ec_p521_key_store_serves_tls() {
    let Some(keytool) = Keytool::new(StoreType::Jks) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let ks = dir.path().join("p521.ks");
    keytool.genkeypair(
        &ks,
        "broker",
        "localhost",
        "EC:secp521r1",
        STORE_PASS,
        STORE_PASS,
    );
    let server_cert = keytool.export_cert(&ks, "broker", STORE_PASS);
    let config = write_config(
        dir.path(),
        &format!(
            r#"keyStore="{}" keyStorePassword="{STORE_PASS}""#,
            ks.display()
        ),
        "",
    );
    let check = ferromq(&["check", &config.display().to_string()]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
    let broker = TestBroker::start(load_file(&config)).await;
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(server_cert.clone()))
        .expect("trust anchor");
    let client = ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let stream = tls(mqtts_addr(&broker), &TlsConnector::from(Arc::new(client)))
        .await
        .expect("TLS handshake with the P-521 certificate");
    assert_eq!(presented(&stream), server_cert);
    mqtt_round_trip(stream, "p521").await;
    broker.shutdown().await;
}

#[tokio::test]
async fn client_certificates_are_verified_by_a_java_trust_store() {
    for store_type in [StoreType::Jks, StoreType::Jceks] {
        let Some(keytool) = Keytool::new(store_type) else {
            return;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let ks = dir.path().join("broker.ks");
        let ts = dir.path().join("broker.ts");
        keytool.genkeypair(&ks, "broker", "localhost", "RSA", STORE_PASS, STORE_PASS);
        let server_cert = keytool.export_cert(&ks, "broker", STORE_PASS);
        let ca = Ca::new("client CA");
        keytool.import_trusted(&ts, "clientca", &ca.pem(), TRUST_PASS);
        let config = write_config(
            dir.path(),
            &format!(
                r#"keyStore="{}" keyStorePassword="{STORE_PASS}" trustStore="{}" trustStorePassword="{TRUST_PASS}""#,
                ks.display(),
                ts.display()
            ),
            "?needClientAuth=true",
        );
        let broker = TestBroker::start(load_file(&config)).await;
        let addr = mqtts_addr(&broker);

        let trusted = ca.client("device");
        let stream = tls(addr, &connector(&server_cert, Some(&trusted)))
            .await
            .expect("handshake with a trusted client certificate");
        mqtt_round_trip(stream, "device").await;

        let stranger = Ca::new("other CA").client("stranger");
        let refused = tls(addr, &connector(&server_cert, Some(&stranger))).await;
        assert!(
            !served(refused).await,
            "{store_type:?}: a foreign client certificate was served"
        );
        let anonymous = tls(addr, &connector(&server_cert, None)).await;
        assert!(
            !served(anonymous).await,
            "{store_type:?}: a client without certificate was served"
        );
        broker.shutdown().await;
    }
}

#[tokio::test]
async fn wrong_passwords_are_located_errors_of_check() {
    let Some(keytool) = Keytool::new(StoreType::Jks) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let ks = dir.path().join("broker.ks");
    keytool.genkeypair(&ks, "broker", "localhost", "RSA", STORE_PASS, KEY_PASS);

    // Wrong store password: the store's integrity check fails; located at the keyStore value.
    let config = write_config(
        dir.path(),
        &format!(
            r#"keyStore="{}" keyStorePassword="not-it" keyStoreKeyPassword="{KEY_PASS}""#,
            ks.display()
        ),
        "",
    );
    check_fails_at(
        &config,
        5,
        &["integrity check failed", "keyStorePassword", "JKS"],
    );

    // Right store password, no keyStoreKeyPassword: the store password does not open the key.
    let config = write_config(
        dir.path(),
        &format!(
            r#"keyStore="{}" keyStorePassword="{STORE_PASS}""#,
            ks.display()
        ),
        "",
    );
    check_fails_at(
        &config,
        5,
        &["`broker` cannot be recovered", "keyStoreKeyPassword"],
    );

    // A JCEKS trust store with a wrong password, when client certificates are asked for.
    let Some(jceks) = Keytool::new(StoreType::Jceks) else {
        return;
    };
    let ts = dir.path().join("broker.ts");
    jceks.import_trusted(&ts, "ca", &Ca::new("ca").pem(), TRUST_PASS);
    let config = write_config(
        dir.path(),
        &format!(
            r#"keyStore="{}" keyStorePassword="{STORE_PASS}" keyStoreKeyPassword="{KEY_PASS}"
                trustStore="{}" trustStorePassword="wrong-one""#,
            ks.display(),
            ts.display()
        ),
        "?needClientAuth=true",
    );
    check_fails_at(
        &config,
        6,
        &["trustStore", "JCEKS store's integrity check failed"],
    );
}

#[tokio::test]
async fn several_private_keys_need_key_alias() {
    let Some(keytool) = Keytool::new(StoreType::Jks) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let ks = dir.path().join("broker.ks");
    keytool.genkeypair(&ks, "alpha", "localhost", "RSA", STORE_PASS, STORE_PASS);
    keytool.genkeypair(&ks, "beta", "localhost", "EC", STORE_PASS, STORE_PASS);
    let beta_cert = keytool.export_cert(&ks, "beta", STORE_PASS);
    let store = format!(
        r#"keyStore="{}" keyStorePassword="{STORE_PASS}""#,
        ks.display()
    );

    let config = write_config(dir.path(), &store, "");
    check_fails_at(
        &config,
        5,
        &["several private keys (alpha, beta)", "ferromq:keyAlias"],
    );

    let config = write_config(
        dir.path(),
        &format!(r#"{store} ferromq:keyAlias="gamma""#),
        "",
    );
    check_fails_at(&config, 5, &["no private key entry `gamma`", "alpha, beta"]);

    // Picked by alias (Java's aliases are case-insensitive): served with that certificate.
    let config = write_config(
        dir.path(),
        &format!(r#"{store} ferromq:keyAlias="Beta""#),
        "",
    );
    let check = ferromq(&["check", &config.display().to_string()]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
    assert!(
        text(&check).contains("(JKS, alias Beta)"),
        "{}",
        text(&check)
    );
    let broker = TestBroker::start(load_file(&config)).await;
    let stream = tls(mqtts_addr(&broker), &connector(&beta_cert, None))
        .await
        .expect("handshake");
    assert_eq!(presented(&stream), beta_cert);
    mqtt_round_trip(stream, "alias").await;
    broker.shutdown().await;
}

#[tokio::test]
async fn a_renewed_jks_store_applies_to_new_handshakes() {
    let Some(keytool) = Keytool::new(StoreType::Jks) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let ks = dir.path().join("broker.ks");
    keytool.genkeypair(&ks, "broker", "localhost", "RSA", STORE_PASS, STORE_PASS);
    let first = keytool.export_cert(&ks, "broker", STORE_PASS);
    let renewed = dir.path().join("renewed.ks");
    keytool.genkeypair(
        &renewed,
        "broker",
        "localhost",
        "RSA",
        STORE_PASS,
        STORE_PASS,
    );
    let second = keytool.export_cert(&renewed, "broker", STORE_PASS);
    let wrong = dir.path().join("wrong.ks");
    keytool.genkeypair(&wrong, "broker", "localhost", "RSA", "otherpw", "otherpw");

    let mut key_store = crate::support::tls::store(&ks, StoreKind::Jks, Some(STORE_PASS));
    key_store.key_password = None;
    let ssl = ferromq::config::SslContextConfig {
        key_store: Some(key_store),
        trust_store: None,
        span: crate::support::tls::span(),
    };
    let shared =
        SharedTls::load(&ssl, &crate::support::tls::options(false, false)).expect("load JKS");
    let config = shared.server_config();

    // A renewal under another password is refused and the old material stays.
    replace_file(&ks, std::fs::read(&wrong).expect("read"));
    assert!(matches!(
        shared.reload(),
        Err(TlsError::WrongPassword { format: "JKS", .. })
    ));
    assert!(Arc::ptr_eq(&config, &shared.server_config()));

    replace_file(&ks, std::fs::read(&renewed).expect("read"));
    assert_eq!(shared.reload().expect("reload"), ReloadOutcome::Reloaded);
    let acceptor = tokio_rustls::TlsAcceptor::from(shared.server_config());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        acceptor.accept(tcp).await.map(|_| ())
    });
    let stream = tls(addr, &connector(&second, None))
        .await
        .expect("handshake");
    assert_eq!(presented(&stream), second);
    assert_ne!(first, second);
    within("server side", server)
        .await
        .expect("task")
        .expect("server handshake");
}

#[test]
fn key_alias_and_key_password_on_pem_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pair = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("certificate");
    let pem = dir.path().join("server.pem");
    std::fs::write(
        &pem,
        format!("{}{}", pair.cert.pem(), pair.key_pair.serialize_pem()),
    )
    .expect("write");
    let config = write_config(
        dir.path(),
        &format!(r#"keyStore="{}" ferromq:keyAlias="broker""#, pem.display()),
        "",
    );
    check_fails_at(
        &config,
        5,
        &["ferromq:keyAlias applies to a JKS, JCEKS or PKCS#12 keyStore"],
    );

    let config = write_config(
        dir.path(),
        &format!(r#"keyStore="{}" ferromq:keyAlais="broker""#, pem.display()),
        "",
    );
    check_fails_at(
        &config,
        5,
        &["unknown ferromq attribute `ferromq:keyAlais`", "keyAlias"],
    );
    // keyStoreKeyPassword on a PEM key: a warning, the broker still starts.
    let config = write_config(
        dir.path(),
        &format!(r#"keyStore="{}" keyStoreKeyPassword="x""#, pem.display()),
        "",
    );
    let out = ferromq(&["check", &config.display().to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("warning: keyStoreKeyPassword is not used"),
        "{}",
        text(&out)
    );
}

#[tokio::test]
async fn a_running_broker_serves_a_renewed_jks_store() {
    let Some(keytool) = Keytool::new(StoreType::Jks) else {
        return;
    };
    let certs = tempfile::tempdir().expect("tempdir");
    let ks = certs.path().join("broker.ks");
    keytool.genkeypair(&ks, "broker", "localhost", "RSA", STORE_PASS, STORE_PASS);
    let first = keytool.export_cert(&ks, "broker", STORE_PASS);
    let renewed = certs.path().join("renewed.ks");
    keytool.genkeypair(
        &renewed,
        "broker",
        "localhost",
        "EC",
        STORE_PASS,
        STORE_PASS,
    );
    let second = keytool.export_cert(&renewed, "broker", STORE_PASS);

    let xml = crate::support::BrokerXml::new()
        .child(&format!(
            r#"<sslContext><sslContext keyStore="{}" keyStorePassword="{STORE_PASS}"/></sslContext>"#,
            ks.display()
        ))
        .plugins("")
        .connector("tls", "mqtt+ssl://127.0.0.1:0")
        .build();
    let live = crate::support::live::LiveBroker::start(&xml, true).await;
    let addr = live.addr("tls").await.expect("listening");
    let before = tls(addr, &connector(&first, None))
        .await
        .expect("handshake");
    assert_eq!(presented(&before), first);

    // Renewed the way tools do (a new file renamed over the old): the watcher re-reads it and
    // new handshakes get the new certificate (bounded wait: the watcher debounces).
    replace_file(&ks, std::fs::read(&renewed).expect("read"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let fresh = tls(addr, &connector(&second, None)).await;
        if let Ok(stream) = fresh {
            assert_eq!(presented(&stream), second);
            mqtt_round_trip(stream, "renewed").await;
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the renewed JKS store was not served within 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    mqtt_round_trip(before, "before-renewal").await;
    live.shutdown().await;
}

#[tokio::test]
async fn a_trust_store_that_does_not_open_fails_check_and_run_without_client_auth() {
    let Some(keytool) = Keytool::new(StoreType::Jks) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let ks = dir.path().join("broker.ks");
    keytool.genkeypair(&ks, "broker", "localhost", "RSA", STORE_PASS, STORE_PASS);
    let good = dir.path().join("good.ts");
    keytool.import_trusted(&good, "ca", &Ca::new("ca").pem(), TRUST_PASS);
    let good_bytes = std::fs::read(&good).expect("read");
    let cases: [(&str, Vec<u8>, &str, &str); 4] = [
        (
            "garbage",
            b"not a store".to_vec(),
            TRUST_PASS,
            "unrecognised format",
        ),
        ("empty", Vec::new(), TRUST_PASS, "the file is empty"),
        (
            "truncated",
            good_bytes[..good_bytes.len() / 2].to_vec(),
            TRUST_PASS,
            "trustStore",
        ),
        (
            "wrong-password",
            good_bytes.clone(),
            "not-it",
            "integrity check failed",
        ),
    ];
    for (name, bytes, password, needle) in cases {
        let ts = dir.path().join(format!("{name}.ts"));
        std::fs::write(&ts, &bytes).expect("write trust store");
        // No needClientAuth/wantClientAuth: the trust store is never used, yet Java opens it.
        let config = write_config(
            dir.path(),
            &format!(
                r#"keyStore="{}" keyStorePassword="{STORE_PASS}"
                trustStore="{}" trustStorePassword="{password}""#,
                ks.display(),
                ts.display()
            ),
            "",
        );
        check_fails_at(&config, 6, &[needle, &ts.display().to_string()]);
        let loaded = ferromq::config::load_file(&config, &crate::support::xml::no_env());
        let config = loaded.into_result().expect("the XML itself is valid");
        let started = ferromq::broker::start(config).await;
        assert!(started.is_err(), "{name}: the broker started");
    }
}

#[test]
fn key_store_key_password_on_a_pkcs12_store_warns_when_it_differs() {
    let Some(keytool) = crate::support::keytool::keytool() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let p12 = dir.path().join("broker.p12");
    let out = Command::new(&keytool)
        .args(["-genkeypair", "-keystore"])
        .arg(&p12)
        .args([
            "-storetype",
            "PKCS12",
            "-alias",
            "broker",
            "-keyalg",
            "RSA",
            "-keysize",
            "2048",
            "-dname",
            "CN=localhost",
            "-validity",
            "30",
            "-storepass",
            STORE_PASS,
            "-keypass",
            STORE_PASS,
        ])
        .output()
        .expect("run keytool");
    assert!(out.status.success(), "{}", text(&out));
    let warning = "keyStoreKeyPassword is not used: the private key of a PKCS#12 keyStore";
    for (key_password, warns) in [(KEY_PASS, true), (STORE_PASS, false)] {
        let config = write_config(
            dir.path(),
            &format!(
                r#"keyStore="{}" keyStorePassword="{STORE_PASS}" keyStoreKeyPassword="{key_password}""#,
                p12.display()
            ),
            "",
        );
        let out = ferromq(&["check", &config.display().to_string()]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert_eq!(text(&out).contains(warning), warns, "{}", text(&out));
    }
}

/// `ferromq check <config>` that must finish within 20 s (a FIFO store once blocked it forever).
fn check_within_deadline(config: &Path) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferromq"));
    command
        .args(["check", &config.display().to_string()])
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().expect("spawn ferromq check");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("ferromq check did not finish within 20 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

#[test]
fn devices_fifos_and_huge_files_are_refused_as_stores() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("broker.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let huge = dir.path().join("huge.pem");
    std::fs::write(&huge, vec![b'A'; 5 * 1024 * 1024]).expect("write");
    let cases = [
        (Path::new("/dev/zero").to_path_buf(), "not a regular file"),
        (fifo, "not a regular file"),
        (dir.path().to_path_buf(), "not a regular file"),
        (huge, "larger than 4 MiB"),
    ];
    for (store, needle) in cases {
        let config = write_config(
            dir.path(),
            &format!(r#"keyStore="{}""#, store.display()),
            "",
        );
        let out = check_within_deadline(&config);
        let all = text(&out);
        assert_eq!(out.status.code(), Some(1), "{}: {all}", store.display());
        let located = format!("{}:5:", config.display());
        assert!(
            all.lines()
                .any(|l| l.contains(&located) && l.contains(needle)),
            "{}: no error at {located} with `{needle}`:\n{all}",
            store.display()
        );
    }
}

#[test]
fn file_urls_with_percent_escapes_name_the_decoded_path() {
    let Some(keytool) = Keytool::new(StoreType::Jks) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let spaced = dir.path().join("with space");
    std::fs::create_dir(&spaced).expect("mkdir");
    let ks = spaced.join("broker.ks");
    keytool.genkeypair(&ks, "broker", "localhost", "RSA", STORE_PASS, STORE_PASS);
    let url = format!("file://{}", ks.display().to_string().replace(' ', "%20"));
    assert!(url.contains("with%20space"), "{url}");
    let config = write_config(
        dir.path(),
        &format!(r#"keyStore="{url}" keyStorePassword="{STORE_PASS}""#),
        "",
    );
    let out = ferromq(&["check", &config.display().to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("(JKS)"), "{}", text(&out));
}

#[test]
fn an_ip_address_sent_as_sni_is_no_warning_unless_rust_log_asks() {
    let Some(keytool) = Keytool::new(StoreType::Jks) else {
        return;
    };
    if Command::new("mosquitto_pub")
        .arg("--help")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "mosquitto_pub is missing under CI"
        );
        eprintln!("SKIPPED: mosquitto_pub not found");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let ks = dir.path().join("broker.ks");
    keytool.genkeypair(&ks, "broker", "localhost", "RSA", STORE_PASS, STORE_PASS);
    let der = keytool.export_cert(&ks, "broker", STORE_PASS);
    let ca = dir.path().join("ca.pem");
    let pem = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
            .collect();
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        )
    };
    std::fs::write(&ca, pem).expect("write CA PEM");
    for (rust_log, warns) in [(None, false), (Some("info,rustls=warn"), true)] {
        let port = crate::support::free_port();
        let config = dir.path().join(format!("activemq-{port}.xml"));
        std::fs::write(
            &config,
            format!(
                r#"<beans xmlns="http://www.springframework.org/schema/beans">
    <broker xmlns="http://activemq.apache.org/schema/core" brokerName="sni" persistent="false">
        <sslContext><sslContext keyStore="{}" keyStorePassword="{STORE_PASS}"/></sslContext>
        <transportConnectors>
            <transportConnector name="mqtts" uri="mqtt+ssl://127.0.0.1:{port}"/>
        </transportConnectors>
    </broker>
</beans>
"#,
                ks.display()
            ),
        )
        .expect("write config");
        let log = dir.path().join(format!("broker-{port}.log"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_ferromq"));
        command
            .args(["run", "-c", &config.display().to_string()])
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        if let Some(filter) = rust_log {
            command.env("RUST_LOG", filter);
        }
        let _broker = crate::support::ChildGuard(command.spawn().expect("spawn ferromq run"));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "broker not listening: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let published = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "--cafile"])
            .arg(&ca)
            .args(["-t", "sni/t", "-m", "x", "-q", "1", "-i", "sni"])
            .output()
            .expect("run mosquitto_pub");
        assert!(published.status.success(), "{}", text(&published));
        let logged = std::fs::read_to_string(&log).expect("read log");
        assert_eq!(
            logged.contains("Illegal SNI extension"),
            warns,
            "RUST_LOG={rust_log:?}:\n{logged}"
        );
    }
}

#[test]
fn unsupported_keys_and_wrong_passwords_get_errors_and_hints_that_fit() {
    let Some(keytool) = crate::support::keytool::keytool() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let genkey = |store: &Path, alg_args: &[&str], key_pass: &str| {
        let out = Command::new(&keytool)
            .args(["-genkeypair", "-keystore"])
            .arg(store)
            .args([
                "-storetype",
                "JKS",
                "-alias",
                "broker",
                "-dname",
                "CN=localhost",
            ])
            .args(alg_args)
            .args(["-storepass", STORE_PASS, "-keypass", key_pass])
            .output()
            .expect("run keytool");
        assert!(out.status.success(), "{}", text(&out));
    };
    for (name, alg_args, shown) in [
        ("dsa", &["-keyalg", "DSA", "-keysize", "2048"][..], "DSA"),
        ("ed448", &["-keyalg", "Ed448"][..], "Ed448"),
    ] {
        let ks = dir.path().join(format!("{name}.ks"));
        genkey(&ks, alg_args, STORE_PASS);
        let config = write_config(
            dir.path(),
            &format!(
                r#"keyStore="{}" keyStorePassword="{STORE_PASS}""#,
                ks.display()
            ),
            "",
        );
        check_fails_at(
            &config,
            5,
            &[
                &format!("the server's key is {shown}"),
                "supported keys: RSA (2048 bits or more), EC P-256, EC P-384, EC P-521, Ed25519",
                "hint: make a new key",
            ],
        );
    }

    let ks = dir.path().join("rsa.ks");
    genkey(&ks, &["-keyalg", "RSA", "-keysize", "2048"], KEY_PASS);
    // A wrong keyStoreKeyPassword: at that attribute (line 6), with the key password hint.
    let config = write_config(
        dir.path(),
        &format!(
            r#"keyStore="{}" keyStorePassword="{STORE_PASS}"
                keyStoreKeyPassword="not-it""#,
            ks.display()
        ),
        "",
    );
    check_fails_at(
        &config,
        6,
        &[
            "cannot be recovered with keyStoreKeyPassword",
            "hint: set keyStoreKeyPassword",
        ],
    );
    // A wrong store password: at the keyStore, with the store password hint.
    let config = write_config(
        dir.path(),
        &format!(
            r#"keyStore="{}" keyStorePassword="not-it" keyStoreKeyPassword="{KEY_PASS}""#,
            ks.display()
        ),
        "",
    );
    check_fails_at(
        &config,
        5,
        &[
            "integrity check failed",
            "hint: the store password is wrong",
        ],
    );
    // An unreadable store: the path hint.
    let config = write_config(
        dir.path(),
        &format!(
            r#"keyStore="{}" keyStorePassword="x""#,
            dir.path().join("absent.ks").display()
        ),
        "",
    );
    check_fails_at(
        &config,
        5,
        &["cannot read keyStore", "hint: check the path"],
    );
}

#[tokio::test]
async fn a_reload_that_points_the_key_store_at_a_device_fails_and_the_broker_keeps_serving() {
    let Some(keytool) = Keytool::new(StoreType::Jks) else {
        return;
    };
    let certs = tempfile::tempdir().expect("tempdir");
    let ks = certs.path().join("broker.ks");
    keytool.genkeypair(&ks, "broker", "localhost", "RSA", STORE_PASS, STORE_PASS);
    let cert = keytool.export_cert(&ks, "broker", STORE_PASS);
    let xml_with = |key_store: &Path| {
        crate::support::BrokerXml::new()
            .child(&format!(
                r#"<sslContext><sslContext keyStore="{}" keyStorePassword="{STORE_PASS}"/></sslContext>"#,
                key_store.display()
            ))
            .plugins("")
            .connector("tls", "mqtt+ssl://127.0.0.1:0")
            .build()
    };
    let mut live = crate::support::live::LiveBroker::start(&xml_with(&ks), true).await;
    let addr = live.addr("tls").await.expect("listening");
    let before = live.stats().reloads_failed;
    // Bounded by the reload wait: reading /dev/zero to the end would never finish.
    let stats = live.edit(&xml_with(Path::new("/dev/zero"))).await;
    assert_eq!(stats.reloads_failed, before + 1, "{stats:?}");
    let stream = tls(addr, &connector(&cert, None))
        .await
        .expect("the old material still serves");
    mqtt_round_trip(stream, "after-device").await;
    live.shutdown().await;
}
