//! Security rules checked with a real MQTT client (rumqttc) against the real broker on
//! 127.0.0.1 port 0: CONNACK codes, SUBACK 0x80, deliveries filtered per concrete topic,
//! retained filtering, denied publishes dropped, wills authorized as their owner's publishes, the
//! ActiveMQ security example, JAAS users with reload=true.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ferromq::broker::{self, BrokerHandle};
use ferromq::config::{
    Authentication, AuthorizationConfig, AuthzEntry, Config, DestinationKind, JaasAuth, Listener,
    ListenerOptions, LoginModule, LoginModuleKind, Persistence, PrincipalKind, Scheme, Secret,
    SimpleAuth, SimpleUser, Span,
};
use rumqttc::{ConnectReturnCode, LastWill, MqttOptions, QoS, SubscribeReasonCode};

use crate::support::security::{list, write};
use crate::support::Client;

/// How long to wait to be sure a message does NOT arrive.
const QUIET: Duration = Duration::from_millis(400);

fn span(line: u32) -> Span {
    Span::new(Arc::new(PathBuf::from("activemq.xml")), line, 1)
}

fn topic_entry(pattern: &str, rwa: [&str; 3]) -> AuthzEntry {
    AuthzEntry {
        kind: DestinationKind::Topic,
        patterns: list(pattern),
        read: list(rwa[0]),
        write: list(rwa[1]),
        admin: list(rwa[2]),
        principal_kind: PrincipalKind::Group,
        span: span(1),
    }
}

fn user(name: &str, password: &str, groups: &str) -> SimpleUser {
    SimpleUser {
        username: name.into(),
        password: Secret(password.into()),
        groups: list(groups),
        span: span(1),
    }
}

fn simple(users: Vec<SimpleUser>, anonymous: bool) -> Authentication {
    Authentication::Simple(SimpleAuth {
        users,
        anonymous_access_allowed: anonymous,
        anonymous_user: "anonymous".into(),
        anonymous_group: "anonymous".into(),
        span: span(1),
    })
}

fn authz(entries: Vec<AuthzEntry>) -> Option<AuthorizationConfig> {
    Some(AuthorizationConfig {
        entries,
        default_entry: None,
        temp_entry: None,
        ldap: None,
    })
}

fn config(authentication: Authentication, authorization: Option<AuthorizationConfig>) -> Config {
    Config {
        source: PathBuf::from("activemq.xml"),
        files: Vec::new(),
        broker: Default::default(),
        listeners: vec![Listener {
            name: "mqtt".into(),
            scheme: Scheme::Mqtt,
            host: "127.0.0.1".into(),
            port: 0,
            options: ListenerOptions::default(),
            inactivity: Default::default(),
            uri: "mqtt://127.0.0.1:0".into(),
            published: Default::default(),
            span: span(1),
        }],
        ssl: None,
        authentication,
        authorization,
        persistence: Persistence::Memory,
        persistence_span: span(1),
        limits: Default::default(),
        policies: Vec::new(),
        reload: None,
        shared_strategy: Default::default(),
        system_topics: Default::default(),
        destinations: Default::default(),
        virtual_destinations: Default::default(),
        delivery: Default::default(),
        console: None,
    }
}

async fn start(config: Config) -> (BrokerHandle, u16) {
    let handle = broker::start(config).await.expect("broker starts");
    let port = handle.listener_addrs()[0].1.port();
    (handle, port)
}

fn options(port: u16, id: &str, login: Option<(&str, &str)>) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    if let Some((u, p)) = login {
        o.set_credentials(u, p);
    }
    o
}

async fn connect(
    port: u16,
    id: &str,
    login: Option<(&str, &str)>,
) -> Result<Secured, ConnectReturnCode> {
    Client::try_connect_with(options(port, id, login))
        .await
        .map(Secured)
}

/// A connected client, with the questions these tests ask of it.
struct Secured(Client);

