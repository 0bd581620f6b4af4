//! ActiveMQ 5.17's own configurations, as Debian's `activemq` package installs them: the 14
//! `activemq*.xml` of its `examples/conf` and the main instance's `activemq.xml`. Each is
//! copied at test time (with every side file of its directory) into a temporary installation
//! laid out as ActiveMQ's launcher sees it, the files it names are provided (JKS stores made by
//! the real `keytool`), and the real binary must
//! 1. `ferromq check FILE` exit 0 (warnings allowed: their count is printed per file); the JDBC
//!    ones only with `--local-store`, and without it fail with the located explanation;
//! 2. `ferromq run` the same file (connector addresses rewritten to 127.0.0.1:0 in the copy:
//!    `run` has no listener override) up to "running", serve one MQTT client on every served
//!    connector, and exit 0 on SIGTERM;
//! 3. produce only warnings whose kind docs/migration.md's table explains.
//!
//! Placeholders resolve as `bin/activemq` sets them: ferromq derives `activemq.conf` from the
//! configuration file's directory and `activemq.base` from its parent when that directory is
//! named `conf` (`activemq.data` = base/data), unless `ACTIVEMQ_BASE` or `--set` say otherwise
//! (`config/xml/placeholders.rs`). Debian's init script runs the main instance with
//! `ACTIVEMQ_BASE=/var/lib/activemq/main`; the test gives the child process the same, in the
//! temporary directory.
//!
//! The package is installed by `.ci/run`; elsewhere the tests skip, saying so (under `CI` they
//! fail instead). `cargo test --test config activemq_examples -- --nocapture` shows each file's
//! warning count (docs/migration.md explains them).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use ferromq::protocol::{decode, encode, ConnectReason, Packet, ProtocolVersion, QoS};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

use crate::support::keytool::{Keytool, StoreType};
use crate::support::{connect_packet, publish_packet, ChildGuard, RawClient};

/// [`Example::file`] of Debian's main instance.
const DEBIAN_MAIN: &str = "main";
/// ActiveMQ's example configurations in Debian's `activemq` package.
const EXAMPLES: &str = "/usr/share/doc/activemq/examples/conf";
/// Debian's main instance (the one `/etc/activemq/instances-enabled/main` links to).
const MAIN_INSTANCE: &str = "/etc/activemq/instances-available/main";
/// The password `activemq-security.xml`'s `credentials-enc.properties` was encrypted with
/// (ActiveMQ's documentation of that example).
const ENCRYPTION_PASSWORD: &str = "activemq";
/// How long a debug build on a busy 2-core machine may take to get to "running".
const START_WITHIN: Duration = Duration::from_secs(30);

/// Whether Debian's `activemq` package is installed; when not, the test is skipped (or fails
/// under `CI`, whose script installs it).
pub(crate) fn activemq_installed() -> bool {
    if Path::new(EXAMPLES).is_dir() && Path::new(MAIN_INSTANCE).is_dir() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{EXAMPLES} is missing: .ci/run installs Debian's `activemq` package"
    );
    eprintln!("SKIPPED: needs Debian's `activemq` package (apt-get install activemq)");
    false
}

/// Copy every regular file of `from` into `to` (created).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy's directory");
    for entry in std::fs::read_dir(from).expect("read the installed directory") {
        let entry = entry.expect("directory entry");
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy a file");
        }
    }
}

/// What an example needs and what ferromq is expected to serve from it.
struct Example {
    /// The file name in [`EXAMPLES`], or [`DEBIAN_MAIN`] for `activemq.xml` of [`MAIN_INSTANCE`].
    file: &'static str,
    /// The connectors ferromq serves (by name): MQTT, or MQTT over WebSocket when `ws`.
    served: &'static [&'static str],
    /// A `jdbcPersistenceAdapter`: refused unless `--local-store`.
    shared_store: bool,
    /// `broker.ks`/`broker.ts` in the configuration directory.
    needs_keystores: bool,
}

impl Example {
    const fn plain(file: &'static str) -> Example {
        Example {
            file,
            served: &[],
            shared_store: false,
            needs_keystores: false,
        }
    }
}

