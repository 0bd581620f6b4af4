//! `check` builds what `run` builds (TLS material, security, the store directory) without
//! binding or opening the store, and `run` fails the same way: every case runs both commands.

use std::path::Path;
use std::process::{Command, Output};

fn ferromq(args: &[&str], dir: &Path) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferromq"));
    command.current_dir(dir).args(args);
    for var in [
        "ACTIVEMQ_BASE",
        "ACTIVEMQ_CONF",
        "ACTIVEMQ_DATA",
        "ACTIVEMQ_HOME",
        "RUST_LOG",
    ] {
        command.env_remove(var);
    }
    command.output().expect("run ferromq")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A broker with `body` inside `<broker>` and the store in `store` (start="false": `run` builds
/// everything and exits instead of serving).
fn write_config(dir: &Path, store: &str, body: &str) -> String {
    let xml = format!(
        r#"<beans xmlns="http://www.springframework.org/schema/beans" xmlns:ferromq="urn:ferromq">
    <broker xmlns="http://activemq.apache.org/schema/core" start="false" dataDirectory="{store}">
{body}
        <transportConnectors>
            <transportConnector name="mqtt" uri="mqtt://127.0.0.1:0"/>
        </transportConnectors>
    </broker>
</beans>
"#
    );
    let path = dir.join("activemq.xml");
    std::fs::write(&path, xml).expect("write config");
    path.display().to_string()
}

fn tls_body() -> &'static str {
    r#"        <sslContext>
            <sslContext keyStore="cert.pem" ferromq:keyFile="key.pem"/>
        </sslContext>
        <transportConnectors>
            <transportConnector name="mqtts" uri="mqtt+ssl://127.0.0.1:0"/>
        </transportConnectors>"#
}

fn write_pair(dir: &Path) -> rcgen::CertifiedKey {
    let pair = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("certificate");
    std::fs::write(dir.join("cert.pem"), pair.cert.pem()).expect("write");
    std::fs::write(dir.join("key.pem"), pair.key_pair.serialize_pem()).expect("write");
    pair
}

/// `check` exits 1 naming `line` of the config and `needle`; `run` exits 1 with the same
/// located error, before serving.
fn both_fail(dir: &Path, config: &str, line: u32, needle: &str) {
    let located = format!("{config}:{line}:");
    let check = ferromq(&["check", config], dir);
    assert_eq!(check.status.code(), Some(1), "{}", text(&check));
    let check_text = text(&check);
    assert!(
        check_text.contains(&located) && check_text.contains(needle),
        "check: {check_text}"
    );
    let json = ferromq(&["check", "--format", "json", config], dir);
    assert_eq!(json.status.code(), Some(1));
    assert!(text(&json).contains(needle), "json: {}", text(&json));
    let run = ferromq(&["run", "-c", config], dir);
    assert_eq!(run.status.code(), Some(1), "{}", text(&run));
    let run_text = text(&run);
    assert!(
        run_text.contains(&located) && run_text.contains(needle),
        "run: {run_text}"
    );
}

fn both_pass(dir: &Path, config: &str) {
    let check = ferromq(&["check", config], dir);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
    let bind = ferromq(&["check", "--bind", config], dir);
    assert_eq!(bind.status.code(), Some(0), "{}", text(&bind));
    let run = ferromq(&["run", "-c", config], dir);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
}

#[test]
fn valid_tls_config_passes_check_and_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_pair(dir.path());
    let config = write_config(dir.path(), "data", tls_body());
    both_pass(dir.path(), &config);
}

#[test]
fn check_creates_no_store_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "data", "");
    let check = ferromq(&["check", &config], dir.path());
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
    assert!(!dir.path().join("data").exists(), "check created the store");
    // Nor leaves the directory it made to see that one can be made there.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".ferromq-check")
        })
        .collect();
    assert!(left.is_empty(), "check left {left:?}");
}

/// `/proc` passes `access(2)`'s write check for root, but no directory can be made there:
/// `run` fails to create the store, so `check` must fail too.
#[test]
fn store_directory_where_no_directory_can_be_made_fails_check_and_run() {
    if !Path::new("/proc/self").exists() {
        eprintln!("skipped: no /proc on this machine");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "/proc/ferromq-store", "");
    both_fail(dir.path(), &config, 2, "cannot be created");
}

