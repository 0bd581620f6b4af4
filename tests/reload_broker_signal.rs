//! SIGHUP makes a running broker reload even when files are not watched. A test binary of its
//! own: the signal reaches every reloader of the process.

#![cfg(unix)]

mod support;

use std::time::Duration;

use support::broker_xml;
use support::live::LiveBroker;

const ANY: &str = "mqtt://127.0.0.1:0";

#[tokio::test]
async fn sighup_applies_the_edited_file_to_the_running_broker() {
    let mut live = LiveBroker::start(&broker_xml("", &[("mqtt", ANY)]), false).await;
    std::fs::write(
        live.file(),
        broker_xml("", &[("mqtt", ANY), ("extra", ANY)]),
    )
    .expect("write");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(live.addr("extra").await, None, "not watching: nothing yet");

    let before = live.finished();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let stats = live.wait_reload_after(before).await;
    assert_eq!(
        (stats.reloads_ok, stats.reloads_failed),
        (1, 0),
        "{stats:?}"
    );
    let extra = live.addr("extra").await.expect("extra listening");
    tokio::net::TcpStream::connect(extra)
        .await
        .expect("the new connector accepts");
    live.shutdown().await;
}
