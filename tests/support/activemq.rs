//! Apache ActiveMQ 5.17 itself (Debian's `activemq` and `libmqtt-client-java`), started as a child
//! process from a generated `activemq.xml`, for tests that compare ferromq's answers with
//! ActiveMQ's.
//!
//! Why not `/usr/bin/activemq console xbean:...`: Debian's ActiveMQ ships the MQTT transport
//! (`activemq-mqtt.jar`) but not the MQTT codec it needs (`org.fusesource.mqtt.codec`, in
//! `libmqtt-client-java`'s `/usr/share/java/mqtt-client.jar`), and nothing puts that jar on the
//! broker's class path. The connector listens, but the first accepted connection fails with
//! `NoClassDefFoundError: org/fusesource/mqtt/codec/PINGRESP` in the accept thread, so a client
//! gets no CONNACK; without a log4j configuration that error goes nowhere. ActiveMQ's launcher
//! (`activemq.jar`, `org.apache.activemq.console.Main`) adds every jar of `${activemq.base}/lib`
//! to its class loader, so each instance gets a base directory whose `lib/` links the codec jar,
//! a `conf/log4j.properties` that logs to `activemq.log`, and `java` is run directly (the wrapper
//! script also switches to the `activemq` user, which cannot read a test's temporary directory).
//!
//! STOMP: ActiveMQ's STOMP transport is in its base jars (`activemq-stomp.jar` is in Debian's
//! `lib/`), so [`ActiveMq::start_with_stomp`] only adds a second free port for a `stomp://`
//! connector and waits until it answers a STOMP CONNECT as well.
//!
//! Skipped with a message when ActiveMQ is not installed, unless `CI` is set: then the test fails
//! instead (CI installs it).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// ActiveMQ's launcher jar.
pub const LAUNCHER: &str = "/usr/share/activemq/bin/activemq.jar";
/// `ACTIVEMQ_HOME`: its `lib/` holds the broker's own jars.
pub const HOME: &str = "/usr/share/activemq";
/// The MQTT codec that ActiveMQ's MQTT transport needs and Debian does not put on its class path.
pub const MQTT_CODEC_JARS: &[&str] = &[
    "/usr/share/java/mqtt-client.jar",
    "/usr/share/java/hawtdispatch.jar",
    "/usr/share/java/hawtdispatch-transport.jar",
];

/// How long the JVM may take to start and accept MQTT (2 shared cores: usually ~2 s).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running ActiveMQ broker; its whole process group is killed when dropped.
pub struct ActiveMq {
    child: Child,
    /// The `mqtt://` connector, on 127.0.0.1.
    pub mqtt: SocketAddr,
    /// The `stomp://` connector, on 127.0.0.1, when started by [`ActiveMq::start_with_stomp`].
    pub stomp: Option<SocketAddr>,
    base: tempfile::TempDir,
}

/// Why ActiveMQ cannot run here, or `None` when it can.
pub fn missing() -> Option<String> {
    let mut needed = vec![LAUNCHER];
    needed.extend(MQTT_CODEC_JARS);
    if let Some(path) = needed.iter().find(|p| !Path::new(p).exists()) {
        return Some(format!(
            "{path} is missing (apt-get install activemq libmqtt-client-java)"
        ));
    }
    let java = Command::new("java")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !java.is_ok_and(|s| s.success()) {
        return Some("no `java` on PATH (apt-get install default-jre-headless)".into());
    }
    None
}

/// `true` when ActiveMQ can run; otherwise prints why the test is skipped and returns `false`,
/// or fails the test when `CI` is set.
pub fn available(test: &str) -> bool {
    match missing() {
        None => true,
        Some(why) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{test}: {why}; CI must run the ActiveMQ differential"
            );
            eprintln!("SKIPPED {test}: {why}");
            false
        }
    }
}

impl ActiveMq {
    /// Start ActiveMQ from the `activemq.xml` that `xml_for_port` writes for an MQTT connector on
    /// `127.0.0.1:<port>`, and wait until an MQTT CONNECT on it gets a CONNACK (of any code: the
    /// probe has no credentials). Panics, with ActiveMQ's log, when it does not start.
    pub fn start(xml_for_port: impl Fn(u16) -> String) -> ActiveMq {
        ActiveMq::start_with_files(xml_for_port, &[])
    }