#[test]
fn mismatched_key_and_certificate_fail_check_and_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_pair(dir.path());
    let other = rcgen::KeyPair::generate().expect("key");
    std::fs::write(dir.path().join("key.pem"), other.serialize_pem()).expect("write");
    let config = write_config(dir.path(), "data", tls_body());
    // located at the keyStore attribute (line 4), the material the error is about
    both_fail(
        dir.path(),
        &config,
        4,
        "cannot set up TLS for connector `mqtts`",
    );
}

#[test]
fn unreadable_key_file_fails_check_and_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_pair(dir.path());
    // A directory where the key should be: unreadable even for root.
    std::fs::remove_file(dir.path().join("key.pem")).expect("rm");
    std::fs::create_dir(dir.path().join("key.pem")).expect("mkdir");
    let config = write_config(dir.path(), "data", tls_body());
    let check = ferromq(&["check", &config], dir.path());
    assert_eq!(check.status.code(), Some(1), "{}", text(&check));
    assert!(text(&check).contains("key.pem"), "{}", text(&check));
    let run = ferromq(&["run", "-c", &config], dir.path());
    assert_eq!(run.status.code(), Some(1), "{}", text(&run));
    assert!(text(&run).contains("key.pem"), "{}", text(&run));
}

#[test]
fn broken_login_module_credentials_fail_check_and_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("login.config"),
        r#"activemq {
    org.apache.activemq.jaas.PropertiesLoginModule required
        org.apache.activemq.jaas.properties.user="users.properties"
        org.apache.activemq.jaas.properties.group="groups.properties";
};
"#,
    )
    .expect("write");
    std::fs::write(
        dir.path().join("users.properties"),
        "alice=SCRAM-SHA-256:not-a-credential\n",
    )
    .expect("write");
    std::fs::write(dir.path().join("groups.properties"), "users=alice\n").expect("write");
    let body = r#"        <plugins>
            <jaasAuthenticationPlugin configuration="activemq"/>
        </plugins>"#;
    let config = write_config(dir.path(), "data", body);
    both_fail(dir.path(), &config, 4, "cannot set up security");
}

#[test]
fn store_directory_under_a_file_fails_check_and_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("plain-file"), "x").expect("write");
    let config = write_config(dir.path(), "plain-file/data", "");
    both_fail(dir.path(), &config, 2, "is a file, not a directory");
}

/// A store under a link to nothing (`data -> /missing`): `run` cannot create it ("File
/// exists"), so `check` says so too, naming the link.
#[test]
fn store_directory_under_a_dangling_link_fails_check_and_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink(dir.path().join("missing"), dir.path().join("data"))
        .expect("symlink");
    let config = write_config(dir.path(), "data/store", "");
    both_fail(dir.path(), &config, 2, "which does not exist");
}

/// A store whose lock another process holds (a running broker): `run` would fail to open it,
/// so `check` says so too, with the holder's pid, and passes again once it is released.
#[test]
fn a_store_held_by_another_process_fails_check_and_run() {
    if !Path::new("/proc/locks").exists() {
        eprintln!("skipped: no /proc/locks on this machine");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "data", "");
    let store = dir.path().join("data").join("localhost").join("KahaDB");
    std::fs::create_dir_all(&store).expect("mkdir");
    // This test process stands for the running broker: the same lock on the same file.
    let lock = std::fs::File::create(store.join("ferromq.lock")).expect("lock file");
    lock.try_lock().expect("take the lock");
    std::fs::write(
        store.join("ferromq.lock"),
        format!("{}\n", std::process::id()),
    )
    .expect("write pid");
    both_fail(
        dir.path(),
        &config,
        2,
        &format!(
            "is already in use by another broker (pid {})",
            std::process::id()
        ),
    );
    drop(lock);
    both_pass(dir.path(), &config);
}