/// A temporary ActiveMQ installation holding one example.
struct Installation {
    dir: tempfile::TempDir,
    /// The configuration file in the copy.
    file: PathBuf,
    /// Variables the launcher would set (given to the child processes only).
    env: Vec<(&'static str, String)>,
}

impl Installation {
    /// `<tmp>/conf/` holds the whole examples directory (ActiveMQ's layout: base `<tmp>`,
    /// data `<tmp>/data`).
    fn examples(file: &str) -> Installation {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("conf");
        copy_dir(Path::new(EXAMPLES), &conf);
        Installation {
            file: conf.join(file),
            env: vec![(
                "ACTIVEMQ_ENCRYPTION_PASSWORD",
                ENCRYPTION_PASSWORD.to_owned(),
            )],
            dir,
        }
    }

    /// Debian's layout: the instance's files in `<tmp>/etc/activemq/instances-available/main`,
    /// its base (and data) in `<tmp>/var/lib/activemq/main`, as its init script sets them.
    fn debian_main() -> Installation {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("etc/activemq/instances-available/main");
        copy_dir(Path::new(MAIN_INSTANCE), &conf);
        let base = dir.path().join("var/lib/activemq/main");
        Installation {
            file: conf.join("activemq.xml"),
            env: vec![("ACTIVEMQ_BASE", base.display().to_string())],
            dir,
        }
    }

    fn ferromq(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ferromq"));
        command
            .current_dir(self.dir.path())
            .env_remove("RUST_LOG")
            .env_remove("ACTIVEMQ_BASE")
            .env_remove("ACTIVEMQ_CONF")
            .env_remove("ACTIVEMQ_DATA")
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())));
        command
    }

    fn check(&self, extra: &[&str]) -> Output {
        self.ferromq()
            .arg("check")
            .arg(&self.file)
            .args(extra)
            .output()
            .expect("run ferromq check")
    }
}

/// `broker.ks` (a private key) and `broker.ts` (its certificate, trusted) in `conf`, in JKS
/// format (checked by their magic number: a modern keytool writes PKCS#12 unless told) as
/// activemq-demo.xml's `sslContext` expects them, with its password `password`.
fn make_jks_stores(keytool: &Keytool, conf: &Path) {
    let ks = conf.join("broker.ks");
    keytool.genkeypair(&ks, "broker", "localhost", "RSA", "password", "password");
    let der = keytool.export_cert(&ks, "broker", "password");
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        base64::engine::general_purpose::STANDARD.encode(der)
    );
    keytool.import_trusted(&conf.join("broker.ts"), "broker", &pem, "password");
}

/// `file:line:column` of the first element named `name` in `file` (1-based, the column of
/// its `<`), as `check` locates an element.
fn element_position(file: &Path, name: &str) -> String {
    let text = std::fs::read_to_string(file).expect("read the configuration");
    let needle = format!("<{name}");
    text.lines()
        .enumerate()
        .find_map(|(index, line)| {
            line.find(&needle).map(|at| {
                let column = line[..at].chars().count() + 1;
                format!("{}:{}:{column}", file.display(), index + 1)
            })
        })
        .unwrap_or_else(|| panic!("no <{name}> in {}", file.display()))
}

/// The copy's `<transportConnector uri>` host and port replaced by 127.0.0.1:0, so that any
/// number of examples run side by side on any machine (`run` has no listener override).
fn rewrite_connector_ports(file: &Path) {
    let text = std::fs::read_to_string(file).expect("read the configuration");
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        out.push_str(&rewrite_connector_line(line));
    }
    std::fs::write(file, out).expect("write the configuration");
}

/// The web console of an imported jetty.xml / jetty-demo.xml on a free port instead of
/// ActiveMQ's 8161 (the examples run side by side; 8161 may be taken on the machine).
fn rewrite_console_port(file: &Path) {
    let Some(conf) = file.parent() else {
        return;
    };
    for name in ["jetty.xml", "jetty-demo.xml"] {
        let path = conf.join(name);
        if let Ok(text) = std::fs::read_to_string(&path) {
            let rewritten = text.replace(
                r#"<property name="port" value="8161"/>"#,
                r#"<property name="port" value="0"/>"#,
            );
            std::fs::write(&path, rewritten).expect("write jetty.xml");
        }
    }
}

fn rewrite_connector_line(line: &str) -> String {
    let Some(uri_at) = line
        .find("<transportConnector")
        .and_then(|at| line[at..].find("uri=\"").map(|u| at + u + "uri=\"".len()))
    else {
        return line.to_owned();
    };
    let Some(authority_at) = line[uri_at..].find("://").map(|s| uri_at + s + "://".len()) else {
        return line.to_owned();
    };
    let authority_end = line[authority_at..]
        .find(['/', '?', '"'])
        .map_or(line.len(), |end| authority_at + end);
    format!(
        "{}127.0.0.1:0{}",
        &line[..authority_at],
        &line[authority_end..]
    )
}

