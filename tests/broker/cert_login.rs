//! Mutual TLS end to end (issue 5): the client certificate's subject DN is mapped to a user and
//! groups by `jaasCertificateAuthenticationPlugin` (TextFileCertificateLoginModule files), and
//! the authorization entries then govern what that user may do over MQTT.

use crate::support::tls::{tls_connector, Ca, Leaf};
use crate::support::{connect_packet, subscribe_packet, BrokerXml, STEP};
use bytes::BytesMut;
use ferromq::config::{load_file, LoadOptions};
use ferromq::protocol::{decode, encode, ConnectReason, Packet, ProtocolVersion, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LOGIN_CONFIG: &str = r#"CertLogin {
    org.apache.activemq.jaas.TextFileCertificateLoginModule required
        org.apache.activemq.jaas.textfiledn.user="users.properties"
        org.apache.activemq.jaas.textfiledn.group="groups.properties";
};
"#;

fn broker_xml() -> String {
    BrokerXml::new()
        .name("mtls")
        .child(
            r#"<sslContext><sslContext keyStore="server.pem" trustStore="ca.pem"/></sslContext>"#,
        )
        .plugins(
            r#"
      <jaasCertificateAuthenticationPlugin configuration="CertLogin"/>
      <authorizationPlugin><map><authorizationMap><authorizationEntries>
        <authorizationEntry topic="allowed.>" read="readers" write="readers" admin="readers"/>
      </authorizationEntries></authorizationMap></map></authorizationPlugin>
    "#,
        )
        .connector("tls", "mqtt+ssl://127.0.0.1:0?needClientAuth=true")
        .build()
}

/// CONNECT over mutual TLS with `client`'s certificate; the CONNACK reason and the stream.
async fn connect(
    addr: std::net::SocketAddr,
    ca: &Ca,
    client: &Leaf,
    id: &str,
) -> (
    ConnectReason,
    tokio_rustls::client::TlsStream<TcpStream>,
    BytesMut,
) {
    let tcp = TcpStream::connect(addr).await.expect("tcp");
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = tls_connector(ca, Some(client))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    send(
        &mut tls,
        Packet::Connect(Box::new(connect_packet(id, true, 0))),
    )
    .await;
    let mut buf = BytesMut::new();
    match read(&mut tls, &mut buf).await {
        Packet::ConnAck(ack) => (ack.reason, tls, buf),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

async fn send(tls: &mut tokio_rustls::client::TlsStream<TcpStream>, packet: Packet) {
    let mut out = BytesMut::new();
    encode(&packet, ProtocolVersion::V311, &mut out).expect("encode");
    tls.write_all(&out).await.expect("write");
}

async fn read(tls: &mut tokio_rustls::client::TlsStream<TcpStream>, buf: &mut BytesMut) -> Packet {
    loop {
        if let Some(p) = decode(buf, Some(ProtocolVersion::V311), usize::MAX).expect("valid") {
            return p;
        }
        let n = tokio::time::timeout(STEP, tls.read_buf(buf))
            .await
            .expect("in time")
            .expect("read");
        assert!(n > 0, "closed by the broker");
    }
}

#[tokio::test]
async fn certificate_subject_maps_to_a_user_whose_groups_are_authorized() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("test CA");
    let server = ca.server(1);
    let alice = ca.client("alice");
    let mallory = ca.client("mallory");
    let write =
        |name: &str, text: &str| std::fs::write(dir.path().join(name), text).expect("write");
    write("server.pem", &server.combined_pem());
    write("ca.pem", &ca.pem());
    write("login.config", LOGIN_CONFIG);
    // The subject as Java prints it (RFC 2253 order): the helper issues C=US, O=Org, CN=name.
    write("users.properties", "alice=CN=alice, O=Org, C=US\n");
    write("groups.properties", "readers=alice\n");
    write("activemq.xml", &broker_xml());
    let options = LoadOptions {
        overrides: [(
            "java.security.auth.login.config".to_string(),
            dir.path().join("login.config").display().to_string(),
        )]
        .into_iter()
        .collect(),
        use_env: false,
    };
    let loaded = load_file(&dir.path().join("activemq.xml"), &options);
    let text = loaded.diagnostics.to_string();
    let config = loaded
        .into_result()
        .unwrap_or_else(|_| panic!("valid config:\n{text}"));
    let broker = ferromq::broker::start(config).await.expect("broker starts");
    let addr = broker.listener_addrs()[0].1;

    // alice's certificate maps to user alice in group readers: allowed.> only.
    let (reason, mut tls, mut buf) = connect(addr, &ca, &alice, "alice-client").await;
    assert_eq!(reason, ConnectReason::Success);
    send(
        &mut tls,
        subscribe_packet(
            1,
            &[
                ("allowed/#", QoS::AtLeastOnce),
                ("secret/#", QoS::AtLeastOnce),
            ],
        ),
    )
    .await;
    match read(&mut tls, &mut buf).await {
        Packet::SubAck(ack) => assert_eq!(ack.return_codes, vec![1, 0x80]),
        other => panic!("expected SUBACK, got {other:?}"),
    }

    // A certificate the CA signed but the users file does not name: refused.
    let (reason, _, _) = connect(addr, &ca, &mallory, "mallory-client").await;
    assert_eq!(reason, ConnectReason::NotAuthorized);
    broker.shutdown().await;
}
