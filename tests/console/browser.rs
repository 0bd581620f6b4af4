//! The console's pages in a real browser: headless Chromium, driven by Selenium from
//! `tests/console/browser_test.py`, against a broker started here from XML with an MQTT and a
//! STOMP connector and the console, all on port 0. The script connects paho and stomp.py
//! clients, checks values only the pages' script renders (from the JSON API) against
//! `/api/overview` and a live `/metrics` scrape, clicks Disconnect as an admin and waits for
//! that MQTT client to see its connection end, and checks a read-only user gets no buttons. The
//! file is broken and reloaded before: the overview shows the failed reload's diagnostics.
//!
//! Needs `/usr/bin/chromium`, `/usr/bin/chromedriver` (Debian's `chromium`, `chromium-driver`)
//! and python `selenium`, `paho-mqtt`, `stomp.py`: skipped with a message without them, unless
//! `CI` is set (CI installs them; .ci/run). `CONSOLE_SCREENSHOTS=DIR` keeps the screenshots.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::broker::TestBroker;
use crate::support::xml::{load_file, no_env};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The whole script, browser start included; each of its waits is 20 s at most.
const SCRIPT_LIMIT: Duration = Duration::from_secs(240);

/// Why the browser test cannot run here, or `None` when it can.
fn missing_tools() -> Option<String> {
    for path in [CHROMIUM, CHROMEDRIVER] {
        if !Path::new(path).exists() {
            return Some(format!(
                "{path} is missing (apt-get install chromium chromium-driver)"
            ));
        }
    }
    let imports = Command::new("python3")
        .args(["-c", "import selenium, paho.mqtt.client, stomp"])
        .stderr(Stdio::null())
        .status();
    match imports {
        Ok(status) if status.success() => None,
        _ => Some("python3 with selenium, paho-mqtt and stomp.py is missing".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_render_the_api_and_disconnect_a_client() {
    if let Some(why) = missing_tools() {
        assert!(
            std::env::var_os("CI").is_none(),
            "console browser test: {why}; CI must run it"
        );
        eprintln!("console browser test skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let realm = dir.path().join("jetty-realm.properties");
    std::fs::write(&realm, "admin: s3cret, admin\nreader: look, user\n").expect("write realm");
    let xml = format!(
        r#"<beans xmlns="http://www.springframework.org/schema/beans" xmlns:ferromq="urn:ferromq">
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="console-test" persistent="false">
    <ferromq:console host="127.0.0.1" port="0" realm="{realm}"/>
    <destinations><topic physicalName="console.t"/></destinations>
    <transportConnectors>
      <transportConnector name="mqtt" uri="mqtt://127.0.0.1:0"/>
      <transportConnector name="stomp" uri="stomp://127.0.0.1:0"/>
    </transportConnectors>
  </broker>
</beans>"#,
        realm = realm.display()
    );
    // Started from a file with reload on: a failed reload is what the overview shows.
    let file = dir.path().join("activemq.xml");
    std::fs::write(&file, &xml).expect("write activemq.xml");
    let mut broker = TestBroker::start(load_file(&file)).await;
    broker
        .handle
        .enable_reload(load_file(&file), no_env(), false)
        .await;
    let broken = xml.replace("<destinations>", "<notAnElement/>\n    <destinations>");
    std::fs::write(&file, broken).expect("break activemq.xml");
    let reload = broker.handle.reload().expect("reload on");
    let mut stats = reload.subscribe();
    reload.request();
    tokio::time::timeout(
        Duration::from_secs(20),
        stats.wait_for(|s| s.reloads_failed > 0),
    )
    .await
    .expect("the reload ended in time")
    .expect("reload stats");
    let port_of = |name: &str| {
        broker
            .handle
            .listener_addrs()
            .iter()
            .find(|(connector, _)| connector == name)
            .map(|(_, addr)| addr.port())
            .expect("connector bound")
    };
    let (mqtt, stomp) = (port_of("mqtt"), port_of("stomp"));
    let console = broker.handle.console_addr().expect("the console runs");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console/browser_test.py");
    let out = dir.path().join("browser");
    std::fs::create_dir_all(&out).expect("screenshot dir");

    let mut child = Command::new("python3")
        .arg(&script)
        .args(["--console", &format!("http://{console}")])
        .args(["--mqtt", &mqtt.to_string(), "--stomp", &stomp.to_string()])
        .args(["--admin", "admin:s3cret", "--reader", "reader:look"])
        .arg("--out")
        .arg(&out)
        .spawn()
        .expect("start python3");
    // The broker runs on this runtime's threads while the script drives it: poll for the exit.
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the script") {
            break status;
        }
        if started.elapsed() > SCRIPT_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("browser_test.py still running after {SCRIPT_LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let screenshot = out.join("console-overview.png");
    if let Some(keep) = std::env::var_os("CONSOLE_SCREENSHOTS") {
        for name in ["console-overview.png", "console-clients.png"] {
            let _ = std::fs::copy(out.join(name), Path::new(&keep).join(name));
        }
    }
    broker.shutdown().await;
    assert!(status.success(), "browser_test.py failed: {status}");
    let png = std::fs::read(&screenshot).expect("the overview screenshot was saved");
    assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");
}

/// A page opened with the credentials in its URL (`chromium --dump-dom
/// http://user:pass@host/clients`, the only way to log in from the command line) loads its
/// data: the script's fetches must not resolve against a URL holding credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_opened_with_credentials_in_the_url_loads_its_data() {
    if !Path::new(CHROMIUM).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "console browser test: {CHROMIUM} is missing; CI must run it"
        );
        eprintln!("console browser test skipped: {CHROMIUM} is missing");
        return;
    }
    let env = crate::Env::start().await;
    let profile = tempfile::tempdir().expect("profile dir");
    let page = format!("http://plain:plainpw@{}/clients", env.console);
    let user_data = format!("--user-data-dir={}", profile.path().display());
    // Blocking in its own thread: the broker serves on this runtime meanwhile.
    let output = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .arg(SCRIPT_LIMIT.as_secs().to_string())
            .arg(CHROMIUM)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--virtual-time-budget=5000",
            ])
            .arg(user_data)
            .args(["--dump-dom", &page])
            .stderr(Stdio::null())
            .output()
    })
    .await
    .expect("chromium thread")
    .expect("run chromium");
    let dom = String::from_utf8_lossy(&output.stdout);
    assert!(!dom.contains("Could not load"), "{dom}");
    assert!(dom.contains("Updated "), "{dom}");
}
