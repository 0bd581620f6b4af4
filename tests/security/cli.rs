//! `ferromq passwd` and `ferromq explain`, run as the real binary.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use ferromq::security::password::StoredPassword;

fn ferromq(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferromq"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ferromq");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("ferromq runs")
}

fn printed_hash(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout.clone()).expect("utf8");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stdout}");
    lines[0].to_owned()
}

#[test]
fn passwd_prints_an_argon2id_hash_that_verifies() {
    let hashed = printed_hash(&ferromq(&["passwd"], "correct horse\n"));
    assert!(hashed.starts_with("$argon2id$"), "{hashed}");
    let stored = StoredPassword::parse(&hashed).expect("recognised hash");
    assert!(stored.verify(b"correct horse"));
    assert!(!stored.verify(b"correct horse\n"));
    // Salted: the same password hashes differently each time.
    let again = printed_hash(&ferromq(&["passwd"], "correct horse"));
    assert_ne!(hashed, again);
    assert!(StoredPassword::parse(&again)
        .expect("hash")
        .verify(b"correct horse"));
}

#[test]
fn passwd_bcrypt() {
    let hashed = printed_hash(&ferromq(&["passwd", "--algorithm", "bcrypt"], "s3cret\r\n"));
    assert!(hashed.starts_with("$2b$12$"), "{hashed}");
    assert!(StoredPassword::parse(&hashed)
        .expect("hash")
        .verify(b"s3cret"));
}

#[test]
fn passwd_scram_credentials() {
    for (algorithm, prefix) in [
        ("scram-sha-256", "SCRAM-SHA-256:4096:"),
        ("scram-sha-512", "SCRAM-SHA-512:4096:"),
    ] {
        let credential = printed_hash(&ferromq(&["passwd", "--algorithm", algorithm], "pw\n"));
        assert!(credential.starts_with(prefix), "{credential}");
        let stored = StoredPassword::parse(&credential).expect("a SCRAM credential");
        assert!(stored.verify(b"pw") && !stored.verify(b"pw2"));
    }
    let more = printed_hash(&ferromq(
        &[
            "passwd",
            "--algorithm",
            "scram-sha-256",
            "--iterations",
            "8192",
        ],
        "pw",
    ));
    assert!(more.starts_with("SCRAM-SHA-256:8192:"), "{more}");
    let too_few = ferromq(
        &[
            "passwd",
            "--algorithm",
            "scram-sha-256",
            "--iterations",
            "1000",
        ],
        "pw",
    );
    assert_eq!(too_few.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&too_few.stderr).contains("4096"));
}

#[test]
fn passwd_refuses_empty_input_and_overlong_bcrypt() {
    let empty = ferromq(&["passwd"], "");
    assert_eq!(empty.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&empty.stderr).contains("no password"));
    let long = "x".repeat(100);
    let too_long = ferromq(&["passwd", "--algorithm", "bcrypt"], &long);
    assert_eq!(too_long.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&too_long.stderr).contains("72 bytes"));
}

const SECURITY_EXAMPLE: &str = r#"<beans xmlns="http://www.springframework.org/schema/beans">
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="localhost">
    <plugins>
      <simpleAuthenticationPlugin>
        <users>
          <authenticationUser username="system" password="manager" groups="users,admins"/>
          <authenticationUser username="user" password="password" groups="users"/>
          <authenticationUser username="guest" password="password" groups="guests"/>
        </users>
      </simpleAuthenticationPlugin>
      <authorizationPlugin>
        <map>
          <authorizationMap>
            <authorizationEntries>
              <authorizationEntry topic=">" read="admins" write="admins" admin="admins"/>
              <authorizationEntry topic="USERS.>" read="users" write="users" admin="users"/>
              <authorizationEntry topic="GUEST.>" read="guests" write="guests,users" admin="guests,users"/>
              <authorizationEntry topic="ActiveMQ.Advisory.>" read="guests,users" write="guests,users" admin="guests,users"/>
            </authorizationEntries>
          </authorizationMap>
        </map>
      </authorizationPlugin>
    </plugins>
    <transportConnectors>
      <transportConnector name="mqtt" uri="mqtt://127.0.0.1:0"/>
    </transportConnectors>
  </broker>
</beans>
"#;

