//! The control task's file watch (`control::Control`) on real files in tempdirs: in-place
//! writes, save-by-rename, imports and properties files, debouncing, polling, files added to the
//! watch, symlink swaps, and changes dispatched by path (configuration vs TLS material).

use std::path::PathBuf;
use std::time::Duration;

use crate::support::reload::{names, ConfigDir, WAIT};
use crate::support::settle_watch;
use ferromq::control::{Control, ControlEvent, Signals, WatchSettings};
use ferromq::reload::ReloadReason;
use tokio::sync::mpsc;

fn events(debounce_ms: u64) -> WatchSettings {
    WatchSettings {
        debounce_ms,
        poll_period_ms: None,
        use_events: true,
    }
}

fn polling(period_ms: u64) -> WatchSettings {
    WatchSettings {
        debounce_ms: 50,
        poll_period_ms: Some(period_ms),
        use_events: false,
    }
}

fn start(
    files: &[PathBuf],
    settings: WatchSettings,
) -> (Control, mpsc::UnboundedReceiver<ControlEvent>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Control::start(files, settings, Signals::default(), tx), rx)
}

/// The changed file names of the next request, within the wait.
async fn next_files(rx: &mut mpsc::UnboundedReceiver<ControlEvent>) -> Vec<String> {
    let event = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a reload request within the wait")
        .expect("watcher alive");
    match event {
        ControlEvent::Reload(ReloadReason::FilesChanged(files)) => names(&files),
        other => panic!("expected changed files, got {other:?}"),
    }
}

/// No request for `ms` milliseconds.
async fn assert_quiet(rx: &mut mpsc::UnboundedReceiver<ControlEvent>, ms: u64) {
    if let Ok(request) = tokio::time::timeout(Duration::from_millis(ms), rx.recv()).await {
        panic!("expected no request, got {request:?}");
    }
}

#[tokio::test]
async fn the_configuration_names_its_import_and_properties_file() {
    let config = ConfigDir::new("").load();
    let mut files = names(&config.files);
    files.sort();
    assert_eq!(files, ["broker.xml", "main.xml", "ports.properties"]);
}

#[tokio::test]
async fn in_place_writes_of_main_import_and_properties_files_are_seen() {
    let dir = ConfigDir::new("");
    let config = dir.load();
    let (watcher, mut rx) = start(&config.files, events(100));
    settle_watch().await;
    assert!(watcher.uses_events());

    dir.write(
        "main.xml",
        &format!("{}<!-- edited -->\n", crate::support::reload::MAIN),
    );
    assert_eq!(next_files(&mut rx).await, ["main.xml"]);
    dir.write_broker("", &[("mqtt", "mqtt://127.0.0.1:1999")]);
    assert_eq!(next_files(&mut rx).await, ["broker.xml"]);
    dir.write("ports.properties", "mqtt.port=1884\n");
    assert_eq!(next_files(&mut rx).await, ["ports.properties"]);
    assert_quiet(&mut rx, 400).await;
}

#[tokio::test]
async fn save_by_rename_is_seen_every_time() {
    let dir = ConfigDir::new("");
    let config = dir.load();
    let (_watcher, mut rx) = start(&config.files, events(100));
    settle_watch().await;
    for port in [1884, 1885, 1886] {
        dir.write_by_rename("ports.properties", &format!("mqtt.port={port}\n"));
        assert_eq!(
            next_files(&mut rx).await,
            ["ports.properties"],
            "port {port}"
        );
    }
}

