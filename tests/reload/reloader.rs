//! The reload loop on real files: invalid edits change nothing and are logged with
//! file:line:col, valid edits reach `ApplyConfig` with their diff, new files join the watch,
//! restart-only settings keep their running values, and when watching is enabled.

use std::sync::Arc;
use std::time::Duration;

use crate::support::broker_xml;
use crate::support::logs::Logs;
use crate::support::reload::{names, next_apply, wait_stats, ConfigDir, Recorder};
use crate::support::settle_watch;
use crate::support::xml::no_env;
use ferromq::reload::{self, ApplyOutcome};

#[tokio::test]
async fn invalid_edits_are_logged_and_change_nothing_then_a_valid_edit_applies() {
    let (logs, _guard) = Logs::capture();
    let dir = ConfigDir::new("");
    let (recorder, mut applied) = Recorder::new();
    let handle = reload::spawn(dir.load(), no_env(), true, Arc::new(recorder));
    let mut stats = handle.subscribe();
    settle_watch().await;

    let broker = dir.path("conf.d/broker.xml");
    let invalid_edits = [
        (
            // Broken XML: the tag is never closed.
            broker_xml("", &[("mqtt", "mqtt://127.0.0.1:1883")])
                .replace("</transportConnectors>", "</transportConnectors"),
            "error: ",
        ),
        (
            broker_xml("", &[("mqtt", "mqtt://127.0.0.1:1883")])
                .replace("transportConnector ", "transportConector "),
            "error: unknown element <transportConector>",
        ),
        (
            broker_xml(
                "",
                &[
                    ("mqtt", "mqtt://127.0.0.1:1883"),
                    ("clash", "mqtt://127.0.0.1:1883"),
                ],
            ),
            "clashes with connector `mqtt`",
        ),
    ];
    for (failures, (xml, message)) in (1..).zip(invalid_edits) {
        dir.write("conf.d/broker.xml", &xml);
        wait_stats(&mut stats, |s| s.reloads_failed == failures).await;
        let text = logs.text();
        let at = format!("{}:", broker.display());
        let logged = text
            .lines()
            .find(|l| l.contains(message) && l.contains(&at))
            .unwrap_or_else(|| panic!("`{message}` at {at}line:col in the log:\n{text}"));
        let position = logged
            .split(&at)
            .nth(1)
            .and_then(|rest| rest.split(':').next().zip(rest.split(':').nth(1)));
        let (line, col) = position.expect("line:col after the file name");
        assert!(
            line.parse::<u32>().is_ok() && col.parse::<u32>().is_ok(),
            "{logged}"
        );
        assert!(text.contains("keeping the running configuration"));
        assert!(applied.try_recv().is_err(), "an invalid edit was applied");
    }
    assert_eq!(handle.stats().reloads_ok, 0);

    dir.write_broker(
        "",
        &[
            ("mqtt", "mqtt://127.0.0.1:${mqtt.port}"),
            ("mqtt2", "mqtt://127.0.0.1:1884"),
        ],
    );
    let (config, diff) = next_apply(&mut applied).await;
    assert_eq!(diff.summary(), "+1 listener (mqtt2)");
    assert_eq!(config.listeners.len(), 2);
    let ok = wait_stats(&mut stats, |s| s.reloads_ok == 1).await;
    assert_eq!(ok.reloads_failed, 3);
    assert!(ok.last_success.is_some());
    assert_eq!(ok.last_summary.as_deref(), Some("+1 listener (mqtt2)"));
    assert!(logs
        .text()
        .contains("configuration reloaded: +1 listener (mqtt2)"));
    handle.shutdown().await;
}

