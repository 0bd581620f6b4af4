//! The default configuration built into the binary: `check` and `run` without a file, in a
//! directory without `conf/activemq.xml`, use it as if it were that file (data under
//! `./data`); `ferromq init` writes it out, byte for byte the repository's `conf/`, and
//! refuses to replace a file.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::free_port;

fn ferromq(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferromq"));
    command.current_dir(dir);
    command
}

#[test]
fn check_without_a_file_in_an_empty_directory_checks_the_built_in_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = ferromq(dir.path())
        .arg("check")
        .output()
        .expect("check runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("default configuration built into ferromq"),
        "{stderr}"
    );
    let data = dir.path().join("data").join("kahadb");
    assert!(
        stdout.contains(&format!("store: durable, in {}", data.display())),
        "the store is ./data/kahadb: {stdout}"
    );
    assert!(stdout.contains("mqtt://127.0.0.1:1883"), "{stdout}");
}

#[test]
fn run_without_a_file_in_an_empty_directory_serves_the_built_in_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut child = ferromq(dir.path())
        .args(["run", "-D", &format!("mqtt.port={port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut stream = loop {
        if let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) {
            break stream;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("ferromq exited before serving: {status}");
        }
        assert!(Instant::now() < deadline, "never served on {port}");
        std::thread::sleep(Duration::from_millis(50));
    };
    // MQTT 3.1.1 CONNECT, client id "e", clean session, keep-alive 0.
    stream
        .write_all(&[
            0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 0, 0, 1, b'e',
        ])
        .expect("send CONNECT");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).expect("CONNACK");
    assert_eq!(connack, [0x20, 2, 0, 0], "CONNACK accepted");
    assert!(
        dir.path().join("data").join("kahadb").is_dir(),
        "the store is under ./data"
    );
    assert!(
        !dir.path().join("conf").exists(),
        "nothing written into conf/"
    );
    // SIGTERM (through kill(1)): the broker exits cleanly.
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("no exit within 15 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}

#[test]
fn init_writes_the_repositorys_conf_and_refuses_to_replace_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = ferromq(dir.path())
        .args(["init", "site"])
        .output()
        .expect("init runs");
    assert!(out.status.success(), "{out:?}");
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    let conf = dir.path().join("site").join("conf");
    for name in [
        "activemq.xml",
        "credentials.properties",
        "users.properties",
        "groups.properties",
        "login.config",
    ] {
        let written = std::fs::read(conf.join(name)).expect("written");
        let original = std::fs::read(shipped.join(name)).expect("shipped");
        assert!(written == original, "{name} differs from conf/{name}");
    }
    std::fs::write(conf.join("users.properties"), "mine=secret\n").expect("edit");
    let again = ferromq(dir.path())
        .args(["init", "site"])
        .output()
        .expect("init runs");
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    assert!(String::from_utf8_lossy(&again.stderr).contains("not replacing"));
    assert_eq!(
        std::fs::read_to_string(conf.join("users.properties")).expect("read"),
        "mine=secret\n",
        "an edited file is left alone"
    );
    // The written copy is now the default of that directory: no built-in note.
    let check = ferromq(&dir.path().join("site"))
        .arg("check")
        .output()
        .expect("check runs");
    assert!(check.status.success(), "{check:?}");
    assert!(!String::from_utf8_lossy(&check.stderr).contains("built into"));
}

/// `session list` of a configuration whose broker never ran here reads no store and makes
/// none: it says where it looked.
#[test]
fn session_list_where_no_broker_ran_says_so_and_creates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = ferromq(dir.path())
        .args(["session", "list"])
        .output()
        .expect("session list runs");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no store at"), "{stderr}");
    assert!(!dir.path().join("data").exists(), "a store was created");
}

