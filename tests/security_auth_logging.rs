//! Failed logins are logged with client id, user and peer, never the password.
//!
//! Its own test binary on purpose: tracing caches per-callsite interest process-wide, and a
//! test on another thread hitting the same callsite with no subscriber made the captured log
//! miss events now and then when this lived beside the other authentication tests.

mod support;

use support::logs::Logs;

use ferromq::security::AuthRequest;
use support::security::*;

#[tokio::test(flavor = "current_thread")]
async fn failed_logins_are_logged_with_client_user_and_peer_but_never_the_password() {
    let (captured, _guard) = Logs::capture_at(tracing::Level::DEBUG);
    let sec = simple(vec![simple_user("alice", "right-one", "g")], false);
    let attempt = AuthRequest {
        client_id: "sensor-42",
        peer: peer("192.0.2.7"),
        ..req(Some("alice"), Some("Sup3rSecretGuess"))
    };
    assert!(sec.authenticate(&attempt).await.is_err());
    assert!(sec
        .authenticate(&req(Some("alice"), Some("right-one")))
        .await
        .is_ok());
    let logs = captured.text();
    assert!(logs.contains("WARN"), "{logs}");
    assert!(logs.contains("sensor-42"), "{logs}");
    assert!(logs.contains("alice"), "{logs}");
    assert!(logs.contains("192.0.2.7"), "{logs}");
    assert!(logs.contains("wrong password"), "{logs}");
    assert!(!logs.contains("Sup3rSecretGuess"), "{logs}");
    assert!(!logs.contains("right-one"), "{logs}");
}

#[tokio::test(flavor = "current_thread")]
async fn failed_scram_logins_are_logged_without_proofs_or_keys() {
    use ferromq::security::sasl::LoginSource;
    use ferromq::security::scram::ScramMechanism;

    let (captured, _guard) = Logs::capture_at(tracing::Level::DEBUG);
    let sec = simple(vec![simple_user("alice", "right-one", "g")], false);
    let source = LoginSource {
        client_id: "sensor-43",
        peer: peer("192.0.2.8"),
        tls: false,
    };
    for user in ["alice", "mallory"] {
        let client_first = format!("n,,n={user},r=clientnonce");
        let (exchange, server_first) = sec
            .scram_first(ScramMechanism::Sha256, client_first.as_bytes(), &source)
            .expect("server-first");
        let nonce = server_first
            .split(',')
            .next()
            .and_then(|r| r.strip_prefix("r="))
            .expect("nonce");
        // base64 of 32 bytes: a proof-shaped secret that must not reach the log.
        let proof = "U3VwM3JTZWNyZXRQcm9vZlN1cDNyU2VjcmV0UHJvb2Y=";
        let client_final = format!("c=biws,r={nonce},p={proof}");
        assert!(sec
            .scram_final(&exchange, client_final.as_bytes(), &source)
            .is_err());
    }
    let logs = captured.text();
    assert!(logs.contains("login refused"), "{logs}");
    assert!(
        logs.contains("sensor-43") && logs.contains("192.0.2.8"),
        "{logs}"
    );
    assert!(logs.contains("invalid proof"), "{logs}");
    assert!(logs.contains("unknown user"), "{logs}");
    assert!(logs.contains("SCRAM-SHA-256"), "{logs}");
    assert!(!logs.contains("U3VwM3JTZWNyZXRQcm9vZl"), "{logs}");
    assert!(!logs.contains("right-one"), "{logs}");
    assert!(!logs.contains("StoredKey"), "{logs}");
}

#[test]
fn security_is_shareable_and_its_futures_can_be_spawned() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    let sec = simple(vec![simple_user("alice", "pw", "g")], false);
    send_sync(&sec);
    let request = req(Some("alice"), Some("pw"));
    let login = sec.authenticate(&request);
    send(&login);
    send_sync(&ferromq::security::AuthzCache::default());
}