impl Secured {
    /// Subscribe and return whether the broker granted it.
    async fn subscribe(&mut self, filter: &str) -> bool {
        let codes = self.0.subscribe(filter, QoS::AtLeastOnce).await;
        matches!(codes.as_slice(), [SubscribeReasonCode::Success(_)])
    }

    /// PUBLISH at QoS 1 without waiting for the PUBACK (a denied publish may get none).
    async fn publish(&self, topic: &str, payload: &str) {
        self.0
            .client
            .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())
            .await
            .expect("send PUBLISH");
    }

    async fn publish_retained(&self, topic: &str, payload: &str) {
        self.0
            .client
            .publish(topic, QoS::AtLeastOnce, true, payload.as_bytes().to_vec())
            .await
            .expect("send PUBLISH");
    }

    /// Every topic received until nothing arrives for [`QUIET`], sorted.
    async fn received_topics(&mut self) -> Vec<String> {
        let mut topics = Vec::new();
        while let Some(publish) = self.0.publish_within(QUIET).await {
            topics.push(publish.topic);
        }
        topics.sort();
        topics
    }
}

#[tokio::test]
async fn anonymous_allowed_and_denied() {
    let (closed, port) = start(config(simple(vec![], false), None)).await;
    assert_eq!(
        connect(port, "anon", None).await.err(),
        Some(ConnectReturnCode::NotAuthorized)
    );
    closed.shutdown().await;
    let (open, port) = start(config(simple(vec![], true), None)).await;
    assert!(connect(port, "anon", None).await.is_ok());
    open.shutdown().await;
}

#[tokio::test]
async fn simple_users_get_connack_0_or_5() {
    let (b, port) = start(config(simple(vec![user("alice", "pw", "g")], false), None)).await;
    assert!(connect(port, "a", Some(("alice", "pw"))).await.is_ok());
    assert_eq!(
        connect(port, "b", Some(("alice", "wrong"))).await.err(),
        Some(ConnectReturnCode::NotAuthorized)
    );
    assert_eq!(
        connect(port, "c", Some(("nobody", "pw"))).await.err(),
        Some(ConnectReturnCode::NotAuthorized)
    );
    b.shutdown().await;
}

fn security_example() -> Config {
    config(
        simple(
            vec![
                user("system", "manager", "users,admins"),
                user("user", "password", "users"),
                user("guest", "password", "guests"),
            ],
            false,
        ),
        authz(vec![
            topic_entry(">", ["admins", "admins", "admins"]),
            topic_entry("USERS.>", ["users", "users", "users"]),
            topic_entry("GUEST.>", ["guests", "guests,users", "guests,users"]),
            topic_entry(
                "ActiveMQ.Advisory.>",
                ["guests,users", "guests,users", "guests,users"],
            ),
        ]),
    )
}

#[tokio::test]
async fn activemq_security_example_over_mqtt() {
    let (b, port) = start(security_example()).await;
    let mut system = connect(port, "system", Some(("system", "manager")))
        .await
        .expect("system");
    let mut user = connect(port, "user", Some(("user", "password")))
        .await
        .expect("user");
    let mut guest = connect(port, "guest", Some(("guest", "password")))
        .await
        .expect("guest");

    assert!(system.subscribe("#").await);
    assert!(user.subscribe("USERS/#").await);
    assert!(
        !user.subscribe("GUEST/#").await,
        "users may write GUEST.> but not read it"
    );
    assert!(guest.subscribe("GUEST/#").await);
    assert!(!guest.subscribe("USERS/#").await);

    user.publish("USERS/news", "u1").await;
    user.publish("GUEST/board", "u2").await;
    user.publish("SECRET/x", "u3").await; // denied: acknowledged and dropped
    guest.publish("GUEST/board", "g1").await;
    guest.publish("USERS/news", "g2").await; // denied

    assert_eq!(
        system.received_topics().await,
        vec!["GUEST/board", "GUEST/board", "USERS/news"]
    );
    assert_eq!(user.received_topics().await, vec!["USERS/news"]);
    assert_eq!(
        guest.received_topics().await,
        vec!["GUEST/board", "GUEST/board"]
    );
    b.shutdown().await;
}