/// A broker running on the built-in default with `--watch` picks up `conf/activemq.xml` once
/// it is written out (`ferromq init`) and edited: the reload reads the file on disk, not the
/// built-in copy.
#[test]
fn a_watched_built_in_default_reloads_the_file_written_out_and_edited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, second) = (free_port(), free_port());
    let mut child = ferromq(dir.path())
        .args(["run", "--watch", "-D", &format!("mqtt.port={port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run starts");
    let serves = |port: u16, within: Duration| {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    };
    assert!(
        serves(port, Duration::from_secs(30)),
        "never served on {port}"
    );
    let init = ferromq(dir.path()).arg("init").output().expect("init runs");
    assert!(init.status.success(), "{init:?}");
    let file = dir.path().join("conf").join("activemq.xml");
    let text = std::fs::read_to_string(&file).expect("written out");
    let edited = text.replacen(
        "</transportConnectors>",
        &format!(
            "    <transportConnector name=\"second\" uri=\"mqtt://127.0.0.1:{second}\"/>\n        </transportConnectors>"
        ),
        1,
    );
    assert_ne!(edited, text, "the file has a </transportConnectors>");
    std::fs::write(&file, edited).expect("edit");
    let reloaded = serves(second, Duration::from_secs(20));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    assert!(
        reloaded,
        "the edited file's second connector never served on {second}"
    );
}

/// A `conf/activemq.xml` that exists but cannot be read (a link to nothing) is an error, never
/// a reason to run the built-in, open default instead; and `init` writes nothing through it.
#[test]
fn an_unreadable_conf_is_an_error_not_a_fallback_to_the_built_in_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("conf");
    std::fs::create_dir(&conf).expect("conf/");
    let target = dir.path().join("elsewhere.xml");
    std::os::unix::fs::symlink(&target, conf.join("activemq.xml")).expect("symlink");
    let out = ferromq(dir.path())
        .arg("check")
        .output()
        .expect("check runs");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("cannot read"), "{said}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("built into"));
    let init = ferromq(dir.path()).arg("init").output().expect("init runs");
    assert_eq!(init.status.code(), Some(1), "{init:?}");
    assert!(!target.exists(), "init wrote through the link");
}

/// A conf directory named on the command line (`-D activemq.conf=DIR`) or by the start
/// script's variable (`ACTIVEMQ_CONF=DIR`) is read from disk alone, also when it is `./conf`:
/// as in ActiveMQ, the configurer's `credentials.properties` missing there is an error, never
/// the built-in file; present there, it is read. A relative one is relative to the working
/// directory, as ActiveMQ's JVM takes it. The error's position is in the built-in file, and
/// says so: there is no `conf/activemq.xml` on disk to open at that line.
#[test]
fn a_named_conf_directory_never_falls_back_to_the_built_in_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    // As the child sees its working directory (getcwd resolves links).
    let cwd = dir.path().canonicalize().expect("canonical tempdir");
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).expect("elsewhere/");
    let own_conf = dir.path().join("conf");
    let relative = ("elsewhere".to_owned(), cwd.join("elsewhere"));
    for (named, resolved) in [
        (own_conf.display().to_string(), own_conf.clone()),
        (elsewhere.display().to_string(), elsewhere.clone()),
        relative,
    ] {
        let resolved = resolved.display().to_string();
        for (how, out) in check_naming_conf(dir.path(), &named) {
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert_eq!(out.status.code(), Some(1), "{how} {named}: {stdout}");
            assert!(
                stdout.contains(&format!(
                    "cannot read properties file `{resolved}/credentials.properties`"
                )),
                "{how} {named}: {stdout}"
            );
            // The hint names where the directory came from, and both ways out.
            let origin = match how {
                "-D" => "`-D activemq.conf` on the command line",
                _ => "the environment variable ACTIVEMQ_CONF",
            };
            assert!(
                stdout.contains(&format!(
                    "`${{activemq.conf}}` is `{resolved}` here, named by {origin}:"
                )) && stdout.contains("leave activemq.conf unset"),
                "{how} {named}: {stdout}"
            );
            // No XML file on disk whose location could be fixed: `init` writes one out.
            assert!(
                stdout.contains("write the configuration out with `ferromq init`")
                    && !stdout.contains("relative to this XML file"),
                "{how} {named}: {stdout}"
            );
            assert!(
                stdout.starts_with("built-in conf/activemq.xml:")
                    && stdout.contains(" (embedded in the binary): error: cannot read"),
                "{how} {named}: the position is the built-in file's: {stdout}"
            );
            assert!(
                !stdout.contains(&cwd.join("conf").join("activemq.xml").display().to_string()),
                "{how} {named}: no path of a file that is not on disk: {stdout}"
            );
        }
    }
    // JSON keeps the path and says it is the built-in copy.
    let json = ferromq(dir.path())
        .env_remove("ACTIVEMQ_CONF")
        .args(["check", "--format", "json", "-D", "activemq.conf=elsewhere"])
        .output()
        .expect("check runs");
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    let first = &report["diagnostics"][0];
    assert_eq!(first["builtin"], true, "{report}");
    assert!(first["line"].as_u64().is_some(), "{report}");
    std::fs::write(
        elsewhere.join("credentials.properties"),
        "activemq.username=system\nactivemq.password=manager\n",
    )
    .expect("write credentials.properties");
    let named = elsewhere.display().to_string();
    for (how, out) in check_naming_conf(dir.path(), &named) {
        assert!(out.status.success(), "{how}: {out:?}");
    }
}