#[tokio::test]
async fn a_burst_of_writes_is_one_request() {
    let dir = ConfigDir::new("");
    let config = dir.load();
    let (_watcher, mut rx) = start(&config.files, events(300));
    settle_watch().await;
    for port in 1884..1890 {
        dir.write("ports.properties", &format!("mqtt.port={port}\n"));
        dir.write_by_rename("main.xml", crate::support::reload::MAIN);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut files = next_files(&mut rx).await;
    files.sort();
    assert_eq!(files, ["main.xml", "ports.properties"]);
    assert_quiet(&mut rx, 700).await;
}

#[tokio::test]
async fn reading_and_loading_the_files_triggers_nothing() {
    let dir = ConfigDir::new("");
    let config = dir.load();
    let (_watcher, mut rx) = start(&config.files, events(50));
    settle_watch().await;
    for _ in 0..3 {
        dir.load();
        for file in &config.files {
            std::fs::read(file).expect("read");
        }
    }
    // Other names in a watched directory do not count when our files did not change.
    dir.write("unrelated.txt", "x");
    dir.write("conf.d/other.xml", "<beans/>");
    assert_quiet(&mut rx, 500).await;
}

#[tokio::test]
async fn polling_sees_writes_and_renames_without_events() {
    let dir = ConfigDir::new("");
    let config = dir.load();
    let (watcher, mut rx) = start(&config.files, polling(100));
    settle_watch().await;
    assert!(!watcher.uses_events());
    dir.write_broker("", &[("mqtt", "mqtt://127.0.0.1:1999")]);
    assert_eq!(next_files(&mut rx).await, ["broker.xml"]);
    dir.write_by_rename("ports.properties", "mqtt.port=1884\n");
    assert_eq!(next_files(&mut rx).await, ["ports.properties"]);
    assert_quiet(&mut rx, 400).await;
}

#[tokio::test]
async fn files_added_to_the_watch_are_seen_and_removed_ones_are_not() {
    let dir = ConfigDir::new("");
    let config = dir.load();
    let (watcher, mut rx) = start(&config.files, events(50));
    dir.write("conf.d/extra.xml", "<beans/>");
    // Let the creation event pass before the file joins the watch.
    settle_watch().await;
    let mut files = config.files.clone();
    files.push(dir.path("conf.d/extra.xml"));
    files.retain(|f| !f.ends_with("ports.properties"));
    watcher.watch_files(&files);
    settle_watch().await;
    dir.write("ports.properties", "mqtt.port=1884\n");
    assert_quiet(&mut rx, 400).await;
    dir.write("conf.d/extra.xml", "<beans><!-- edited --></beans>");
    assert_eq!(next_files(&mut rx).await, ["extra.xml"]);
}

#[tokio::test]
async fn poll_period_can_be_turned_on_later() {
    let dir = ConfigDir::new("");
    let config = dir.load();
    let (watcher, mut rx) = start(
        &config.files,
        WatchSettings {
            debounce_ms: 50,
            poll_period_ms: None,
            use_events: false,
        },
    );
    // Without events and without a checkPeriod the watch falls back to polling once a second.
    settle_watch().await;
    dir.write("ports.properties", "mqtt.port=1884\n");
    assert_eq!(next_files(&mut rx).await, ["ports.properties"]);
    watcher.set_poll_period_ms(Some(50));
    settle_watch().await;
    let started = tokio::time::Instant::now();
    dir.write("ports.properties", "mqtt.port=1885\n");
    assert_eq!(next_files(&mut rx).await, ["ports.properties"]);
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "a 50 ms checkPeriod answers faster than the 1 s fallback: {:?}",
        started.elapsed()
    );
}

/// Kubernetes mounts a ConfigMap as `file -> ..data/file` and swaps `..data` by renaming a new
/// symlink over it: no event names the file itself.
#[cfg(unix)]
#[tokio::test]
async fn a_swapped_symlink_target_is_seen() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    for (version, port) in [("v1", 1883), ("v2", 1884)] {
        std::fs::create_dir(root.join(version)).expect("mkdir");
        std::fs::write(
            root.join(version).join("ports.properties"),
            format!("mqtt.port={port}\n"),
        )
        .expect("write");
    }
    symlink(root.join("v1"), root.join("..data")).expect("symlink data");
    symlink(
        root.join("..data/ports.properties"),
        root.join("ports.properties"),
    )
    .expect("symlink file");
    let (_watcher, mut rx) = start(&[root.join("ports.properties")], events(50));
    settle_watch().await;
    symlink(root.join("v2"), root.join("..data_tmp")).expect("symlink tmp");
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).expect("swap");
    assert_eq!(next_files(&mut rx).await, ["ports.properties"]);
}

/// One watch, dispatched by path: a TLS file's change is a renewal, a configuration file's a
/// reload, and a file that is both (TLS material named by a watched configuration) is both.
#[tokio::test]
async fn changes_are_dispatched_by_path() {
    let dir = ConfigDir::new("");
    let config = dir.load();
    dir.write("server.pem", "one");
    let pem = dir.path("server.pem");
    let (control, mut rx) = start(&config.files, events(50));
    control.watch_tls_files(std::slice::from_ref(&pem));
    control.synced().await;

    dir.write("server.pem", "two");
    let event = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("an event within the wait")
        .expect("control alive");
    match event {
        ControlEvent::TlsRenewed { files } => assert_eq!(names(&files), ["server.pem"]),
        other => panic!("expected a TLS renewal, got {other:?}"),
    }
    dir.write("ports.properties", "mqtt.port=1884\n");
    assert_eq!(next_files(&mut rx).await, ["ports.properties"]);

    let mut files = config.files.clone();
    files.push(pem);
    control.watch_files(&files);
    control.synced().await;
    dir.write("server.pem", "three");
    let mut seen = Vec::new();
    for _ in 0..2 {
        let event = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("two events within the wait")
            .expect("control alive");
        seen.push(match event {
            ControlEvent::TlsRenewed { .. } => "tls",
            ControlEvent::Reload(_) => "reload",
            ControlEvent::Shutdown(_) => "shutdown",
        });
    }
    seen.sort_unstable();
    assert_eq!(seen, ["reload", "tls"]);
    assert_quiet(&mut rx, 700).await;
}