#[tokio::test]
async fn union_star_user_principals_and_no_match() {
    let mut by_user = topic_entry("home.alice.>", ["alice", "alice", "alice"]);
    by_user.principal_kind = PrincipalKind::User;
    let cfg = config(
        simple(
            vec![
                user("alice", "pw", "residents"),
                user("bob", "pw", "residents"),
            ],
            false,
        ),
        authz(vec![
            topic_entry("home.>", ["residents", "", ""]),
            // Union: read and write from two entries (and admin: bob's publish creates
            // home/kitchen).
            topic_entry("home.>", ["", "residents", "residents"]),
            topic_entry("lobby.>", ["*", "*", "*"]),
            by_user,
        ]),
    );
    let (b, port) = start(cfg).await;
    let mut alice = connect(port, "alice", Some(("alice", "pw")))
        .await
        .expect("alice");
    let mut bob = connect(port, "bob", Some(("bob", "pw")))
        .await
        .expect("bob");
    assert!(alice.subscribe("home/#").await);
    assert!(bob.subscribe("lobby/#").await);
    assert!(!bob.subscribe("garage/#").await, "no entry matches: denied");
    bob.publish("home/kitchen", "b").await;
    bob.publish("lobby/door", "b").await;
    alice.publish("home/alice/lamp", "a").await;
    assert_eq!(
        alice.received_topics().await,
        vec!["home/alice/lamp", "home/kitchen"]
    );
    assert_eq!(bob.received_topics().await, vec!["lobby/door"]);
    b.shutdown().await;
}

#[tokio::test]
async fn wildcard_subscription_and_retained_messages_are_filtered_per_topic() {
    let cfg = config(
        simple(
            vec![
                user("admin", "pw", "admins"),
                user("reader", "pw", "readers"),
            ],
            false,
        ),
        authz(vec![
            topic_entry(">", ["admins", "admins", "admins"]),
            topic_entry("sensors.public.>", ["readers", "", ""]),
        ]),
    );
    let (b, port) = start(cfg).await;
    let admin = connect(port, "admin", Some(("admin", "pw")))
        .await
        .expect("admin");
    admin.publish_retained("sensors/public/temp", "21").await;
    admin.publish_retained("sensors/private/key", "k").await;
    tokio::time::sleep(QUIET).await;

    let mut reader = connect(port, "reader", Some(("reader", "pw")))
        .await
        .expect("reader");
    // ActiveMQ looks `sensors.>` up with `>` as a literal level: no entry, refused ...
    assert!(!reader.subscribe("sensors/#").await);
    // ... while `sensors.*.>` walks into `public` and finds `sensors.public.>`: granted ...
    assert!(reader.subscribe("sensors/+/#").await);
    // ... but only the readable retained message and live messages are delivered.
    assert_eq!(reader.received_topics().await, vec!["sensors/public/temp"]);
    admin.publish("sensors/private/key", "k2").await;
    admin.publish("sensors/public/humidity", "40").await;
    assert_eq!(
        reader.received_topics().await,
        vec!["sensors/public/humidity"]
    );
    b.shutdown().await;
}

