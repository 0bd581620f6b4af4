//! `config::diff`: what a reload sees between two configurations, loaded through the real loader
//! from XML in temporary directories.

use std::path::Path;

use ferromq::config::diff::{diff, diff_with_changed_files, keep_running_values, ConfigDiff};
use ferromq::config::{load_str, Config};

use crate::support::xml::no_env;

const BEANS: &str =
    "<beans xmlns=\"http://www.springframework.org/schema/beans\" xmlns:ferromq=\"urn:ferromq\">";
const BROKER: &str = "<broker xmlns=\"http://activemq.apache.org/schema/core\"";

fn load(dir: &Path, broker_attrs: &str, inner: &str) -> Config {
    let xml = format!("{BEANS}{BROKER} {broker_attrs}>{inner}</broker></beans>");
    let loaded = load_str(&xml, dir, &no_env());
    let text = loaded.diagnostics.to_string();
    loaded
        .into_result()
        .unwrap_or_else(|_| panic!("expected a valid config, got:\n{text}\nfrom:\n{xml}"))
}

fn write(dir: &Path, name: &str, contents: impl AsRef<[u8]>) {
    std::fs::write(dir.join(name), contents).expect("write");
}

fn connectors(items: &[(&str, &str)]) -> String {
    let items: String = items
        .iter()
        .map(|(name, uri)| format!("<transportConnector name=\"{name}\" uri=\"{uri}\"/>"))
        .collect();
    format!("<transportConnectors>{items}</transportConnectors>")
}

const MQTT: (&str, &str) = ("mqtt", "mqtt://127.0.0.1:1883");

fn users(list: &[(&str, &str, &str)]) -> String {
    let users: String = list
        .iter()
        .map(|(u, p, g)| {
            format!("<authenticationUser username=\"{u}\" password=\"{p}\" groups=\"{g}\"/>")
        })
        .collect();
    format!("<simpleAuthenticationPlugin><users>{users}</users></simpleAuthenticationPlugin>")
}

fn authz(entries: &[&str]) -> String {
    let entries: String = entries
        .iter()
        .map(|e| format!("<authorizationEntry {e}/>"))
        .collect();
    format!(
        "<authorizationPlugin><map><authorizationMap><authorizationEntries>{entries}\
         </authorizationEntries></authorizationMap></map></authorizationPlugin>"
    )
}

fn plugins(inner: &str) -> String {
    format!("<plugins>{inner}</plugins>")
}

