//! A reload that changes `<ferromq:jetStream>`, or swaps kahaDB and jetStream, is reported as
//! "needs a restart" and the running store is kept; the rest of the reload still applies.

use std::sync::Arc;

use ferromq::config::diff::diff;
use ferromq::config::{self, Persistence};
use ferromq::reload;

use super::config::cluster_xml;
use crate::support::logs::Logs;
use crate::support::reload::{next_apply, Recorder};
use crate::support::xml::no_env;

fn load(xml: &str) -> config::Config {
    let loaded = config::load_str(xml, &std::env::temp_dir(), &no_env());
    let text = loaded.diagnostics.to_string();
    loaded
        .into_result()
        .unwrap_or_else(|_| panic!("invalid:\n{text}"))
}

fn jetstream(attrs: &str) -> String {
    cluster_xml(
        "",
        &format!(r#"<fmq:jetStream servers="nats://127.0.0.1:4222" {attrs}/>"#),
    )
}

#[test]
fn every_jetstream_change_needs_a_restart_and_the_password_never_shows() {
    let running = load(&jetstream(r#"user="fmq" password="old-secret""#));
    assert!(diff(&running, &running).is_empty());
    for (attrs, needle) in [
        (
            r#"user="fmq" password="old-secret" replicas="1""#,
            "replicas 1",
        ),
        (
            r#"user="fmq" password="old-secret" messageShards="2""#,
            "messageShards 2",
        ),
        (
            r#"user="fmq" password="old-secret" storeTimeout="9s""#,
            "storeTimeout 9000 ms",
        ),
        (r#"user="other" password="old-secret""#, "user other"),
        (r#"user="fmq" password="new-secret""#, "(another password)"),
    ] {
        let d = diff(&running, &load(&jetstream(attrs)));
        assert_eq!(d.restart_needed.len(), 1, "{attrs}: {d:?}");
        let change = &d.restart_needed[0];
        assert_eq!(change.name, "persistenceAdapter");
        let text = change.to_string();
        assert!(text.contains(needle), "{text}");
        assert!(
            text.ends_with("needs a restart; kept the running value"),
            "{text}"
        );
        assert!(!text.contains("secret"), "{text}");
        assert!(!d.has_runtime_changes(), "{attrs}");
    }
}

#[test]
fn kahadb_and_jetstream_swapped_either_way_need_a_restart() {
    let cluster = load(&jetstream(""));
    let kaha = load(&cluster_xml(
        "",
        r#"<kahaDB directory="/var/lib/ferromq/kaha"/>"#,
    ));
    for (running, new) in [(&kaha, &cluster), (&cluster, &kaha)] {
        let d = diff(running, new);
        assert_eq!(d.restart_needed.len(), 1, "{d:?}");
        assert_eq!(d.restart_needed[0].name, "persistenceAdapter");
        let mut applied = new.clone();
        config::diff::keep_running_values(running, &mut applied);
        assert_eq!(applied.persistence, running.persistence);
    }
    let d = diff(&kaha, &cluster);
    assert_eq!(d.restart_needed[0].running, "kahaDB /var/lib/ferromq/kaha");
    assert!(d.restart_needed[0]
        .requested
        .starts_with("jetStream nats://127.0.0.1:4222 (replicas 3"));
}

#[tokio::test]
async fn the_reloader_keeps_the_running_store_and_applies_the_rest() {
    let (logs, _guard) = Logs::capture();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("activemq.xml");
    let kaha = cluster_xml("", r#"<kahaDB directory="kaha"/>"#);
    std::fs::write(&file, &kaha).expect("write");
    let running = crate::support::xml::load_file(&file);
    let (recorder, mut applied) = Recorder::new();
    let handle = reload::spawn(running.clone(), no_env(), false, Arc::new(recorder));
    // The store becomes a cluster node and a second connector is added in the same edit.
    let edited = jetstream("").replace(
        r#"<transportConnector name="mqtt" uri="mqtt://127.0.0.1:1883"/>"#,
        r#"<transportConnector name="mqtt" uri="mqtt://127.0.0.1:1883"/><transportConnector name="mqtt2" uri="mqtt://127.0.0.1:1884"/>"#,
    );
    std::fs::write(&file, edited).expect("write");
    handle.request();
    let (config, d) = next_apply(&mut applied).await;
    assert!(
        matches!(config.persistence, Persistence::Durable { .. }),
        "{:?}",
        config.persistence
    );
    assert_eq!(config.persistence, running.persistence);
    assert_eq!(config.listeners.len(), 2);
    assert_eq!(d.listeners_added, vec!["mqtt2".to_owned()]);
    assert_eq!(d.restart_needed[0].name, "persistenceAdapter");
    let text = logs.text();
    assert!(
        text.contains("persistenceAdapter changed from kahaDB")
            && text.contains("to jetStream nats://127.0.0.1:4222")
            && text.contains("needs a restart; kept the running value"),
        "{text}"
    );
    handle.shutdown().await;
}
