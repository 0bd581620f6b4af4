//! jasypt `ENC(...)` values: ferromq and jasypt itself (Debian's libjasypt-java run with `java`)
//! decrypt each other's output, and a broker whose users come from an
//! EncryptablePropertyPlaceholderConfigurer's properties file lets the user log in.

use std::path::Path;
use std::process::Command;

use ferromq::broker;
use ferromq::config::jasypt::{self, Algorithm};
use rumqttc::MqttOptions;

use crate::support::security::write;
use crate::support::xml::load_file;
use crate::support::Client;

const JASYPT_JAR: &str = "/usr/share/java/jasypt.jar";

/// The jasypt jar and a `java` to run it, or `None` with the reason the test is skipped.
pub(crate) fn jasypt_cli() -> Option<()> {
    let java = Command::new("java").arg("-version").output();
    if !Path::new(JASYPT_JAR).exists() || !java.is_ok_and(|o| o.status.success()) {
        eprintln!(
            "SKIPPED: needs `java` and {JASYPT_JAR} (apt-get install default-jre-headless libjasypt-java)"
        );
        return None;
    }
    Some(())
}

/// Run one of jasypt's CLI classes and return its output value (the line after `----OUTPUT`).
pub(crate) fn run_jasypt(class: &str, input: &str, password: &str, algorithm: Algorithm) -> String {
    let mut command = Command::new("java");
    command
        .args(["-cp", JASYPT_JAR, &format!("org.jasypt.intf.cli.{class}")])
        .arg(format!("input={input}"))
        .arg(format!("password={password}"))
        .arg(format!("algorithm={}", algorithm.name()));
    if algorithm == Algorithm::PbeWithHmacSha512AndAes256 {
        command.arg("ivGeneratorClassName=org.jasypt.iv.RandomIvGenerator");
    }
    let output = command.output().expect("run java");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{class} failed: {stdout}");
    stdout
        .split("----OUTPUT----------------------")
        .nth(1)
        .map(|rest| rest.trim().to_owned())
        .unwrap_or_else(|| panic!("no output section in {stdout}"))
}

const ALGORITHMS: [Algorithm; 2] = [
    Algorithm::PbeWithMd5AndDes,
    Algorithm::PbeWithHmacSha512AndAes256,
];

#[test]
fn values_jasypt_encrypts_decrypt_in_ferromq() {
    if jasypt_cli().is_none() {
        return;
    }
    for algorithm in ALGORITHMS {
        let encrypted = run_jasypt(
            "JasyptPBEStringEncryptionCLI",
            "s3cr3t-Pw_1",
            "activemq",
            algorithm,
        );
        assert_eq!(
            jasypt::decrypt(algorithm, "activemq", &encrypted).as_deref(),
            Ok("s3cr3t-Pw_1"),
            "{} value {encrypted}",
            algorithm.name()
        );
        assert!(jasypt::decrypt(algorithm, "wrong", &encrypted).is_err());
    }
}

#[test]
fn values_ferromq_encrypts_decrypt_in_jasypt() {
    if jasypt_cli().is_none() {
        return;
    }
    for algorithm in ALGORITHMS {
        let encrypted = jasypt::encrypt(algorithm, "activemq", "s3cr3t-Pw_1").expect("encrypt");
        assert_eq!(
            run_jasypt(
                "JasyptPBEStringDecryptionCLI",
                &encrypted,
                "activemq",
                algorithm
            ),
            "s3cr3t-Pw_1",
            "{} value {encrypted}",
            algorithm.name()
        );
    }
}

/// ActiveMQ's activemq-security.xml, with a password variable of this test's own (tests of one
/// binary share the process environment).
fn encrypted_config(dir: &Path, algorithm: &str, env_name: &str) -> std::path::PathBuf {
    write(
        dir,
        "activemq.xml",
        &format!(
            r#"<beans xmlns="http://www.springframework.org/schema/beans">
  <bean id="environmentVariablesConfiguration" class="org.jasypt.encryption.pbe.config.EnvironmentStringPBEConfig">
    <property name="algorithm" value="{algorithm}"/>
    <property name="passwordEnvName" value="{env_name}"/>
  </bean>
  <bean id="configurationEncryptor" class="org.jasypt.encryption.pbe.StandardPBEStringEncryptor">
    <property name="config" ref="environmentVariablesConfiguration"/>
  </bean>
  <bean id="propertyConfigurer" class="org.jasypt.spring31.properties.EncryptablePropertyPlaceholderConfigurer">
    <constructor-arg ref="configurationEncryptor"/>
    <property name="location" value="file:{dir}/credentials-enc.properties"/>
  </bean>
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="test" persistent="false">
    <plugins>
      <simpleAuthenticationPlugin>
        <users>
          <authenticationUser username="system" password="${{activemq.password}}" groups="admins"/>
        </users>
      </simpleAuthenticationPlugin>
    </plugins>
    <transportConnectors>
      <transportConnector name="mqtt" uri="mqtt://127.0.0.1:0"/>
    </transportConnectors>
  </broker>
</beans>
"#,
            dir = dir.display()
        ),
    )
}

