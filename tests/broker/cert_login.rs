//! Mutual TLS end to end: the client certificate's subject DN is mapped to a user and
//! groups by `jaasCertificateAuthenticationPlugin` (TextFileCertificateLoginModule files), and
//! the authorization entries then govern what that user may do over MQTT.

use crate::support::tls::{tls_connect, tls_connector, Ca, Leaf};
use crate::support::{connect_packet, BrokerXml, RawClient, STEP};
use ferromq::config::{load_file, LoadOptions};
use ferromq::protocol::{ConnectReason, QoS};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

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

/// CONNECT over mutual TLS with `client`'s certificate; the CONNACK reason and the client.
async fn connect(
    addr: std::net::SocketAddr,
    ca: &Ca,
    client: &Leaf,
    id: &str,
) -> (ConnectReason, RawClient<TlsStream<TcpStream>>) {
    let tls = tokio::time::timeout(STEP, tls_connect(addr, &tls_connector(ca, Some(client))))
        .await
        .expect("TLS handshake in time")
        .expect("TLS handshake");
    let (client, ack) = RawClient::handshake(tls, connect_packet(id, true, 0)).await;
    (ack.reason, client)
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
        local_store: false,
        embedded_default: false,
    };
    let loaded = load_file(&dir.path().join("activemq.xml"), &options);
    let text = loaded.diagnostics.to_string();
    let config = loaded
        .into_result()
        .unwrap_or_else(|_| panic!("valid config:\n{text}"));
    let broker = ferromq::broker::start(config).await.expect("broker starts");
    let addr = broker.listener_addrs()[0].1;

    // alice's certificate maps to user alice in group readers: allowed.> only.
    let (reason, mut alice_client) = connect(addr, &ca, &alice, "alice-client").await;
    assert_eq!(reason, ConnectReason::Success);
    let granted = alice_client
        .subscribe(
            1,
            &[
                ("allowed/#", QoS::AtLeastOnce),
                ("secret/#", QoS::AtLeastOnce),
            ],
        )
        .await;
    assert_eq!(granted, vec![1, 0x80]);

    // A certificate the CA signed but the users file does not name: refused.
    let (reason, _) = connect(addr, &ca, &mallory, "mallory-client").await;
    assert_eq!(reason, ConnectReason::NotAuthorized);
    broker.shutdown().await;
}