/// The store `check` reports is in the temporary installation: `${activemq.data}` and
/// `${activemq.base}` resolved there (an absolute path inside `dir`), or a relative path (against
/// the working directory, `dir`), or memory only.
fn assert_store_inside(check_output: &str, dir: &Path) {
    let store = check_output
        .lines()
        .find_map(|l| l.trim().strip_prefix("store: "))
        .unwrap_or_else(|| panic!("no store line in:\n{check_output}"));
    if let Some(directory) = store.strip_prefix("durable, in ") {
        let directory = Path::new(directory);
        assert!(
            directory.is_relative() || directory.starts_with(dir),
            "the store {} is outside the installation {}",
            directory.display(),
            dir.display()
        );
    } else {
        assert!(store.starts_with("memory only"), "store: {store}");
    }
}

/// docs/migration.md, whose table explains every kind of warning these examples produce.
const GUIDE: &str = include_str!("../../docs/migration.md");

/// What names a warning's kind in the guide: the attribute or element ignored, the scheme of a
/// connector not served, or the message itself for the rest.
fn warning_kind(message: &str) -> String {
    let backticked = |text: &str| text.split('`').nth(1).map(|n| format!("`{n}`"));
    let element = |text: &str| {
        let start = text.find('<')?;
        let len = text[start..].find('>')?;
        Some(text[start..=start + len].to_owned())
    };
    let kind = if message.starts_with("attribute `") {
        backticked(message)
    } else if let Some(rest) = message.strip_prefix("option `") {
        // One row for every option name: ``option `X` is not acted on by ferromq``.
        rest.split_once('`')
            .map(|(_, after)| format!("option `X`{after}"))
    } else if message.starts_with("connector `") {
        message.split(['(', ')']).nth(1).map(str::to_owned)
    } else if message.starts_with('<') {
        element(message)
    } else {
        None
    };
    kind.unwrap_or_else(|| message.to_owned())
}

/// Every warning of `check_output` has its kind explained in docs/migration.md.
fn assert_warnings_explained(check_output: &str) {
    for line in check_output.lines() {
        let Some((_, message)) = line.split_once(": warning: ") else {
            continue;
        };
        let kind = warning_kind(message);
        assert!(
            GUIDE.contains(&kind),
            "docs/migration.md does not explain the warning kind {kind} (`{message}`): add it to \
             its table of warnings"
        );
    }
}

/// The `check` output and its warning count, printed for the reader of the test log.
fn checked(example: &str, output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let warnings = stdout.lines().filter(|l| l.contains(": warning: ")).count();
    println!("{example}: {warnings} warning(s)");
    stdout
}

/// A running `ferromq run` and its log lines.
struct Running {
    child: ChildGuard,
    lines: Receiver<String>,
    /// Every line so far, for failure messages.
    seen: Vec<String>,
}

impl Running {
    /// Start `ferromq run --watch` and wait until it logs that it runs: `--watch` makes the
    /// broker log "watching the configuration files" once every connector is bound and its
    /// signal handlers are installed, which is what a configuration without any served
    /// connector otherwise never says.
    fn start(installation: &Installation, extra: &[&str]) -> (Running, Vec<(String, SocketAddr)>) {
        let mut child = ChildGuard(
            installation
                .ferromq()
                .args(["--log-level", "info", "run", "--watch", "--config"])
                .arg(&installation.file)
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn ferromq run"),
        );
        let lines = read_lines(child.0.stderr.take().expect("stderr"));
        let mut running = Running {
            child,
            lines,
            seen: Vec::new(),
        };
        let mut listening = Vec::new();
        let deadline = Instant::now() + START_WITHIN;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match running.lines.recv_timeout(left) {
                Ok(line) => line,
                Err(_) => panic!(
                    "ferromq run did not get to running within {START_WITHIN:?} ({:?}):\n{}",
                    running.child.0.try_wait(),
                    running.seen.join("\n")
                ),
            };
            running.seen.push(line.clone());
            if let Some(listener) = listening_line(&line) {
                listening.push(listener);
            }
            if line.contains("watching the configuration files") {
                return (running, listening);
            }
        }
    }

    /// SIGTERM, then exit 0 within 10 s.
    fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.0.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(10);
        let exit = loop {
            if let Some(exit) = self.child.0.try_wait().expect("wait") {
                break exit;
            }
            assert!(
                Instant::now() < deadline,
                "ferromq did not exit within 10 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        self.seen.extend(self.lines.try_iter());
        assert!(exit.success(), "exit {exit}:\n{}", self.seen.join("\n"));
    }
}

