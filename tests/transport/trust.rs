//! Which client certificates a trust store admits, with certificates made by the real `keytool`
//! and `openssl` CLI, against Java's PKIX trust manager as the reference:
//!
//! - a trusted certificate that is not a CA (keytool's self-signed client certificate, as
//!   ActiveMQ's documented workflow imports into `broker.ts`) cannot sign others: a certificate
//!   for `CN=admin` forged with its key is refused, in PEM, PKCS#12, JKS and JCEKS trust stores,
//!   before certificate login could map it to `admin`;
//! - any trusted certificate is accepted when the client presents exactly it: a self-signed
//!   `CA:TRUE` certificate (`openssl req -x509`'s default) and an X.509 v1 certificate, over
//!   TLS 1.2 and 1.3, but not after its validity period;
//! - a CA certificate or a v1 certificate (Java allows v1 anchors) issues client certificates.
//!
//! Without keytool or openssl the tests skip with a message (fail under CI).
//!
//! Run: `cargo test --test transport trust::`

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use crate::support::client::{connect_packet, RawClient};
use crate::support::keytool::{keytool, Keytool, StoreType};
use crate::support::tls::{echo_server, limits, options, within, EchoMode, ServerEvent};
use crate::support::TestBroker;
use ferromq::config::{LoadOptions, Scheme, SslContextConfig, StoreKind};
use ferromq::protocol::ConnectReason;
use ferromq::transport::SharedTls;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::client::ResolvesClientCert;
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, SupportedProtocolVersion};
use tokio_rustls::TlsConnector;

const PASS: &str = "changeit";

/// `openssl` on PATH, or `None` after saying why the caller skips (panics under CI).
fn have_openssl() -> bool {
    let found = Command::new("openssl").arg("version").output().is_ok();
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "openssl is missing under CI"
        );
        eprintln!("SKIPPED: openssl not found");
    }
    found
}

fn run(program: &Path, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}{}",
        program.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn openssl(args: &[&str]) {
    run(Path::new("openssl"), args);
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

/// A certificate and its private key, as PEM files.
struct Pem {
    cert: PathBuf,
    key: PathBuf,
}

impl Pem {
    fn cert_text(&self) -> String {
        std::fs::read_to_string(&self.cert).expect("read certificate")
    }

    fn der(&self) -> CertificateDer<'static> {
        CertificateDer::from_pem_file(&self.cert).expect("PEM certificate")
    }

    /// The certificate's X.509 version as openssl prints it (`Version: 1 (0x0)`).
    fn version(&self) -> String {
        let out = Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in", s(&self.cert)])
            .output()
            .expect("openssl x509 -text");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .find(|l| l.trim_start().starts_with("Version:"))
            .map(|l| l.trim().to_owned())
            .unwrap_or_default()
    }
}

/// keytool's self-signed client certificate (`keytool -genkeypair`, no basicConstraints), its key
/// taken out of the PKCS#12 store with openssl.
fn keytool_client(keytool: &Path, dir: &Path, cn: &str) -> Pem {
    let p12 = dir.join(format!("{cn}.p12"));
    let dname = format!("CN={cn}");
    run(
        keytool,
        &[
            "-genkeypair",
            "-keystore",
            s(&p12),
            "-storetype",
            "PKCS12",
            "-alias",
            cn,
            "-keyalg",
            "RSA",
            "-keysize",
            "2048",
            "-dname",
            &dname,
            "-validity",
            "30",
            "-storepass",
            PASS,
            "-keypass",
            PASS,
        ],
    );
    let pem = Pem {
        cert: dir.join(format!("{cn}-cert.pem")),
        key: dir.join(format!("{cn}-key.pem")),
    };
    let pass = format!("pass:{PASS}");
    openssl(&[
        "pkcs12",
        "-in",
        s(&p12),
        "-passin",
        &pass,
        "-nodes",
        "-nocerts",
        "-out",
        s(&pem.key),
    ]);
    openssl(&[
        "pkcs12",
        "-in",
        s(&p12),
        "-passin",
        &pass,
        "-nokeys",
        "-clcerts",
        "-out",
        s(&pem.cert),
    ]);
    pem
}

/// `openssl req -x509` with openssl's defaults: a self-signed v3 certificate with `CA:TRUE`.
fn openssl_self_signed(dir: &Path, cn: &str) -> Pem {
    openssl_self_signed_with(dir, cn, &["-newkey", "rsa:2048"])
}