#[test]
fn explain_on_the_security_example() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("activemq.xml");
    std::fs::write(&file, SECURITY_EXAMPLE).expect("write config");
    let file = file.to_str().expect("utf8 path");

    let allowed = ferromq(
        &[
            "explain",
            "--config",
            file,
            "--user",
            "user",
            "--password",
            "password",
            "--topic",
            "GUEST/board",
            "--action",
            "publish",
        ],
        "",
    );
    let text = String::from_utf8_lossy(&allowed.stdout);
    assert_eq!(allowed.status.code(), Some(0), "{text}");
    assert!(text.starts_with("ALLOWED"), "{text}");
    assert!(
        text.contains("activemq.xml:17"),
        "GUEST.> entry line: {text}"
    );
    assert!(text.contains("GRANTS via g:users"), "{text}");

    // `--username`, as `status` and `session end` name it, is the same option.
    let denied = ferromq(
        &[
            "explain",
            "--config",
            file,
            "--username",
            "guest",
            "--topic",
            "USERS/#",
            "--action",
            "subscribe",
        ],
        "",
    );
    let text = String::from_utf8_lossy(&denied.stdout);
    assert_eq!(denied.status.code(), Some(3), "{text}");
    assert!(text.starts_with("DENIED"), "{text}");

    let bad_login = ferromq(
        &[
            "explain",
            "--config",
            file,
            "--user",
            "user",
            "--password",
            "wrong",
            "--topic",
            "x",
            "--action",
            "publish",
        ],
        "",
    );
    assert_eq!(bad_login.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad_login.stderr).contains("login as `user` failed"));
}