/// A running broker whose lock file was deleted still holds its database (redb's own flock):
/// `run` cannot open it, so `check` finds the holder there too.
#[test]
fn a_store_whose_lock_file_was_deleted_is_still_found_held() {
    if !Path::new("/proc/locks").exists() {
        eprintln!("skipped: no /proc/locks on this machine");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "data", "");
    let store = dir.path().join("data").join("localhost").join("KahaDB");
    std::fs::create_dir_all(&store).expect("mkdir");
    // This test process stands for the broker: the database open, no lock file.
    let open = redb::Database::create(store.join("ferromq.redb")).expect("open the store");
    let check = ferromq(&["check", &config], dir.path());
    assert_eq!(check.status.code(), Some(1), "{}", text(&check));
    assert!(
        text(&check).contains("is already in use by another broker"),
        "{}",
        text(&check)
    );
    let run = ferromq(&["run", "-c", &config], dir.path());
    assert_eq!(run.status.code(), Some(1), "{}", text(&run));
    drop(open);
    std::fs::remove_file(store.join("ferromq.lock")).ok();
    both_pass(dir.path(), &config);
}

/// Store files `run` cannot open: a lock file that is a directory.
#[test]
fn a_lock_file_that_is_a_directory_fails_check_and_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "data", "");
    let store = dir.path().join("data").join("localhost").join("KahaDB");
    std::fs::create_dir_all(store.join("ferromq.lock")).expect("mkdir");
    both_fail(dir.path(), &config, 2, "ferromq.lock is not a regular file");
}

/// A store file that is not a store (overwritten, or another program's file in its place):
/// `run` cannot open it, so `check` says so from its first bytes, without opening it.
#[test]
fn a_store_file_that_is_not_a_store_fails_check_and_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "data", "");
    let store = dir.path().join("data").join("localhost").join("KahaDB");
    std::fs::create_dir_all(&store).expect("mkdir");
    std::fs::write(store.join("ferromq.redb"), "junk\n").expect("write");
    both_fail(dir.path(), &config, 2, "is not a ferromq store");
    // An empty file is where the broker makes a new store.
    std::fs::write(store.join("ferromq.redb"), "").expect("write");
    both_pass(dir.path(), &config);
}

const JDBC: &str = r##"        <persistenceAdapter>
            <jdbcPersistenceAdapter dataSource="#postgres"/>
        </persistenceAdapter>"##;

#[test]
fn jdbc_store_is_refused_by_check_and_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "data", JDBC);
    both_fail(dir.path(), &config, 4, "split brain");
}

#[test]
fn shared_file_locker_is_refused_by_check_and_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let body = r##"        <persistenceAdapter>
            <kahaDB directory="kaha">
                <locker><shared-file-locker lockAcquireSleepInterval="10000"/></locker>
            </kahaDB>
        </persistenceAdapter>"##;
    let config = write_config(dir.path(), "data", body);
    both_fail(
        dir.path(),
        &config,
        4,
        "<kahaDB> configures a store shared between brokers",
    );
}

#[test]
fn local_store_flag_runs_jdbc_locally_with_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "data", JDBC);
    let check = ferromq(&["check", "--local-store", &config], dir.path());
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
    assert!(
        text(&check).contains("warning: <jdbcPersistenceAdapter> configures a store shared"),
        "{}",
        text(&check)
    );
    let denied = ferromq(
        &["check", "--local-store", "--deny-warnings", &config],
        dir.path(),
    );
    assert_eq!(denied.status.code(), Some(1));
    let run = ferromq(&["run", "--local-store", "-c", &config], dir.path());
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    assert!(text(&run).contains("own local store"), "{}", text(&run));
}

#[test]
fn local_store_attribute_runs_jdbc_locally_with_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let body = r##"        <persistenceAdapter>
            <jdbcPersistenceAdapter dataSource="#postgres" ferromq:localStore="true"/>
        </persistenceAdapter>"##;
    let config = write_config(dir.path(), "data", body);
    let check = ferromq(&["check", &config], dir.path());
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
    assert!(text(&check).contains("own local store"), "{}", text(&check));
    let run = ferromq(&["run", "-c", &config], dir.path());
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
}