/// `openssl req -x509` with the key made by `newkey` arguments.
fn openssl_self_signed_with(dir: &Path, cn: &str, newkey: &[&str]) -> Pem {
    let pem = Pem {
        cert: dir.join(format!("{cn}-cert.pem")),
        key: dir.join(format!("{cn}-key.pem")),
    };
    let subject = format!("/CN={cn}");
    let mut args = vec!["req", "-x509"];
    args.extend_from_slice(newkey);
    args.extend([
        "-nodes",
        "-keyout",
        s(&pem.key),
        "-out",
        s(&pem.cert),
        "-subj",
        &subject,
        "-days",
        "30",
    ]);
    openssl(&args);
    pem
}

/// A self-signed X.509 v1 certificate (`openssl x509 -req -signkey`, no extensions).
fn openssl_v1(dir: &Path, cn: &str) -> Pem {
    let pem = Pem {
        cert: dir.join(format!("{cn}-cert.pem")),
        key: dir.join(format!("{cn}-key.pem")),
    };
    let csr = dir.join(format!("{cn}.csr"));
    let subject = format!("/CN={cn}");
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        s(&pem.key),
        "-out",
        s(&csr),
        "-subj",
        &subject,
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        s(&csr),
        "-signkey",
        s(&pem.key),
        "-days",
        "30",
        "-out",
        s(&pem.cert),
    ]);
    assert_eq!(
        pem.version(),
        "Version: 1 (0x0)",
        "openssl made a v1 certificate"
    );
    pem
}

/// A v3 client certificate for `CN=<cn>` signed with `issuer`'s key (`openssl x509 -req -CA`),
/// marked `CA:FALSE` and `clientAuth` so that only its issuer can make it fail.
fn openssl_issue(dir: &Path, issuer: &Pem, cn: &str, ext: &str) -> Pem {
    let pem = Pem {
        cert: dir.join(format!("{cn}-cert.pem")),
        key: dir.join(format!("{cn}-key.pem")),
    };
    let csr = dir.join(format!("{cn}.csr"));
    let ext_file = dir.join(format!("{cn}.ext"));
    std::fs::write(&ext_file, ext).expect("write extensions");
    let subject = format!("/CN={cn}");
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        s(&pem.key),
        "-out",
        s(&csr),
        "-subj",
        &subject,
    ]);
    let serial = dir.join(format!("{cn}.srl"));
    openssl(&[
        "x509",
        "-req",
        "-in",
        s(&csr),
        "-CA",
        s(&issuer.cert),
        "-CAkey",
        s(&issuer.key),
        "-CAserial",
        s(&serial),
        "-CAcreateserial",
        "-days",
        "30",
        "-extfile",
        s(&ext_file),
        "-out",
        s(&pem.cert),
    ]);
    assert_eq!(pem.version(), "Version: 3 (0x2)");
    pem
}

const LEAF_EXT: &str = "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n";

/// The trust store formats ActiveMQ configurations use.
#[derive(Debug, Clone, Copy)]
enum TrustFormat {
    Pem,
    Pkcs12,
    Jks,
    Jceks,
}

/// A trust store in `format` holding `certs` (as `keytool -importcert` or a PEM bundle).
fn trust_store(keytool_exe: &Path, dir: &Path, format: TrustFormat, certs: &[&Pem]) -> PathBuf {
    let path = dir.join(format!("broker-{format:?}.ts"));
    match format {
        TrustFormat::Pem => {
            let bundle: String = certs.iter().map(|c| c.cert_text()).collect();
            std::fs::write(&path, bundle).expect("write PEM bundle");
        }
        TrustFormat::Pkcs12 => {
            for (i, cert) in certs.iter().enumerate() {
                let alias = format!("trusted{i}");
                run(
                    keytool_exe,
                    &[
                        "-importcert",
                        "-noprompt",
                        "-keystore",
                        s(&path),
                        "-storetype",
                        "PKCS12",
                        "-alias",
                        &alias,
                        "-file",
                        s(&cert.cert),
                        "-storepass",
                        PASS,
                    ],
                );
            }
        }
        TrustFormat::Jks | TrustFormat::Jceks => {
            let store_type = match format {
                TrustFormat::Jks => StoreType::Jks,
                _ => StoreType::Jceks,
            };
            let keytool = Keytool::new(store_type).expect("keytool");
            for (i, cert) in certs.iter().enumerate() {
                keytool.import_trusted(&path, &format!("trusted{i}"), &cert.cert_text(), PASS);
            }
        }
    }
    path
}