fn explain_as_user(file: &str, topic: &str, action: &str) -> (Option<i32>, String) {
    let out = ferromq(
        &[
            "explain",
            "--config",
            file,
            "--user",
            "user",
            "--password",
            "password",
            "--topic",
            topic,
            "--action",
            action,
        ],
        "",
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// A shared subscription is decided by the filter inside the share, in `explain` as in the
/// broker (whose SUBACK the same test checks), not by `$share.g....`.
#[tokio::test]
async fn explain_decides_a_shared_subscription_by_its_inner_filter_as_the_broker_does() {
    use crate::support::{connect_v5, RawClient, TestBroker};
    use bytes::Bytes;
    use ferromq::protocol::QoS;

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("activemq.xml");
    std::fs::write(&file, SECURITY_EXAMPLE).expect("write config");
    let file = file.to_str().expect("utf8 path");

    let (code, text) = explain_as_user(file, "$share/g/USERS/+/telemetry", "subscribe");
    assert_eq!(code, Some(0), "{text}");
    assert!(text.starts_with("ALLOWED"), "{text}");
    assert!(text.contains("`$share/g/USERS/+/telemetry`"), "{text}");
    assert!(text.contains("filter inside the share"), "{text}");
    assert!(text.contains("topic `USERS.*.telemetry`"), "{text}");
    let (code, text) = explain_as_user(file, "$share/g/GUEST/#", "subscribe");
    assert_eq!(code, Some(3), "{text}");

    let broker = TestBroker::from_xml(SECURITY_EXAMPLE).await;
    let mut login = connect_v5("shared", true, None);
    login.username = Some("user".into());
    login.password = Some(Bytes::from_static(b"password"));
    let (mut client, _) = RawClient::connect_ok(broker.addr, login).await;
    let codes = client
        .subscribe(
            1,
            &[
                ("$share/g/USERS/+/telemetry", QoS::AtMostOnce),
                ("$share/g/GUEST/#", QoS::AtMostOnce),
            ],
        )
        .await;
    assert_eq!(codes, vec![0x00, 0x87], "the broker agrees with explain");
    broker.shutdown().await;
}

/// A topic or filter the broker would refuse as malformed is INVALID (exit 2), never ALLOWED.
#[test]
fn explain_says_invalid_topics_and_filters_are_invalid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("activemq.xml");
    std::fs::write(&file, SECURITY_EXAMPLE).expect("write config");
    let file = file.to_str().expect("utf8 path");
    for (topic, action) in [
        ("USERS/#", "publish"),
        ("USERS/+", "publish"),
        ("USERS/sport+", "subscribe"),
        ("USERS/#/x", "subscribe"),
        ("", "publish"),
        ("", "subscribe"),
        ("$share/g", "subscribe"),
        ("$share/g+/USERS/x", "subscribe"),
    ] {
        let (code, text) = explain_as_user(file, topic, action);
        assert_eq!(code, Some(2), "{action} {topic:?}: {text}");
        assert!(text.starts_with("INVALID"), "{action} {topic:?}: {text}");
        assert!(!text.contains("ALLOWED"), "{text}");
    }
}

/// ActiveMQ's security example with queue entries, a declared queue and a temporary-destination
/// entry, for `explain --destination`.
const QUEUE_EXAMPLE: &str = r#"<beans xmlns="http://www.springframework.org/schema/beans">
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="localhost">
    <destinations><queue physicalName="orders.eu"/></destinations>
    <plugins>
      <simpleAuthenticationPlugin>
        <users>
          <authenticationUser username="system" password="manager" groups="users,admins"/>
          <authenticationUser username="user" password="password" groups="users"/>
          <authenticationUser username="guest" password="password" groups="guests"/>
        </users>
      </simpleAuthenticationPlugin>
      <authorizationPlugin>
        <map>
          <authorizationMap>
            <authorizationEntries>
              <authorizationEntry queue=">" read="admins" write="admins" admin="admins"/>
              <authorizationEntry queue="orders.>" read="users" write="users,guests"/>
              <authorizationEntry topic="USERS.>" read="users" write="users" admin="users"/>
            </authorizationEntries>
            <tempDestinationAuthorizationEntry>
              <tempDestinationAuthorizationEntry read="users" write="users" admin="users"/>
            </tempDestinationAuthorizationEntry>
          </authorizationMap>
        </map>
      </authorizationPlugin>
    </plugins>
  </broker>
</beans>
"#;

fn explain_destination(
    file: &str,
    user: &str,
    destination: &str,
    action: &str,
) -> (Option<i32>, String, String) {
    let out = ferromq(
        &[
            "explain",
            "--config",
            file,
            "--user",
            user,
            "--destination",
            destination,
            "--action",
            action,
        ],
        "",
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn explain_destination_decides_queues_by_queue_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("activemq.xml");
    std::fs::write(&path, QUEUE_EXAMPLE).expect("write config");
    let file = path.to_str().expect("utf8 path");

    let (code, text, _) = explain_destination(file, "guest", "/queue/orders.eu", "publish");
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.starts_with(
            "ALLOWED: user `guest` (groups: guests) may publish to `/queue/orders.eu`"
        ),
        "{text}"
    );
    assert!(
        text.contains("destination: queue `orders.eu`, needs `write`"),
        "{text}"
    );
    assert!(text.contains("activemq.xml:17  queue orders.>"), "{text}");
    assert!(text.contains("GRANTS via g:guests"), "{text}");
    assert!(text.contains("casbin enforce agrees"), "{text}");
    assert!(text.contains("declared in <destinations>"), "{text}");

    let (code, text, _) = explain_destination(file, "guest", "/queue/orders.eu", "subscribe");
    assert_eq!(code, Some(3), "{text}");
    assert!(text.starts_with("DENIED"), "{text}");

    // Not declared: first use creates it, which needs admin; the broker refuses it otherwise.
    let (code, text, _) = explain_destination(file, "user", "/queue/orders.us", "subscribe");
    assert_eq!(code, Some(3), "{text}");
    assert!(text.starts_with("DENIED"), "{text}");
    assert!(text.contains("this principal may NOT create it"), "{text}");
    let (code, text, _) = explain_destination(file, "guest", "/queue/orders.us", "publish");
    assert_eq!(code, Some(3), "{text}");
    let (code, text, _) = explain_destination(file, "system", "/queue/orders.us", "subscribe");
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("this principal MAY create it"), "{text}");

    // Names the broker refuses before any authorization: exit 2.
    for refused in ["/queue/orders.*", "/queue/orders.>", "/queue/a,b"] {
        let (code, text, _) = explain_destination(file, "system", refused, "subscribe");
        assert_eq!(code, Some(2), "{refused}: {text}");
        assert!(text.starts_with("INVALID"), "{text}");
    }

    // A queue entry says nothing about the topic of the same name.
    let (code, text, _) = explain_destination(file, "guest", "/topic/orders.eu", "publish");
    assert_eq!(code, Some(3), "{text}");
    assert!(
        text.starts_with("`/topic/orders.eu` is the MQTT topic `orders/eu`"),
        "{text}"
    );
}

