//! PropertiesLoginModule with `decrypt=true` (ActiveMQ 5.17's `EncryptionSupport`): `ENC(...)`
//! passwords in users.properties are decrypted with jasypt and the password in
//! `ACTIVEMQ_ENCRYPTION_PASSWORD`; the clear password logs in over MQTT, the `ENC(...)` text
//! does not. A value that cannot be decrypted is a located error of `check`, never shown in
//! clear. Unknown options of the properties, guest and certificate modules are warned.
//!
//! The broker test is the only test of this binary that sets `ACTIVEMQ_ENCRYPTION_PASSWORD`
//! (the name is fixed by ActiveMQ); the error cases run `ferromq check` with their own
//! environment.

use std::path::Path;
use std::process::{Command, Output};

use ferromq::broker;
use ferromq::config::jasypt::Algorithm;
use rumqttc::MqttOptions;

use crate::jasypt::{jasypt_cli, run_jasypt};
use crate::support::security::write;
use crate::support::xml::load_file;
use crate::support::Client;

const ENV: &str = "ACTIVEMQ_ENCRYPTION_PASSWORD";
const MASTER: &str = "master-key";

/// `ferromq encrypt`, as an admin produces the values.
fn ferromq_encrypt(algorithm: Algorithm, password: &str, input: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_ferromq"))
        .args(["encrypt", "--password", password, "--input", input])
        .args(["--algorithm", algorithm.name()])
        .output()
        .expect("run ferromq encrypt");
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .trim()
        .strip_prefix("Encrypted text: ")
        .unwrap_or_else(|| panic!("unexpected encrypt output: {stdout}"))
        .to_owned()
}

/// activemq.xml with a JAAS plugin, login.config with the PropertiesLoginModule options
/// `module_options`, and `users` as users.properties. Returns activemq.xml's path.
fn installation(dir: &Path, module_options: &str, users: &str) -> std::path::PathBuf {
    write(dir, "users.properties", users);
    write(dir, "groups.properties", "admins=alice\n");
    write(
        dir,
        "login.config",
        &format!(
            r#"activemq {{
    org.apache.activemq.jaas.PropertiesLoginModule required
        org.apache.activemq.jaas.properties.user="users.properties"
        org.apache.activemq.jaas.properties.group="groups.properties"
        {module_options};
}};
"#
        ),
    );
    write(
        dir,
        "activemq.xml",
        r#"<beans xmlns="http://www.springframework.org/schema/beans">
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="dec" persistent="false">
    <plugins>
      <jaasAuthenticationPlugin configuration="activemq"/>
    </plugins>
    <transportConnectors>
      <transportConnector name="mqtt" uri="mqtt://127.0.0.1:0"/>
    </transportConnectors>
  </broker>
</beans>
"#,
    )
}

async fn logs_in(port: u16, user: &str, password: &str) -> bool {
    let mut options = MqttOptions::new(format!("dec-{user}"), "127.0.0.1", port);
    options.set_credentials(user, password);
    Client::try_connect_with(options).await.is_ok()
}

/// Wait until the users file's modification is visible as a change (length or mtime), so the
/// next CONNECT re-reads it: rewriting with a different length makes the change certain.
fn rewrite(path: &Path, text: &str) {
    let before = std::fs::read_to_string(path).unwrap_or_default();
    assert_ne!(
        before.len(),
        text.len(),
        "test rewrite must change the length"
    );
    std::fs::write(path, text).expect("rewrite");
}

