//! SIGHUP reloads even when files are not watched. A test binary of its own: the signal reaches
//! every reloader of the process.

#![cfg(unix)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use ferromq::reload;
use support::reload::{next_apply, wait_stats, ConfigDir, Recorder};
use support::xml::no_env;

#[tokio::test]
async fn sighup_reloads_without_watching() {
    let dir = ConfigDir::new("");
    let (recorder, mut applied) = Recorder::new();
    let handle = reload::spawn(dir.load(), no_env(), false, Arc::new(recorder));
    let mut stats = handle.subscribe();
    assert!(!handle.is_watching());
    dir.write("ports.properties", "mqtt.port=1999\n");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(applied.try_recv().is_err(), "reloaded without watching");

    for round in 1..=2 {
        let status = std::process::Command::new("kill")
            .args(["-HUP", &std::process::id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        wait_stats(&mut stats, |s| s.reloads_ok == round).await;
    }
    let (config, diff) = next_apply(&mut applied).await;
    assert_eq!(config.listeners[0].port, 1999);
    assert_eq!(
        diff.summary(),
        "~1 listener (mqtt: address 127.0.0.1:1883 -> 127.0.0.1:1999)"
    );
    // The second SIGHUP found nothing new.
    assert!(applied.try_recv().is_err());
    assert_eq!(handle.stats().last_summary.as_deref(), Some("no change"));
    handle.shutdown().await;
}
