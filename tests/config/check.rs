//! `ferromq check`: golden diagnostics for broken files, every shipped configuration valid,
//! the XSD accepting them, the binary's exit codes and JSON, and no panic on random trees.
//!
//! Golden files (`*.expected`) hold the full `check` text with the repository path replaced by
//! `<root>`. After an intended change, regenerate them with
//! `UPDATE_GOLDEN=1 cargo test --test config check::` and review the diff.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use ferromq::config::compile::compile;
use ferromq::config::tree::{Attr, Element, Namespace};
use ferromq::config::xml::LoadedDocument;
use ferromq::config::{load_file, report, Diagnostics, LoadOptions, Loaded, Span};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn options() -> LoadOptions {
    LoadOptions {
        overrides: BTreeMap::new(),
        use_env: false,
        local_store: false,
        embedded_default: false,
    }
}

fn check(relative: &str) -> Loaded {
    load_file(&root().join(relative), &options())
}

fn normalized(text: &str) -> String {
    text.replace(&root().display().to_string(), "<root>")
}

/// (configuration, golden file), relative to the repository root.
const GOLDEN: &[(&str, &str)] = &[
    (
        "tests/fixtures/config/unclosed-tag.xml",
        "tests/fixtures/config/unclosed-tag.expected",
    ),
    (
        "tests/fixtures/config/typo-element.xml",
        "tests/fixtures/config/typo-element.expected",
    ),
    (
        "tests/fixtures/config/unresolved-placeholder.xml",
        "tests/fixtures/config/unresolved-placeholder.expected",
    ),
    (
        "tests/fixtures/config/bad-uri.xml",
        "tests/fixtures/config/bad-uri.expected",
    ),
    (
        "tests/fixtures/config/port-clash.xml",
        "tests/fixtures/config/port-clash.expected",
    ),
    (
        "tests/fixtures/config/missing-properties-file.xml",
        "tests/fixtures/config/missing-properties-file.expected",
    ),
    (
        "tests/fixtures/config/import-cycle.xml",
        "tests/fixtures/config/import-cycle.expected",
    ),
    (
        "tests/fixtures/config/jks/activemq.xml",
        "tests/fixtures/config/jks/activemq.expected",
    ),
    (
        "tests/fixtures/config/jaas-missing-file/activemq.xml",
        "tests/fixtures/config/jaas-missing-file/activemq.expected",
    ),
    (
        "tests/fixtures/config/jaas-syntax/activemq.xml",
        "tests/fixtures/config/jaas-syntax/activemq.expected",
    ),
    (
        "tests/fixtures/config/security-errors.xml",
        "tests/fixtures/config/security-errors.expected",
    ),
    (
        "examples/upstream-activemq.xml",
        "tests/fixtures/config/upstream-activemq.expected",
    ),
    (
        "conf/activemq.xml",
        "tests/fixtures/config/conf-activemq.expected",
    ),
];

#[test]
fn golden_diagnostics() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut mismatches = Vec::new();
    for (input, expected_path) in GOLDEN {
        let actual = normalized(&report::text(&check(input)));
        let expected_file = root().join(expected_path);
        if update {
            std::fs::write(&expected_file, &actual).expect("write golden file");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_file)
            .unwrap_or_else(|e| panic!("{expected_path}: {e} (run with UPDATE_GOLDEN=1)"));
        if actual != expected {
            mismatches.push(format!(
                "== {input}\n-- expected ({expected_path}):\n{expected}-- actual:\n{actual}"
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn golden_files_show_what_the_issue_asks_for() {
    // Independent of the golden text: the essential facts, so a careless UPDATE_GOLDEN cannot
    // bless a regression.
    let first_error = |input: &str| {
        let loaded = check(input);
        let error = loaded.diagnostics.errors().next().cloned();
        error.unwrap_or_else(|| panic!("{input}: expected an error"))
    };
    let unclosed = first_error("tests/fixtures/config/unclosed-tag.xml");
    let span = unclosed.span.expect("span");
    assert_eq!((span.line, span.col), (6, 1));
    assert!(unclosed.hint.is_some_and(|h| h.contains("opened at 2:5")));

    let typo = check("tests/fixtures/config/typo-element.xml");
    let hints: Vec<_> = typo
        .diagnostics
        .0
        .iter()
        .filter_map(|d| d.hint.clone())
        .collect();
    assert!(
        hints.contains(&"did you mean `transportConnector`?".to_owned()),
        "{hints:?}"
    );
    assert!(
        hints.contains(&"did you mean `persistenceAdapter`?".to_owned()),
        "{hints:?}"
    );
    // An element with no near name still gets a hint, at either depth.
    let schema_hints = hints
        .iter()
        .filter(|h| h.starts_with("not an element of ActiveMQ's broker schema"))
        .count();
    assert_eq!(schema_hints, 2, "{hints:?}");

    let placeholder = first_error("tests/fixtures/config/unresolved-placeholder.xml");
    assert!(placeholder.message.contains("${mqtt.host}"));
    assert_eq!(placeholder.span.map(|s| s.line), Some(5));

    assert!(first_error("tests/fixtures/config/bad-uri.xml")
        .message
        .contains("out of range"));
    assert!(first_error("tests/fixtures/config/port-clash.xml")
        .message
        .contains("clashes"));
    assert!(
        first_error("tests/fixtures/config/missing-properties-file.xml")
            .message
            .contains("no-such-credentials.properties")
    );
    assert!(first_error("tests/fixtures/config/import-cycle.xml")
        .message
        .contains("cycle"));
    // A JKS store is read as JKS whatever keyStoreType says (its integrity and keys are checked
    // when the TLS configuration is built: tests/transport/jks.rs); what remains is the
    // missing trust store of needClientAuth.
    let jks = check("tests/fixtures/config/jks/activemq.xml");
    let jks_text = report::text(&jks);
    assert!(
        jks_text.contains("is JKS; ferromq reads it as JKS"),
        "{jks_text}"
    );
    assert!(!jks_text.contains("does not read"), "{jks_text}");
    assert!(first_error("tests/fixtures/config/jks/activemq.xml")
        .message
        .contains("has no trustStore"));
    let jaas = first_error("tests/fixtures/config/jaas-missing-file/activemq.xml");
    assert!(jaas.message.contains("no-such-groups.properties"));
    assert_eq!(jaas.span.map(|s| (s.line, s.col)), Some((4, 51)));
}

fn is_broker_config(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|t| t.contains("<broker"))
}

fn xml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "xml"))
        .collect();
    out.sort();
    out
}