#[test]
fn explain_destination_maps_topics_to_mqtt_and_temps_to_the_temp_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("activemq.xml");
    std::fs::write(&path, QUEUE_EXAMPLE).expect("write config");
    let file = path.to_str().expect("utf8 path");

    let (code, text, _) =
        explain_destination(file, "user", "/topic/USERS.*.telemetry", "subscribe");
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("the MQTT topic `USERS/+/telemetry`"),
        "{text}"
    );
    // The same answer as --topic with the MQTT filter.
    let by_topic = ferromq(
        &[
            "explain",
            "--config",
            file,
            "--user",
            "user",
            "--topic",
            "USERS/+/telemetry",
            "--action",
            "subscribe",
        ],
        "",
    );
    let topic_text = String::from_utf8_lossy(&by_topic.stdout);
    assert!(
        text.ends_with(topic_text.as_ref()),
        "{text}\n---\n{topic_text}"
    );

    let (code, text, _) = explain_destination(file, "user", "/temp-queue/ID:host-1:1:1", "publish");
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("tempDestinationAuthorizationEntry"), "{text}");
    let (code, text, _) =
        explain_destination(file, "guest", "/temp-topic/ID:host-1:1:1", "subscribe");
    assert_eq!(code, Some(3), "{text}");

    // Creating a temporary destination needs admin; another connection's one exists already
    // (a reply-to), and only its owner may subscribe to it.
    let no_admin = QUEUE_EXAMPLE.replace(
        r#"<tempDestinationAuthorizationEntry read="users" write="users" admin="users"/>"#,
        r#"<tempDestinationAuthorizationEntry read="users" write="users,guests" admin="admins"/>"#,
    );
    assert_ne!(no_admin, QUEUE_EXAMPLE);
    let no_admin_path = dir.path().join("no-admin.xml");
    std::fs::write(&no_admin_path, no_admin).expect("write config");
    let no_admin_file = no_admin_path.to_str().expect("utf8 path");
    let (code, text, _) = explain_destination(no_admin_file, "user", "/temp-queue/x", "publish");
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("this principal may NOT create it"), "{text}");
    let (code, text, _) = explain_destination(no_admin_file, "system", "/temp-queue/x", "publish");
    assert_eq!(code, Some(0), "{text}");
    let remote = "/remote-temp-queue/ID:host-1:1:1:x";
    let (code, text, _) = explain_destination(no_admin_file, "guest", remote, "publish");
    assert_eq!(code, Some(0), "{text}");
    let (code, text, _) = explain_destination(no_admin_file, "user", remote, "subscribe");
    assert_eq!(code, Some(3), "{text}");
    assert!(
        text.contains("Cannot subscribe to a remote temporary"),
        "{text}"
    );

    // `check` names the temporary-destination entry as what it is (no kind nor pattern).
    let check = ferromq(&["check", file], "");
    let printed = String::from_utf8_lossy(&check.stdout);
    assert!(
        printed.contains("temporary destinations (tempDestinationAuthorizationEntry)  read: users"),
        "{printed}"
    );

    let (code, _, stderr) = explain_destination(file, "user", "orders", "publish");
    assert_eq!(code, Some(2));
    assert!(stderr.contains("/queue/NAME"), "{stderr}");

    // Without a tempDestinationAuthorizationEntry temporary destinations are open (ActiveMQ).
    let open = QUEUE_EXAMPLE.replace(
        r#"<tempDestinationAuthorizationEntry>
              <tempDestinationAuthorizationEntry read="users" write="users" admin="users"/>
            </tempDestinationAuthorizationEntry>"#,
        "",
    );
    assert_ne!(open, QUEUE_EXAMPLE);
    std::fs::write(&path, open).expect("write config");
    let (code, text, _) = explain_destination(file, "guest", "/temp-queue/x", "subscribe");
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("open to every principal"), "{text}");
}

/// `ferromq explain` in `dir`, its environment without the launcher variables.
fn explain_in(dir: &std::path::Path, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferromq"));
    command.current_dir(dir).arg("explain").args(args);
    for variable in [
        "ACTIVEMQ_CONF",
        "ACTIVEMQ_BASE",
        "ACTIVEMQ_HOME",
        "ACTIVEMQ_DATA",
    ] {
        command.env_remove(variable);
    }
    command.output().expect("ferromq runs")
}