    /// [`ActiveMq::start`] with more files in the configuration directory beside `activemq.xml`
    /// (name, content): `login.config` (the JVM's `java.security.auth.login.config`, as
    /// ActiveMQ's start script sets it) and the files it names.
    pub fn start_with_files(
        xml_for_port: impl Fn(u16) -> String,
        files: &[(&str, String)],
    ) -> ActiveMq {
        ActiveMq::start_ports(|mqtt, _| xml_for_port(mqtt), false, files)
    }

    /// Start ActiveMQ from the `activemq.xml` that `xml_for_ports(mqtt, stomp)` writes for an
    /// MQTT connector on `127.0.0.1:<mqtt>` and a STOMP connector on `127.0.0.1:<stomp>` (with
    /// `files` beside it, as [`ActiveMq::start_with_files`]), and wait until both answer: a
    /// CONNACK on MQTT, a CONNECTED or ERROR frame on STOMP. Panics, with ActiveMQ's log, when it
    /// does not start.
    pub fn start_with_stomp(
        xml_for_ports: impl Fn(u16, u16) -> String,
        files: &[(&str, String)],
    ) -> ActiveMq {
        ActiveMq::start_ports(xml_for_ports, true, files)
    }

    fn start_ports(
        xml_for_ports: impl Fn(u16, u16) -> String,
        with_stomp: bool,
        files: &[(&str, String)],
    ) -> ActiveMq {
        let mut last_log = String::new();
        // A free port may be taken between the probe and the JVM's bind: try a few.
        for _ in 0..3 {
            let port = free_port();
            let stomp = with_stomp.then(free_port);
            let xml = xml_for_ports(port, stomp.unwrap_or(0));
            match ActiveMq::try_start(&xml, port, stomp, files) {
                Ok(broker) => return broker,
                Err(log) if log.contains("Address already in use") => last_log = log,
                Err(log) => panic!("ActiveMQ did not start:\n{log}"),
            }
        }
        panic!("ActiveMQ did not start (ports in use):\n{last_log}")
    }