/// The broker's own key store (keytool, JKS) and its certificate for clients to trust.
fn server_key_store(dir: &Path) -> (PathBuf, Vec<u8>) {
    let keytool = Keytool::new(StoreType::Jks).expect("keytool");
    let ks = dir.join("broker.ks");
    keytool.genkeypair(&ks, "broker", "localhost", "RSA", PASS, PASS);
    let cert = keytool.export_cert(&ks, "broker", PASS);
    (ks, cert)
}

/// A client identity handed to rustls as is: without the consistency check of
/// `with_client_auth_cert`, so that a test can present a certificate with another key.
#[derive(Debug)]
struct Presented(Arc<CertifiedKey>);

impl ResolvesClientCert for Presented {
    fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A TLS client trusting `server_cert`, presenting `chain` (leaf first) and signing with `key`'s
/// private key, limited to `versions`.
fn client(
    server_cert: &[u8],
    chain: &[&Pem],
    key: &Pem,
    versions: &[&'static SupportedProtocolVersion],
) -> TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(server_cert.to_vec()))
        .expect("server certificate as root");
    let signing_key = provider
        .key_provider
        .load_private_key(PrivateKeyDer::from_pem_file(&key.key).expect("PEM private key"))
        .expect("signing key");
    let certified = CertifiedKey::new(chain.iter().map(|p| p.der()).collect(), signing_key);
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(Presented(Arc::new(certified))));
    TlsConnector::from(Arc::new(config))
}

const BOTH: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

async fn tls(addr: SocketAddr, connector: &TlsConnector) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = within("tcp connect", TcpStream::connect(addr)).await?;
    let name = ServerName::try_from("localhost").expect("name");
    within("TLS handshake", connector.connect(name, tcp)).await
}

/// The CONNACK reason the broker answers over a TLS connection made with `connector`, or `None`
/// when the TLS handshake or the connection is refused before any CONNACK.
async fn connack(addr: SocketAddr, connector: &TlsConnector, id: &str) -> Option<ConnectReason> {
    let stream = tls(addr, connector).await.ok()?;
    let mut client = RawClient::over(stream);
    let connect = ferromq::protocol::Packet::Connect(Box::new(connect_packet(id, true, 0)));
    let mut bytes = bytes::BytesMut::new();
    ferromq::protocol::encode(
        &connect,
        ferromq::protocol::ProtocolVersion::V311,
        &mut bytes,
    )
    .expect("encode");
    client.send_raw(&bytes).await;
    match client.recv_within(crate::support::STEP).await {
        Some(ferromq::protocol::Packet::ConnAck(ack)) => Some(ack.reason),
        _ => None,
    }
}

const LOGIN_CONFIG: &str = r#"CertLogin {
    org.apache.activemq.jaas.TextFileCertificateLoginModule required
        org.apache.activemq.jaas.textfiledn.user="users.properties"
        org.apache.activemq.jaas.textfiledn.group="groups.properties";
};
"#;