/// Without a file named and without `conf/activemq.xml`, `explain` decides with the built-in
/// default, as `check` and `run` choose it, and says so; `conf/activemq.xml` there is read.
#[test]
fn explain_without_a_file_uses_the_configuration_run_would_use() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = ["-u", "someone", "--topic", "a/b", "--action", "publish"];
    let built_in = explain_in(dir.path(), &args);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&built_in.stdout),
        String::from_utf8_lossy(&built_in.stderr),
    );
    assert_eq!(built_in.status.code(), Some(0), "{stdout}{stderr}");
    // The built-in default has no authentication plugin: every client is `anonymous`.
    assert!(stdout.contains("ALLOWED: user `anonymous`"), "{stdout}");
    assert!(
        stderr.contains("using the default configuration built into ferromq"),
        "{stderr}"
    );
    let conf = dir.path().join("conf");
    std::fs::create_dir(&conf).expect("conf/");
    std::fs::write(conf.join("activemq.xml"), SECURITY_EXAMPLE).expect("write config");
    let on_disk = explain_in(
        dir.path(),
        &[
            "-u",
            "guest",
            "-g",
            "guests",
            "--topic",
            "USERS/#",
            "--action",
            "subscribe",
        ],
    );
    let stdout = String::from_utf8_lossy(&on_disk.stdout);
    assert_eq!(on_disk.status.code(), Some(3), "{stdout}");
    assert!(stdout.contains("conf/activemq.xml:"), "{stdout}");
}

/// The user option's name in clap's errors and help is `--username`, the name `status` and
/// `session end` give it; `--user` and `-u` still work.
#[test]
fn explain_names_its_user_option_username() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = explain_in(dir.path(), &["--topic", "a", "--action", "publish"]);
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--username <USER>"), "{stderr}");
    assert!(!stderr.contains("--user <USER>"), "{stderr}");
    for option in ["--user", "-u", "--username"] {
        let given = explain_in(
            dir.path(),
            &[option, "x", "--topic", "a", "--action", "publish"],
        );
        assert_eq!(given.status.code(), Some(0), "{option}: {given:?}");
    }
}

/// Without an authentication plugin the broker checks no user name or password and every
/// client is user `anonymous` with no groups: `explain` decides for that principal, says so,
/// and says that ActiveMQ would refuse such clients every destination. `--group` and
/// `--password` change nothing, as they change nothing for `run`.
#[test]
fn explain_without_an_authentication_plugin_decides_for_anonymous() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("activemq.xml");
    let config = r#"<beans xmlns="http://www.springframework.org/schema/beans">
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="open" persistent="false">
    <plugins>
      <authorizationPlugin>
        <map>
          <authorizationMap>
            <authorizationEntries>
              <authorizationEntry topic="public.>" read="*" write="*" admin="*"/>
              <authorizationEntry topic="private.>" read="admins" write="admins" admin="admins"/>
            </authorizationEntries>
          </authorizationMap>
        </map>
      </authorizationPlugin>
    </plugins>
    <transportConnectors>
      <transportConnector name="mqtt" uri="mqtt://127.0.0.1:0"/>
    </transportConnectors>
  </broker>
</beans>
"#;
    std::fs::write(&path, config).expect("write config");
    let file = path.to_str().expect("utf8 path");
    let explain = |extra: &[&str], topic: &str| {
        let mut args = vec!["explain", "--config", file, "-u", "alice"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--topic", topic, "--action", "publish"]);
        let out = ferromq(&args, "");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let no_plugin = "note: no authentication plugin is configured: the broker checks no user \
                     name or password and every client is user `anonymous` with no groups, so \
                     the answer is for `anonymous`, not `alice`";

    let (code, text) = explain(&[], "private/x");
    assert_eq!(code, Some(3), "{text}");
    assert!(text.starts_with(no_plugin), "{text}");
    assert!(!text.contains("does not know user"), "{text}");
    assert!(text.contains("User is not authenticated."), "{text}");
    assert!(
        text.contains("DENIED: user `anonymous` (groups: none) may not publish to `private/x`"),
        "{text}"
    );
    // The groups a client of this broker never has do not allow it either.
    let (code, text) = explain(&["--group", "admins"], "private/x");
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("(--group does not apply)"), "{text}");
    assert!(text.contains("DENIED: user `anonymous`"), "{text}");
    // A login succeeds as `anonymous` whatever the password, as `run` lets the client in.
    let (code, text) = explain(&["--password", "anything"], "private/x");
    assert_eq!(code, Some(3), "{text}");
    assert!(text.starts_with(no_plugin), "{text}");
    assert!(text.contains("DENIED: user `anonymous`"), "{text}");
    // An entry granting `*` grants `anonymous`.
    let (code, text) = explain(&[], "public/x");
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("ALLOWED: user `anonymous` (groups: none) may publish to `public/x`"),
        "{text}"
    );
}