#[test]
fn check_bind_reports_a_port_in_use_at_its_connector() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Below the ephemeral range: once released, no outgoing connection of another test can
    // take the port before the last check binds it again.
    let port = crate::support::free_port();
    let held = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind");
    let xml = format!(
        r#"<beans xmlns="http://www.springframework.org/schema/beans">
    <broker xmlns="http://activemq.apache.org/schema/core" persistent="false">
        <transportConnectors>
            <transportConnector name="mqtt" uri="mqtt://127.0.0.1:{port}"/>
        </transportConnectors>
    </broker>
</beans>
"#
    );
    let path = dir.path().join("activemq.xml");
    std::fs::write(&path, xml).expect("write");
    let config = path.display().to_string();
    let plain = ferromq(&["check", &config], dir.path());
    assert_eq!(plain.status.code(), Some(0), "{}", text(&plain));
    let bind = ferromq(&["check", "--bind", &config], dir.path());
    assert_eq!(bind.status.code(), Some(1), "{}", text(&bind));
    let bind_text = text(&bind);
    assert!(
        bind_text.contains(&format!(
            "{config}:4:13: error: cannot listen on 127.0.0.1:{port}"
        )),
        "{bind_text}"
    );
    assert_eq!(bind_text.matches(&config).count(), 1, "{bind_text}");
    assert!(
        bind_text.contains("something already listens on"),
        "{bind_text}"
    );
    drop(held);
    let free = ferromq(&["check", "--bind", &config], dir.path());
    assert_eq!(free.status.code(), Some(0), "{}", text(&free));
}

#[test]
fn a_connector_host_that_does_not_resolve_fails_check_and_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        "data",
        r#"        <transportConnectors>
            <transportConnector name="far" uri="mqtt://doesnotexist.invalid:21883"/>
        </transportConnectors>"#,
    );
    both_fail(
        dir.path(),
        &config,
        4,
        "host `doesnotexist.invalid` of connector `far` (mqtt://doesnotexist.invalid:21883) does not resolve",
    );
}

#[test]
fn check_bind_says_an_address_is_not_of_this_machine_once_located() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        "data",
        r#"        <transportConnectors>
            <transportConnector name="remote" uri="mqtt://10.255.255.1:0"/>
        </transportConnectors>"#,
    );
    let plain = ferromq(&["check", &config], dir.path());
    assert_eq!(plain.status.code(), Some(0), "{}", text(&plain));
    let bind = ferromq(&["check", "--bind", &config], dir.path());
    assert_eq!(bind.status.code(), Some(1), "{}", text(&bind));
    let bind_text = text(&bind);
    assert!(
        bind_text.contains(&format!(
            "{config}:4:13: error: cannot listen on 10.255.255.1:0"
        )),
        "{bind_text}"
    );
    assert_eq!(bind_text.matches(&config).count(), 1, "{bind_text}");
    assert!(
        bind_text.contains("10.255.255.1 is not an address of this machine"),
        "{bind_text}"
    );
}

#[test]
fn a_file_nested_twenty_thousand_deep_is_an_error_not_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let deep = format!(
        "<beans>\n{}{}</beans>\n",
        "<bean>".repeat(20_000),
        "</bean>".repeat(20_000)
    );
    let path = dir.path().join("deep.xml");
    std::fs::write(&path, deep).expect("write");
    let config = path.display().to_string();
    for args in [vec!["check", &config], vec!["run", "-c", &config]] {
        let out = ferromq(&args, dir.path());
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        assert!(
            text(&out).contains(&format!(
                "{config}:2:1531: error: `<bean>` is nested deeper than 256"
            )),
            "{args:?}: {}",
            text(&out)
        );
    }
}