/// Read stderr in a thread to its end (the broker never writes to a closed pipe), without
/// colour sequences.
fn read_lines(stderr: std::process::ChildStderr) -> Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(strip_ansi(&line));
        }
    });
    rx
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

/// `listening listener=NAME addr=ADDR` -> (NAME, ADDR).
fn listening_line(line: &str) -> Option<(String, SocketAddr)> {
    if !line.contains(" listening ") {
        return None;
    }
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .map(str::to_owned)
    };
    Some((field("listener=")?, field("addr=")?.parse().ok()?))
}

/// An MQTT 3.1.1 client on a TCP connector: CONNECT, SUBSCRIBE, and its own QoS 0 publish
/// comes back.
async fn mqtt_client_round_trip(addr: SocketAddr) {
    let (mut client, _) = RawClient::connected(addr, "ferromq-example", true).await;
    assert_eq!(
        client
            .subscribe(1, &[("examples/hello", QoS::AtMostOnce)])
            .await,
        vec![0]
    );
    client
        .send(publish_packet(
            "examples/hello",
            b"hi",
            QoS::AtMostOnce,
            None,
            false,
        ))
        .await;
    let p = client.recv_publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("examples/hello", &b"hi"[..])
    );
}

/// A STOMP 1.2 client: CONNECT, SUBSCRIBE with a receipt, SEND, and its MESSAGE back.
async fn stomp_client_round_trip(addr: SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = TcpStream::connect(addr).await.expect("tcp connect");
    tcp.write_all(
        b"CONNECT\naccept-version:1.2\nhost:localhost\n\n\0\
          SUBSCRIBE\nid:1\ndestination:/topic/examples.hello\nreceipt:r\n\n\0",
    )
    .await
    .expect("write");
    let mut received = Vec::new();
    let mut sent = false;
    let deadline = tokio::time::Instant::now() + crate::support::STEP;
    loop {
        let text = String::from_utf8_lossy(&received).into_owned();
        if !sent && text.contains("RECEIPT\nreceipt-id:r") {
            tcp.write_all(b"SEND\ndestination:/topic/examples.hello\n\nhi\0")
                .await
                .expect("write");
            sent = true;
        }
        if sent && text.contains("MESSAGE\n") && text.contains("hi\0") {
            assert!(text.starts_with("CONNECTED\n"), "{text}");
            return;
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, tcp.read(&mut chunk))
            .await
            .expect("STOMP answers in time")
            .expect("read");
        assert!(n > 0, "closed early: {text}");
        received.extend_from_slice(&chunk[..n]);
    }
}

fn encoded(packet: Packet) -> Bytes {
    let mut out = BytesMut::new();
    encode(&packet, ProtocolVersion::V311, &mut out).expect("encode");
    out.freeze()
}

/// An MQTT 3.1.1 client over WebSocket (sub-protocol `mqtt`): CONNECT is accepted and
/// PINGREQ answered.
async fn websocket_client_round_trip(addr: SocketAddr) {
    let mut request = "ws://localhost/".into_client_request().expect("request");
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
    let tcp = TcpStream::connect(addr).await.expect("tcp connect");
    let (mut ws, _) = tokio::time::timeout(
        crate::support::STEP,
        tokio_tungstenite::client_async(request, tcp),
    )
    .await
    .expect("handshake in time")
    .expect("websocket handshake");
    let mut received = BytesMut::new();
    for (sent, expected) in [
        (
            Packet::Connect(Box::new(connect_packet("ferromq-example-ws", true, 0))),
            "CONNACK",
        ),
        (Packet::PingReq, "PINGRESP"),
    ] {
        ws.send(Message::Binary(encoded(sent))).await.expect("send");
        let answer = loop {
            if let Some(p) = decode(&mut received, Some(ProtocolVersion::V311), usize::MAX)
                .expect("a valid packet")
            {
                break p;
            }
            match tokio::time::timeout(crate::support::STEP, ws.next())
                .await
                .expect("an answer in time")
            {
                Some(Ok(Message::Binary(data))) => received.extend_from_slice(&data),
                other => panic!("unexpected websocket message {other:?}"),
            }
        };
        match (expected, answer) {
            ("CONNACK", Packet::ConnAck(a)) => assert_eq!(a.reason, ConnectReason::Success),
            ("PINGRESP", Packet::PingResp) => {}
            (_, other) => panic!("expected {expected}, got {other:?}"),
        }
    }
}

