//! Authentication rules: no plugin, simple users and anonymous access, hashed
//! passwords, failed-login throttling and logging. JAAS domains: jaas.rs.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::support::security::*;
use ferromq::config::{Authentication, SimpleAuth};
use ferromq::security::password::{hash, HashAlgorithm};
use ferromq::security::throttle::ThrottlePolicy;
use ferromq::security::{AuthFailure, AuthRequest, Principal, Security};

#[tokio::test]
async fn no_plugin_lets_everyone_in_as_anonymous() {
    let sec = Security::from_parts(&Authentication::None, None).expect("valid");
    for (u, p) in [(None, None), (Some("x"), Some("y")), (Some("x"), None)] {
        assert_eq!(
            sec.authenticate(&req(u, p)).await,
            Ok(Principal::anonymous())
        );
    }
}

#[tokio::test]
async fn simple_users_and_anonymous_rules() {
    let sec = simple(vec![simple_user("alice", "pw1", "admins,users")], false);
    let alice = sec.authenticate(&req(Some("alice"), Some("pw1"))).await;
    let alice = alice.expect("good credentials");
    assert_eq!(&*alice.user, "alice");
    assert_eq!(groups(&alice), vec!["admins", "users"]);
    assert!(!alice.anonymous);

    let bad = Err(AuthFailure::BadCredentials);
    assert_eq!(
        sec.authenticate(&req(Some("alice"), Some("pw2"))).await,
        bad
    );
    assert_eq!(sec.authenticate(&req(Some("alice"), Some(""))).await, bad);
    assert_eq!(sec.authenticate(&req(Some("alice"), None)).await, bad);
    assert_eq!(sec.authenticate(&req(Some("bob"), Some("pw1"))).await, bad);
    assert_eq!(sec.authenticate(&req(None, Some("pw1"))).await, bad);
    assert_eq!(
        sec.authenticate(&req(None, None)).await,
        Err(AuthFailure::NotAuthorized)
    );

    let open = simple(vec![simple_user("alice", "pw1", "users")], true);
    let anon = open
        .authenticate(&req(None, None))
        .await
        .expect("anonymous");
    assert_eq!(&*anon.user, "anon");
    assert_eq!(groups(&anon), vec!["visitors"]);
    assert!(anon.anonymous);
    // Anonymous means neither user name nor password: a wrong password is still refused.
    assert_eq!(
        open.authenticate(&req(Some("alice"), Some("no"))).await,
        bad
    );
    assert_eq!(open.authenticate(&req(None, Some("pw1"))).await, bad);
}

#[tokio::test]
async fn hashed_passwords_bcrypt_and_argon2() {
    let bcrypt_hash = bcrypt::hash("b-secret", 4).expect("bcrypt");
    let argon_hash = hash(b"a-secret", HashAlgorithm::Argon2id).expect("argon2");
    assert!(argon_hash.starts_with("$argon2id$"));
    let sec = simple(
        vec![
            simple_user("b", &bcrypt_hash, "g"),
            simple_user("a", &argon_hash, "g"),
        ],
        false,
    );
    assert!(sec
        .authenticate(&req(Some("b"), Some("b-secret")))
        .await
        .is_ok());
    assert!(sec
        .authenticate(&req(Some("a"), Some("a-secret")))
        .await
        .is_ok());
    let bad = Err(AuthFailure::BadCredentials);
    assert_eq!(
        sec.authenticate(&req(Some("b"), Some("a-secret"))).await,
        bad
    );
    assert_eq!(
        sec.authenticate(&req(Some("a"), Some("b-secret"))).await,
        bad
    );
    // The hash itself is not a password.
    assert_eq!(
        sec.authenticate(&req(Some("b"), Some(&bcrypt_hash))).await,
        bad
    );

    // A value that starts like a hash but is broken is a configuration error, not plaintext.
    let err = Security::from_parts(
        &Authentication::Simple(SimpleAuth {
            users: vec![simple_user("x", "$2b$12$short", "g")],
            anonymous_access_allowed: false,
            anonymous_user: "anonymous".into(),
            anonymous_group: "anonymous".into(),
            span: span(),
        }),
        None,
    )
    .expect_err("malformed hash");
    assert!(err.contains("user `x`"), "{err}");
}

// ---- throttling and logging ----

#[tokio::test]
async fn failed_logins_slow_down_that_address_only() {
    let sec =
        simple(vec![simple_user("alice", "pw", "g")], false).with_throttle_policy(ThrottlePolicy {
            free_failures: 2,
            base_delay: Duration::from_millis(300),
            max_delay: Duration::from_millis(600),
            max_backlog: Duration::from_secs(2),
            ..ThrottlePolicy::default()
        });
    let attacker = |pw: &'static str| AuthRequest {
        peer: peer("10.9.9.9"),
        ..req(Some("alice"), Some(pw))
    };
    for _ in 0..3 {
        assert!(sec.authenticate(&attacker("guess")).await.is_err());
    }
    // Third failure recorded: the next attempt waits >= 300 ms, even with the right password,
    // while another address is served at once.
    let honest = AuthRequest {
        peer: peer("10.1.1.1"),
        ..req(Some("alice"), Some("pw"))
    };
    let started = Instant::now();
    let (slow, fast) = tokio::join!(
        async {
            let r = sec.authenticate(&attacker("pw")).await;
            (r, started.elapsed())
        },
        async {
            let r = sec.authenticate(&honest).await;
            (r, started.elapsed())
        }
    );
    assert!(slow.0.is_ok());
    assert!(slow.1 >= Duration::from_millis(300), "{:?}", slow.1);
    assert!(fast.0.is_ok());
    assert!(fast.1 < Duration::from_millis(200), "{:?}", fast.1);
    assert_eq!(
        sec.login_throttle()
            .failures("10.9.9.9".parse().expect("ip"), Instant::now()),
        3
    );
}

#[tokio::test]
async fn rebuilt_snapshots_keep_the_failure_counts() {
    let sec = simple(vec![simple_user("alice", "pw", "g")], false);
    let attacker = AuthRequest {
        peer: peer("10.7.7.7"),
        ..req(Some("alice"), Some("x"))
    };
    assert!(sec.authenticate(&attacker).await.is_err());
    let config = ferromq::config::Config {
        source: PathBuf::from("conf/activemq.xml"),
        files: Vec::new(),
        broker: Default::default(),
        listeners: Vec::new(),
        ssl: None,
        authentication: Authentication::None,
        authorization: None,
        persistence: ferromq::config::Persistence::Memory,
        persistence_span: ferromq::config::Span::new(
            std::sync::Arc::new(PathBuf::from("conf/activemq.xml")),
            1,
            1,
        ),
        limits: Default::default(),
        policies: Vec::new(),
        reload: None,
        shared_strategy: Default::default(),
        system_topics: Default::default(),
        destinations: Default::default(),
        virtual_destinations: Default::default(),
        delivery: Default::default(),
        console: None,
    };
    let next = sec.rebuild(&config).expect("rebuild");
    assert_ne!(next.generation(), sec.generation());
    assert_eq!(
        next.login_throttle()
            .failures("10.7.7.7".parse().expect("ip"), Instant::now()),
        1
    );
}