/// A broker with certificate login (`CN=admin` is user admin, `CN=client` user client) on an
/// `mqtt+ssl` connector with `needClientAuth=true` and `trust_store`.
async fn cert_login_broker(dir: &Path, key_store: &Path, trust_store: &Path) -> TestBroker {
    std::fs::write(dir.join("login.config"), LOGIN_CONFIG).expect("write");
    std::fs::write(
        dir.join("users.properties"),
        "admin=CN=admin\nclient=CN=client\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("groups.properties"),
        "admins=admin\nusers=client\n",
    )
    .expect("write");
    let xml = crate::support::BrokerXml::new()
        .name("trust")
        .child(&format!(
            r#"<sslContext><sslContext keyStore="{}" keyStorePassword="{PASS}" trustStore="{}" trustStorePassword="{PASS}"/></sslContext>"#,
            key_store.display(),
            trust_store.display()
        ))
        .plugins(r#"<jaasCertificateAuthenticationPlugin configuration="CertLogin"/>"#)
        .connector("mqtts", "mqtt+ssl://127.0.0.1:0?needClientAuth=true")
        .build();
    let config_path = dir.join("activemq.xml");
    std::fs::write(&config_path, xml).expect("write config");
    let options = LoadOptions {
        overrides: [(
            "java.security.auth.login.config".to_string(),
            dir.join("login.config").display().to_string(),
        )]
        .into_iter()
        .collect(),
        use_env: false,
        local_store: false,
        embedded_default: false,
    };
    let loaded = ferromq::config::load_file(&config_path, &options);
    let text = loaded.diagnostics.to_string();
    let config = loaded
        .into_result()
        .unwrap_or_else(|_| panic!("valid config:\n{text}"));
    TestBroker::start(config).await
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

#[tokio::test]
async fn a_trusted_client_certificate_that_is_not_a_ca_cannot_sign_an_admin_certificate() {
    let Some(keytool_exe) = keytool() else { return };
    if !have_openssl() {
        return;
    }
    for format in [
        TrustFormat::Pem,
        TrustFormat::Pkcs12,
        TrustFormat::Jks,
        TrustFormat::Jceks,
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (key_store, server_cert) = server_key_store(dir.path());
        let client_pem = keytool_client(&keytool_exe, dir.path(), "client");
        // The attack: whoever holds the trusted client's key signs a certificate for CN=admin.
        let forged = openssl_issue(dir.path(), &client_pem, "admin", LEAF_EXT);
        let ts = trust_store(&keytool_exe, dir.path(), format, &[&client_pem]);
        let broker = cert_login_broker(dir.path(), &key_store, &ts).await;
        let addr = mqtts_addr(&broker);

        // The trusted certificate itself is accepted and maps to its user.
        let own = client(&server_cert, &[&client_pem], &client_pem, BOTH);
        assert_eq!(
            connack(addr, &own, "client").await,
            Some(ConnectReason::Success),
            "{format:?}: the trusted client certificate itself"
        );
        // The forged admin certificate is refused at the TLS handshake, alone or with the
        // trusted client certificate sent as its issuer.
        let alone = client(&server_cert, &[&forged], &forged, BOTH);
        assert_eq!(
            connack(addr, &alone, "forged").await,
            None,
            "{format:?}: a certificate signed by a trusted non-CA certificate was served"
        );
        let with_issuer = client(&server_cert, &[&forged, &client_pem], &forged, BOTH);
        assert_eq!(
            connack(addr, &with_issuer, "forged-chain").await,
            None,
            "{format:?}: a forged chain through a trusted non-CA certificate was served"
        );
        // The same with mosquitto_pub (OpenSSL's TLS client), where installed.
        if let Some(ca_file) = mosquitto_ca_file(dir.path(), &server_cert) {
            assert!(
                mosquitto_pub(addr, &ca_file, &client_pem).await,
                "{format:?}"
            );
            assert!(!mosquitto_pub(addr, &ca_file, &forged).await, "{format:?}");
        }
        broker.shutdown().await;
    }
}

/// The broker's certificate as a PEM file for `mosquitto_pub --cafile`, or `None` (after a
/// message) when mosquitto_pub is not installed (panics under CI).
fn mosquitto_ca_file(dir: &Path, server_cert: &[u8]) -> Option<PathBuf> {
    if Command::new("mosquitto_pub")
        .arg("--help")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "mosquitto_pub is missing under CI"
        );
        eprintln!("SKIPPED (mosquitto part): mosquitto_pub not found");
        return None;
    }
    let der = dir.join("server-cert.der");
    let pem = dir.join("server-cert.pem");
    std::fs::write(&der, server_cert).expect("write DER");
    openssl(&["x509", "-inform", "DER", "-in", s(&der), "-out", s(&pem)]);
    Some(pem)
}

/// Whether `mosquitto_pub --cert/--key` with `identity` publishes a QoS 1 message to the broker.
async fn mosquitto_pub(addr: SocketAddr, ca_file: &Path, identity: &Pem) -> bool {
    let mut command = Command::new("mosquitto_pub");
    command
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &addr.port().to_string(),
            "--cafile",
        ])
        .arg(ca_file)
        .arg("--cert")
        .arg(&identity.cert)
        .arg("--key")
        .arg(&identity.key)
        .args([
            "-t",
            "trust/t",
            "-m",
            "x",
            "-q",
            "1",
            "-i",
            "mosquitto-trust",
        ]);
    let out = within(
        "mosquitto_pub",
        tokio::task::spawn_blocking(move || command.output()),
    )
    .await
    .expect("task")
    .expect("run mosquitto_pub");
    out.status.success()
}