#[test]
fn default_configuration_is_valid_without_warnings() {
    let loaded = check("conf/activemq.xml");
    assert!(loaded.diagnostics.0.is_empty(), "{}", loaded.diagnostics);
    let config = loaded.config.expect("config");
    assert_eq!(config.listeners.len(), 1);
    let listener = &config.listeners[0];
    assert_eq!((listener.host.as_str(), listener.port), ("127.0.0.1", 1883));
    assert_eq!(listener.options.default_keep_alive_ms, 60_000);
    assert!(matches!(
        config.authentication,
        ferromq::config::Authentication::None
    ));
    assert!(config
        .files
        .contains(&root().join("conf/credentials.properties")));
}

/// Generate throw-away PEM material where examples/tls.xml expects it.
/// `check` reports the keep-alive rules the broker enforces: both read the listener's resolved
/// `inactivity`, so `useInactivityMonitor=false` turns both limits off in the summary too.
#[test]
fn check_summary_shows_the_resolved_keep_alive_rules() {
    let xml = r#"<beans xmlns="http://www.springframework.org/schema/beans">
      <broker xmlns="http://activemq.apache.org/schema/core" persistent="false">
        <transportConnectors>
          <transportConnector name="on" uri="mqtt://127.0.0.1:0?transport.defaultKeepAlive=5000&amp;transport.connectAttemptTimeout=2000"/>
          <transportConnector name="off" uri="mqtt://127.0.0.1:0?transport.defaultKeepAlive=5000&amp;transport.useInactivityMonitor=false"/>
        </transportConnectors>
      </broker></beans>"#;
    let loaded = ferromq::config::load_str(xml, Path::new("."), &options());
    let config = loaded.config.as_ref().expect("valid");
    let (on, off) = (&config.listeners[0], &config.listeners[1]);
    assert_eq!(
        on.inactivity.default_keep_alive,
        Some(std::time::Duration::from_secs(5))
    );
    assert_eq!(
        on.inactivity.silence_limit(0),
        Some(std::time::Duration::from_millis(7500))
    );
    assert_eq!(off.inactivity.silence_limit(10), None);
    assert_eq!(off.inactivity.connect_attempt_timeout, None);
    let json: serde_json::Value = serde_json::from_str(&report::json(&loaded)).expect("json");
    let listeners = &json["summary"]["listeners"];
    assert_eq!(listeners[0]["default_keep_alive_ms"], 5000);
    assert_eq!(listeners[0]["connect_attempt_timeout_ms"], 2000);
    assert_eq!(listeners[1]["default_keep_alive_ms"], 0);
    assert!(listeners[1]["connect_attempt_timeout_ms"].is_null());
    assert_eq!(listeners[1]["inactivity_monitor"], false);
}

/// `transport.maxKeepAlive`, ferromq's cap on an MQTT 5 client's keep-alive, is shown by
/// `check` in both forms, and left out where there is no cap.
#[test]
fn check_summary_shows_the_mqtt5_keep_alive_cap() {
    let xml = r#"<beans xmlns="http://www.springframework.org/schema/beans">
      <broker xmlns="http://activemq.apache.org/schema/core" persistent="false">
        <transportConnectors>
          <transportConnector name="capped" uri="mqtt://127.0.0.1:0?transport.maxKeepAlive=60000"/>
          <transportConnector name="plain" uri="mqtt://127.0.0.1:0"/>
        </transportConnectors>
      </broker></beans>"#;
    let loaded = ferromq::config::load_str(xml, Path::new("."), &options());
    let text = report::text(&loaded);
    assert!(
        text.contains(
            "capped: mqtt://127.0.0.1:0 (default keep-alive none, MQTT 5 keep-alive at most 60 s,"
        ),
        "{text}"
    );
    assert_eq!(
        text.matches("MQTT 5 keep-alive at most").count(),
        1,
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&report::json(&loaded)).expect("json");
    let listeners = &json["summary"]["listeners"];
    assert_eq!(listeners[0]["max_keep_alive_secs"], 60);
    assert!(listeners[1].get("max_keep_alive_secs").is_none());
}