/// The launcher's variables empty count as unset, as ActiveMQ's start script tests them
/// (`[ -z "$ACTIVEMQ_CONF" ]`): the built-in default is checked as without them, its files
/// from the binary and its data under `./data`. An empty `-D activemq.conf=` is kept as given,
/// and the error it leads to says it came from the command line.
#[test]
fn empty_launcher_variables_count_as_unset_and_an_empty_option_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data").join("kahadb");
    for variable in [
        "ACTIVEMQ_CONF",
        "ACTIVEMQ_BASE",
        "ACTIVEMQ_HOME",
        "ACTIVEMQ_DATA",
    ] {
        let out = ferromq(dir.path())
            .env_remove("ACTIVEMQ_CONF")
            .env_remove("ACTIVEMQ_BASE")
            .env_remove("ACTIVEMQ_HOME")
            .env_remove("ACTIVEMQ_DATA")
            .env(variable, "")
            .arg("check")
            .output()
            .expect("check runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{variable}=: {stdout}");
        assert!(
            stdout.contains(&format!("store: durable, in {}", data.display())),
            "{variable}=: the store is ./data/kahadb: {stdout}"
        );
    }
    let out = ferromq(dir.path())
        .env_remove("ACTIVEMQ_CONF")
        .args(["check", "-D", "activemq.conf="])
        .output()
        .expect("check runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(
            "cannot read properties file `/credentials.properties` of the placeholder \
             configurer"
        ) && stdout
            .contains("(the location's value comes from `-D activemq.conf` on the command line)"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "`${activemq.conf}` is empty here, as `-D activemq.conf` on the command line gives it"
        ),
        "{stdout}"
    );
}

/// A properties file missing under a relative `-D activemq.conf=DIR`, in a file on disk: the
/// hint says what each relative part is relative to (the directory to the working directory,
/// as ActiveMQ's JVM takes it; the location to the XML file).
#[test]
fn a_missing_properties_file_hint_says_what_relative_parts_are_relative_to() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cwd = dir.path().canonicalize().expect("canonical tempdir");
    let conf = dir.path().join("conf");
    std::fs::create_dir(&conf).expect("conf/");
    std::fs::write(
        conf.join("activemq.xml"),
        r#"<beans xmlns="http://www.springframework.org/schema/beans">
  <bean class="org.springframework.beans.factory.config.PropertyPlaceholderConfigurer">
    <property name="locations"><value>file:${activemq.conf}/creds.properties</value></property>
  </bean>
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="b" persistent="false">
    <transportConnectors>
      <transportConnector name="mqtt" uri="mqtt://127.0.0.1:1883"/>
    </transportConnectors>
  </broker>
</beans>
"#,
    )
    .expect("write activemq.xml");
    let out = ferromq(dir.path())
        .env_remove("ACTIVEMQ_CONF")
        .args(["check", "-D", "activemq.conf=elsewhere"])
        .output()
        .expect("check runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let resolved = cwd.join("elsewhere");
    assert!(
        stdout.contains(&format!(
            "`${{activemq.conf}}` is `{}` here, named by `-D activemq.conf` on the command line",
            resolved.display()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "a relative location is relative to this XML file's directory, a relative \
             activemq.* directory in it to the working directory"
        ),
        "{stdout}"
    );
}

/// `ferromq check` in `dir` (no file named: the built-in default) with the conf directory
/// `named` given both ways ActiveMQ takes it: `-D activemq.conf=` and `ACTIVEMQ_CONF`.
fn check_naming_conf(dir: &Path, named: &str) -> [(&'static str, std::process::Output); 2] {
    let by_option = ferromq(dir)
        .env_remove("ACTIVEMQ_CONF")
        .env_remove("activemq.conf")
        .args(["check", "-D", &format!("activemq.conf={named}")])
        .output()
        .expect("check runs");
    let by_variable = ferromq(dir)
        .env("ACTIVEMQ_CONF", named)
        .arg("check")
        .output()
        .expect("check runs");
    [("-D", by_option), ("ACTIVEMQ_CONF", by_variable)]
}

/// `run --console HOST:PORT` on the built-in default (which names no realm file) stops before
/// it opens the store, and says which file to write and how.
#[test]
fn a_console_without_users_is_refused_before_the_store_opens_with_the_file_to_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let console = format!("127.0.0.1:{}", free_port());
    let mut child = ferromq(dir.path())
        .args(["run", "-D", &format!("mqtt.port={}", free_port())])
        .args(["--console", &console])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ferromq run --console {console} still runs after 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        pipe.read_to_string(&mut stderr).expect("stderr");
    }
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("has no users"), "{stderr}");
    assert!(
        stderr.contains("create jetty-realm.properties beside activemq.xml")
            && stderr.contains("admin: PASSWORD, admin")
            && stderr.contains("ferromq init"),
        "the hint says which file to write and how: {stderr}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "the store was opened before the console was refused"
    );
}