/// Check, then run, one example (see the module comment).
async fn check_and_run(example: Example) {
    if !activemq_installed() {
        return;
    }
    let keytool = if example.needs_keystores {
        match Keytool::new(StoreType::Jks) {
            Some(keytool) => Some(keytool),
            None => return,
        }
    } else {
        None
    };
    let installation = if example.file == DEBIAN_MAIN {
        Installation::debian_main()
    } else {
        Installation::examples(example.file)
    };
    let name = if example.file == DEBIAN_MAIN {
        "Debian's main instance activemq.xml".to_owned()
    } else {
        example.file.to_owned()
    };
    if let Some(keytool) = &keytool {
        let conf = installation.file.parent().expect("conf directory");
        make_jks_stores(keytool, conf);
    }

    let local_store: &[&str] = if example.shared_store {
        let refused = installation.check(&[]);
        let stdout = checked(&format!("{name} without --local-store"), &refused);
        assert_eq!(refused.status.code(), Some(1), "{stdout}");
        let at = element_position(&installation.file, "jdbcPersistenceAdapter");
        let error = format!("{at}: error: <jdbcPersistenceAdapter> configures a store shared");
        assert!(stdout.contains(&error), "expected `{error}` in:\n{stdout}");
        assert!(stdout.contains("split brain"), "{stdout}");
        assert!(
            stdout.contains("hint: ") && stdout.contains("`--local-store`"),
            "the hint names the override:\n{stdout}"
        );
        &["--local-store"]
    } else {
        &[]
    };
    let output = installation.check(local_store);
    let stdout = checked(&name, &output);
    assert!(
        output.status.success(),
        "ferromq check {name} {local_store:?} exited {}:\n{stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("\n0 error(s), "), "{stdout}");
    assert_store_inside(&stdout, installation.dir.path());
    assert_warnings_explained(&stdout);
    if example.shared_store {
        assert!(
            stdout.contains(": warning: ") && stdout.contains("local store"),
            "the override is a warning:\n{stdout}"
        );
    }

    rewrite_connector_ports(&installation.file);
    rewrite_console_port(&installation.file);
    let (running, listening) = Running::start(&installation, local_store);
    let names: Vec<&str> = listening.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, example.served, "served connectors of {name}");
    for (connector, addr) in &listening {
        let addr = SocketAddr::from(([127, 0, 0, 1], addr.port()));
        if connector == "ws" {
            websocket_client_round_trip(addr).await;
        } else if connector.contains("stomp") {
            stomp_client_round_trip(addr).await;
        } else {
            mqtt_client_round_trip(addr).await;
        }
    }
    running.stop();
}

macro_rules! examples {
    ($($test:ident => $example:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $test() {
            check_and_run($example).await;
        }
    )*};
}

examples! {
    // ActiveMQ's demo names broker.ks/broker.ts, which are JKS.
    activemq_demo => Example {
        served: &["stomp", "ws"],
        needs_keystores: true,
        ..Example::plain("activemq-demo.xml")
    };
    activemq_dynamic_network_broker1 => Example::plain("activemq-dynamic-network-broker1.xml");
    activemq_dynamic_network_broker2 => Example::plain("activemq-dynamic-network-broker2.xml");
    activemq_jdbc => Example { shared_store: true, ..Example::plain("activemq-jdbc.xml") };
    activemq_jdbc_performance => Example {
        shared_store: true,
        ..Example::plain("activemq-jdbc-performance.xml")
    };
    activemq_mqtt => Example { served: &["mqtt+nio"], ..Example::plain("activemq-mqtt.xml") };
    activemq_scalability => Example::plain("activemq-scalability.xml");
    activemq_security => Example::plain("activemq-security.xml");
    activemq_specjms => Example::plain("activemq-specjms.xml");
    activemq_static_network_broker1 => Example::plain("activemq-static-network-broker1.xml");
    activemq_static_network_broker2 => Example::plain("activemq-static-network-broker2.xml");
    activemq_stomp => Example {
        served: &["stomp", "stomp+nio"],
        ..Example::plain("activemq-stomp.xml")
    };
    activemq_throughput => Example::plain("activemq-throughput.xml");
    // Its connectors have no name: a connector is named by its URI (ports rewritten to 0).
    activemq_xml => Example {
        served: &["stomp://127.0.0.1:0"],
        ..Example::plain("activemq.xml")
    };
    debian_main_instance => Example::plain(DEBIAN_MAIN);
}