#[test]
fn send_fail_if_no_space_is_read_and_reported_in_milliseconds() {
    let xml = r#"<beans xmlns="http://www.springframework.org/schema/beans">
      <broker xmlns="http://activemq.apache.org/schema/core" persistent="false">
        <systemUsage><systemUsage sendFailIfNoSpaceAfterTimeout="2000">
          <memoryUsage><memoryUsage limit="64 mb"/></memoryUsage>
        </systemUsage></systemUsage>
      </broker></beans>"#;
    let loaded = ferromq::config::load_str(xml, Path::new("."), &options());
    let config = loaded.config.as_ref().expect("valid");
    assert_eq!(
        config.limits.send_fail_after(),
        Some(std::time::Duration::from_secs(2))
    );
    let text = report::text(&loaded);
    assert!(
        text.contains("send_fail_if_no_space_after 2000 ms"),
        "{text}"
    );
    let bad = xml.replace(r#"="2000""#, r#"="-1""#);
    let loaded = ferromq::config::load_str(&bad, Path::new("."), &options());
    assert!(
        loaded.diagnostics.has_errors(),
        "a negative timeout is an error"
    );
}

/// A usage limit of 0 is no limit, as in ActiveMQ (its `Usage` counts 0 % of a limit of 0),
/// also where ActiveMQ leaves the memory limit at 0 (a `<memoryUsage>` without `limit`,
/// `percentOfJvmHeap` of 0 or less, a `<systemUsage>` without `<memoryUsage>`: those warn);
/// `check` says "no limit"; a negative limit is an error at its value, as ActiveMQ refuses it.
#[test]
fn a_usage_limit_of_0_is_no_limit_and_a_negative_one_is_refused() {
    let xml = |memory: &str| {
        format!(
            r#"<beans xmlns="http://www.springframework.org/schema/beans">
      <broker xmlns="http://activemq.apache.org/schema/core" persistent="false">
        <transportConnectors><transportConnector name="mqtt" uri="mqtt://127.0.0.1:0"/></transportConnectors>
        <systemUsage><systemUsage>
{memory}
          <storeUsage><storeUsage limit="0"/></storeUsage>
        </systemUsage></systemUsage>
      </broker></beans>"#
        )
    };
    let load = |memory: &str| ferromq::config::load_str(&xml(memory), Path::new("."), &options());
    let memory_limit = |loaded: &Loaded| {
        loaded
            .config
            .as_ref()
            .expect("valid")
            .limits
            .memory_limit_bytes
    };

    let loaded = load(r#"<memoryUsage><memoryUsage limit="0"/></memoryUsage>"#);
    assert_eq!(memory_limit(&loaded), Some(0));
    assert_eq!(
        loaded.diagnostics.warnings().count(),
        0,
        "{}",
        loaded.diagnostics
    );
    let text = report::text(&loaded);
    assert!(
        text.contains("limits: memory no limit, store no limit"),
        "{text}"
    );

    for unset in [
        r#"<memoryUsage><memoryUsage/></memoryUsage>"#,
        r#"<memoryUsage><memoryUsage percentOfJvmHeap="0"/></memoryUsage>"#,
        r#"<memoryUsage><memoryUsage percentOfJvmHeap="-5"/></memoryUsage>"#,
        "",
    ] {
        let loaded = load(unset);
        assert_eq!(memory_limit(&loaded), Some(0), "{unset}");
        assert!(
            loaded
                .diagnostics
                .warnings()
                .any(|w| w.message.contains("no limit")),
            "{unset}: {}",
            loaded.diagnostics
        );
    }
    // Above 0 ActiveMQ takes a share of its JVM heap; ferromq has none: the 1 GB default.
    let loaded = load(r#"<memoryUsage><memoryUsage percentOfJvmHeap="70"/></memoryUsage>"#);
    assert_eq!(memory_limit(&loaded), None);

    let loaded = load(r#"<memoryUsage><memoryUsage limit="-1"/></memoryUsage>"#);
    let errors: Vec<_> = loaded.diagnostics.errors().collect();
    assert_eq!(errors.len(), 1, "{}", loaded.diagnostics);
    let span = errors[0].span.as_ref().expect("a position");
    assert_eq!((span.line, span.col), (5, 34), "{}", loaded.diagnostics);
    assert!(errors[0].message.contains("negative"), "{}", errors[0]);
}

fn write_tls_material(dir: &Path) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("generate certificate");
    std::fs::create_dir_all(dir.join("tls")).expect("mkdir");
    std::fs::write(dir.join("tls/broker-cert.pem"), certified.cert.pem()).expect("write");
    std::fs::write(
        dir.join("tls/broker-key.pem"),
        certified.key_pair.serialize_pem(),
    )
    .expect("write");
    std::fs::write(dir.join("tls/ca.pem"), certified.cert.pem()).expect("write");
}

#[test]
fn every_example_is_valid() {
    let examples = root().join("examples");
    let mut checked = 0;
    for path in xml_files(&examples)
        .into_iter()
        .filter(|p| is_broker_config(p))
    {
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let loaded = if name == "tls.xml" {
            // The keys are generated, never committed: check a copy beside generated ones.
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::copy(&path, dir.path().join("tls.xml")).expect("copy");
            std::fs::copy(
                examples.join("credentials.properties"),
                dir.path().join("credentials.properties"),
            )
            .expect("copy");
            write_tls_material(dir.path());
            load_file(&dir.path().join("tls.xml"), &options())
        } else {
            load_file(&path, &options())
        };
        assert!(
            !loaded.diagnostics.has_errors(),
            "{name}:\n{}",
            loaded.diagnostics
        );
        let config = loaded.config.expect("config");
        assert!(!config.listeners.is_empty(), "{name} serves MQTT");
        if name == "upstream-activemq.xml" {
            assert!(
                loaded.diagnostics.warnings().count() >= 5,
                "{name} warns about what it skips"
            );
            let schemes: Vec<String> = config
                .listeners
                .iter()
                .map(|l| l.scheme.to_string())
                .collect();
            assert_eq!(schemes, vec!["stomp", "mqtt", "ws"]);
        } else {
            assert_eq!(
                loaded.diagnostics.warnings().count(),
                0,
                "{name}:\n{}",
                loaded.diagnostics
            );
        }
        checked += 1;
    }
    assert_eq!(
        checked, 5,
        "security, jaas, tls, hot-reload, upstream-activemq"
    );
}

fn xmllint_available() -> bool {
    Command::new("xmllint").arg("--version").output().is_ok()
}

fn xmllint(file: &Path) -> std::process::Output {
    Command::new("xmllint")
        .arg("--noout")
        .arg("--nonet")
        .arg("--schema")
        .arg(root().join("schemas/ferromq-activemq.xsd"))
        .arg(file)
        .output()
        .expect("run xmllint")
}

#[test]
fn shipped_xml_validates_against_the_schema() {
    if !xmllint_available() {
        println!("skipped: xmllint not found (install libxml2-utils)");
        return;
    }
    let files: Vec<PathBuf> = xml_files(&root().join("conf"))
        .into_iter()
        .chain(xml_files(&root().join("examples")))
        .collect();
    assert!(files.len() >= 7);
    for file in files {
        let out = xmllint(&file);
        assert!(
            out.status.success(),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The schema does reject what it declares.
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.xml");
    std::fs::write(
        &bad,
        r#"<beans xmlns="http://www.springframework.org/schema/beans"><broker xmlns="http://activemq.apache.org/schema/core" persistent="maybe"><transportConnectors><transportConnector name="x"/></transportConnectors></broker></beans>"#,
    )
    .expect("write");
    let out = xmllint(&bad);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("persistent") && stderr.contains("uri"),
        "{stderr}"
    );
}

fn ferromq(args: &[&str]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferromq"));
    command.current_dir(root()).args(args);
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

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn check_binary_exit_codes() {
    let ok = ferromq(&["check", "conf/activemq.xml"]);
    assert_eq!(ok.status.code(), Some(0), "{}", stdout(&ok));
    assert!(stdout(&ok).ends_with("0 error(s), 0 warning(s)\n"));
    assert!(stdout(&ok).contains("mqtt: mqtt://127.0.0.1:1883"));

    let bad = ferromq(&["check", "tests/fixtures/config/typo-element.xml"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stdout(&bad).contains("did you mean `transportConnector`?"));

    let missing = ferromq(&["check", "no/such/file.xml"]);
    assert_eq!(missing.status.code(), Some(1));

    // The file as `run` takes it, and the default when none is named.
    for args in [
        &[
            "check",
            "--config",
            "tests/fixtures/config/typo-element.xml",
        ][..],
        &["check", "-c", "tests/fixtures/config/typo-element.xml"][..],
    ] {
        let named = ferromq(args);
        assert_eq!(named.status.code(), Some(1), "{args:?}");
        assert!(stdout(&named).contains("did you mean `transportConnector`?"));
    }
    let default = ferromq(&["check"]);
    assert_eq!(default.status.code(), Some(0), "{}", stdout(&default));
    assert!(stdout(&default).contains("mqtt: mqtt://127.0.0.1:1883"));
    let both = ferromq(&["check", "conf/activemq.xml", "-c", "conf/activemq.xml"]);
    assert_eq!(
        both.status.code(),
        Some(2),
        "a file named twice is a usage error"
    );

    let usage = ferromq(&["check", "--no-such-flag"]);
    assert_eq!(usage.status.code(), Some(2));

    let warnings = ferromq(&["check", "examples/upstream-activemq.xml"]);
    assert_eq!(warnings.status.code(), Some(0));
    let denied = ferromq(&["check", "--deny-warnings", "examples/upstream-activemq.xml"]);
    assert_eq!(denied.status.code(), Some(1));
}

/// A bad value given with `-D` is reported at the attribute that uses it, saying where the
/// value came from (the file alone shows only `${mqtt.port:1883}`).
#[test]
fn a_bad_value_from_the_command_line_says_it_came_from_dash_d() {
    let out = ferromq(&["check", "-D", "mqtt.port=99999", "conf/activemq.xml"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.contains("port 99999 is out of range"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.starts_with("conf/activemq.xml:103:"), "{line}");
    assert!(
        line.ends_with("(the value comes from `-D mqtt.port` on the command line)"),
        "{line}"
    );
    // From the file, nothing is said.
    let out = ferromq(&["check", "-D", "other=1", "conf/activemq.xml"]);
    assert!(!stdout(&out).contains("-D"), "{}", stdout(&out));
}

#[test]
fn run_takes_the_file_as_check_does() {
    // A file with errors: `run` reads the one named, however it is named, and refuses to
    // start naming it (the default file would start a broker).
    let bad = "tests/fixtures/config/typo-element.xml";
    for args in [
        &["run", bad][..],
        &["run", "--config", bad],
        &["run", "-c", bad],
    ] {
        let out = ferromq(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("did you mean `transportConnector`?")
                && stderr.contains(&format!("ferromq: {bad} has errors; not starting")),
            "{args:?}: {stderr}"
        );
    }
    let both = ferromq(&["run", bad, "-c", bad]);
    assert_eq!(
        both.status.code(),
        Some(2),
        "a file named twice is a usage error"
    );
}

#[test]
fn check_binary_json() {
    let out = ferromq(&[
        "check",
        "--format",
        "json",
        "tests/fixtures/config/bad-uri.xml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let value: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON output");
    assert_eq!(value["valid"], false);
    assert!(value["summary"].is_null());
    let first = &value["diagnostics"][0];
    assert_eq!(first["severity"], "error");
    assert_eq!(first["line"], 4);
    assert!(first["column"].is_u64() && first["hint"].is_string());
    assert!(first["file"]
        .as_str()
        .is_some_and(|f| f.ends_with("bad-uri.xml")));

    let good = ferromq(&[
        "check",
        "--format",
        "json",
        "examples/upstream-activemq.xml",
    ]);
    assert_eq!(good.status.code(), Some(0));
    let value: serde_json::Value = serde_json::from_str(&stdout(&good)).expect("JSON output");
    assert_eq!(value["valid"], true);
    assert_eq!(
        value["summary"]["listeners"].as_array().map(Vec::len),
        Some(3)
    );
    let stomp = &value["summary"]["listeners"][0];
    assert_eq!(stomp["protocols"], "STOMP");
    assert_eq!(stomp["stomp"]["max_frame_size_bytes"], 104_857_600);
    assert_eq!(stomp["stomp"]["max_data_length_bytes"], 104_857_600);
    assert_eq!(stomp["stomp"]["default_heart_beat"], "0,0");
    let mqtt = &value["summary"]["listeners"][1];
    assert_eq!(mqtt["max_frame_size_bytes"], 104_857_600);
    assert!(mqtt["stomp"].is_null(), "no STOMP options on mqtt://");
    assert_eq!(value["warnings"], 5);
}

#[test]
fn check_never_prints_passwords() {
    let out = ferromq(&["check", "examples/security.xml"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("user system: groups users,admins"));
    assert!(
        !text.contains("manager"),
        "the password of `system` leaked:\n{text}"
    );
    let json = stdout(&ferromq(&[
        "check",
        "--format",
        "json",
        "examples/security.xml",
    ]));
    assert!(!json.contains("manager"));
}

mod random_trees {
    //! Random element trees straight into the compiler: whatever the shape, no panic.
    use super::*;
    use proptest::prelude::*;

    const NAMES: &[&str] = &[
        "broker",
        "transportConnectors",
        "transportConnector",
        "plugins",
        "simpleAuthenticationPlugin",
        "users",
        "authenticationUser",
        "authorizationPlugin",
        "map",
        "authorizationMap",
        "authorizationEntries",
        "authorizationEntry",
        "defaultEntry",
        "tempDestinationAuthorizationEntry",
        "sslContext",
        "systemUsage",
        "memoryUsage",
        "persistenceAdapter",
        "kahaDB",
        "levelDB",
        "destinationPolicy",
        "policyMap",
        "policyEntries",
        "policyEntry",
        "pendingMessageLimitStrategy",
        "constantPendingMessageLimitStrategy",
        "networkConnectors",
        "networkConnector",
        "jaasAuthenticationPlugin",
        "jaasDualAuthenticationPlugin",
        "runtimeConfigurationPlugin",
        "managementContext",
        "bean",
        "transportConector",
    ];
    const ATTRS: &[&str] = &[
        "uri",
        "name",
        "limit",
        "topic",
        "queue",
        "read",
        "write",
        "keyStore",
        "trustStore",
        "keyFile",
        "checkPeriod",
        "persistent",
        "configuration",
        "groupClass",
        "username",
        "password",
        "directory",
        "journalMaxFileLength",
        "brokerName",
        "dataDirectory",
        "allowLinkStealing",
        "bogus",
    ];
    const VALUES: &[&str] = &[
        "mqtt://0.0.0.0:1883",
        "mqtt+ssl://[::]:0?needClientAuth=true",
        "ws://[::",
        "tcp://h:1",
        "",
        "${x}",
        "-1",
        "99999999999999999999",
        "true",
        "64 mb",
        "file:/nonexistent/x.pem",
        ">",
        "a,,b",
        "org.apache.activemq.jaas.UserPrincipal",
        "mqtt://h:1?transport.defaultKeepAlive=-5&&=",
        "é%zz",
        "mqtt://h:65536",
    ];

    fn span(line: u32) -> Span {
        Span::new(Arc::new(PathBuf::from("/nonexistent/random.xml")), line, 1)
    }

    fn namespace(i: u8) -> Namespace {
        match i % 6 {
            0 => Namespace::Beans,
            1 => Namespace::Ferromq,
            2 => Namespace::Other("urn:x".into()),
            _ => Namespace::ActiveMq,
        }
    }

    fn attr() -> impl Strategy<Value = Attr> {
        (
            0..ATTRS.len(),
            0..VALUES.len(),
            any::<u8>(),
            "[ -~]{0,12}",
            1u32..500,
        )
            .prop_map(|(a, v, ns, junk, line)| {
                let value = if ns % 7 == 0 {
                    junk
                } else {
                    VALUES[v].to_owned()
                };
                Attr {
                    name: ATTRS[a].to_owned(),
                    ns: (ns % 5 == 0).then(|| namespace(ns)),
                    raw: value.clone(),
                    value,
                    span: span(line),
                    value_span: span(line),
                }
            })
    }

    fn element() -> impl Strategy<Value = Element> {
        let leaf = (
            0..NAMES.len(),
            any::<u8>(),
            prop::collection::vec(attr(), 0..4),
            1u32..500,
        )
            .prop_map(|(n, ns, attrs, line)| Element {
                ns: namespace(ns),
                name: NAMES[n].to_owned(),
                attrs,
                children: Vec::new(),
                text: String::new(),
                span: span(line),
            });
        leaf.prop_recursive(5, 64, 6, |inner| {
            (
                0..NAMES.len(),
                any::<u8>(),
                prop::collection::vec(attr(), 0..4),
                prop::collection::vec(inner, 0..6),
                1u32..500,
            )
                .prop_map(|(n, ns, attrs, children, line)| Element {
                    ns: namespace(ns),
                    name: NAMES[n].to_owned(),
                    attrs,
                    children,
                    text: String::new(),
                    span: span(line),
                })
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn compile_and_report_never_panic(children in prop::collection::vec(element(), 0..4)) {
            let root = Element {
                ns: Namespace::Beans,
                name: "beans".into(),
                attrs: Vec::new(),
                children,
                text: String::new(),
                span: span(1),
            };
            let doc = LoadedDocument {
                root,
                files: Vec::new(),
                main_file: PathBuf::from("/nonexistent/random.xml"),
                properties: BTreeMap::new(),
                local_store: false,
                from_command_line: Vec::new(),
            };
            let mut diagnostics = Diagnostics::default();
            let config = compile(&doc, &mut diagnostics);
            let loaded = Loaded { config, diagnostics };
            let _ = report::text(&loaded);
            let json = report::json(&loaded);
            prop_assert!(serde_json::from_str::<serde_json::Value>(&json).is_ok());
        }
    }
}

/// A relative launcher directory (`-D activemq.conf=DIR`, `ACTIVEMQ_CONF=DIR`, and the same for
/// `activemq.base`) is relative to the working directory, as for ActiveMQ's JVM (its start
/// script passes the value on as written), not to the configuration file's directory: the
/// properties file read is the one under the directory `check` runs in.
#[test]
fn a_relative_launcher_directory_is_relative_to_the_working_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let site = dir.path().join("site");
    let work = dir.path().join("work");
    for (parent, port) in [(&work, 1884), (&site, 1885)] {
        let named = parent.join("named");
        std::fs::create_dir_all(named.join("conf")).expect("mkdir");
        let ports = format!("mqtt.port={port}\n");
        std::fs::write(named.join("ports.properties"), &ports).expect("write");
        std::fs::write(named.join("conf").join("ports.properties"), &ports).expect("write");
    }
    let xml = |location: &str| {
        format!(
            r#"<beans xmlns="http://www.springframework.org/schema/beans">
  <bean class="org.springframework.beans.factory.config.PropertyPlaceholderConfigurer">
    <property name="locations"><value>file:{location}/ports.properties</value></property>
  </bean>
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="b" persistent="false">
    <transportConnectors>
      <transportConnector name="mqtt" uri="mqtt://127.0.0.1:${{mqtt.port}}"/>
    </transportConnectors>
  </broker>
</beans>
"#
        )
    };
    std::fs::write(site.join("by-conf.xml"), xml("${activemq.conf}")).expect("write");
    std::fs::write(site.join("by-base.xml"), xml("${activemq.base}/conf")).expect("write");
    for (file, property, variable) in [
        ("by-conf.xml", "activemq.conf", "ACTIVEMQ_CONF"),
        ("by-base.xml", "activemq.base", "ACTIVEMQ_BASE"),
    ] {
        let file = site.join(file);
        let check = |set: Option<&str>, variable_value: Option<&str>| {
            let mut command = Command::new(env!("CARGO_BIN_EXE_ferromq"));
            command
                .current_dir(&work)
                .env_remove("RUST_LOG")
                .arg("check")
                .arg(&file);
            for var in [
                "ACTIVEMQ_BASE",
                "ACTIVEMQ_CONF",
                "ACTIVEMQ_DATA",
                "ACTIVEMQ_HOME",
            ] {
                command.env_remove(var);
            }
            if let Some(value) = set {
                command.args(["-D", &format!("{property}={value}")]);
            }
            if let Some(value) = variable_value {
                command.env(variable, value);
            }
            command.output().expect("run ferromq")
        };
        for (how, out) in [
            ("-D", check(Some("named"), None)),
            (variable, check(None, Some("named"))),
        ] {
            let text = stdout(&out);
            assert_eq!(out.status.code(), Some(0), "{property} by {how}: {text}");
            assert!(
                text.contains("mqtt://127.0.0.1:1884"),
                "{property} by {how}: the file under the working directory: {text}"
            );
        }
    }
}

/// A users file of thousands, all in one group (ActiveMQ's `groups.properties` shape): `check`
/// reads each group's list once (it was quadratic: 20,000 users took 17 s) and lists the
/// first users only in text, all of them in JSON.
#[test]
fn check_summarises_a_large_users_file_in_linear_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let users = 20_000;
    let names: Vec<String> = (0..users).map(|i| format!("user{i}")).collect();
    let users_file: String = names.iter().map(|n| format!("{n}=pw-{n}\n")).collect();
    std::fs::write(dir.path().join("users.properties"), users_file).expect("write");
    std::fs::write(
        dir.path().join("groups.properties"),
        format!("users={}\nadmins=user7\n", names.join(",")),
    )
    .expect("write");
    std::fs::write(
        dir.path().join("login.config"),
        "activemq {\n  org.apache.activemq.jaas.PropertiesLoginModule required\n    \
         org.apache.activemq.jaas.properties.user=\"users.properties\"\n    \
         org.apache.activemq.jaas.properties.group=\"groups.properties\";\n};\n",
    )
    .expect("write");
    let config = dir.path().join("activemq.xml");
    std::fs::write(
        &config,
        r#"<beans xmlns="http://www.springframework.org/schema/beans">
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="b" persistent="false">
    <plugins><jaasAuthenticationPlugin configuration="activemq"/></plugins>
    <transportConnectors><transportConnector name="mqtt" uri="mqtt://127.0.0.1:0"/></transportConnectors>
  </broker>
</beans>
"#,
    )
    .expect("write");
    let config = config.display().to_string();
    let started = std::time::Instant::now();
    let text = ferromq(&["check", &config]);
    let took = started.elapsed();
    let printed = stdout(&text);
    assert_eq!(text.status.code(), Some(0), "{printed}");
    assert!(took.as_secs() < 10, "check of {users} users took {took:?}");
    let listed = printed
        .lines()
        .filter(|l| l.starts_with("    user "))
        .count();
    assert_eq!(listed, 20, "{printed}");
    assert!(
        printed.contains(&format!("... and {} more users", users - 20)),
        "{printed}"
    );
    let json = ferromq(&["check", "--format", "json", &config]);
    let value: serde_json::Value = serde_json::from_str(&stdout(&json)).expect("JSON output");
    let all = value["summary"]["authentication"]["users"]
        .as_object()
        .expect("users in JSON");
    assert_eq!(all.len(), users);
    assert_eq!(all["user7"], serde_json::json!(["admins", "users"]));
    assert_eq!(all["user8"], serde_json::json!(["users"]));
}

/// What `check` prints of a limit is what the file may say: `limit="64 mb"` is printed
/// `memory 64 mb`, and that text written back gives the same limit. `64 MiB` (not a unit
/// ActiveMQ reads) is refused at its value with the spelling that works.
#[test]
fn printed_limits_read_back_and_mib_is_refused_with_the_accepted_spelling() {
    let xml = |memory: &str, store: &str| {
        format!(
            r#"<beans xmlns="http://www.springframework.org/schema/beans">
      <broker xmlns="http://activemq.apache.org/schema/core" persistent="false">
        <transportConnectors><transportConnector name="mqtt" uri="mqtt://127.0.0.1:0"/></transportConnectors>
        <systemUsage><systemUsage>
          <memoryUsage><memoryUsage limit="{memory}"/></memoryUsage>
          <storeUsage><storeUsage limit="{store}"/></storeUsage>
        </systemUsage></systemUsage>
      </broker></beans>"#
        )
    };
    let load = |memory: &str, store: &str| {
        ferromq::config::load_str(&xml(memory, store), Path::new("."), &options())
    };
    let loaded = load("64 mb", "100 gb");
    assert!(!loaded.diagnostics.has_errors(), "{}", loaded.diagnostics);
    let text = report::text(&loaded);
    assert!(
        text.contains("limits: memory 64 mb, store 100 gb"),
        "{text}"
    );
    let printed = |text: &str, name: &str| -> String {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with("limits:"))
            .expect("a limits line");
        line.split(", ")
            .find_map(|part| part.trim_start_matches("  limits: ").strip_prefix(name))
            .expect("the limit")
            .trim()
            .to_owned()
    };
    let memory = printed(&text, "memory ");
    let store = printed(&text, "store ");
    let again = load(&memory, &store);
    assert!(!again.diagnostics.has_errors(), "{}", again.diagnostics);
    assert_eq!(
        again.config.as_ref().expect("valid").limits,
        loaded.config.as_ref().expect("valid").limits
    );

    let refused = load("64 MiB", "1 tb");
    let errors: Vec<_> = refused.diagnostics.errors().collect();
    assert_eq!(errors.len(), 2, "{}", refused.diagnostics);
    let span = errors[0].span.as_ref().expect("a position");
    assert_eq!((span.line, span.col), (5, 44), "{}", refused.diagnostics);
    assert_eq!(
        errors[0].hint.as_deref(),
        Some("write \"64 mb\", the same size in a unit ActiveMQ reads")
    );
    assert_eq!(
        errors[1].hint.as_deref(),
        Some("write \"1024 gb\", the same size in a unit ActiveMQ reads")
    );
}

/// A broker whose file sets no memory limit gets ActiveMQ's 1 gb default, and a local store
/// no store limit: `check` prints both, marked as defaults, in text and JSON.
#[test]
fn check_prints_the_default_limits_it_applies() {
    let xml = r#"<beans xmlns="http://www.springframework.org/schema/beans">
      <broker xmlns="http://activemq.apache.org/schema/core" dataDirectory="data">
        <transportConnectors><transportConnector name="mqtt" uri="mqtt://127.0.0.1:0"/></transportConnectors>
      </broker></beans>"#;
    let loaded = ferromq::config::load_str(xml, Path::new("."), &options());
    assert!(!loaded.diagnostics.has_errors(), "{}", loaded.diagnostics);
    let text = report::text(&loaded);
    assert!(
        text.contains("limits: memory 1 gb (default), store no limit (default)"),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&report::json(&loaded)).expect("json");
    assert_eq!(
        json["summary"]["limits"]["memory_limit_bytes"],
        serde_json::json!(1u64 << 30),
        "{json}"
    );
    assert_eq!(
        json["summary"]["default_limits"],
        serde_json::json!(["memory_limit_bytes", "store_limit_bytes"]),
        "{json}"
    );
    // Memory only: no store limit to speak of; a written memory limit is not a default.
    let memory_only = xml.replace(r#"dataDirectory="data""#, r#"persistent="false""#).replace(
        "</transportConnectors>",
        r#"</transportConnectors><systemUsage><systemUsage><memoryUsage><memoryUsage limit="1 gb"/></memoryUsage></systemUsage></systemUsage>"#,
    );
    let loaded = ferromq::config::load_str(&memory_only, Path::new("."), &options());
    let text = report::text(&loaded);
    assert!(text.contains("limits: memory 1 gb\n"), "{text}");
}

/// A store path whose leading placeholder is blank would start at the filesystem's root
/// (`${activemq.base}/data` -> `/data`): an error at the value, for `dataDirectory` as for the
/// kahaDB directory; a placeholder with a value, or blank text after a literal prefix, is not.
#[test]
fn a_blank_leading_placeholder_in_a_data_directory_is_refused() {
    let xml = |data_directory: &str| {
        format!(
            r#"<beans xmlns="http://www.springframework.org/schema/beans">
      <bean class="org.springframework.beans.factory.config.PropertyPlaceholderConfigurer"/>
      <broker xmlns="http://activemq.apache.org/schema/core" dataDirectory="{data_directory}">
        <transportConnectors><transportConnector name="mqtt" uri="mqtt://127.0.0.1:0"/></transportConnectors>
      </broker></beans>"#
        )
    };
    let load = |data_directory: &str, value: &str| {
        let mut options = options();
        options
            .overrides
            .insert("my.base".to_owned(), value.to_owned());
        ferromq::config::load_str(&xml(data_directory), Path::new("."), &options)
    };
    for (written, value) in [("${my.base}/data", " "), ("file:${my.base}/data", "")] {
        let loaded = load(written, value);
        let errors: Vec<_> = loaded.diagnostics.errors().collect();
        assert_eq!(errors.len(), 1, "{written}: {}", loaded.diagnostics);
        assert!(
            errors[0].message.contains(&format!(
                "dataDirectory `{written}` starts with ${{my.base}}, which is blank"
            )),
            "{}",
            errors[0]
        );
        assert_eq!(
            errors[0].span.as_ref().map(|s| s.line),
            Some(3),
            "{}",
            errors[0]
        );
        assert!(
            errors[0]
                .hint
                .as_deref()
                .is_some_and(|h| h.contains("-D my.base=DIR")),
            "{}",
            errors[0]
        );
    }
    for (written, value) in [("${my.base}/data", "/srv"), ("${my.base}data", "")] {
        let loaded = load(written, value);
        assert!(
            !loaded.diagnostics.has_errors(),
            "{written}: {}",
            loaded.diagnostics
        );
    }
}