/// (case, running broker attrs + inner XML, new broker attrs + inner XML, expected summary)
type Case = (
    &'static str,
    (&'static str, String),
    (&'static str, String),
    &'static str,
);

fn cases() -> Vec<Case> {
    let base = connectors(&[MQTT]);
    let two = connectors(&[MQTT, ("mqtt2", "mqtt://127.0.0.1:1884")]);
    let with_plugins = |p: &str| format!("{}{base}", plugins(p));
    let limits = |mb: u32| {
        format!(
            "<systemUsage><systemUsage><memoryUsage><memoryUsage limit=\"{mb} mb\"/>\
             </memoryUsage></systemUsage></systemUsage>{base}"
        )
    };
    let policy = |limit: u32| {
        format!(
            "<destinationPolicy><policyMap><policyEntries><policyEntry topic=\">\">\
             <pendingMessageLimitStrategy><constantPendingMessageLimitStrategy limit=\"{limit}\"/>\
             </pendingMessageLimitStrategy></policyEntry></policyEntries></policyMap>\
             </destinationPolicy>{base}"
        )
    };
    let alice = ("alice", "pw", "users");
    let bob = ("bob", "pw", "users");
    let everyone = "topic=\">\" read=\"users\" write=\"users\" admin=\"users\"";
    let sensors = "topic=\"sensors.>\" read=\"admins\" write=\"devices\" admin=\"admins\"";
    vec![
        ("identical", ("", base.clone()), ("", base.clone()), "no change"),
        (
            "layout, comments and option order are not changes",
            (
                "",
                connectors(&[("mqtt", "mqtt://127.0.0.1:1883?transport.defaultKeepAlive=5000&amp;maximumConnections=10")]),
            ),
            (
                "",
                format!(
                    "<!-- a comment -->\n\n  {}",
                    connectors(&[("mqtt", "mqtt://127.0.0.1:1883?maximumConnections=10&amp;transport.defaultKeepAlive=5000")])
                ),
            ),
            "no change",
        ),
        ("listener added", ("", base.clone()), ("", two.clone()), "+1 listener (mqtt2)"),
        ("listener removed", ("", two.clone()), ("", base.clone()), "-1 listener (mqtt2)"),
        (
            "listener port changed",
            ("", base.clone()),
            ("", connectors(&[("mqtt", "mqtt://127.0.0.1:1999")])),
            "~1 listener (mqtt: address 127.0.0.1:1883 -> 127.0.0.1:1999)",
        ),
        (
            "listener scheme and keep-alive changed",
            ("", base.clone()),
            ("", connectors(&[("mqtt", "ws://127.0.0.1:1883?transport.defaultKeepAlive=60000")])),
            "~1 listener (mqtt: scheme mqtt -> ws, transport.defaultKeepAlive)",
        ),
        (
            "user added, removed and changed",
            ("", with_plugins(&users(&[alice, bob]))),
            ("", with_plugins(&users(&[("alice", "new", "users"), ("carol", "pw", "users")]))),
            "~authentication (+1 user, -1 user, ~1 user)",
        ),
        (
            "user moved to another group",
            ("", with_plugins(&users(&[alice]))),
            ("", with_plugins(&users(&[("alice", "pw", "admins")]))),
            "~authentication (~1 user)",
        ),
        (
            "authentication plugin added",
            ("", base.clone()),
            ("", with_plugins(&users(&[alice]))),
            "~authentication (none -> simple)",
        ),
        (
            "authorization added",
            ("", base.clone()),
            ("", with_plugins(&authz(&[everyone, sensors]))),
            "+authorization (2 entries)",
        ),
        (
            "authorization removed",
            ("", with_plugins(&authz(&[everyone]))),
            ("", base.clone()),
            "-authorization (everything allowed)",
        ),
        (
            "authorization entry replaced; reordering is not a change",
            ("", with_plugins(&authz(&[everyone, sensors]))),
            (
                "",
                with_plugins(&authz(&[
                    sensors,
                    "topic=\">\" read=\"admins\" write=\"users\" admin=\"users\"",
                ])),
            ),
            "~authorization (+1/-1 entries)",
        ),
        (
            "authorization principals reordered",
            ("", with_plugins(&authz(&["topic=\">\" read=\"a,b\" write=\"a\" admin=\"a\""]))),
            ("", with_plugins(&authz(&["topic=\">\" read=\"b,a\" write=\"a\" admin=\"a\""]))),
            "no change",
        ),
        ("memory limit", ("", limits(64)), ("", limits(128)), "~limits (memoryUsage)"),
        ("policy limit", ("", policy(1000)), ("", policy(10)), "~policies (+1/-1 entries)"),
        (
            "checkPeriod",
            ("", with_plugins("<runtimeConfigurationPlugin checkPeriod=\"1000\"/>")),
            ("", with_plugins("<runtimeConfigurationPlugin checkPeriod=\"250\"/>")),
            "~runtimeConfigurationPlugin (checkPeriod 1000 ms -> 250 ms)",
        ),
        (
            "broker name needs a restart, the rest still applies",
            ("brokerName=\"one\"", base.clone()),
            ("brokerName=\"two\"", two.clone()),
            // The default store directory is named after the broker, so it moves too.
            "+1 listener (mqtt2), restart needed for: brokerName, persistenceAdapter",
        ),
        (
            "data directory and persistence need a restart",
            ("dataDirectory=\"/var/a\"", base.clone()),
            ("dataDirectory=\"/var/b\" persistent=\"false\"", base.clone()),
            "restart needed for: dataDirectory, persistent, persistenceAdapter",
        ),
    ]
}

#[test]
fn table_of_changes_and_their_summaries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut failures = Vec::new();
    for (name, (old_attrs, old_inner), (new_attrs, new_inner), expected) in cases() {
        let old = load(dir.path(), old_attrs, &old_inner);
        let new = load(dir.path(), new_attrs, &new_inner);
        let d = diff(&old, &new);
        if d.summary() != expected {
            failures.push(format!(
                "{name}:\n  expected {expected}\n  got      {}",
                d.summary()
            ));
        }
        assert_eq!(d.is_empty(), expected == "no change", "{name}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn rebind_only_for_address_or_scheme() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = load(dir.path(), "", &connectors(&[MQTT]));
    let keep_alive = load(
        dir.path(),
        "",
        &connectors(&[(
            "mqtt",
            "mqtt://127.0.0.1:1883?transport.defaultKeepAlive=1000",
        )]),
    );
    let moved = load(
        dir.path(),
        "",
        &connectors(&[("mqtt", "mqtt://127.0.0.1:1884")]),
    );
    let options_only = diff(&old, &keep_alive);
    assert_eq!(
        options_only.listeners_changed[0].options,
        ["transport.defaultKeepAlive"]
    );
    assert!(!options_only.listeners_changed[0].rebind);
    assert!(options_only.has_runtime_changes());
    assert!(diff(&old, &moved).listeners_changed[0].rebind);
}

#[test]
fn restart_only_settings_keep_the_running_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = load(
        dir.path(),
        "brokerName=\"one\" dataDirectory=\"/a\"",
        &connectors(&[MQTT]),
    );
    let mut new = load(
        dir.path(),
        "brokerName=\"two\" dataDirectory=\"/b\"",
        &connectors(&[MQTT]),
    );
    let d = diff(&running, &new);
    assert!(!d.has_runtime_changes());
    assert!(!d.is_empty());
    assert_eq!(
        d.restart_needed[0].to_string(),
        "brokerName changed from one to two: needs a restart; kept the running value"
    );
    keep_running_values(&running, &mut new);
    assert_eq!(new.broker.broker_name, "one");
    assert_eq!(new.broker.data_directory, Path::new("/a"));
    assert!(diff(&running, &new).is_empty());
}

fn self_signed() -> (String, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("rcgen");
    (certified.cert.pem(), certified.key_pair.serialize_pem())
}

#[test]
fn tls_settings_and_material_contents() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed();
    write(dir.path(), "cert.pem", &cert);
    write(dir.path(), "key.pem", &key);
    write(dir.path(), "other.pem", &cert);
    let tls = |store: &str| {
        format!(
            "<sslContext><sslContext keyStore=\"{store}\" ferromq:keyFile=\"key.pem\"/></sslContext>{}",
            connectors(&[("tls", "mqtt+ssl://127.0.0.1:8883")])
        )
    };
    let old = load(dir.path(), "", &tls("cert.pem"));
    let same = load(dir.path(), "", &tls("cert.pem"));
    let moved = load(dir.path(), "", &tls("other.pem"));
    assert!(diff(&old, &same).is_empty());
    assert_eq!(diff(&old, &moved).summary(), "~tls (keyStore)");

    // Same paths, new contents: only the reloader knows, by hashing; XML and unrelated files
    // in the changed list are not TLS changes.
    let changed = [
        dir.path().join("key.pem"),
        dir.path().join("<memory>.xml"),
        dir.path().join("unrelated.pem"),
    ];
    let d = diff_with_changed_files(&old, &same, &changed);
    assert_eq!(d.summary(), "~tls (key.pem)");
    assert_eq!(d.tls.expect("tls").files, [dir.path().join("key.pem")]);
}

#[test]
fn key_password_and_alias_changes_are_tls_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The diff reads no store content: JKS magic and a name are enough.
    std::fs::write(dir.path().join("broker.ks"), [0xfe, 0xed, 0xfe, 0xed]).expect("write");
    let tls = |attrs: &str| {
        format!(
            "<sslContext><sslContext keyStore=\"broker.ks\" keyStorePassword=\"pw\" {attrs}/></sslContext>{}",
            connectors(&[("tls", "mqtt+ssl://127.0.0.1:8883")])
        )
    };
    let old = load(dir.path(), "", &tls(r#"ferromq:keyAlias="one""#));
    let alias = load(dir.path(), "", &tls(r#"ferromq:keyAlias="two""#));
    let key_password = load(
        dir.path(),
        "",
        &tls(r#"ferromq:keyAlias="one" keyStoreKeyPassword="kp""#),
    );
    assert_eq!(diff(&old, &alias).summary(), "~tls (ferromq:keyAlias)");
    assert_eq!(
        diff(&old, &key_password).summary(),
        "~tls (keyStoreKeyPassword)"
    );
}

const LOGIN_CONFIG: &str = r#"
activemq {
    org.apache.activemq.jaas.PropertiesLoginModule required
        org.apache.activemq.jaas.properties.user="users.properties"
        org.apache.activemq.jaas.properties.group="groups.properties";
};
other {
    org.apache.activemq.jaas.PropertiesLoginModule required
        org.apache.activemq.jaas.properties.user="users.properties"
        org.apache.activemq.jaas.properties.group="groups.properties"
        reload=true;
};
"#;

#[test]
fn jaas_entry_and_credential_file_contents() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "login.config", LOGIN_CONFIG);
    write(dir.path(), "users.properties", "alice=pw\n");
    write(dir.path(), "groups.properties", "users=alice\n");
    let jaas = |configuration: &str| {
        let plugin = format!("<jaasAuthenticationPlugin configuration=\"{configuration}\"/>");
        format!("{}{}", plugins(&plugin), connectors(&[MQTT]))
    };
    let old = load(dir.path(), "", &jaas("activemq"));
    let other = load(dir.path(), "", &jaas("other"));
    assert_eq!(
        diff(&old, &other).summary(),
        "~authentication (configuration, login modules)"
    );
    let same = load(dir.path(), "", &jaas("activemq"));
    let d = diff_with_changed_files(&old, &same, &[dir.path().join("users.properties")]);
    assert_eq!(d.summary(), "~authentication (users.properties)");
    assert!(d.has_runtime_changes());
    // login.config's own contents are in the model: a comment-only edit is no change.
    let d = diff_with_changed_files(&old, &same, &[dir.path().join("login.config")]);
    assert_eq!(d, ConfigDiff::default());
}