/// `-D activemq.data=' '` (or `ACTIVEMQ_DATA=' '`) is an empty data directory, as
/// `dataDirectory="  "` in the file is: refused by both commands at the attribute that uses it,
/// and no directory named " " is made.
#[test]
fn a_blank_data_directory_from_the_command_line_or_environment_fails_check_and_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let xml = r#"<beans xmlns="http://www.springframework.org/schema/beans">
    <bean class="org.springframework.beans.factory.config.PropertyPlaceholderConfigurer"/>
    <broker xmlns="http://activemq.apache.org/schema/core" start="false" dataDirectory="${activemq.data}">
        <persistenceAdapter><kahaDB directory="${activemq.data}/kahadb"/></persistenceAdapter>
        <transportConnectors>
            <transportConnector name="mqtt" uri="mqtt://127.0.0.1:0"/>
        </transportConnectors>
    </broker>
</beans>
"#;
    let path = dir.path().join("activemq.xml");
    std::fs::write(&path, xml).expect("write");
    let config = path.display().to_string();
    let located = format!("{config}:3:");
    for (command, by_env) in [
        (
            vec!["check", "-D", "activemq.data= ", config.as_str()],
            false,
        ),
        (
            vec!["run", "-c", config.as_str(), "-D", "activemq.data= "],
            false,
        ),
        (vec!["check", config.as_str()], true),
        (vec!["run", "-c", config.as_str()], true),
    ] {
        let mut run = Command::new(env!("CARGO_BIN_EXE_ferromq"));
        run.current_dir(dir.path()).args(&command);
        for var in [
            "ACTIVEMQ_BASE",
            "ACTIVEMQ_CONF",
            "ACTIVEMQ_HOME",
            "RUST_LOG",
        ] {
            run.env_remove(var);
        }
        if by_env {
            run.env("ACTIVEMQ_DATA", "  ");
        } else {
            run.env_remove("ACTIVEMQ_DATA");
        }
        let out = run.output().expect("run ferromq");
        let said = text(&out);
        assert_eq!(out.status.code(), Some(1), "{command:?}: {said}");
        assert!(
            said.contains(&located) && said.contains("dataDirectory is empty"),
            "{command:?}: {said}"
        );
        let made: Vec<_> = std::fs::read_dir(dir.path())
            .expect("read dir")
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .filter(|name| name.to_string_lossy().trim().is_empty())
            .collect();
        assert!(made.is_empty(), "{command:?} made {made:?}");
    }
}

/// A console realm whose users all lack the roles the console knows: nobody could use the
/// console. Both `check` and `run`'s start say so (a warning: the broker starts).
#[test]
fn a_console_realm_without_console_roles_is_warned_by_check_and_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("jetty-realm.properties"),
        "bob: pw, guest\n",
    )
    .expect("write");
    let config = write_config(
        dir.path(),
        "data",
        r#"        <ferromq:console port="0" realm="jetty-realm.properties"/>"#,
    );
    let warning = "warning: no user of the console realm file";
    let roles = "has the role `admin` or `user` (only guest): nobody can use the web console";
    let check = ferromq(&["check", &config], dir.path());
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
    let said = text(&check);
    assert!(
        said.contains(&format!("{config}:3:")) && said.contains(warning) && said.contains(roles),
        "{said}"
    );
    let denied = ferromq(&["check", "--deny-warnings", &config], dir.path());
    assert_eq!(denied.status.code(), Some(1), "{}", text(&denied));
    let run = ferromq(&["run", "-c", &config], dir.path());
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    assert!(
        text(&run).contains(warning) && text(&run).contains(roles),
        "{}",
        text(&run)
    );
    std::fs::write(
        dir.path().join("jetty-realm.properties"),
        "bob: pw, guest\nalice: pw, user\n",
    )
    .expect("write");
    let fixed = ferromq(&["check", "--deny-warnings", &config], dir.path());
    assert_eq!(fixed.status.code(), Some(0), "{}", text(&fixed));
}