/// An echo server over `transport::upgrade` with a PEM trust store of `trusted`.
async fn echo_with_trust(
    dir: &Path,
    keytool_exe: &Path,
    trusted: &[&Pem],
) -> (crate::support::tls::EchoServer, Vec<u8>) {
    let (key_store, server_cert) = server_key_store(dir);
    let ts = trust_store(keytool_exe, dir, TrustFormat::Pem, trusted);
    let ssl = SslContextConfig {
        key_store: Some(crate::support::tls::store(
            &key_store,
            StoreKind::Jks,
            Some(PASS),
        )),
        trust_store: Some(crate::support::tls::store(&ts, StoreKind::Pem, None)),
        span: crate::support::tls::span(),
    };
    let shared = SharedTls::load(&ssl, &options(true, false)).expect("TLS material");
    let server = echo_server(
        Scheme::MqttSsl,
        Some(shared),
        limits(std::time::Duration::from_secs(10)),
        EchoMode::Bytes,
    )
    .await;
    (server, server_cert)
}

/// Connect with `connector`: the client certificate subject the server saw, or its refusal.
async fn upgraded(
    server: &mut crate::support::tls::EchoServer,
    connector: &TlsConnector,
) -> Result<String, String> {
    let stream = tls(server.addr, connector).await;
    let event = server.next_event().await;
    match event {
        ServerEvent::Upgraded(subject) => {
            assert!(stream.is_ok(), "the server accepted, the client did not");
            drop(stream);
            // The connection's end, so that the next call reads the next connection's event.
            let end = server.next_event().await;
            assert!(
                matches!(end, ServerEvent::Eof | ServerEvent::ReadError(_)),
                "{end:?}"
            );
            Ok(subject.unwrap_or_default())
        }
        ServerEvent::Refused(reason) => Err(reason),
        other => panic!("unexpected server event {other:?}"),
    }
}

