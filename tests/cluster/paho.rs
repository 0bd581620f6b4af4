//! Eclipse paho-mqtt (MQTT 5) across nodes, by `tests/cluster/paho_nodes.py`: properties
//! through the cluster and a persistent session resumed on another node, as a third client
//! library sees them. Skipped (with a line) without python3 and paho-mqtt 2 outside CI.

use std::process::{Command, Stdio};
use std::time::Duration;

use super::rig::{Rig, FAST};

fn paho_missing() -> bool {
    !Command::new("python3")
        .args([
            "-c",
            "import paho.mqtt.client as m; assert hasattr(m, 'CallbackAPIVersion')",
        ])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_sees_properties_and_sessions_across_nodes() {
    if paho_missing() {
        assert!(
            std::env::var_os("CI").is_none(),
            "paho-mqtt 2 is missing under CI"
        );
        println!("SKIP: python3 with paho-mqtt 2 not found");
        return;
    }
    let Some(rig) = Rig::start(3, FAST).await else {
        return;
    };
    let ports: Vec<String> = (0..3).map(|i| rig.addr(i).port().to_string()).collect();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cluster/paho_nodes.py");
    let run = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .arg("60")
            .arg("python3")
            .arg(script)
            .args(["--ports", &ports.join(",")])
            .stdin(Stdio::null())
            .output()
            .expect("run python3")
    });
    let output = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("paho_nodes.py in time")
        .expect("join");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "paho_nodes.py failed:\n{stdout}\n{stderr}"
    );
    for name in ["properties", "session"] {
        assert!(
            stdout.contains(&format!("PASS paho nodes {name}")),
            "{stdout}"
        );
    }
}
