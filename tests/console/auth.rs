//! Logins (plain, OBF:, MD5:, CRYPT:), roles, 401/403, CSRF and Origin, security headers.

use crate::http::{csrf_token, get, request};
use crate::{Env, ADMIN, PASSWORD, VIEWER};

const PAGES: [&str; 5] = ["/", "/clients", "/sessions", "/topics", "/queues"];
const API: [&str; 5] = [
    "/api/overview",
    "/api/clients",
    "/api/sessions",
    "/api/topics",
    "/api/queues",
];

#[tokio::test]
async fn admin_and_user_read_every_page_and_api_with_every_password_form() {
    let env = Env::start().await;
    // OBF: (admin), MD5: (viewer), CRYPT: (cryptic), plain (plain).
    let logins = [ADMIN, VIEWER, ("cryptic", PASSWORD), ("plain", "plainpw")];
    for auth in logins {
        for path in PAGES.iter().chain(API.iter()) {
            let response = get(env.console, path, Some(auth)).await;
            assert_eq!(
                response.status,
                200,
                "{} {path}: {}",
                auth.0,
                response.text()
            );
            assert_eq!(response.header("x-frame-options"), Some("SAMEORIGIN"));
            assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
            assert!(response.header("access-control-allow-origin").is_none());
            if path.starts_with("/api") {
                assert_eq!(response.header("cache-control"), Some("no-store"));
                assert!(response.json().is_object());
            } else {
                assert!(response.text().contains("<html"), "{path}");
            }
        }
    }
    let overview = get(env.console, "/api/overview", Some(VIEWER)).await.json();
    assert_eq!(overview["user"]["name"], "viewer");
    assert_eq!(overview["user"]["admin"], false);
    let overview = get(env.console, "/api/overview", Some(ADMIN)).await.json();
    assert_eq!(overview["user"]["admin"], true);
    env.broker.shutdown().await;
}

#[tokio::test]
async fn no_or_wrong_credentials_get_401_with_the_activemq_realm_challenge() {
    let env = Env::start().await;
    let wrong = [
        None,
        Some(("admin", "wrong")),
        Some(("admin", "OBF:1ihd1m4e1sot1y7z1sox1m801ict")),
        Some(("viewer", "ca6c5d8960b5f761e1676d26b282889c")),
        Some(("ghost", PASSWORD)),
        Some(("", "")),
    ];
    for auth in wrong {
        for path in ["/", "/api/overview", "/api/jolokia/read/x/y", "/metrics"] {
            let response = get(env.console, path, auth).await;
            assert_eq!(response.status, 401, "{auth:?} {path}");
            assert_eq!(
                response.header("www-authenticate"),
                Some("Basic realm=\"ActiveMQRealm\"")
            );
        }
    }
    // A user without the admin or user role logs in but reads nothing.
    let response = get(env.console, "/api/overview", Some(("nobody", "nobodypw"))).await;
    assert_eq!(response.status, 403);
    env.broker.shutdown().await;
}

#[tokio::test]
async fn actions_need_admin_a_csrf_token_and_no_foreign_origin() {
    let env = Env::start_with("", "").await;
    let stomp = env.listener("stomp");
    // A queue to purge, so that a success is possible at all.
    let mut producer = crate::stomp_client::StompClient::tcp(stomp).await;
    producer.connect(&[]).await;
    producer
        .send(
            "SEND",
            &[("destination", "/queue/q1"), ("receipt", "r")],
            "m",
        )
        .await;
    assert_eq!(producer.recv().await.command, "RECEIPT");
    let path = "/api/queues/q1/purge";
    let viewer_token = csrf_token(env.console, VIEWER).await;
    let admin_token = csrf_token(env.console, ADMIN).await;
    assert_ne!(viewer_token, admin_token, "tokens are per user");
    // The read-only user, even with its own token: 403.
    let by_viewer = request(
        env.console,
        "POST",
        path,
        Some(VIEWER),
        &[("x-csrf-token", &viewer_token)],
    )
    .await;
    assert_eq!(by_viewer.status, 403, "{}", by_viewer.text());
    // The admin without a token, with another user's, with a wrong one: 403.
    for headers in [
        vec![],
        vec![("x-csrf-token", viewer_token.as_str())],
        vec![("x-csrf-token", "0000")],
    ] {
        let response = request(env.console, "POST", path, Some(ADMIN), &headers).await;
        assert_eq!(response.status, 403, "{headers:?}");
    }
    // The right token from a foreign page: 403.
    let foreign = request(
        env.console,
        "POST",
        path,
        Some(ADMIN),
        &[
            ("x-csrf-token", &admin_token),
            ("origin", "http://evil.example"),
        ],
    )
    .await;
    assert_eq!(foreign.status, 403);
    // Nothing was purged by the refused requests.
    let queues = get(env.console, "/api/queues", Some(ADMIN)).await.json();
    assert_eq!(queues["queues"][0]["depth"], 1, "{queues}");
    // The right token from the console's own origin: done.
    let own_origin = format!("http://{}", env.console);
    let ok = request(
        env.console,
        "POST",
        path,
        Some(ADMIN),
        &[("x-csrf-token", &admin_token), ("origin", &own_origin)],
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["ok"], true);
    env.broker.shutdown().await;
}

#[tokio::test]
async fn metrics_need_a_login_unless_open() {
    let env = Env::start().await;
    assert_eq!(get(env.console, "/metrics", None).await.status, 401);
    let metrics = get(env.console, "/metrics", Some(VIEWER)).await;
    assert_eq!(metrics.status, 200);
    assert!(metrics
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/plain")));
    assert!(metrics.text().contains("# TYPE "), "{}", metrics.text());
    env.broker.shutdown().await;
    let open = Env::start_with(r#"metricsOpen="true""#, "").await;
    assert_eq!(get(open.console, "/metrics", None).await.status, 200);
    assert_eq!(get(open.console, "/api/overview", None).await.status, 401);
    open.broker.shutdown().await;
}

/// A refused login is one warning with the peer and the user name (escaped; never the
/// password) and a count in `ferromq_auth_failures_total{reason="console"}`; a request
/// without credentials (the browser's first) is neither.
#[tokio::test]
async fn failed_logins_are_logged_with_peer_and_user_and_counted() {
    let (logs, _guard) = crate::support::logs::Logs::capture();
    let env = Env::start().await;
    let wrong = get(
        env.console,
        "/api/overview",
        Some(("admin", "not-the-password")),
    )
    .await;
    assert_eq!(wrong.status, 401);
    let forged = get(env.console, "/clients", Some(("evil\nforged", "pw2"))).await;
    assert_eq!(forged.status, 401);
    let anonymous = get(env.console, "/api/overview", None).await;
    assert_eq!(anonymous.status, 401);
    let text = logs.text();
    let failures: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("login failed"))
        .collect();
    assert_eq!(failures.len(), 2, "{text}");
    assert!(
        failures[0].contains("user=admin") && failures[0].contains("peer=127.0.0.1:"),
        "{}",
        failures[0]
    );
    assert!(
        failures[1].contains("user=evil\\nforged"),
        "{}",
        failures[1]
    );
    assert!(
        !text.contains("not-the-password") && !text.contains("pw2"),
        "{text}"
    );
    assert!(!text.lines().any(|l| l.starts_with("forged")), "{text}");
    let metrics = get(env.console, "/metrics", Some(ADMIN)).await.text();
    assert!(
        metrics.contains("ferromq_auth_failures_total{reason=\"console\"} 2"),
        "{metrics}"
    );
    env.broker.shutdown().await;
}