    fn try_start(
        xml: &str,
        port: u16,
        stomp: Option<u16>,
        files: &[(&str, String)],
    ) -> Result<ActiveMq, String> {
        let base = tempfile::Builder::new()
            .prefix("activemq-")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        let conf = base.path().join("conf");
        let lib = base.path().join("lib");
        let data = base.path().join("data");
        for dir in [&conf, &lib, &data] {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        for jar in MQTT_CODEC_JARS {
            let name = Path::new(jar).file_name().unwrap_or_default();
            std::os::unix::fs::symlink(jar, lib.join(name)).map_err(|e| format!("{jar}: {e}"))?;
        }
        let log = base.path().join("activemq.log");
        std::fs::write(conf.join("log4j.properties"), log4j_properties(&log))
            .map_err(|e| format!("log4j.properties: {e}"))?;
        for (name, text) in files {
            std::fs::write(conf.join(name), text).map_err(|e| format!("{name}: {e}"))?;
        }
        let xml_path = conf.join("activemq.xml");
        std::fs::write(&xml_path, xml).map_err(|e| format!("activemq.xml: {e}"))?;
        let console = std::fs::File::create(base.path().join("console.log"))
            .map_err(|e| format!("console.log: {e}"))?;
        let console_err = console
            .try_clone()
            .map_err(|e| format!("console.log: {e}"))?;
        let child = std::os::unix::process::CommandExt::process_group(
            Command::new("java")
                .args([
                    "-Xms64m",
                    "-Xmx256m",
                    "-XX:+UseSerialGC",
                    // Startup time matters more than peak speed for a broker that lives seconds.
                    "-XX:TieredStopAtLevel=1",
                    "-Djava.awt.headless=true",
                ])
                .arg(format!("-Dactivemq.home={HOME}"))
                .arg(format!("-Dactivemq.base={}", base.path().display()))
                .arg(format!("-Dactivemq.conf={}", conf.display()))
                .arg(format!("-Dactivemq.data={}", data.display()))
                .arg(format!(
                    "-Djava.security.auth.login.config={}",
                    conf.join("login.config").display()
                ))
                .arg(format!(
                    "-Dlog4j.configuration=file:{}",
                    conf.join("log4j.properties").display()
                ))
                .args(["-jar", LAUNCHER, "start"])
                .arg(format!("xbean:file:{}", xml_path.display()))
                .current_dir(base.path())
                .stdin(Stdio::null())
                .stdout(console)
                .stderr(console_err),
            0,
        )
        .spawn()
        .map_err(|e| format!("java: {e}"))?;
        let mut broker = ActiveMq {
            child,
            mqtt: SocketAddr::from(([127, 0, 0, 1], port)),
            stomp: stomp.map(|p| SocketAddr::from(([127, 0, 0, 1], p))),
            base,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = broker.child.try_wait() {
                return Err(format!("exited with {status}\n{}", broker.logs()));
            }
            if mqtt_connack(broker.mqtt) && broker.stomp.is_none_or(stomp_answers) {
                return Ok(broker);
            }
            // A broker that failed to start (its port taken, a bad configuration) may leave the
            // JVM running: stop waiting at once.
            let logs = broker.logs();
            if logs.contains("Address already in use") || logs.contains("Failed to start") {
                return Err(logs);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no CONNACK on {} (or no STOMP answer on {:?}) after {START_TIMEOUT:?}\n{}",
                    broker.mqtt,
                    broker.stomp,
                    broker.logs()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The base directory (`conf/activemq.xml`, `activemq.log`, `console.log`).
    pub fn base(&self) -> &Path {
        self.base.path()
    }

    /// ActiveMQ's log (log4j) and console output so far.
    pub fn logs(&self) -> String {
        let read = |name: &str| -> String {
            std::fs::read_to_string(self.base.path().join(name)).unwrap_or_default()
        };
        format!(
            "--- activemq.log\n{}--- console.log\n{}",
            read("activemq.log"),
            read("console.log")
        )
    }

    /// Log lines that contain `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        std::fs::read_to_string(self.base.path().join("activemq.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }

    /// The configuration file ActiveMQ runs from.
    pub fn config_path(&self) -> PathBuf {
        self.base.path().join("conf").join("activemq.xml")
    }
}

impl Drop for ActiveMq {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "ActiveMQ on {} ({}):\n{}",
                self.mqtt,
                self.config_path().display(),
                self.logs()
            );
        }
        // The JVM is the leader of its own process group (`process_group(0)`): kill the group so
        // that nothing it started survives the test.
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn log4j_properties(log: &Path) -> String {
    format!(
        "log4j.rootLogger=INFO, file\n\
         log4j.logger.org.apache.activemq.security=DEBUG\n\
         log4j.appender.file=org.apache.log4j.FileAppender\n\
         log4j.appender.file.File={}\n\
         log4j.appender.file.layout=org.apache.log4j.PatternLayout\n\
         log4j.appender.file.layout.ConversionPattern=%d{{ISO8601}} %-5p %c{{1}} - %m%n\n",
        log.display()
    )
}

/// Does an MQTT 3.1.1 CONNECT (client id `probe`, no credentials) on `addr` get a CONNACK?
fn mqtt_connack(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    // CONNECT: "MQTT" level 4, clean session, keep-alive 0, client id "probe".
    let connect: [u8; 19] = [
        0x10, 17, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 0, 0, 5, b'p', b'r', b'o', b'b', b'e',
    ];
    if stream.write_all(&connect).is_err() {
        return false;
    }
    let mut connack = [0u8; 4];
    let got = stream.read_exact(&mut connack).is_ok() && connack[0] == 0x20 && connack[1] == 2;
    // DISCONNECT, so that ActiveMQ does not log a broken connection.
    let _ = stream.write_all(&[0xe0, 0]);
    got
}

/// Does a STOMP CONNECT (version 1.2, no credentials) on `addr` get a frame back (CONNECTED, or
/// the ERROR of a refused login)?
fn stomp_answers(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"CONNECT\naccept-version:1.2\nhost:probe\n\n\0")
        .is_err()
    {
        return false;
    }
    let mut answer = [0u8; 5];
    let got =
        stream.read_exact(&mut answer).is_ok() && (&answer == b"CONNE" || &answer == b"ERROR");
    let _ = stream.write_all(b"DISCONNECT\n\n\0");
    got
}