/// `check --console HOST:PORT` checks the console `run --console HOST:PORT` serves: refused
/// by both without users or on a connector's port, accepted by both with a realm's users.
#[test]
fn check_console_validates_what_run_console_serves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        "data",
        r#"        <transportConnectors>
            <transportConnector name="fixed" uri="mqtt://127.0.0.1:27555"/>
        </transportConnectors>"#,
    );
    let both = |console: &str, code: i32, needle: &str| {
        for args in [
            vec!["check", "--console", console, config.as_str()],
            vec![
                "check",
                "--format",
                "json",
                "--console",
                console,
                config.as_str(),
            ],
            vec!["run", "--console", console, "-c", config.as_str()],
        ] {
            let out = ferromq(&args, dir.path());
            assert_eq!(out.status.code(), Some(code), "{args:?}: {}", text(&out));
            assert!(text(&out).contains(needle), "{args:?}: {}", text(&out));
        }
    };
    // The file names no realm: a console placed by --console has no users.
    both(
        "127.0.0.1:27556",
        1,
        "the web console at 127.0.0.1:27556 (from --console) has no users",
    );
    let plain = ferromq(&["check", &config], dir.path());
    assert_eq!(plain.status.code(), Some(0), "{}", text(&plain));

    std::fs::write(
        dir.path().join("jetty-realm.properties"),
        "admin: pw, admin\n",
    )
    .expect("write");
    let config = write_config(
        dir.path(),
        "data",
        r#"        <ferromq:console port="0" realm="jetty-realm.properties"/>
        <transportConnectors>
            <transportConnector name="fixed" uri="mqtt://127.0.0.1:27555"/>
        </transportConnectors>"#,
    );
    let both = |console: &str, code: i32, needle: &str| {
        for args in [
            vec!["check", "--console", console, config.as_str()],
            vec!["run", "--console", console, "-c", config.as_str()],
        ] {
            let out = ferromq(&args, dir.path());
            assert_eq!(out.status.code(), Some(code), "{args:?}: {}", text(&out));
            assert!(text(&out).contains(needle), "{args:?}: {}", text(&out));
        }
    };
    both(
        "localhost:27555",
        1,
        "the web console listens on localhost:27555, which clashes with connector `fixed`",
    );
    both("127.0.0.1:27556", 0, "");
    let shown = ferromq(
        &["check", "--console", "127.0.0.1:27556", &config],
        dir.path(),
    );
    assert!(
        text(&shown).contains("web console: http://127.0.0.1:27556 from --console"),
        "{}",
        text(&shown)
    );
}

/// A config whose data directory and kahaDB directory are written as `data` and `kaha`.
fn write_kaha_config(dir: &Path, data_directory: &str, kaha_directory: &str) -> String {
    let xml = format!(
        r#"<beans xmlns="http://www.springframework.org/schema/beans">
    <bean class="org.springframework.beans.factory.config.PropertyPlaceholderConfigurer"/>
    <broker xmlns="http://activemq.apache.org/schema/core" start="false"{data_directory}>
        <persistenceAdapter><kahaDB directory="{kaha_directory}"/></persistenceAdapter>
        <transportConnectors>
            <transportConnector name="mqtt" uri="mqtt://127.0.0.1:0"/>
        </transportConnectors>
    </broker>
</beans>
"#
    );
    let path = dir.join("activemq.xml");
    std::fs::write(&path, xml).expect("write config");
    path.display().to_string()
}

/// `ferromq ARGS` with `ACTIVEMQ_DATA` set to `data` (or unset).
fn ferromq_with_data(args: &[&str], dir: &Path, data: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferromq"));
    command.current_dir(dir).args(args);
    for var in [
        "ACTIVEMQ_BASE",
        "ACTIVEMQ_CONF",
        "ACTIVEMQ_DATA",
        "ACTIVEMQ_HOME",
        "RUST_LOG",
    ] {
        command.env_remove(var);
    }
    if let Some(data) = data {
        command.env("ACTIVEMQ_DATA", data);
    }
    command.output().expect("run ferromq")
}