/// activemq-security.xml's users log in over MQTT with the clear values of its `ENC(...)`
/// passwords (`system`/`manager`, `guest`/`password`; ActiveMQ's documentation of the example),
/// and a wrong password is refused. The example has no MQTT connector: the copy gets one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activemq_security_encrypted_passwords_log_in_over_mqtt() {
    if !activemq_installed() {
        return;
    }
    let installation = Installation::examples("activemq-security.xml");
    let xml = std::fs::read_to_string(&installation.file).expect("read the configuration");
    let with_mqtt = xml.replacen(
        "<transportConnectors>",
        "<transportConnectors><transportConnector name=\"mqtt\" uri=\"mqtt://127.0.0.1:0\"/>",
        1,
    );
    assert_ne!(
        with_mqtt, xml,
        "no <transportConnectors> in activemq-security.xml"
    );
    std::fs::write(&installation.file, with_mqtt).expect("write the configuration");

    let (running, listening) = Running::start(&installation, &[]);
    let [(name, addr)] = listening.as_slice() else {
        panic!("one served connector expected: {listening:?}");
    };
    assert_eq!(name, "mqtt");
    for (user, password, accepted) in [
        ("system", "manager", true),
        ("guest", "password", true),
        ("system", "password", false),
    ] {
        let mut connect = connect_packet(&format!("login-{user}"), true, 0);
        connect.username = Some(user.to_owned());
        connect.password = Some(Bytes::from(password));
        let (_, ack) = RawClient::connect(*addr, connect).await;
        if accepted {
            assert_eq!(ack.reason, ConnectReason::Success, "{user}/{password}");
        } else {
            assert!(
                matches!(
                    ack.reason,
                    ConnectReason::BadUserNameOrPassword | ConnectReason::NotAuthorized
                ),
                "{user}/{password}: {ack:?}"
            );
        }
    }
    running.stop();
}

#[test]
fn warning_kinds_are_the_names_ignored() {
    for (message, kind) in [
        (
            "attribute `useJmx` of <broker> is not acted on by ferromq",
            "`useJmx`",
        ),
        (
            "<dispatchPolicy> of <policyEntry> is not acted on by ferromq",
            "<dispatchPolicy>",
        ),
        (
            "connector `openwire` (tcp://) is not served: it is neither MQTT nor STOMP",
            "tcp://",
        ),
        (
            "option `transport.closeAsync` is not acted on by ferromq",
            "option `X` is not acted on by ferromq",
        ),
        (
            "<networkConnector> `multicast://default` is not supported yet: ferromq does not bridge brokers",
            "<networkConnector>",
        ),
        (
            "no MQTT or STOMP connector: clients cannot connect",
            "no MQTT or STOMP connector: clients cannot connect",
        ),
    ] {
        assert_eq!(warning_kind(message), kind);
    }
}

#[test]
fn connector_rewrite_keeps_scheme_path_and_options() {
    assert_eq!(
        rewrite_connector_line(
            r#"  <transportConnector name="m" uri="mqtt+nio://0.0.0.0:1883?a=b"/>"#
        ),
        r#"  <transportConnector name="m" uri="mqtt+nio://127.0.0.1:0?a=b"/>"#
    );
    assert_eq!(
        rewrite_connector_line(r#"<transportConnector name="ws" uri="ws://localhost:61614/" />"#),
        r#"<transportConnector name="ws" uri="ws://127.0.0.1:0/" />"#
    );
    let other = r#"<networkConnector uri="static:(tcp://localhost:61616)"/>"#;
    assert_eq!(rewrite_connector_line(other), other);
}

#[test]
fn the_fourteen_examples_are_all_tested() {
    if !activemq_installed() {
        return;
    }
    let mut installed: Vec<String> = std::fs::read_dir(EXAMPLES)
        .expect("read the examples")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("activemq") && n.ends_with(".xml"))
        .collect();
    installed.sort();
    assert_eq!(installed.len(), 14, "{installed:?}");
    let source = include_str!("activemq_examples.rs");
    for file in &installed {
        assert!(
            source.contains(&format!("Example::plain(\"{file}\")")),
            "{file} has no test"
        );
    }
}