#[tokio::test]
async fn trusted_ca_and_v1_certificates_are_accepted_when_presented_as_themselves() {
    let Some(keytool_exe) = keytool() else { return };
    if !have_openssl() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let device = openssl_self_signed(dir.path(), "device");
    let device_ec = openssl_self_signed_with(
        dir.path(),
        "device-ec",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let legacy = openssl_v1(dir.path(), "legacy");
    let stranger = openssl_self_signed(dir.path(), "stranger");
    let stranger_ec = openssl_self_signed_with(
        dir.path(),
        "stranger-ec",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let (mut server, server_cert) =
        echo_with_trust(dir.path(), &keytool_exe, &[&device, &device_ec, &legacy]).await;
    for (name, versions) in [
        ("TLS 1.3", &[&rustls::version::TLS13][..]),
        ("TLS 1.2", &[&rustls::version::TLS12][..]),
    ] {
        for pem in [&device, &device_ec, &legacy] {
            let connector = client(&server_cert, &[pem], pem, versions);
            let subject = upgraded(&mut server, &connector).await;
            assert!(
                subject.is_ok(),
                "{name} {}: {subject:?}",
                pem.cert.display()
            );
        }
        // Holding a trusted certificate is not enough: the handshake proves its key. A client
        // presenting a trusted certificate but signing with another key is refused.
        for (pem, other_key) in [
            (&device, &stranger),
            (&legacy, &stranger),
            (&device_ec, &stranger_ec),
        ] {
            let impostor = client(&server_cert, &[pem], other_key, versions);
            let refused = upgraded(&mut server, &impostor).await;
            assert!(
                refused.is_err(),
                "{name} {}: {refused:?}",
                pem.cert.display()
            );
        }
    }
}

#[tokio::test]
async fn ca_and_v1_trusted_certificates_issue_client_certificates() {
    let Some(keytool_exe) = keytool() else { return };
    if !have_openssl() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = openssl_self_signed(dir.path(), "ca");
    let v1_ca = openssl_v1(dir.path(), "v1ca");
    let from_ca = openssl_issue(dir.path(), &ca, "alice", LEAF_EXT);
    let from_v1 = openssl_issue(dir.path(), &v1_ca, "bob", LEAF_EXT);
    // A CA certificate issued by the trusted CA, presented as a client certificate: refused
    // (it is not itself trusted), and the reason is a sentence.
    let sub_ca = openssl_issue(
        dir.path(),
        &ca,
        "subca",
        "basicConstraints=critical,CA:TRUE\n",
    );
    let (mut server, server_cert) = echo_with_trust(dir.path(), &keytool_exe, &[&ca, &v1_ca]).await;
    let alice = upgraded(
        &mut server,
        &client(&server_cert, &[&from_ca], &from_ca, BOTH),
    )
    .await;
    assert_eq!(alice.as_deref(), Ok("CN=alice"));
    let bob = upgraded(
        &mut server,
        &client(&server_cert, &[&from_v1], &from_v1, BOTH),
    )
    .await;
    assert_eq!(bob.as_deref(), Ok("CN=bob"));
    let refused = upgraded(
        &mut server,
        &client(&server_cert, &[&sub_ca], &sub_ca, BOTH),
    )
    .await
    .expect_err("a CA certificate issued by the trusted CA");
    assert!(
        refused.contains("is a CA certificate (basicConstraints cA=TRUE) issued by a trusted CA"),
        "{refused}"
    );
    assert!(!refused.contains("CaUsedAsEndEntity"), "{refused}");
}

#[tokio::test]
async fn an_expired_trusted_certificate_is_refused() {
    let Some(keytool_exe) = keytool() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    // openssl 3.0 cannot backdate a certificate; rcgen can.
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after = rcgen::date_time_ymd(2001, 1, 1);
    let cert = params.self_signed(&key).expect("certificate");
    let expired = Pem {
        cert: dir.path().join("expired-cert.pem"),
        key: dir.path().join("expired-key.pem"),
    };
    std::fs::write(&expired.cert, cert.pem()).expect("write");
    std::fs::write(&expired.key, key.serialize_pem()).expect("write");
    let (mut server, server_cert) = echo_with_trust(dir.path(), &keytool_exe, &[&expired]).await;
    let refused = upgraded(
        &mut server,
        &client(&server_cert, &[&expired], &expired, BOTH),
    )
    .await
    .expect_err("an expired trusted certificate");
    assert!(refused.contains("has expired"), "{refused}");
}

/// Poll `done` every 100 ms for up to 10 s (the watcher debounces renewals).
async fn eventually<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done().await {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not happen within 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn emptying_the_trust_store_of_a_running_broker_revokes_its_clients() {
    let Some(keytool_exe) = keytool() else { return };
    if !have_openssl() {
        return;
    }
    let (logs, _guard) = crate::support::logs::Logs::capture();
    let certs = tempfile::tempdir().expect("tempdir");
    let (key_store, server_cert) = server_key_store(certs.path());
    let client_pem = keytool_client(&keytool_exe, certs.path(), "client");
    let ts = trust_store(&keytool_exe, certs.path(), TrustFormat::Jks, &[&client_pem]);
    let xml = crate::support::BrokerXml::new()
        .child(&format!(
            r#"<sslContext><sslContext keyStore="{}" keyStorePassword="{PASS}" trustStore="{}" trustStorePassword="{PASS}"/></sslContext>"#,
            key_store.display(),
            ts.display()
        ))
        .plugins("")
        .connector("tls", "mqtt+ssl://127.0.0.1:0?needClientAuth=true")
        .build();
    let live = crate::support::live::LiveBroker::start(&xml, true).await;
    let addr = live.addr("tls").await.expect("listening");
    let connector = client(&server_cert, &[&client_pem], &client_pem, BOTH);
    assert_eq!(
        connack(addr, &connector, "before").await,
        Some(ConnectReason::Success)
    );

    // A damaged renewal of the trust store is refused: the old trust stays, and the warning
    // says it is the trust store that was kept.
    let original = std::fs::read(&ts).expect("read trust store");
    crate::support::tls::replace_file(&ts, b"not a key store");
    eventually("the damaged trust store warning", || {
        let text = logs.text();
        async move { text.contains("the previous trust store stays in use") }
    })
    .await;
    assert_eq!(
        connack(addr, &connector, "kept").await,
        Some(ConnectReason::Success)
    );
    crate::support::tls::replace_file(&ts, &original);

    // Revocation the keytool way: delete the only trusted entry in place.
    Keytool::new(StoreType::Jks)
        .expect("keytool")
        .delete(&ts, "trusted0", PASS);
    eventually("the revocation", || {
        let connector = connector.clone();
        async move { connack(addr, &connector, "after").await.is_none() }
    })
    .await;
    assert!(
        logs.text()
            .contains("the trust store holds no certificate: every client certificate is refused"),
        "{}",
        logs.text()
    );
    live.shutdown().await;
}
