//! `<ferromq:jetStream>` as `check` and the loader see it: the settings it compiles to, each
//! mistake as an error at its file:line:column with a hint, the `localhost` warning, the
//! report of `ferromq check`, and the XSD.

use std::path::Path;
use std::process::Command;

use ferromq::config::{self, JetStreamSettings, Persistence, Severity};

use crate::support::xml::no_env;

/// A broker `brokerName="n1"` (plus `broker_attrs`) whose `<persistenceAdapter>` holds
/// `adapter` on line 4, column 7.
pub fn cluster_xml(broker_attrs: &str, adapter: &str) -> String {
    format!(
        r#"<beans xmlns="http://www.springframework.org/schema/beans" xmlns:fmq="urn:ferromq">
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="n1" {broker_attrs}>
    <persistenceAdapter>
      {adapter}
    </persistenceAdapter>
    <transportConnectors>
      <transportConnector name="mqtt" uri="mqtt://127.0.0.1:1883"/>
    </transportConnectors>
  </broker>
</beans>
"#
    )
}

fn load_in(dir: &Path, xml: &str) -> config::Loaded {
    let file = dir.join("activemq.xml");
    std::fs::write(&file, xml).expect("write activemq.xml");
    config::load_file(&file, &no_env())
}

/// 1-based line and column of `needle`'s first character in `xml`.
fn position(xml: &str, needle: &str) -> (u32, u32) {
    for (n, line) in xml.lines().enumerate() {
        if let Some(byte) = line.find(needle) {
            let col = line[..byte].chars().count() + 1;
            return (n as u32 + 1, col as u32);
        }
    }
    panic!("`{needle}` not in\n{xml}");
}

/// Where the value of `attr` (written `attr="value`) starts.
fn value_position(xml: &str, attr_and_value: &str) -> (u32, u32) {
    let (line, col) = position(xml, attr_and_value);
    let name_len = attr_and_value.find('"').expect("attr=\"value") + 1;
    (line, col + name_len as u32)
}

#[test]
fn every_attribute_compiles_to_the_settings() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("node.creds"),
        "-----BEGIN NATS USER JWT-----\n",
    )
    .expect("creds");
    let xml = cluster_xml(
        "",
        r#"<fmq:jetStream servers="nats://10.0.0.1:4222, tls://nats2.example ,nats://[::1]:5222" replicas="5" messageShards="16" maxOfflineAge="2d" storeTimeout="1500ms" quorumLossTimeout="3s" heartbeatInterval="250" nodeTimeout="1m" credentials="node.creds"/>"#,
    );
    let loaded = load_in(dir.path(), &xml);
    let text = loaded.diagnostics.to_string();
    assert!(loaded.diagnostics.0.is_empty(), "{text}");
    let config = loaded.into_result().expect("valid");
    let Persistence::JetStream(js) = &config.persistence else {
        panic!("not a cluster store: {:?}", config.persistence);
    };
    let expected = JetStreamSettings {
        servers: vec![
            "nats://10.0.0.1:4222".into(),
            "tls://nats2.example:4222".into(),
            "nats://[::1]:5222".into(),
        ],
        replicas: 5,
        message_shards: 16,
        max_offline_age_ms: 2 * 86_400_000,
        store_timeout_ms: 1500,
        quorum_loss_timeout_ms: 3000,
        heartbeat_interval_ms: 250,
        node_timeout_ms: 60_000,
        credentials: Some(dir.path().join("node.creds")),
        user: None,
        password: None,
    };
    assert_eq!(js, &expected);
    assert!(config.files.contains(&dir.path().join("node.creds")));
    let (line, col) = position(&xml, "<fmq:jetStream");
    assert_eq!(
        (config.persistence_span.line, config.persistence_span.col),
        (line, col)
    );
}