/// `<kahaDB directory="${activemq.data}/kahadb">` without a `dataDirectory`: a blank
/// `activemq.data` (`-D`, empty or spaces, or `ACTIVEMQ_DATA`) would make the store `/kahadb`.
/// Both commands refuse it at the attribute's value, naming the placeholder.
#[test]
fn a_blank_data_placeholder_in_the_kahadb_directory_fails_check_and_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_kaha_config(dir.path(), "", "${activemq.data}/kahadb");
    // Line 4, the value of `directory`.
    let located = format!("{config}:4:");
    let needle = "the kahaDB directory `${activemq.data}/kahadb` starts with ${activemq.data}, \
                  which is blank: the path would become `/kahadb`";
    for (args, data) in [
        (
            vec!["check", "-D", "activemq.data= ", config.as_str()],
            None,
        ),
        (vec!["check", "-D", "activemq.data=", config.as_str()], None),
        (
            vec!["run", "-c", config.as_str(), "-D", "activemq.data="],
            None,
        ),
        (vec!["check", config.as_str()], Some("  ")),
        (vec!["run", "-c", config.as_str()], Some(" ")),
        (
            vec!["check", "--format", "json", config.as_str()],
            Some(" "),
        ),
    ] {
        let out = ferromq_with_data(&args, dir.path(), data);
        let said = text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {said}");
        assert!(said.contains(needle), "{args:?}: {said}");
        if !args.contains(&"json") {
            assert!(said.contains(&located), "{args:?}: {said}");
            assert!(said.contains("-D activemq.data=DIR"), "{args:?}: {said}");
        }
    }
    // Given a directory, both pass and the store is made there.
    let data = dir.path().join("data").display().to_string();
    let given = format!("activemq.data={data}");
    let check = ferromq_with_data(&["check", "-D", &given, &config], dir.path(), None);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
    let run = ferromq_with_data(&["run", "-c", &config, "-D", &given], dir.path(), None);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
}

/// A `..` after a directory that does not exist yet: the kernel resolves it physically once
/// that directory is made, so `zz/../afile/sub` lies under the file `afile` and `run` cannot
/// make it. `check` judges the path the same way, and neither command leaves `zz` behind.
#[test]
fn a_parent_step_after_a_missing_directory_is_judged_as_run_resolves_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("afile"), "x").expect("write");
    let base = dir.path().display().to_string();
    let config = write_kaha_config(dir.path(), "", "${activemq.data}/kahadb");
    let bad = format!("activemq.data={base}/zz/../afile/sub");
    let needle = format!("{base}/afile is a file, not a directory");
    for args in [
        vec!["check", "-D", bad.as_str(), config.as_str()],
        vec!["run", "-c", config.as_str(), "-D", bad.as_str()],
    ] {
        let out = ferromq_with_data(&args, dir.path(), None);
        let said = text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {said}");
        assert!(
            said.contains(&format!("{config}:4:")) && said.contains(&needle),
            "{args:?}: {said}"
        );
        assert!(!dir.path().join("zz").exists(), "{args:?} left zz behind");
    }
    // The same detour to a good place: both pass, the store is made where the kernel puts
    // it, and `zz` is not made on the way (a broker that serves: one with start="false" opens
    // no store).
    let good = format!("activemq.data={base}/zz/../data");
    let check = ferromq_with_data(&["check", "-D", &good, &config], dir.path(), None);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
    std::fs::write(
        &config,
        std::fs::read_to_string(&config)
            .expect("read")
            .replace(r#" start="false""#, ""),
    )
    .expect("write");
    let mut broker = Command::new(env!("CARGO_BIN_EXE_ferromq"))
        .current_dir(dir.path())
        .args(["run", "-c", &config, "-D", &good])
        .env_remove("ACTIVEMQ_DATA")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the broker");
    let store = dir.path().join("data/kahadb/ferromq.redb");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !store.is_file() && std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = broker.try_wait() {
            panic!("the broker ended: {status}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    broker.kill().expect("stop the broker");
    broker.wait().expect("reap the broker");
    assert!(store.is_file(), "no store at {}", store.display());
    assert!(!dir.path().join("zz").exists(), "run left zz behind");
}

/// A store file cut short after a valid header (a partial copy): `run` cannot open it, and
/// `check` says so from the header and the file's length, without opening the store.
#[test]
fn a_store_file_cut_short_fails_check_and_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "data", "");
    let store = dir.path().join("data").join("localhost").join("KahaDB");
    std::fs::create_dir_all(&store).expect("mkdir");
    let file = store.join("ferromq.redb");
    // A database of a few regions, closed.
    {
        const TABLE: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("t");
        let db = redb::Database::create(&file).expect("create the store");
        let txn = db.begin_write().expect("write");
        {
            let mut table = txn.open_table(TABLE).expect("table");
            for i in 0..32u64 {
                table.insert(i, &[7u8; 40_000][..]).expect("insert");
            }
        }
        txn.commit().expect("commit");
    }
    let whole = std::fs::read(&file).expect("read the store");
    assert!(whole.len() > 3 * 4096, "{} bytes", whole.len());
    std::fs::write(&file, &whole[..whole.len() / 2 + 100]).expect("cut");
    both_fail(dir.path(), &config, 2, "is damaged: it is");
    let check = ferromq(&["check", &config], dir.path());
    assert!(
        text(&check).contains("hint: put a good copy of the file back"),
        "{}",
        text(&check)
    );
    std::fs::write(&file, &whole).expect("restore");
    both_pass(dir.path(), &config);
}

