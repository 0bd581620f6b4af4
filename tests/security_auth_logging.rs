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
