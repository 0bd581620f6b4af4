//! MQTT 5 enhanced authentication with SCRAM-SHA-256/512 over a real socket: raw AUTH packets
//! from a SCRAM client written here with the RustCrypto primitives (not the broker's own SCRAM
//! code), and from Python's `scramp` (an independent implementation) in
//! `tests/interop/scram_client.py`.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::Bytes;
use ferromq::protocol::{Auth, ConnAck, Connect, ConnectReason, Packet, Properties, QoS};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};
use tokio::net::TcpStream;

use crate::support::security::write;
use crate::support::xml::no_env;
use crate::support::{connect_v5, RawClient, TestBroker, STEP};

const SHA256: &str = "SCRAM-SHA-256";
const SHA512: &str = "SCRAM-SHA-512";

/// alice: plain text (both mechanisms derived at load), in group `readers`; bob: a bcrypt hash
/// (no SCRAM). Only `readers` may read `news/#`.
fn simple_broker_xml(uri_options: &str) -> String {
    let bob = bcrypt::hash("bobpw", 4).expect("bcrypt");
    format!(
        r#"<beans xmlns="http://www.springframework.org/schema/beans">
  <broker xmlns="http://activemq.apache.org/schema/core" persistent="false">
    <plugins>
      <simpleAuthenticationPlugin>
        <users>
          <authenticationUser username="alice" password="pencil" groups="readers"/>
          <authenticationUser username="bob" password="{bob}" groups="readers"/>
        </users>
      </simpleAuthenticationPlugin>
      <authorizationPlugin><map><authorizationMap><authorizationEntries>
        <authorizationEntry topic="news.>" read="readers" write="readers" admin="readers"/>
      </authorizationEntries></authorizationMap></map></authorizationPlugin>
    </plugins>
    <transportConnectors>
      <transportConnector name="mqtt" uri="mqtt://127.0.0.1:0{uri_options}"/>
    </transportConnectors>
  </broker>
</beans>"#
    )
}

async fn simple_broker() -> TestBroker {
    TestBroker::from_xml(&simple_broker_xml("")).await
}

/// A SCRAM client (RFC 5802) on the RustCrypto primitives.
struct ScramClient {
    mechanism: &'static str,
    password: Vec<u8>,
    client_first_bare: String,
    nonce: String,
    expected_server_signature: Option<Vec<u8>>,
}

impl ScramClient {
    fn new(mechanism: &'static str, user: &str, password: &str) -> ScramClient {
        let nonce = BASE64.encode(rand::random::<[u8; 18]>());
        let user = user.replace('=', "=3D").replace(',', "=2C");
        ScramClient {
            mechanism,
            password: password.as_bytes().to_vec(),
            client_first_bare: format!("n={user},r={nonce}"),
            nonce,
            expected_server_signature: None,
        }
    }

    fn client_first(&self) -> Bytes {
        Bytes::from(format!("n,,{}", self.client_first_bare))
    }