#[tokio::test]
async fn a_file_nested_thousands_deep_is_refused_and_the_reloader_lives_on() {
    let (logs, _guard) = Logs::capture();
    let dir = ConfigDir::new("");
    let (recorder, mut applied) = Recorder::new();
    let handle = reload::spawn(dir.load(), no_env(), true, Arc::new(recorder));
    let mut stats = handle.subscribe();
    settle_watch().await;

    for (failures, depth) in (1..).zip([3_000, 20_000]) {
        let deep = format!("{}{}", "<bean>".repeat(depth), "</bean>".repeat(depth));
        let xml = broker_xml("", &[("mqtt", "mqtt://127.0.0.1:1883")]).replace(
            "</transportConnectors>",
            &format!("</transportConnectors>{deep}"),
        );
        dir.write("conf.d/broker.xml", &xml);
        wait_stats(&mut stats, |s| s.reloads_failed == failures).await;
        let text = logs.text();
        assert!(text.contains("nested deeper than 256"), "{text}");
        assert!(text.contains("keeping the running configuration"));
        assert!(applied.try_recv().is_err(), "a refused file was applied");
    }

    // Still alive: the next valid edit applies.
    dir.write_broker("", &[("mqtt", "mqtt://127.0.0.1:1884")]);
    let (config, _diff) = next_apply(&mut applied).await;
    assert_eq!(config.listeners.len(), 1);
    handle.shutdown().await;
}

#[tokio::test]
async fn a_properties_file_edit_changes_the_listener() {
    let dir = ConfigDir::new("");
    let (recorder, mut applied) = Recorder::new();
    let handle = reload::spawn(dir.load(), no_env(), true, Arc::new(recorder));
    settle_watch().await;
    dir.write_by_rename("ports.properties", "mqtt.port=1999\n");
    let (config, diff) = next_apply(&mut applied).await;
    assert_eq!(
        diff.summary(),
        "~1 listener (mqtt: address 127.0.0.1:1883 -> 127.0.0.1:1999)"
    );
    assert_eq!(config.listeners[0].port, 1999);
    handle.shutdown().await;
}

const LOGIN_CONFIG: &str = r#"activemq {
    org.apache.activemq.jaas.PropertiesLoginModule required
        org.apache.activemq.jaas.properties.user="users.properties"
        org.apache.activemq.jaas.properties.group="groups.properties";
};
"#;

#[tokio::test]
async fn a_jaas_users_file_edit_reaches_the_broker_as_an_authentication_change() {
    let dir = ConfigDir::new("<jaasAuthenticationPlugin configuration=\"activemq\"/>");
    // login.config is looked up in ${activemq.conf}, the main file's directory.
    dir.write("login.config", LOGIN_CONFIG);
    dir.write("users.properties", "alice=secret\n");
    dir.write("groups.properties", "users=alice\n");
    let config = dir.load();
    let (recorder, mut applied) = Recorder::new();
    let handle = reload::spawn(config, no_env(), true, Arc::new(recorder));
    settle_watch().await;
    dir.write("users.properties", "alice=secret\nbob=other\n");
    dir.write("groups.properties", "users=alice,bob\n");
    let (_, diff) = next_apply(&mut applied).await;
    let auth = diff.authentication.as_ref().expect("authentication change");
    let mut files = names(&auth.files);
    files.sort();
    assert_eq!(files, ["groups.properties", "users.properties"]);
    assert!(!diff.summary().contains("secret"));
    handle.shutdown().await;
}

#[tokio::test]
async fn a_newly_imported_file_is_watched_even_when_it_is_broken_at_first() {
    let dir = ConfigDir::new("");
    let (recorder, _applied) = Recorder::new();
    let handle = reload::spawn(dir.load(), no_env(), true, Arc::new(recorder));
    let mut stats = handle.subscribe();
    settle_watch().await;
    dir.write(
        "extra.xml",
        "<beans xmlns=\"http://www.springframework.org/schema/beans\">\n  <bean\n</beans>\n",
    );
    let main = crate::support::reload::MAIN.replace(
        "<import resource=\"conf.d/broker.xml\"/>",
        "<import resource=\"conf.d/broker.xml\"/>\n  <import resource=\"extra.xml\"/>",
    );
    dir.write("main.xml", &main);
    wait_stats(&mut stats, |s| s.reloads_failed == 1).await;
    // Only extra.xml is edited from here on: the watch must have picked it up.
    settle_watch().await;
    dir.write(
        "extra.xml",
        "<beans xmlns=\"http://www.springframework.org/schema/beans\"/>\n",
    );
    wait_stats(&mut stats, |s| s.reloads_ok == 1).await;
    settle_watch().await;
    dir.write(
        "extra.xml",
        "<beans xmlns=\"http://www.springframework.org/schema/beans\"><!-- again --></beans>\n",
    );
    let s = wait_stats(&mut stats, |s| s.reloads_ok == 2).await;
    assert_eq!(s.last_summary.as_deref(), Some("no change"));
    handle.shutdown().await;
}