/// Issue 15's example, with the SUBACK codes ActiveMQ 5.17 sends a `viewers`-only user: a `>` in
/// the filter is looked up as a literal level (`plant/#` and `#` find only the `>` and `plant.>`
/// entries), a `*` walks every child (`+/+/telemetry` finds `plant.*.telemetry`).
#[tokio::test]
async fn wildcard_subscriptions_get_the_suback_codes_of_activemq() {
    let cfg = config(
        simple(
            vec![
                user("operator", "pw", "operators"),
                user("viewer", "pw", "viewers"),
            ],
            false,
        ),
        authz(vec![
            topic_entry(">", ["operators", "operators", "operators"]),
            topic_entry("plant.*.telemetry", ["viewers", "", ""]),
            topic_entry("plant.>", ["devices", "", ""]),
        ]),
    );
    let (b, port) = start(cfg).await;
    let mut viewer = connect(port, "viewer", Some(("viewer", "pw")))
        .await
        .expect("viewer");
    for (filter, expected) in [
        ("plant/#", SubscribeReasonCode::Failure),
        ("#", SubscribeReasonCode::Failure),
        (
            "plant/+/telemetry",
            SubscribeReasonCode::Success(QoS::AtMostOnce),
        ),
        (
            "+/+/telemetry",
            SubscribeReasonCode::Success(QoS::AtMostOnce),
        ),
    ] {
        assert_eq!(
            viewer.0.subscribe(filter, QoS::AtMostOnce).await,
            vec![expected],
            "SUBACK for {filter}"
        );
    }
    let operator = connect(port, "operator", Some(("operator", "pw")))
        .await
        .expect("operator");
    operator.publish("plant/line1/telemetry", "t").await;
    operator.publish("plant/line1/status", "s").await;
    operator.publish("office/line1/telemetry", "o").await;
    // Both granted filters match the telemetry topic (one copy each: MQTT-3.3.4-2 lets the broker
    // send one or two); the status and office topics are not readable.
    let received = viewer.received_topics().await;
    assert!(!received.is_empty(), "telemetry is delivered");
    assert!(
        received.iter().all(|t| t == "plant/line1/telemetry"),
        "{received:?}"
    );
    b.shutdown().await;
}

#[tokio::test]
async fn wills_are_authorized_as_publishes_of_their_owner() {
    let cfg = config(
        simple(
            vec![
                user("watcher", "pw", "admins"),
                user("dev", "pw", "devices"),
            ],
            false,
        ),
        authz(vec![
            topic_entry(">", ["admins", "admins", "admins"]),
            topic_entry("status.>", ["", "devices", "devices"]),
        ]),
    );
    let (b, port) = start(cfg).await;
    let mut watcher = connect(port, "watcher", Some(("watcher", "pw")))
        .await
        .expect("watcher");
    assert!(watcher.subscribe("#").await);
    for (id, will_topic) in [("dev-ok", "status/dev"), ("dev-bad", "alarms/dev")] {
        let mut o = options(port, id, Some(("dev", "pw")));
        o.set_last_will(LastWill::new(will_topic, "gone", QoS::AtLeastOnce, false));
        let client = Client::try_connect_with(o).await.expect("CONNACK 0");
        // Stop the event loop: the socket closes without DISCONNECT, so the will fires.
        client.kill();
    }
    assert_eq!(watcher.received_topics().await, vec!["status/dev"]);
    b.shutdown().await;
}

#[tokio::test]
async fn jaas_properties_users_groups_and_reload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let users = write(dir.path(), "users.properties", "alice=old\n");
    let groups = write(dir.path(), "groups.properties", "readers=alice\n");
    let jaas = JaasAuth {
        configuration: "activemq".into(),
        login_config: dir.path().join("login.config"),
        modules: vec![LoginModule {
            class: "org.apache.activemq.jaas.PropertiesLoginModule".into(),
            flag: "required".into(),
            options: BTreeMap::new(),
            kind: LoginModuleKind::Properties {
                users_file: users.clone(),
                groups_file: groups,
                reload: true,
            },
        }],
        span: span(1),
    };
    let cfg = config(
        Authentication::Jaas(jaas),
        authz(vec![topic_entry("news.>", ["readers", "", ""])]),
    );
    let (b, port) = start(cfg).await;
    let mut alice = connect(port, "a1", Some(("alice", "old")))
        .await
        .expect("alice");
    assert!(
        alice.subscribe("news/#").await,
        "group from groups.properties"
    );
    assert!(!alice.subscribe("other/#").await);

    let file = std::fs::File::create(&users).expect("rewrite users");
    std::io::Write::write_all(&mut &file, b"alice=new\n").expect("write");
    file.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .expect("mtime");
    drop(file);
    assert_eq!(
        connect(port, "a2", Some(("alice", "old"))).await.err(),
        Some(ConnectReturnCode::NotAuthorized)
    );
    assert!(connect(port, "a3", Some(("alice", "new"))).await.is_ok());
    b.shutdown().await;
}
