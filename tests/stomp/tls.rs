//! `stomp+ssl://` with mutual TLS: the client certificate logs in through
//! `jaasCertificateAuthenticationPlugin`, and authorization entries govern the STOMP client.

use ferromq::config::{load_file, LoadOptions};

use crate::client::StompClient;
use crate::support::tls::{tls_connect, tls_connector, Ca, Leaf};
use crate::support::{BrokerXml, STEP};

const LOGIN_CONFIG: &str = r#"CertLogin {
    org.apache.activemq.jaas.TextFileCertificateLoginModule required
        org.apache.activemq.jaas.textfiledn.user="users.properties"
        org.apache.activemq.jaas.textfiledn.group="groups.properties";
};
"#;

async fn client(addr: std::net::SocketAddr, ca: &Ca, leaf: &Leaf) -> StompClient {
    let tls = tokio::time::timeout(STEP, tls_connect(addr, &tls_connector(ca, Some(leaf))))
        .await
        .expect("TLS handshake in time")
        .expect("TLS handshake");
    StompClient::tls(tls)
}

#[tokio::test]
async fn stomp_over_tls_logs_in_with_the_client_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("test CA");
    let alice = ca.client("alice");
    let mallory = ca.client("mallory");
    let write =
        |name: &str, text: &str| std::fs::write(dir.path().join(name), text).expect("write");
    write("server.pem", &ca.server(1).combined_pem());
    write("ca.pem", &ca.pem());
    write("login.config", LOGIN_CONFIG);
    write("users.properties", "alice=CN=alice, O=Org, C=US\n");
    write("groups.properties", "readers=alice\n");
    let xml = BrokerXml::new()
        .name("stomp-tls")
        .child(
            r#"<sslContext><sslContext keyStore="server.pem" trustStore="ca.pem"/></sslContext>"#,
        )
        .plugins(
            r#"
      <jaasCertificateAuthenticationPlugin configuration="CertLogin"/>
      <authorizationPlugin><map><authorizationMap><authorizationEntries>
        <authorizationEntry topic="allowed.>" read="readers" write="readers" admin="readers"/>
      </authorizationEntries></authorizationMap></map></authorizationPlugin>"#,
        )
        .connector("stomp-tls", "stomp+ssl://127.0.0.1:0?needClientAuth=true")
        .build();
    write("activemq.xml", &xml);
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

    let mut c = client(addr, &ca, &alice).await;
    c.connect(&[]).await;
    c.send(
        "SUBSCRIBE",
        &[
            ("destination", "/topic/allowed.x"),
            ("id", "1"),
            ("receipt", "r"),
        ],
        "",
    )
    .await;
    assert_eq!(c.recv().await.command, "RECEIPT");
    c.send("SEND", &[("destination", "/topic/allowed.x")], "over tls")
        .await;
    assert_eq!(c.recv().await.body_text(), "over tls");
    c.send("SEND", &[("destination", "/topic/secret")], "no")
        .await;
    assert_eq!(c.recv().await.command, "ERROR");

    let mut m = client(addr, &ca, &mallory).await;
    m.send("CONNECT", &[("accept-version", "1.2")], "").await;
    assert_eq!(
        m.recv().await.command,
        "ERROR",
        "a certificate no user maps to"
    );
    broker.shutdown().await;
}