#[tokio::test]
async fn restart_only_settings_keep_running_values_and_the_rest_applies() {
    let (logs, _guard) = Logs::capture();
    let dir = ConfigDir::new("");
    let (recorder, mut applied) = Recorder::new();
    let handle = reload::spawn(dir.load(), no_env(), true, Arc::new(recorder));
    settle_watch().await;
    let renamed = broker_xml(
        "",
        &[
            ("mqtt", "mqtt://127.0.0.1:${mqtt.port}"),
            ("mqtt2", "mqtt://127.0.0.1:1884"),
        ],
    )
    .replace("brokerName=\"test\"", "brokerName=\"renamed\"");
    dir.write("conf.d/broker.xml", &renamed);
    let (config, diff) = next_apply(&mut applied).await;
    assert_eq!(config.broker.broker_name, "test");
    assert_eq!(config.listeners.len(), 2);
    assert_eq!(diff.restart_needed[0].name, "brokerName");
    assert!(logs.text().contains(
        "brokerName changed from test to renamed: needs a restart; kept the running value"
    ));
    handle.shutdown().await;
}

#[tokio::test]
async fn a_rejected_apply_keeps_the_running_configuration() {
    let dir = ConfigDir::new("");
    let (recorder, mut applied) = Recorder::new();
    recorder.answer_next(ApplyOutcome::Rejected(vec!["cannot today".into()]));
    let handle = reload::spawn(dir.load(), no_env(), true, Arc::new(recorder));
    let mut stats = handle.subscribe();
    settle_watch().await;
    dir.write_broker(
        "",
        &[
            ("mqtt", "mqtt://127.0.0.1:${mqtt.port}"),
            ("mqtt2", "mqtt://127.0.0.1:1884"),
        ],
    );
    let (_, first) = next_apply(&mut applied).await;
    wait_stats(&mut stats, |s| s.reloads_failed == 1).await;
    // Same file again: still a change against the running configuration.
    handle.request();
    let (_, second) = next_apply(&mut applied).await;
    assert_eq!(first, second);
    wait_stats(&mut stats, |s| s.reloads_ok == 1).await;
    handle.shutdown().await;
}

#[tokio::test]
async fn watching_follows_the_plugin_or_the_flag_and_a_request_always_reloads() {
    // Neither plugin nor --watch: edits are not seen, an explicit request is.
    let dir = ConfigDir::new("");
    let (recorder, mut applied) = Recorder::new();
    let handle = reload::spawn(dir.load(), no_env(), false, Arc::new(recorder));
    assert!(!handle.is_watching());
    dir.write("ports.properties", "mqtt.port=1999\n");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(applied.try_recv().is_err(), "reloaded without watching");
    handle.request();
    let (config, _) = next_apply(&mut applied).await;
    assert_eq!(config.listeners[0].port, 1999);
    handle.shutdown().await;

    // The plugin enables watching, and its checkPeriod polls.
    let dir = ConfigDir::new("<runtimeConfigurationPlugin checkPeriod=\"100\"/>");
    let (recorder, mut applied) = Recorder::new();
    let handle = reload::spawn(dir.load(), no_env(), false, Arc::new(recorder));
    assert!(handle.is_watching());
    settle_watch().await;
    dir.write("ports.properties", "mqtt.port=1999\n");
    let (config, _) = next_apply(&mut applied).await;
    assert_eq!(config.listeners[0].port, 1999);
    handle.shutdown().await;
}