    fn hmac(&self, key: &[u8], data: &[u8]) -> Vec<u8> {
        if self.mechanism == SHA256 {
            let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("hmac key");
            m.update(data);
            m.finalize().into_bytes().to_vec()
        } else {
            let mut m = <Hmac<Sha512> as Mac>::new_from_slice(key).expect("hmac key");
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
    }

    fn hash(&self, data: &[u8]) -> Vec<u8> {
        if self.mechanism == SHA256 {
            Sha256::digest(data).to_vec()
        } else {
            Sha512::digest(data).to_vec()
        }
    }

    /// client-final for `server_first`; remembers the server signature to expect.
    fn client_final(&mut self, server_first: &[u8]) -> Bytes {
        let server_first = std::str::from_utf8(server_first).expect("UTF-8 server-first");
        let mut parts = server_first.split(',');
        let nonce = parts.next().and_then(|p| p.strip_prefix("r=")).expect("r=");
        let salt = parts.next().and_then(|p| p.strip_prefix("s=")).expect("s=");
        let iterations: u32 = parts
            .next()
            .and_then(|p| p.strip_prefix("i="))
            .and_then(|i| i.parse().ok())
            .expect("i=");
        assert!(nonce.starts_with(&self.nonce), "server nonce extends ours");
        let salt = BASE64.decode(salt).expect("salt base64");
        let mut salted = vec![0u8; if self.mechanism == SHA256 { 32 } else { 64 }];
        if self.mechanism == SHA256 {
            pbkdf2::pbkdf2_hmac::<Sha256>(&self.password, &salt, iterations, &mut salted);
        } else {
            pbkdf2::pbkdf2_hmac::<Sha512>(&self.password, &salt, iterations, &mut salted);
        }
        let client_key = self.hmac(&salted, b"Client Key");
        let stored_key = self.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let signature = self.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = self.hmac(&salted, b"Server Key");
        self.expected_server_signature = Some(self.hmac(&server_key, auth_message.as_bytes()));
        Bytes::from(format!("{without_proof},p={}", BASE64.encode(proof)))
    }

    /// Check server-final (`v=...`) against the signature the password predicts.
    fn verify_server_final(&self, server_final: &[u8]) {
        let text = std::str::from_utf8(server_final).expect("UTF-8 server-final");
        let signature = text.strip_prefix("v=").expect("v=");
        assert_eq!(
            Some(BASE64.decode(signature).expect("base64")),
            self.expected_server_signature,
            "the server proved it knows the credential"
        );
    }
}

fn auth_properties(method: &str, data: Option<Bytes>) -> Option<Box<Properties>> {
    Some(Box::new(Properties {
        authentication_method: Some(method.into()),
        authentication_data: data,
        ..Properties::default()
    }))
}

fn auth(reason: u8, method: &str, data: Option<Bytes>) -> Packet {
    Packet::Auth(Auth {
        reason,
        properties: auth_properties(method, data),
    })
}

fn scram_connect(client_id: &str, method: &str, client_first: Option<Bytes>) -> Connect {
    let mut connect = connect_v5(client_id, true, None);
    connect.properties = auth_properties(method, client_first);
    connect
}

/// The data of an AUTH 0x18 from the broker, checking its method.
fn continue_data(packet: Packet, method: &str) -> Bytes {
    match packet {
        Packet::Auth(a) => {
            assert_eq!(a.reason, 0x18, "{a:?}");
            let p = a.properties.expect("AUTH properties");
            assert_eq!(p.authentication_method.as_deref(), Some(method));
            p.authentication_data.unwrap_or_default()
        }
        other => panic!("expected AUTH 0x18, got {other:?}"),
    }
}

fn connack(packet: Packet) -> ConnAck {
    match packet {
        Packet::ConnAck(ack) => ack,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// The whole CONNECT exchange; returns the client and the final CONNACK.
async fn scram_login(
    addr: std::net::SocketAddr,
    client_id: &str,
    method: &'static str,
    user: &str,
    password: &str,
) -> (RawClient, ConnAck) {
    let mut scram = ScramClient::new(method, user, password);
    let stream = TcpStream::connect(addr).await.expect("connect");
    let mut client = RawClient::over(stream);
    client.version = ferromq::protocol::ProtocolVersion::V5;
    client
        .send(Packet::Connect(Box::new(scram_connect(
            client_id,
            method,
            Some(scram.client_first()),
        ))))
        .await;
    let server_first = continue_data(client.recv().await, method);
    client
        .send(auth(0x18, method, Some(scram.client_final(&server_first))))
        .await;
    let ack = connack(client.recv().await);
    if ack.reason == ConnectReason::Success {
        let p = ack.properties.as_ref().expect("CONNACK properties");
        assert_eq!(p.authentication_method.as_deref(), Some(method));
        scram.verify_server_final(p.authentication_data.as_deref().expect("server-final"));
    }
    (client, ack)
}

#[tokio::test]
async fn scram_sha_256_and_512_log_in_plain_text_users_with_their_groups() {
    let broker = simple_broker().await;
    for (id, method) in [("a256", SHA256), ("a512", SHA512)] {
        let (mut client, ack) = scram_login(broker.addr, id, method, "alice", "pencil").await;
        assert_eq!(ack.reason, ConnectReason::Success);
        // Groups as after a password login: readers may read news/#, nobody other/#.
        assert_eq!(
            client
                .subscribe(
                    1,
                    &[("news/#", QoS::AtLeastOnce), ("other/#", QoS::AtLeastOnce)]
                )
                .await,
            vec![1, 0x87]
        );
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn wrong_password_unknown_and_hashed_users_fail_with_0x86_after_the_full_exchange() {
    let broker = simple_broker().await;
    for (id, method, user, password) in [
        ("wrong", SHA256, "alice", "pencil2"),
        ("wrong512", SHA512, "alice", "Pencil"),
        ("unknown", SHA256, "mallory", "pencil"),
        ("hashed", SHA256, "bob", "bobpw"),
    ] {
        let (mut client, ack) = scram_login(broker.addr, id, method, user, password).await;
        assert_eq!(ack.reason, ConnectReason::BadUserNameOrPassword, "{id}");
        assert!(ack.properties.is_none(), "no server-final on a refusal");
        client.expect_closed().await;
    }
    // Failed SCRAM logins count in the login throttle like failed passwords.
    let failures = broker
        .handle
        .core()
        .security()
        .login_throttle()
        .failures("127.0.0.1".parse().expect("ip"), Instant::now());
    assert_eq!(failures, 4);
    // bob keeps password authentication.
    let mut login = connect_v5("bob-pw", true, None);
    login.username = Some("bob".into());
    login.password = Some(Bytes::from_static(b"bobpw"));
    RawClient::connect_ok(broker.addr, login).await;
    broker.shutdown().await;
}

#[tokio::test]
async fn an_unknown_user_gets_the_same_salt_each_time() {
    let broker = simple_broker().await;
    let mut salts = Vec::new();
    for _ in 0..2 {
        let scram = ScramClient::new(SHA256, "mallory", "x");
        let connect = scram_connect("m", SHA256, Some(scram.client_first()));
        let stream = TcpStream::connect(broker.addr).await.expect("connect");
        let mut client = RawClient::over(stream);
        client.version = ferromq::protocol::ProtocolVersion::V5;
        client.send(Packet::Connect(Box::new(connect))).await;
        let server_first = continue_data(client.recv().await, SHA256);
        let text = String::from_utf8(server_first.to_vec()).expect("UTF-8");
        salts.push(text.split(',').nth(1).expect("s=").to_owned());
    }
    assert_eq!(salts[0], salts[1]);
    broker.shutdown().await;
}

#[tokio::test]
async fn unknown_methods_and_scram_without_a_user_database_get_0x8c() {
    let broker = simple_broker().await;
    for method in ["PLAIN", "SCRAM-SHA-1", "scram-sha-256"] {
        let (mut client, ack) = RawClient::connect(
            broker.addr,
            scram_connect("m", method, Some(Bytes::from_static(b"n,,n=alice,r=abc"))),
        )
        .await;
        assert_eq!(
            ack.reason,
            ConnectReason::BadAuthenticationMethod,
            "{method}"
        );
        client.expect_closed().await;
    }
    broker.shutdown().await;
    // No authentication plugin: no users to check a proof against.
    let open = TestBroker::default().await;
    let (_, ack) = RawClient::connect(
        open.addr,
        scram_connect("m", SHA256, Some(Bytes::from_static(b"n,,n=alice,r=abc"))),
    )
    .await;
    assert_eq!(ack.reason, ConnectReason::BadAuthenticationMethod);
    open.shutdown().await;
}

#[tokio::test]
async fn a_connect_without_client_first_is_asked_for_it() {
    let broker = simple_broker().await;
    let mut scram = ScramClient::new(SHA512, "alice", "pencil");
    let stream = TcpStream::connect(broker.addr).await.expect("connect");
    let mut client = RawClient::over(stream);
    client.version = ferromq::protocol::ProtocolVersion::V5;
    client
        .send(Packet::Connect(Box::new(scram_connect(
            "late", SHA512, None,
        ))))
        .await;
    assert!(continue_data(client.recv().await, SHA512).is_empty());
    client
        .send(auth(0x18, SHA512, Some(scram.client_first())))
        .await;
    let server_first = continue_data(client.recv().await, SHA512);
    client
        .send(auth(0x18, SHA512, Some(scram.client_final(&server_first))))
        .await;
    assert_eq!(connack(client.recv().await).reason, ConnectReason::Success);
    broker.shutdown().await;
}

/// A connection whose SCRAM-SHA-256 CONNECT was answered with AUTH 0x18 (server-first).
async fn in_scram_exchange(addr: std::net::SocketAddr) -> RawClient {
    let scram = ScramClient::new(SHA256, "alice", "pencil");
    let stream = TcpStream::connect(addr).await.expect("connect");
    let mut client = RawClient::over(stream);
    client.version = ferromq::protocol::ProtocolVersion::V5;
    client
        .send(Packet::Connect(Box::new(scram_connect(
            "p",
            SHA256,
            Some(scram.client_first()),
        ))))
        .await;
    continue_data(client.recv().await, SHA256);
    client
}

#[tokio::test]
async fn protocol_errors_during_the_exchange_get_0x82() {
    let broker = simple_broker().await;
    // AUTH without the method, AUTH with another method, another packet before CONNACK.
    let no_method = Packet::Auth(Auth {
        reason: 0x18,
        properties: None,
    });
    for (what, packet) in [
        ("no method", no_method),
        (
            "other method",
            auth(0x18, SHA512, Some(Bytes::from_static(b"x"))),
        ),
        (
            "re-authenticate",
            auth(0x19, SHA256, Some(Bytes::from_static(b"x"))),
        ),
        ("PINGREQ", Packet::PingReq),
    ] {
        let mut client = in_scram_exchange(broker.addr).await;
        client.send(packet).await;
        assert_eq!(
            connack(client.recv().await).reason,
            ConnectReason::ProtocolError,
            "{what}"
        );
        client.expect_closed().await;
    }
    // AUTH packets that do not decode: CONNACK with their reason, then the close.
    let mut repeated_method = vec![0xF0, 34, 0x18, 32];
    for _ in 0..2 {
        repeated_method.extend_from_slice(&[0x15, 0x00, 13]);
        repeated_method.extend_from_slice(SHA256.as_bytes());
    }
    for (what, bytes, expected) in [
        (
            "data without a method",
            vec![0xF0, 7, 0x18, 5, 0x16, 0x00, 2, b'h', b'i'],
            ConnectReason::ProtocolError,
        ),
        (
            "a repeated method",
            repeated_method,
            ConnectReason::ProtocolError,
        ),
        (
            "a property cut short",
            vec![0xF0, 3, 0x18, 5, 0x16],
            ConnectReason::MalformedPacket,
        ),
    ] {
        let mut client = in_scram_exchange(broker.addr).await;
        client.send_raw(&bytes).await;
        assert_eq!(connack(client.recv().await).reason, expected, "{what}");
        client.expect_closed().await;
    }
    // AUTH on a connection that logged in with a password: DISCONNECT 0x82.
    let mut login = connect_v5("pw", true, None);
    login.username = Some("alice".into());
    login.password = Some(Bytes::from_static(b"pencil"));
    let (mut client, _) = RawClient::connect_ok(broker.addr, login).await;
    client
        .send(auth(
            0x19,
            SHA256,
            Some(Bytes::from_static(b"n,,n=alice,r=x")),
        ))
        .await;
    expect_disconnect(&mut client, 0x82).await;
    broker.shutdown().await;
}

#[tokio::test]
async fn an_unfinished_exchange_ends_at_the_connect_attempt_timeout() {
    let broker =
        TestBroker::from_xml(&simple_broker_xml("?transport.connectAttemptTimeout=300")).await;
    let scram = ScramClient::new(SHA256, "alice", "pencil");
    let stream = TcpStream::connect(broker.addr).await.expect("connect");
    let mut client = RawClient::over(stream);
    client.version = ferromq::protocol::ProtocolVersion::V5;
    client
        .send(Packet::Connect(Box::new(scram_connect(
            "slow",
            SHA256,
            Some(scram.client_first()),
        ))))
        .await;
    continue_data(client.recv().await, SHA256);
    let started = Instant::now();
    assert_eq!(
        connack(client.recv().await).reason,
        ConnectReason::NotAuthorized
    );
    assert!(started.elapsed() < STEP);
    client.expect_closed().await;
    broker.shutdown().await;
}

async fn expect_disconnect(client: &mut RawClient, code: u8) {
    match client.recv().await {
        Packet::Disconnect(d) => assert_eq!(d.reason, code, "{d:?}"),
        other => panic!("expected DISCONNECT {code:#x}, got {other:?}"),
    }
    client.expect_closed().await;
}

/// Re-authenticate `client` (connected with `method`) with `password`; returns the broker's
/// answer to the client-final message.
async fn reauthenticate(
    client: &mut RawClient,
    method: &'static str,
    user: &str,
    password: &str,
) -> (ScramClient, Packet) {
    let mut scram = ScramClient::new(method, user, password);
    client
        .send(auth(0x19, method, Some(scram.client_first())))
        .await;
    let server_first = continue_data(client.recv().await, method);
    client
        .send(auth(0x18, method, Some(scram.client_final(&server_first))))
        .await;
    let answer = client.recv().await;
    (scram, answer)
}

#[tokio::test]
async fn reauthentication_succeeds_and_the_connection_goes_on() {
    let broker = simple_broker().await;
    let (mut client, ack) = scram_login(broker.addr, "re", SHA512, "alice", "pencil").await;
    assert_eq!(ack.reason, ConnectReason::Success);
    for _ in 0..2 {
        let (scram, answer) = reauthenticate(&mut client, SHA512, "alice", "pencil").await;
        match answer {
            Packet::Auth(a) => {
                assert_eq!(a.reason, 0x00);
                let p = a.properties.expect("properties");
                assert_eq!(p.authentication_method.as_deref(), Some(SHA512));
                scram.verify_server_final(p.authentication_data.as_deref().expect("data"));
            }
            other => panic!("expected AUTH 0x00, got {other:?}"),
        }
    }
    client.send(Packet::PingReq).await;
    assert_eq!(client.recv().await, Packet::PingResp);
    broker.shutdown().await;
}

#[tokio::test]
async fn failed_reauthentication_disconnects_with_0x87() {
    let broker = simple_broker().await;
    let (mut client, _) = scram_login(broker.addr, "bad", SHA256, "alice", "pencil").await;
    let (_, answer) = reauthenticate(&mut client, SHA256, "alice", "wrong").await;
    match answer {
        Packet::Disconnect(d) => assert_eq!(d.reason, 0x87),
        other => panic!("expected DISCONNECT 0x87, got {other:?}"),
    }
    client.expect_closed().await;

    // Another method than the CONNECT's is a protocol error.
    let (mut client, _) = scram_login(broker.addr, "other", SHA256, "alice", "pencil").await;
    let scram = ScramClient::new(SHA512, "alice", "pencil");
    client
        .send(auth(0x19, SHA512, Some(scram.client_first())))
        .await;
    expect_disconnect(&mut client, 0x82).await;

    // So is an AUTH 0x19 without a method.
    let (mut client, _) = scram_login(broker.addr, "none", SHA256, "alice", "pencil").await;
    client
        .send(Packet::Auth(Auth {
            reason: 0x19,
            properties: None,
        }))
        .await;
    expect_disconnect(&mut client, 0x82).await;

    // A client-final without a re-authentication in progress too.
    let (mut client, _) = scram_login(broker.addr, "turn", SHA256, "alice", "pencil").await;
    client
        .send(auth(
            0x18,
            SHA256,
            Some(Bytes::from_static(b"c=biws,r=x,p=eA==")),
        ))
        .await;
    expect_disconnect(&mut client, 0x82).await;
    broker.shutdown().await;
}

#[tokio::test]
async fn a_stalled_reauthentication_times_out_with_0x87() {
    let broker =
        TestBroker::from_xml(&simple_broker_xml("?transport.connectAttemptTimeout=300")).await;
    let (mut client, _) = scram_login(broker.addr, "stall", SHA256, "alice", "pencil").await;
    let scram = ScramClient::new(SHA256, "alice", "pencil");
    client
        .send(auth(0x19, SHA256, Some(scram.client_first())))
        .await;
    continue_data(client.recv().await, SHA256);
    expect_disconnect(&mut client, 0x87).await;
    broker.shutdown().await;
}

/// A JAAS properties login whose users file holds `ferromq passwd` output for carol and a
/// plain-text password for dave.
fn jaas_broker_dir(dir: &Path) -> ferromq::config::Config {
    let output = Command::new(env!("CARGO_BIN_EXE_ferromq"))
        .args(["passwd", "--algorithm", "scram-sha-256"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().expect("stdin").write_all(b"carolpw\n")?;
            child.wait_with_output()
        })
        .expect("ferromq passwd runs");
    assert!(output.status.success());
    let credential = String::from_utf8(output.stdout).expect("UTF-8");
    assert!(
        credential.starts_with("SCRAM-SHA-256:4096:"),
        "{credential}"
    );
    write(
        dir,
        "users.properties",
        &format!("carol={}\ndave=davepw\n", credential.trim()),
    );
    write(dir, "groups.properties", "readers=carol,dave\n");
    write(
        dir,
        "login.config",
        r#"activemq {
    org.apache.activemq.jaas.PropertiesLoginModule required
        org.apache.activemq.jaas.properties.user="users.properties"
        org.apache.activemq.jaas.properties.group="groups.properties";
};
"#,
    );
    let xml = r#"<beans xmlns="http://www.springframework.org/schema/beans">
  <broker xmlns="http://activemq.apache.org/schema/core" persistent="false">
    <plugins>
      <jaasAuthenticationPlugin configuration="activemq"/>
      <authorizationPlugin><map><authorizationMap><authorizationEntries>
        <authorizationEntry topic="news.>" read="readers" write="readers" admin="readers"/>
      </authorizationEntries></authorizationMap></map></authorizationPlugin>
    </plugins>
    <transportConnectors>
      <transportConnector name="mqtt" uri="mqtt://127.0.0.1:0"/>
    </transportConnectors>
  </broker>
</beans>"#;
    let loaded = ferromq::config::load_str(xml, dir, &no_env());
    let diagnostics = loaded.diagnostics.to_string();
    loaded
        .into_result()
        .unwrap_or_else(|_| panic!("invalid test config:\n{diagnostics}"))
}

#[tokio::test]
async fn jaas_users_file_with_passwd_output_and_plain_text_users() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = TestBroker::start(jaas_broker_dir(dir.path())).await;
    let (mut carol, ack) = scram_login(broker.addr, "c", SHA256, "carol", "carolpw").await;
    assert_eq!(ack.reason, ConnectReason::Success);
    assert_eq!(
        carol.subscribe(1, &[("news/#", QoS::AtMostOnce)]).await,
        vec![0]
    );
    // Her credential is SCRAM-SHA-256 only.
    let (_, ack) = scram_login(broker.addr, "c2", SHA512, "carol", "carolpw").await;
    assert_eq!(ack.reason, ConnectReason::BadUserNameOrPassword);
    // Password logins still work with a SCRAM credential.
    let mut login = connect_v5("c3", true, None);
    login.username = Some("carol".into());
    login.password = Some(Bytes::from_static(b"carolpw"));
    RawClient::connect_ok(broker.addr, login).await;
    // dave's plain-text password got both mechanisms at load.
    for method in [SHA256, SHA512] {
        let (_, ack) = scram_login(broker.addr, "d", method, "dave", "davepw").await;
        assert_eq!(ack.reason, ConnectReason::Success, "{method}");
    }
    broker.shutdown().await;
}

/// Python's `scramp` (an independent SCRAM implementation) driving raw MQTT 5 packets.
#[tokio::test]
async fn scramp_client_interoperates() {
    let probe = Command::new("python3")
        .args(["-c", "import scramp"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!(
            "SKIPPED scramp_client_interoperates: python3 with the `scramp` package is not \
             installed (pip install scramp; .ci/run installs it)"
        );
        return;
    }
    let broker = simple_broker().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/scram_client.py");
    let port = broker.addr.port().to_string();
    let run = |args: Vec<String>| {
        let port = port.clone();
        tokio::task::spawn_blocking(move || {
            let mut all = vec![script.to_owned(), "--port".into(), port];
            all.extend(args);
            Command::new("python3")
                .args(&all)
                .output()
                .expect("python3 runs")
        })
    };
    let cases: &[(&str, &str, &str, &str)] = &[
        // mechanism, user, password, expected outcome
        (SHA256, "alice", "pencil", "ok"),
        (SHA512, "alice", "pencil", "ok"),
        (SHA256, "alice", "wrong", "0x86"),
        (SHA512, "mallory", "pencil", "0x86"),
        (SHA256, "bob", "bobpw", "0x86"),
    ];
    for (mechanism, user, password, expect) in cases {
        let args = vec![
            "--mechanism".into(),
            mechanism.to_string(),
            "--user".into(),
            user.to_string(),
            "--password".into(),
            password.to_string(),
            "--expect".into(),
            expect.to_string(),
        ];
        let output = tokio::time::timeout(STEP * 2, run(args))
            .await
            .expect("scram_client.py in time")
            .expect("join");
        assert!(
            output.status.success(),
            "{mechanism} {user}/{password} expecting {expect}:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // Re-authentication: once with the right password, then with a wrong one (DISCONNECT 0x87).
    let args: Vec<String> = [
        "--mechanism",
        SHA256,
        "--user",
        "alice",
        "--password",
        "pencil",
        "--expect",
        "ok",
        "--reauth",
        "pencil",
        "--reauth",
        "wrong",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let output = tokio::time::timeout(STEP * 2, run(args))
        .await
        .expect("in time")
        .expect("join");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("reauth 1: ok"), "{stdout}");
    assert!(stdout.contains("reauth 2: disconnect 0x87"), "{stdout}");
    broker.shutdown().await;
}

#[tokio::test]
async fn reauthentication_looks_the_groups_up_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "users.properties", "alice=pencil\nwriter=wpw\n");
    let groups = write(
        dir.path(),
        "groups.properties",
        "readers=alice\nmarkers=alice\nwriters=writer\n",
    );
    write(
        dir.path(),
        "login.config",
        r#"activemq {
    org.apache.activemq.jaas.PropertiesLoginModule required
        org.apache.activemq.jaas.properties.user="users.properties"
        org.apache.activemq.jaas.properties.group="groups.properties"
        reload=true;
};
"#,
    );
    let xml = r#"<beans xmlns="http://www.springframework.org/schema/beans">
  <broker xmlns="http://activemq.apache.org/schema/core" persistent="false">
    <plugins>
      <jaasAuthenticationPlugin configuration="activemq"/>
      <authorizationPlugin><map><authorizationMap><authorizationEntries>
        <authorizationEntry topic="news.>" read="readers" write="writers" admin="readers,writers"/>
        <authorizationEntry topic="marker.>" read="markers" write="writers" admin="markers,writers"/>
      </authorizationEntries></authorizationMap></map></authorizationPlugin>
    </plugins>
    <transportConnectors>
      <transportConnector name="mqtt" uri="mqtt://127.0.0.1:0"/>
    </transportConnectors>
  </broker>
</beans>"#;
    let loaded = ferromq::config::load_str(xml, dir.path(), &no_env());
    let diagnostics = loaded.diagnostics.to_string();
    let config = loaded
        .into_result()
        .unwrap_or_else(|_| panic!("invalid test config:\n{diagnostics}"));
    let broker = TestBroker::start(config).await;
    let (mut alice, ack) = scram_login(broker.addr, "alice", SHA256, "alice", "pencil").await;
    assert_eq!(ack.reason, ConnectReason::Success);
    assert_eq!(
        alice
            .subscribe(
                1,
                &[("news/#", QoS::AtLeastOnce), ("marker/#", QoS::AtLeastOnce)]
            )
            .await,
        vec![1, 1]
    );

    // alice leaves `readers`; the file is re-read at the next login, here her re-authentication.
    let file = std::fs::File::create(&groups).expect("rewrite groups");
    std::io::Write::write_all(&mut &file, b"markers=alice\nwriters=writer\n").expect("write");
    file.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .expect("mtime");
    drop(file);
    let (_, answer) = reauthenticate(&mut alice, SHA256, "alice", "pencil").await;
    assert!(
        matches!(answer, Packet::Auth(Auth { reason: 0, .. })),
        "{answer:?}"
    );

    // Deliveries are decided with her new groups: a writer's news message does not reach her,
    // the marker it publishes next does (one publisher's messages arrive in order).
    let mut login = connect_v5("writer", true, None);
    login.username = Some("writer".into());
    login.password = Some(Bytes::from_static(b"wpw"));
    let (mut writer, _) = RawClient::connect_ok(broker.addr, login).await;
    for (id, topic) in [(1, "news/x"), (2, "marker/y")] {
        writer
            .send(crate::support::publish_packet(
                topic,
                b"m",
                QoS::AtLeastOnce,
                Some(id),
                false,
            ))
            .await;
        assert!(matches!(writer.recv().await, Packet::PubAck(_)));
    }
    let delivered = alice.recv_publish().await;
    assert_eq!(&*delivered.topic, "marker/y");
    // And a new subscription is decided with the new groups.
    assert_eq!(
        alice.subscribe(3, &[("news/#", QoS::AtLeastOnce)]).await,
        vec![0x87]
    );
    broker.shutdown().await;
}