#[tokio::test]
async fn enc_passwords_decrypt_and_the_enc_text_is_not_a_password() {
    std::env::set_var(ENV, MASTER);
    let jar = jasypt_cli().is_some();
    for algorithm in [
        Algorithm::PbeWithMd5AndDes,
        Algorithm::PbeWithHmacSha512AndAes256,
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let alice = ferromq_encrypt(algorithm, MASTER, "alice-pw");
        // bob's value comes from jasypt itself when it is installed.
        let bob = if jar {
            run_jasypt("JasyptPBEStringEncryptionCLI", "bob-pw", MASTER, algorithm)
        } else {
            ferromq_encrypt(algorithm, MASTER, "bob-pw")
        };
        let options = if algorithm == Algorithm::PbeWithMd5AndDes {
            // The default algorithm: no `algorithm=` option.
            "decrypt=true reload=true".to_owned()
        } else {
            format!("decrypt=true reload=true algorithm={}", algorithm.name())
        };
        let users = format!("alice=ENC({alice})\nbob=ENC({bob})\ncarol=plain-pw\n");
        let path = installation(dir.path(), &options, &users);
        let handle = broker::start(load_file(&path))
            .await
            .expect("broker starts");
        let port = handle.listener_addrs()[0].1.port();
        let name = algorithm.name();

        assert!(logs_in(port, "alice", "alice-pw").await, "{name}: alice");
        assert!(logs_in(port, "bob", "bob-pw").await, "{name}: bob (jasypt)");
        assert!(logs_in(port, "carol", "plain-pw").await, "{name}: plain");
        assert!(
            !logs_in(port, "alice", &format!("ENC({alice})")).await,
            "{name}: the ENC text must not log in"
        );
        assert!(!logs_in(port, "alice", &alice).await, "{name}: inner text");

        // reload=true re-reads and decrypts the edited file at the next CONNECT.
        let fresh = ferromq_encrypt(algorithm, MASTER, "alice-new-password");
        rewrite(
            &dir.path().join("users.properties"),
            &format!("alice=ENC({fresh})\nbob=ENC({bob})\n"),
        );
        assert!(
            logs_in(port, "alice", "alice-new-password").await,
            "{name}: reloaded"
        );
        assert!(!logs_in(port, "alice", "alice-pw").await, "{name}: old pw");
        assert!(!logs_in(port, "carol", "plain-pw").await, "{name}: removed");
        handle.shutdown().await;
    }
}

fn check(config: &Path, password: Option<&str>) -> (Option<i32>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferromq"));
    command.arg("check").arg(config).env_remove(ENV);
    if let Some(p) = password {
        command.env(ENV, p);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().expect("run ferromq check");
    (
        status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        ),
    )
}

#[test]
fn check_locates_values_that_do_not_decrypt_and_never_shows_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let enc = ferromq_encrypt(Algorithm::PbeWithMd5AndDes, MASTER, "alice-secret");
    let users = format!("carol=plain-pw\nalice=ENC({enc})\n");
    let path = installation(dir.path(), "decrypt=true", &users);
    let at_line_2 = format!("{}:2:", dir.path().join("users.properties").display());

    let (code, ok) = check(&path, Some(MASTER));
    assert_eq!(code, Some(0), "{ok}");

    for (password, says) in [
        (None, format!("`{ENV}` is not set")),
        (Some("wrong"), "cannot be decrypted".to_owned()),
    ] {
        let (code, out) = check(&path, password);
        assert_ne!(code, Some(0), "{out}");
        assert!(out.contains(&at_line_2), "{out}");
        assert!(out.contains(&says), "{out}");
        assert!(out.contains("`alice`"), "{out}");
        assert!(!out.contains("alice-secret"), "clear value leaked: {out}");
    }

    // An algorithm ferromq cannot run is an error at the option.
    let path = installation(
        dir.path(),
        "decrypt=true algorithm=PBEWithSHA1AndRC2",
        &users,
    );
    let (code, out) = check(&path, Some(MASTER));
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("login.config:5:"), "{out}");
    assert!(out.contains("PBEWithSHA1AndRC2"), "{out}");

    // ENC(...) without decrypt=true is taken literally (as ActiveMQ does): a warning says so.
    let path = installation(dir.path(), "reload=true", &users);
    let (code, out) = check(&path, None);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&at_line_2), "{out}");
    assert!(out.contains("does not say decrypt=true"), "{out}");
}

#[test]
fn unknown_login_module_options_are_warned_with_the_closest_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = installation(dir.path(), "relaod=true decrypt=true", "carol=pw\n");
    let (code, out) = check(&path, None);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("`relaod` is not an option of the PropertiesLoginModule"),
        "{out}"
    );
    assert!(out.contains("reload"), "{out}");
    assert!(!out.contains("`decrypt` is not an option"), "{out}");

    write(
        dir.path(),
        "login.config",
        r#"activemq {
    org.apache.activemq.jaas.GuestLoginModule optional
        org.apache.activemq.jaas.guest.usr=guest
        credentialsInvalidate=true;
};
"#,
    );
    let (code, out) = check(&path, None);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(
            "`org.apache.activemq.jaas.guest.usr` is not an option of the GuestLoginModule"
        ),
        "{out}"
    );
    assert!(out.contains("org.apache.activemq.jaas.guest.user"), "{out}");
}