#[test]
fn defaults_and_a_placeholder_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("nats.properties"), "nats.password=s3cret\n").expect("props");
    let xml = format!(
        r#"<beans xmlns="http://www.springframework.org/schema/beans" xmlns:ferromq="urn:ferromq">
  <bean class="org.springframework.beans.factory.config.PropertyPlaceholderConfigurer">
    <property name="locations"><value>file:${{activemq.conf}}/nats.properties</value></property>
  </bean>
{}"#,
        cluster_xml("", r#"<ferromq:jetStream servers="nats://127.0.0.1" user="fmq" password="${nats.password}"/>"#)
            .replace(r#"<beans xmlns="http://www.springframework.org/schema/beans" xmlns:fmq="urn:ferromq">"#, "")
    );
    let loaded = load_in(dir.path(), &xml);
    let text = loaded.diagnostics.to_string();
    let config = loaded.into_result().unwrap_or_else(|_| panic!("{text}"));
    let Persistence::JetStream(js) = &config.persistence else {
        panic!("not a cluster store");
    };
    let mut expected = JetStreamSettings::with_servers(vec!["nats://127.0.0.1:4222".into()]);
    expected.user = Some("fmq".into());
    expected.password = Some("s3cret".into());
    assert_eq!(js, &expected);
    assert_eq!((js.replicas, js.message_shards), (3, 8));
    assert_eq!(js.max_offline_age_ms, 7 * 86_400_000);
    assert_eq!(
        (
            js.store_timeout_ms,
            js.quorum_loss_timeout_ms,
            js.heartbeat_interval_ms,
            js.node_timeout_ms
        ),
        (5000, 10_000, 1000, 10_000)
    );
    let shown = format!("{config:?}");
    assert!(!shown.contains("s3cret"), "{shown}");
    let report = config::report::json(&config::Loaded {
        config: Some(config.clone()),
        diagnostics: Default::default(),
    });
    assert!(!report.contains("s3cret"), "{report}");
}

/// Each mistake is one error at the place it names, with a hint.
#[test]
fn mistakes_are_errors_at_their_position_with_a_hint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let servers = r#"servers="nats://127.0.0.1:4222""#;
    // (broker attributes, adapter, message, where: Ok(needle at start) / Err(attr="value))
    let cases: Vec<(&str, String, &str, Result<&str, &str>)> = vec![
        (
            "",
            r#"<fmq:jetStream replicas="3"/>"#.into(),
            "names no NATS servers",
            Ok("<fmq:jetStream"),
        ),
        (
            "",
            r#"<fmq:jetStream servers=" , "/>"#.into(),
            "servers is empty",
            Err(r#"servers=" ,"#),
        ),
        (
            "",
            r#"<fmq:jetStream servers="http://h:4222"/>"#.into(),
            "has scheme `http`",
            Err(r#"servers="http"#),
        ),
        (
            "",
            r#"<fmq:jetStream servers="h:4222"/>"#.into(),
            "has no scheme",
            Err(r#"servers="h:"#),
        ),
        (
            "",
            r#"<fmq:jetStream servers="nats://h:99999"/>"#.into(),
            "not a port from 1 to 65535",
            Err(r#"servers="nats"#),
        ),
        (
            "",
            r#"<fmq:jetStream servers="nats://:4222"/>"#.into(),
            "has no valid host",
            Err(r#"servers="nats"#),
        ),
        (
            "",
            format!(r#"<fmq:jetStream {servers} replicas="6"/>"#),
            "replicas must be from 1 to 5, not 6",
            Err(r#"replicas="6"#),
        ),
        (
            "",
            format!(r#"<fmq:jetStream {servers} replicas="three"/>"#),
            "replicas must be a whole number",
            Err(r#"replicas="t"#),
        ),
        (
            "",
            format!(r#"<fmq:jetStream {servers} messageShards="0"/>"#),
            "messageShards must be from 1 to 64, not 0",
            Err(r#"messageShards="0"#),
        ),
        (
            "",
            format!(r#"<fmq:jetStream {servers} messageShards="65"/>"#),
            "messageShards must be from 1 to 64, not 65",
            Err(r#"messageShards="65"#),
        ),
        (
            "",
            format!(r#"<fmq:jetStream {servers} storeTimeout="5 sec"/>"#),
            "storeTimeout `5 sec` is not a duration",
            Err(r#"storeTimeout="5"#),
        ),
        (
            "",
            format!(r#"<fmq:jetStream {servers} maxOfflineAge="0d"/>"#),
            "maxOfflineAge must be longer than 0",
            Err(r#"maxOfflineAge="0"#),
        ),
        (
            "",
            format!(r#"<fmq:jetStream {servers} heartbeatInterval="20s"/>"#),
            "nodeTimeout (10000 ms) is not longer than heartbeatInterval",
            Err(r#"heartbeatInterval="2"#),
        ),
        (
            "",
            format!(r#"<fmq:jetStream {servers} credentials="missing.creds"/>"#),
            "missing.creds does not exist",
            Err(r#"credentials="m"#),
        ),
        (
            "",
            format!(r#"<fmq:jetStream {servers} user="fmq"/>"#),
            "user without password",
            Ok(r#"user="#),
        ),
        (
            "",
            format!(r#"<fmq:jetStream {servers} partitionPolicy="fail-fast"/>"#),
            "unknown attribute `partitionPolicy` on <ferromq:jetStream>",
            Ok("partitionPolicy"),
        ),
        (
            "",
            format!(r#"<fmq:jetStream {servers}><fmq:server/></fmq:jetStream>"#),
            "takes no elements",
            Ok("<fmq:server"),
        ),
        (
            "",
            format!(r#"<kahaDB directory="kaha"/><fmq:jetStream {servers}/>"#),
            "<kahaDB> beside <ferromq:jetStream>: a broker has exactly one store",
            Ok("<kahaDB"),
        ),
        (
            "",
            format!(r#"<fmq:jetStream {servers}/><fmq:jetStream {servers}/>"#),
            "a second <ferromq:jetStream>",
            Ok("<fmq:jetStream/>"),
        ),
        (
            r#"persistent="false""#,
            format!(r#"<fmq:jetStream {servers}/>"#),
            "clustering needs persistence",
            Err(r#"persistent="f"#),
        ),
    ];
    for (broker_attrs, adapter, message, place) in cases {
        let xml = cluster_xml(broker_attrs, &adapter);
        let loaded = load_in(dir.path(), &xml);
        let errors: Vec<_> = loaded.diagnostics.errors().collect();
        let found = errors
            .iter()
            .find(|d| d.message.contains(message))
            .unwrap_or_else(|| panic!("`{message}` for {adapter}:\n{}", loaded.diagnostics));
        let span = found.span.as_ref().expect("a position");
        let expected = match place {
            Ok("<fmq:jetStream/>") => {
                // The second element: the last occurrence on the line.
                let line = xml.lines().nth(3).expect("line 4");
                let byte = line.rfind("<fmq:jetStream").expect("second");
                (4, line[..byte].chars().count() as u32 + 1)
            }
            Ok(needle) => position(&xml, needle),
            Err(attr_and_value) => value_position(&xml, attr_and_value),
        };
        assert_eq!(
            (span.line, span.col),
            expected,
            "{message}: {}",
            loaded.diagnostics
        );
        assert!(span.file.ends_with("activemq.xml"));
        assert!(found.hint.is_some(), "{message} has no hint");
        assert!(loaded.config.is_none() || loaded.diagnostics.has_errors());
    }
}

#[test]
fn a_misspelt_attribute_gets_a_suggestion_and_a_misplaced_element_is_pointed_home() {
    let dir = tempfile::tempdir().expect("tempdir");
    let loaded = load_in(
        dir.path(),
        &cluster_xml("", r#"<fmq:jetStream servers="nats://h" replica="3"/>"#),
    );
    let d = loaded
        .diagnostics
        .errors()
        .find(|d| d.message.contains("unknown attribute `replica`"))
        .expect("unknown attribute");
    assert!(
        d.hint.as_deref().is_some_and(|h| h.contains("replicas")),
        "{d:?}"
    );

    let xml = cluster_xml("", "").replace(
        "    <persistenceAdapter>",
        r#"    <fmq:jetStream servers="nats://h"/><persistenceAdapter>"#,
    );
    let loaded = load_in(dir.path(), &xml);
    let d = loaded
        .diagnostics
        .errors()
        .find(|d| {
            d.message
                .contains("unknown ferromq element <ferromq:jetStream> in <broker>")
        })
        .unwrap_or_else(|| panic!("{}", loaded.diagnostics));
    assert_eq!(
        d.hint.as_deref(),
        Some("put <ferromq:jetStream> inside <broker><persistenceAdapter>")
    );
}

#[test]
fn broker_name_localhost_is_a_warning_at_its_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let adapter = r#"<fmq:jetStream servers="nats://h"/>"#;
    let xml = cluster_xml("", adapter).replace(r#"brokerName="n1""#, r#"brokerName="localhost""#);
    let loaded = load_in(dir.path(), &xml);
    assert!(!loaded.diagnostics.has_errors(), "{}", loaded.diagnostics);
    let warning = loaded
        .diagnostics
        .warnings()
        .find(|d| d.message.contains("brokerName `localhost`"))
        .unwrap_or_else(|| panic!("{}", loaded.diagnostics));
    let span = warning.span.as_ref().expect("position");
    assert_eq!(
        (span.line, span.col),
        value_position(&xml, r#"brokerName="l"#)
    );
    // Left out, the name is ActiveMQ's default `localhost`: the warning points at <broker>.
    let xml = cluster_xml("", adapter).replace(r#" brokerName="n1""#, "");
    let loaded = load_in(dir.path(), &xml);
    let warning = loaded
        .diagnostics
        .warnings()
        .find(|d| d.message.contains("brokerName `localhost`"))
        .expect("warning");
    assert_eq!(warning.severity, Severity::Warning);
    let span = warning.span.as_ref().expect("position");
    assert_eq!((span.line, span.col), position(&xml, "<broker"));
}

fn ferromq(args: &[&std::ffi::OsStr]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferromq"));
    command.args(args);
    for var in [
        "ACTIVEMQ_BASE",
        "ACTIVEMQ_CONF",
        "ACTIVEMQ_DATA",
        "ACTIVEMQ_HOME",
        "RUST_LOG",
    ] {
        command.env_remove(var);
    }
    command.output().expect("run ferromq")
}

/// `ferromq check FILE` with the real binary.
pub fn check(file: &Path, extra: &[&str]) -> (bool, String) {
    let mut args: Vec<&std::ffi::OsStr> = vec!["check".as_ref()];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    args.push(file.as_os_str());
    let out = ferromq(&args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &*String::from_utf8_lossy(&out.stderr),
    )
}

/// A cluster node's STOMP connector: the whole SEND capped as the MQTT listener's max frame.
#[test]
fn check_caps_the_stomp_max_body_on_a_cluster_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("activemq.xml");
    let xml = cluster_xml("", r#"<fmq:jetStream servers="nats://10.0.0.1:4222"/>"#).replacen(
        "    </transportConnectors>",
        "      <transportConnector name=\"stomp\" uri=\"stomp://127.0.0.1:61613\"/>\n    </transportConnectors>",
        1,
    );
    std::fs::write(&file, xml).expect("write");
    let (ok, text) = check(&file, &[]);
    assert!(ok, "{text}");
    assert!(
        text.contains("stomp: stomp://127.0.0.1:61613 (STOMP; "),
        "{text}"
    );
    assert!(
        text.contains(", max SEND 1023 kb (destination, headers and body), "),
        "{text}"
    );
    assert!(!text.contains("max body 100 mb"), "{text}");
    assert!(
        text.contains("max SEND capped by the cluster: NATS max_payload 1 mb (nats-server's default; check --online reads the servers' value) less 1 kb of frame; transport.maxDataLength 100 mb"),
        "{text}"
    );
    let (ok, json) = check(&file, &["--format", "json"]);
    assert!(ok, "{json}");
    let value: serde_json::Value = serde_json::from_str(&json).expect("json");
    let cap = &value["summary"]["listeners"][1]["stomp"]["cluster_cap"];
    assert_eq!(cap["max_message_bytes"], 1_047_552, "{json}");

    // Without a cluster: the connector's own maxDataLength, no cap.
    let xml = std::fs::read_to_string(&file).expect("read").replace(
        r#"<fmq:jetStream servers="nats://10.0.0.1:4222"/>"#,
        r#"<kahaDB directory="data"/>"#,
    );
    std::fs::write(&file, xml).expect("write");
    let (ok, text) = check(&file, &[]);
    assert!(ok, "{text}");
    assert!(text.contains("max body 100 mb"), "{text}");
    assert!(!text.contains("max SEND"), "{text}");
}

#[test]
fn check_reports_the_cluster_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("activemq.xml");
    std::fs::write(
        &file,
        cluster_xml(
            "",
            r#"<fmq:jetStream servers="nats://10.0.0.1:4222,nats://10.0.0.2:4222" messageShards="4" user="fmq" password="s3cret"/>"#,
        ),
    )
    .expect("write");
    let (ok, text) = check(&file, &[]);
    assert!(ok, "{text}");
    assert!(
        text.contains("store: cluster node `n1` over NATS JetStream at nats://10.0.0.1:4222, nats://10.0.0.2:4222"),
        "{text}"
    );
    assert!(
        text.contains(
            "replicas 3, message shards 4, messages kept 604800000 ms, store timeout 5000 ms"
        ),
        "{text}"
    );
    assert!(text.contains("heartbeat every 1000 ms, node dead after 10000 ms, quorum lost after 10000 ms; login: user fmq"), "{text}");
    assert!(
        text.contains("shared subscriptions: across nodes (QoS 0 by a NATS queue group"),
        "{text}"
    );
    assert!(!text.contains("s3cret"), "{text}");
    // The MQTT listener's real cap is NATS's max_payload (1 MiB unless the servers say
    // otherwise) less the frame around a message, not wireFormat.maxFrameSize.
    assert!(
        text.contains("mqtt: mqtt://127.0.0.1:1883 (default keep-alive none, connect timeout 30000 ms, max frame 1023 kb,"),
        "{text}"
    );
    assert!(
        text.contains("max frame capped by the cluster: NATS max_payload 1 mb (nats-server's default; check --online reads the servers' value) less 1 kb of frame; wireFormat.maxFrameSize 256 mb"),
        "{text}"
    );
    let (ok, json) = check(&file, &["--format", "json"]);
    assert!(ok, "{json}");
    let value: serde_json::Value = serde_json::from_str(&json).expect("json");
    let cluster = &value["summary"]["store"]["cluster"];
    assert_eq!(value["summary"]["store"]["kind"], "cluster");
    assert_eq!(cluster["node_id"], "n1");
    assert_eq!(cluster["replicas"], 3);
    assert_eq!(cluster["message_shards"], 4);
    assert_eq!(cluster["servers"][1], "nats://10.0.0.2:4222");
    let cap = &value["summary"]["listeners"][0]["cluster_cap"];
    assert_eq!(cap["max_message_bytes"], 1_047_552);
    assert_eq!(cap["nats_max_payload_bytes"], 1_048_576);
    assert_eq!(cap["probed"], false);
    assert!(!json.contains("s3cret"), "{json}");

    // An error exits 1 and is printed with its position.
    std::fs::write(
        &file,
        cluster_xml("", r#"<fmq:jetStream servers="nats://h" replicas="0"/>"#),
    )
    .expect("write");
    let (ok, text) = check(&file, &[]);
    assert!(!ok);
    let at = format!("{}:4:", file.display());
    assert!(
        text.lines().any(|l| l.starts_with(&at) && l.contains("error: replicas must be from 1 to 5, not 0")),
        "{text}"
    );
}

fn xmllint(file: &Path) -> Option<std::process::Output> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    Command::new("xmllint")
        .args(["--noout", "--nonet", "--schema"])
        .arg(root.join("schemas/ferromq-activemq.xsd"))
        .arg(file)
        .output()
        .ok()
}

#[test]
fn the_schema_accepts_the_element_in_a_persistence_adapter_and_checks_its_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("activemq.xml");
    std::fs::write(
        &file,
        cluster_xml(
            "",
            r#"<fmq:jetStream servers="nats://a:4222,nats://b:4222" replicas="3" messageShards="8" maxOfflineAge="7d" storeTimeout="5000" quorumLossTimeout="${timeout}" heartbeatInterval="500ms" nodeTimeout="10s" user="u" password="p"/>"#,
        ),
    )
    .expect("write");
    let Some(out) = xmllint(&file) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "xmllint is missing under CI"
        );
        println!("skipped: xmllint not found (install libxml2-utils)");
        return;
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(
        &file,
        cluster_xml(
            "",
            r#"<fmq:jetStream servers="nats://a" replicas="9" storeTimeout="5 seconds" partitionPolicy="x"/>"#,
        ),
    )
    .expect("write");
    let out = xmllint(&file).expect("xmllint");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for name in ["replicas", "storeTimeout", "partitionPolicy"] {
        assert!(stderr.contains(name), "{name}: {stderr}");
    }
    // servers is required.
    std::fs::write(&file, cluster_xml("", r#"<fmq:jetStream replicas="3"/>"#)).expect("write");
    let out = xmllint(&file).expect("xmllint");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("servers"));
}