/// A store on a full filesystem: `run` cannot write its pid in the lock file ("No space left
/// on device"), so `check` says so from `statvfs`, at the store, before `run` makes anything.
/// With two free blocks (a new store's least, measured on tmpfs) both start.
#[test]
fn a_store_on_a_full_filesystem_fails_check_and_run() {
    let Some(fs) = crate::support::tmpfs::SmallFs::mount(64) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let store = fs.path().join("data");
    let config = write_config(dir.path(), &store.display().to_string(), "");
    fs.fill("filler", 64 * 1024);
    both_fail(
        dir.path(),
        &config,
        2,
        "bytes free for this user: the broker needs at least 8192 there to write its pid",
    );
    assert!(!store.exists(), "a refused run made the store directory");
    fs.remove("filler");
    fs.fill("filler", 64 * 1024 - 8 * 1024);
    both_pass(dir.path(), &config);
}

/// A store file that is a link into a directory that does not exist: `run` fails to open it
/// ("No such file or directory"), so `check` says so; a link to a file it can make is fine.
#[test]
fn a_store_file_linked_into_a_missing_directory_fails_check_and_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "data", "");
    let store = dir.path().join("data").join("localhost").join("KahaDB");
    std::fs::create_dir_all(&store).expect("mkdir");
    let missing = dir.path().join("gone").join("ferromq.redb");
    std::os::unix::fs::symlink(&missing, store.join("ferromq.redb")).expect("symlink");
    both_fail(
        dir.path(),
        &config,
        2,
        &format!(
            "is a link to {}, whose directory does not exist",
            missing.display()
        ),
    );
    std::fs::create_dir(dir.path().join("gone")).expect("mkdir");
    both_pass(dir.path(), &config);
}

/// A store `check` cannot judge without opening it (a copy of a running store, cut at a page
/// boundary: redb rebuilds such a file from its trees): `run` fails at open, and says so at
/// the store's place in the file, as for the errors `check` finds.
#[test]
fn a_store_that_fails_at_open_is_reported_at_its_place_in_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "data", "");
    std::fs::write(
        &config,
        std::fs::read_to_string(&config)
            .expect("read")
            .replace(r#" start="false""#, ""),
    )
    .expect("write");
    let store = dir.path().join("data").join("localhost").join("KahaDB");
    std::fs::create_dir_all(&store).expect("mkdir");
    let file = store.join("ferromq.redb");
    let copy_while_open = {
        const TABLE: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("t");
        let db = redb::Database::create(&file).expect("create the store");
        let txn = db.begin_write().expect("write");
        {
            let mut table = txn.open_table(TABLE).expect("table");
            for i in 0..32u64 {
                table.insert(i, &[7u8; 40_000][..]).expect("insert");
            }
        }
        txn.commit().expect("commit");
        std::fs::read(&file).expect("read the open store")
    };
    std::fs::write(&file, &copy_while_open[..4 * 4096]).expect("cut");
    let run = ferromq(&["run", "-c", &config], dir.path());
    let said = text(&run);
    assert_eq!(run.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!("{config}:2:"))
            && said.contains("error: cannot open the durable store"),
        "{said}"
    );
    assert!(said.contains("could not be started"), "{said}");
}