#[tokio::test]
async fn encrypted_credentials_properties_log_the_user_in() {
    for (algorithm, env_name) in [
        (Algorithm::PbeWithMd5AndDes, "FERROMQ_TEST_JASYPT_MD5_DES"),
        (
            Algorithm::PbeWithHmacSha512AndAes256,
            "FERROMQ_TEST_JASYPT_AES_256",
        ),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let encrypted = jasypt::encrypt(algorithm, "master-key", "manager").expect("encrypt");
        write(
            dir.path(),
            "credentials-enc.properties",
            &format!("activemq.username=system\nactivemq.password=ENC({encrypted})\n"),
        );
        let path = encrypted_config(dir.path(), algorithm.name(), env_name);
        std::env::set_var(env_name, "master-key");
        let config = load_file(&path);
        let handle = broker::start(config).await.expect("broker starts");
        let port = handle.listener_addrs()[0].1.port();

        let mut options = MqttOptions::new("enc", "127.0.0.1", port);
        options.set_credentials("system", "manager");
        assert!(
            Client::try_connect_with(options).await.is_ok(),
            "{} login",
            algorithm.name()
        );
        let mut options = MqttOptions::new("enc-wrong", "127.0.0.1", port);
        options.set_credentials("system", format!("ENC({encrypted})"));
        assert!(Client::try_connect_with(options).await.is_err());
        handle.shutdown().await;
    }
}

#[test]
fn a_wrong_password_is_a_located_error_naming_the_variable() {
    let dir = tempfile::tempdir().expect("tempdir");
    // `activemq encrypt --password activemq --input mypassword`: a fixed value, so that the
    // wrong password below fails the padding check on every run.
    write(
        dir.path(),
        "credentials-enc.properties",
        "activemq.password=ENC(eeWjNyX6FY8Fjp3E+F6qTytV11bZItDp)\n",
    );
    let env_name = "FERROMQ_TEST_JASYPT_WRONG";
    let path = encrypted_config(dir.path(), "PBEWithMD5AndDES", env_name);
    std::env::set_var(env_name, "wrong");
    let loaded = ferromq::config::load_file(&path, &crate::support::xml::no_env());
    let text = loaded.diagnostics.to_string();
    assert!(loaded.into_result().is_err());
    assert!(text.contains("activemq.xml:17:"), "{text}");
    assert!(text.contains("cannot decrypt"), "{text}");
    assert!(text.contains(env_name), "{text}");
    assert!(
        !text.contains("mypassword"),
        "the clear value leaked: {text}"
    );

    let unset = "FERROMQ_TEST_JASYPT_UNSET";
    let path = encrypted_config(dir.path(), "PBEWithMD5AndDES", unset);
    let loaded = ferromq::config::load_file(&path, &crate::support::xml::no_env());
    let text = loaded.diagnostics.to_string();
    assert!(
        text.contains(&format!("environment variable `{unset}` is not set")),
        "{text}"
    );
}

/// `ferromq encrypt` / `ferromq decrypt` print what `activemq encrypt` / `activemq decrypt` do.
#[test]
fn encrypt_and_decrypt_commands_match_activemq_output() {
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_ferromq"))
            .args(args)
            .output()
            .expect("run ferromq");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    let (code, out) = run(&[
        "decrypt",
        "--password",
        "activemq",
        "--input",
        "eeWjNyX6FY8Fjp3E+F6qTytV11bZItDp",
    ]);
    assert_eq!(
        (code, out.as_str()),
        (Some(0), "Decrypted text: mypassword\n")
    );
    for algorithm in ALGORITHMS {
        let (code, out) = run(&[
            "encrypt",
            "--password",
            "pw",
            "--input",
            "clear",
            "--algorithm",
            algorithm.name(),
        ]);
        assert_eq!(code, Some(0));
        let value = out
            .strip_prefix("Encrypted text: ")
            .map(str::trim)
            .unwrap_or_else(|| panic!("unexpected output {out}"));
        let (code, out) = run(&[
            "decrypt",
            "--password",
            "pw",
            "--algorithm",
            algorithm.name(),
            "--input",
            &format!("ENC({value})"),
        ]);
        assert_eq!((code, out.as_str()), (Some(0), "Decrypted text: clear\n"));
    }
    let (code, out) = run(&[
        "decrypt",
        "--password",
        "wrong",
        "--input",
        "eeWjNyX6FY8Fjp3E+F6qTytV11bZItDp",
    ]);
    assert_eq!((code, out.as_str()), (Some(1), ""));
}
