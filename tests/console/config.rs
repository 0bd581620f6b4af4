//! Enabling the console from ActiveMQ's jetty.xml, `check`'s report and errors, a reloaded
//! realm file, and `ferromq status`.

use std::process::Command;

use crate::http::get;
use crate::support::{xml::no_env, BrokerXml, TestBroker, STEP};
use crate::{write, Env, ADMIN, REALM, VIEWER};

/// ActiveMQ's jetty.xml as upstream ships it, on port `port`.
fn jetty_xml(port: &str) -> String {
    format!(
        r#"<beans xmlns="http://www.springframework.org/schema/beans">
    <bean id="securityLoginService" class="org.eclipse.jetty.security.HashLoginService">
        <property name="name" value="ActiveMQRealm" />
        <property name="config" value="${{activemq.conf}}/jetty-realm.properties" />
    </bean>
    <bean id="jettyPort" class="org.apache.activemq.web.WebConsolePort" init-method="start">
        <property name="host" value="127.0.0.1"/>
        <property name="port" value="{port}"/>
    </bean>
</beans>
"#
    )
}

/// activemq.xml importing jetty.xml, as upstream's does (the import after `<broker>`).
fn activemq_importing_jetty() -> String {
    let broker = BrokerXml::new()
        .name("jetty")
        .connector("mqtt", "mqtt://127.0.0.1:0")
        .build();
    broker.replace("</beans>", "  <import resource=\"jetty.xml\"/>\n</beans>")
}

fn ferromq() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferromq"))
}

#[tokio::test]
async fn an_imported_jetty_xml_enables_the_console_with_its_realm() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "jetty.xml", &jetty_xml("0"));
    write(dir.path(), "jetty-realm.properties", REALM);
    write(dir.path(), "activemq.xml", &activemq_importing_jetty());
    let config = crate::support::xml::load_file(&dir.path().join("activemq.xml"));
    let console = config.console.as_ref().expect("console enabled");
    assert_eq!(console.source, "jetty.xml");
    assert_eq!(console.users.len(), 5);
    assert_eq!(
        console.realm.as_deref(),
        Some(dir.path().join("jetty-realm.properties").as_path())
    );
    let broker = TestBroker::start(config).await;
    let addr = broker.handle.console_addr().expect("console runs");
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_eq!(get(addr, "/api/overview", Some(ADMIN)).await.status, 200);
    assert_eq!(get(addr, "/api/overview", None).await.status, 401);
    broker.shutdown().await;
}

#[test]
fn the_upstream_example_enables_it_on_8161_and_check_reports_it_without_passwords() {
    let root = env!("CARGO_MANIFEST_DIR");
    let output = ferromq()
        .current_dir(root)
        .args(["check", "examples/upstream-activemq.xml"])
        .output()
        .expect("run check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains("web console: http://127.0.0.1:8161 from jetty.xml, realm ")
            && stdout.contains("jetty-realm.properties (2 users)"),
        "{stdout}"
    );
    // The example realm's passwords are `admin` and `user`: the report names no password.
    assert!(!stdout.contains("admin, admin") && !stdout.contains("user, user"));
    // Examples without jetty.xml: console off.
    for example in ["examples/security.xml", "conf/activemq.xml"] {
        let output = ferromq()
            .current_dir(root)
            .args(["check", example])
            .output()
            .expect("run check");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(!stdout.contains("web console"), "{example}: {stdout}");
    }
}

#[test]
fn check_reports_realm_and_port_errors_at_file_line_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "jetty-realm.properties",
        "admin: pw, admin\nnopassword\nx: MD5:abc, user\n",
    );
    let xml = BrokerXml::new()
        .child(r#"<console xmlns="urn:ferromq" port="0" realm="jetty-realm.properties"/>"#)
        .connector("mqtt", "mqtt://127.0.0.1:0")
        .build();
    let (code, stdout) = check_with(dir.path(), &xml, &[]);
    assert_eq!(code, Some(1), "{stdout}");
    let realm = dir.path().join("jetty-realm.properties");
    assert!(
        stdout.contains(&format!("{}:2:1: error:", realm.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "{}:3:4: error: user `x`: an MD5: password",
            realm.display()
        )),
        "{stdout}"
    );
    assert!(!stdout.contains("pw, admin"), "no password in the report");

    // A port out of range, at its value; a missing realm file.
    let xml = BrokerXml::new()
        .child(r#"<console xmlns="urn:ferromq" port="99999" realm="missing.properties"/>"#)
        .connector("mqtt", "mqtt://127.0.0.1:0")
        .build();
    let (code, stdout) = check_with(dir.path(), &xml, &[]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains("error: the console port must be 0-65535, not `99999`"),
        "{stdout}"
    );
    let xml = BrokerXml::new()
        .child(r#"<console xmlns="urn:ferromq" port="0" realm="missing.properties"/>"#)
        .connector("mqtt", "mqtt://127.0.0.1:0")
        .build();
    let (code, stdout) = check_with(dir.path(), &xml, &[]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "{}:3:5: error: cannot read the console realm file",
            dir.path().join("activemq.xml").display()
        )),
        "{stdout}"
    );
}

/// `check` on `xml` written as activemq.xml in `dir`, with `args` before the file: exit code
/// and stdout.
fn check_with(dir: &std::path::Path, xml: &str, args: &[&str]) -> (Option<i32>, String) {
    write(dir, "activemq.xml", xml);
    let output = ferromq()
        .arg("check")
        .args(args)
        .arg(dir.join("activemq.xml"))
        .output()
        .expect("run check");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.code(), stdout)
}

#[test]
fn check_reports_a_console_port_in_use_a_connector_clash_and_a_bad_host() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "jetty-realm.properties", REALM);
    // A port in use: `check` passes (it binds nothing), `check --bind` fails at jetty.xml's
    // jettyPort bean.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("occupy a port");
    let port = taken.local_addr().expect("addr").port();
    write(dir.path(), "jetty.xml", &jetty_xml(&port.to_string()));
    let xml = activemq_importing_jetty();
    let (code, stdout) = check_with(dir.path(), &xml, &[]);
    assert_eq!(code, Some(0), "{stdout}");
    // jetty.xml's `${activemq.conf}/jetty-realm.properties` is resolved by the console: no
    // note that it is used literally.
    assert!(stdout.contains("(5 users)"), "{stdout}");
    assert!(!stdout.contains("is used literally"), "{stdout}");
    let (code, stdout) = check_with(dir.path(), &xml, &["--bind"]);
    assert_eq!(code, Some(1), "{stdout}");
    let jetty = dir.path().join("jetty.xml");
    assert!(
        stdout.contains(&format!(
            "{}:6:5: error: cannot listen on 127.0.0.1:{port} for the web console",
            jetty.display()
        )),
        "{stdout}"
    );
    drop(taken);

    // The console on a connector's port: a clash, as between two connectors.
    let xml = BrokerXml::new()
        .child(r#"<console xmlns="urn:ferromq" port="18883" realm="jetty-realm.properties"/>"#)
        .connector("mqtt", "mqtt://0.0.0.0:18883")
        .build();
    let (code, stdout) = check_with(dir.path(), &xml, &[]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains("error: the web console listens on 127.0.0.1:18883, which clashes with connector `mqtt`"),
        "{stdout}"
    );

    // A host that is neither an address nor a name.
    let xml = BrokerXml::new()
        .child(r#"<console xmlns="urn:ferromq" host="256.1.1.1" port="0" realm="jetty-realm.properties"/>"#)
        .connector("mqtt", "mqtt://127.0.0.1:0")
        .build();
    let (code, stdout) = check_with(dir.path(), &xml, &[]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains("error: host `256.1.1.1` of the web console does not resolve"),
        "{stdout}"
    );
}

#[tokio::test]
async fn a_reload_rereads_the_realm_file() {
    let mut env = Env::start().await;
    assert_eq!(
        get(env.console, "/api/overview", Some(("newbie", "pw")))
            .await
            .status,
        401
    );
    // The configuration the broker runs, then a new user in the realm file.
    let config = crate::support::xml::load_file(&env.dir.path().join("activemq.xml"));
    env.broker
        .handle
        .enable_reload(config, no_env(), false)
        .await;
    std::fs::write(env.realm_path(), format!("{REALM}newbie: pw, user\n")).expect("realm");
    let reload = env.broker.handle.reload().expect("reload");
    let mut stats = reload.subscribe();
    reload.request();
    tokio::time::timeout(
        STEP,
        stats.wait_for(|s| s.reloads_ok + s.reloads_failed > 0),
    )
    .await
    .expect("reloaded in time")
    .expect("stats");
    assert_eq!(stats.borrow().reloads_ok, 1, "{:?}", *stats.borrow());
    assert!(stats
        .borrow()
        .last_summary
        .as_deref()
        .is_some_and(|s| s.contains("~console users")));
    assert_eq!(
        get(env.console, "/api/overview", Some(("newbie", "pw")))
            .await
            .status,
        200
    );
    let overview = get(env.console, "/api/overview", Some(VIEWER)).await.json();
    assert_eq!(overview["last_reload"]["result"], "ok");
    env.broker.shutdown().await;
}

/// `ferromq status --console URL` logged in as `user_option` names it (`--username`, or
/// `--user`, the name it had first).
async fn status_as_viewer(url: String, user_option: &'static str) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        ferromq()
            .args(["status", "--console", &url, user_option, "viewer"])
            .args(["--password-env", "CONSOLE_PW"])
            .env("CONSOLE_PW", crate::PASSWORD)
            .output()
            .expect("run status")
    })
    .await
    .expect("status ran")
}

#[tokio::test]
async fn ferromq_status_prints_the_overview_and_fails_when_unreachable() {
    let env = Env::start().await;
    let url = format!("http://{}", env.console);
    let console = env.console;
    // `--username`, as `session end` names its user; `--user` still works.
    for user_option in ["--username", "--user"] {
        let output = status_as_viewer(url.clone(), user_option).await;
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{user_option}: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains("broker console-test (ferromq "), "{stdout}");
        assert!(
            stdout.contains("connections: 0 (mqtt 0, stomp 0)"),
            "{stdout}"
        );
        assert!(stdout.contains("listener mqtt mqtt "), "{stdout}");
    }
    // A wrong password: refused, non-zero.
    let url = format!("http://{console}");
    let refused = tokio::task::spawn_blocking(move || {
        ferromq()
            .args([
                "status",
                "--console",
                &url,
                "--username",
                "viewer",
                "--password-env",
                "CONSOLE_PW",
            ])
            .env("CONSOLE_PW", "wrong")
            .output()
            .expect("run status")
    })
    .await
    .expect("status ran");
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("refused the login of `viewer` with the password in CONSOLE_PW"),
        "{stderr}"
    );
    // A user without --password-env: the missing password is what to fix.
    let url = format!("http://{console}");
    let no_password = tokio::task::spawn_blocking(move || {
        ferromq()
            .args(["status", "--console", &url, "--username", "viewer"])
            .env_remove("CONSOLE_PW")
            .output()
            .expect("run status")
    })
    .await
    .expect("status ran");
    assert_eq!(no_password.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&no_password.stderr);
    assert!(
        stderr.contains(
            "refused the login of `viewer`: the password is missing (--password-env VAR not \
             given"
        ),
        "{stderr}"
    );
    // https:// to this plain console, and a URL with the password in it: what to give instead.
    let ca = crate::support::tls::Ca::new("some CA");
    write(env.dir.path(), "ca.pem", &ca.pem());
    let cacert = env.dir.path().join("ca.pem");
    let https = format!("https://{console}");
    let with_password = format!("http://viewer:{}@{console}", crate::PASSWORD);
    let (https, with_password) = tokio::task::spawn_blocking(move || {
        let https = ferromq()
            .args(["status", "--console", &https, "--cacert"])
            .arg(&cacert)
            .output()
            .expect("run status");
        let with_password = ferromq()
            .args(["status", "--console", &with_password])
            .output()
            .expect("run status");
        (https, with_password)
    })
    .await
    .expect("status ran");
    assert_eq!(https.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&https.stderr);
    assert!(
        stderr.contains(&format!(
            "speaks plain HTTP, not HTTPS: use http://{console}"
        )),
        "{stderr}"
    );
    assert_eq!(with_password.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&with_password.stderr);
    assert!(
        stderr.contains("give --username and --password-env"),
        "{stderr}"
    );
    env.broker.shutdown().await;
    // Nothing listening any more.
    let url = format!("http://{console}");
    let unreachable = tokio::task::spawn_blocking(move || {
        ferromq()
            .args(["status", "--console", &url])
            .output()
            .expect("run status")
    })
    .await
    .expect("status ran");
    assert_eq!(unreachable.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unreachable.stderr).contains("cannot reach the console"));
}

/// Without `--console`, `status` asks the console the configuration `run` would read enables
/// (conf/activemq.xml of the working directory, or `--config FILE`), and says where the
/// address came from when it gets no answer there.
#[tokio::test]
async fn ferromq_status_without_console_asks_the_console_of_the_configuration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("conf");
    std::fs::create_dir(&conf).expect("conf/");
    let port = crate::support::free_port();
    write(&conf, "jetty.xml", &jetty_xml(&port.to_string()));
    write(&conf, "jetty-realm.properties", REALM);
    write(&conf, "activemq.xml", &activemq_importing_jetty());
    let file = conf.join("activemq.xml");
    let broker = TestBroker::start(crate::support::xml::load_file(&file)).await;
    assert_eq!(broker.handle.console_addr().map(|a| a.port()), Some(port));
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let status = |cwd: std::path::PathBuf, config: Option<std::path::PathBuf>| {
        let mut command = ferromq();
        command
            .current_dir(cwd)
            .arg("status")
            .args(["--username", "viewer", "--password-env", "CONSOLE_PW"])
            .env("CONSOLE_PW", crate::PASSWORD);
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        tokio::task::spawn_blocking(move || command.output().expect("run status"))
    };
    for (cwd, config) in [
        (dir.path().to_path_buf(), None),
        (elsewhere.path().to_path_buf(), Some(file.clone())),
    ] {
        let output = status(cwd, config.clone()).await.expect("status ran");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{config:?}: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains("broker jetty (ferromq "), "{stdout}");
    }
    broker.shutdown().await;
    let gone = status(dir.path().to_path_buf(), None)
        .await
        .expect("status ran");
    assert_eq!(gone.status.code(), Some(1), "{gone:?}");
    let stderr = String::from_utf8_lossy(&gone.stderr);
    assert!(
        stderr.contains(&format!(
            "asked http://127.0.0.1:{port}, the console conf/activemq.xml enables (jetty.xml); \
             give --console URL"
        )),
        "{stderr}"
    );
    // A configuration that enables no console (the built-in default): ActiveMQ's address,
    // said to be that. Only while nothing else serves it on this machine.
    if std::net::TcpListener::bind(("127.0.0.1", 8161)).is_ok() {
        let fallback = status(elsewhere.path().to_path_buf(), None)
            .await
            .expect("status ran");
        assert_eq!(fallback.status.code(), Some(1), "{fallback:?}");
        let stderr = String::from_utf8_lossy(&fallback.stderr);
        assert!(
            stderr.contains(
                "asked http://127.0.0.1:8161, ActiveMQ's console address: the built-in \
                 default configuration enables no console"
            ),
            "{stderr}"
        );
    }
}

/// `status FILE` takes the file as `run FILE` and `check FILE` do; a durable broker without a
/// `storeUsage` limit has none (ferromq applies no default one): the overview's
/// `store.limit_bytes` is `null` and `status` says so, not "0 of 0 bytes".
#[tokio::test]
async fn status_takes_the_file_positionally_and_shows_a_store_without_a_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "jetty-realm.properties", REALM);
    let port = crate::support::free_port();
    let xml = BrokerXml::new()
        .name("store-test")
        .kahadb(&dir.path().join("store"))
        .child(&format!(
            r#"<console xmlns="urn:ferromq" host="127.0.0.1" port="{port}" realm="jetty-realm.properties"/>"#
        ))
        .connector("mqtt", "mqtt://127.0.0.1:0")
        .build();
    write(dir.path(), "activemq.xml", &xml);
    let file = dir.path().join("activemq.xml");
    let broker = TestBroker::start(crate::support::xml::load_file(&file)).await;
    let console = broker.handle.console_addr().expect("console runs");
    let overview = get(console, "/api/overview", Some(VIEWER)).await.json();
    assert_eq!(overview["store"]["kind"], "local", "{overview}");
    assert!(overview["store"]["limit_bytes"].is_null(), "{overview}");

    let output = tokio::task::spawn_blocking(move || {
        ferromq()
            .arg("status")
            .arg(&file)
            .args(["--username", "viewer", "--password-env", "CONSOLE_PW"])
            .env("CONSOLE_PW", crate::PASSWORD)
            .output()
            .expect("run status")
    })
    .await
    .expect("status ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("broker store-test (ferromq "), "{stdout}");
    assert!(
        stdout.contains("bytes (no storeUsage limit; the disk's free space bounds it)"),
        "{stdout}"
    );
    assert!(!stdout.contains(" of 0 bytes"), "{stdout}");
    broker.shutdown().await;
}

/// `status --config FILE` where FILE cannot be loaded fails, saying why and what to do: the
/// file names the broker meant, and ActiveMQ's address could be another broker's console.
/// The implicit conf/activemq.xml still falls back to that address.
#[test]
fn status_with_a_named_config_that_cannot_be_loaded_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let unresolved = BrokerXml::new()
        .name("${never.set}")
        .connector("mqtt", "mqtt://127.0.0.1:0")
        .build()
        .replace(
            "<broker ",
            "<bean class=\"org.springframework.beans.factory.config.\
             PropertyPlaceholderConfigurer\"/>\n<broker ",
        );
    write(dir.path(), "broken.xml", &unresolved);
    let status = |args: &[&str]| {
        ferromq()
            .current_dir(dir.path())
            .env_remove("never.set")
            .env_remove("NEVER_SET")
            .arg("status")
            .args(args)
            .output()
            .expect("run status")
    };
    let named = status(&["--config", "broken.xml"]);
    let stderr = String::from_utf8_lossy(&named.stderr);
    assert_eq!(named.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("unresolved placeholder `${never.set}`"),
        "what is wrong: {stderr}"
    );
    assert!(
        stderr.contains("ferromq: broken.xml has errors (above)")
            && stderr.contains("`ferromq check broken.xml` shows the details")
            && stderr.contains("--console URL"),
        "{stderr}"
    );
    assert!(!stderr.contains("asked http://"), "nothing asked: {stderr}");
    assert!(named.stdout.is_empty(), "no overview: {named:?}");
    // Not named: conf/activemq.xml of the working directory, unloadable, falls back to
    // ActiveMQ's address (only while nothing serves it on this machine).
    let conf = dir.path().join("conf");
    std::fs::create_dir(&conf).expect("conf/");
    write(&conf, "activemq.xml", &unresolved);
    if std::net::TcpListener::bind(("127.0.0.1", 8161)).is_ok() {
        let implicit = status(&[]);
        let stderr = String::from_utf8_lossy(&implicit.stderr);
        assert_eq!(implicit.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(
                "asked http://127.0.0.1:8161, ActiveMQ's console address: conf/activemq.xml \
                 cannot be loaded"
            ),
            "{stderr}"
        );
    }
}

/// `status --config FILE` where FILE cannot be read (a typo in the path, a directory) says
/// so, with the path and the OS error: there are no errors in it for `check` to show.
#[test]
fn status_with_a_named_config_that_cannot_be_read_says_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("conf")).expect("conf/");
    let status = |config: &str| {
        ferromq()
            .current_dir(dir.path())
            .args(["status", "--config", config])
            .output()
            .expect("run status")
    };
    for (config, why) in [
        ("conf/activmq.xml", "No such file or directory"),
        ("conf", "Is a directory"),
    ] {
        let out = status(config);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{config}: {stderr}");
        assert!(
            stderr.contains(&format!("ferromq: cannot read {config}: {why}")),
            "{config}: {stderr}"
        );
        assert!(stderr.contains("--console URL"), "{stderr}");
        assert!(
            !stderr.contains("has errors") && !stderr.contains("ferromq check"),
            "nothing for check to show: {stderr}"
        );
        assert!(!stderr.contains("asked http://"), "nothing asked: {stderr}");
        assert!(out.stdout.is_empty(), "no overview: {out:?}");
    }
}

#[tokio::test]
async fn with_ssl_context_the_console_serves_https_with_the_brokers_key() {
    use crate::support::tls::{tls_connect, tls_connector, Ca};
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("console CA");
    write(dir.path(), "server.pem", &ca.server(1).combined_pem());
    write(dir.path(), "jetty-realm.properties", REALM);
    let xml = BrokerXml::new()
        .name("tls-console")
        .child(r#"<sslContext><sslContext keyStore="server.pem"/></sslContext>"#)
        .child(r#"<console xmlns="urn:ferromq" port="0" realm="jetty-realm.properties" sslContext="true"/>"#)
        .connector("mqtt", "mqtt://127.0.0.1:0")
        .build();
    write(dir.path(), "activemq.xml", &xml);
    let broker = TestBroker::start(crate::support::xml::load_file(
        &dir.path().join("activemq.xml"),
    ))
    .await;
    let addr = broker.handle.console_addr().expect("console runs");
    let tls = tokio::time::timeout(STEP, tls_connect(addr, &tls_connector(&ca, None)))
        .await
        .expect("handshake in time")
        .expect("handshake");
    let response =
        crate::http::send(tls, "localhost", "GET", "/api/overview", Some(ADMIN), &[]).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["broker_name"], "tls-console");
    // `ferromq status` over https, trusting the CA that signed the broker's key.
    write(dir.path(), "ca.pem", &ca.pem());
    write(dir.path(), "other-ca.pem", &Ca::new("another CA").pem());
    let status = |cacert: Option<&str>| {
        let mut command = ferromq();
        command
            .args([
                "status",
                "--console",
                &format!("https://127.0.0.1:{}", addr.port()),
            ])
            .args(["--username", "viewer", "--password-env", "CONSOLE_PW"])
            .env("CONSOLE_PW", crate::PASSWORD);
        if let Some(file) = cacert {
            command.arg("--cacert").arg(dir.path().join(file));
        }
        tokio::task::spawn_blocking(move || command.output().expect("run status"))
    };
    let trusted = status(Some("ca.pem")).await.expect("status ran");
    let stdout = String::from_utf8_lossy(&trusted.stdout);
    assert!(
        trusted.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    assert!(stdout.contains("broker tls-console (ferromq "), "{stdout}");
    let untrusted = status(Some("other-ca.pem")).await.expect("status ran");
    assert_eq!(untrusted.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&untrusted.stderr).contains("TLS handshake"),
        "{}",
        String::from_utf8_lossy(&untrusted.stderr)
    );
    let no_ca = status(None).await.expect("status ran");
    assert_eq!(no_ca.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&no_ca.stderr).contains("--cacert"));
    // An http:// URL of this HTTPS console: said so, rather than a bare protocol error.
    let http_url = format!("http://127.0.0.1:{}", addr.port());
    let wrong_scheme = tokio::task::spawn_blocking(move || {
        ferromq()
            .args(["status", "--console", &http_url])
            .args(["--username", "viewer", "--password-env", "CONSOLE_PW"])
            .env("CONSOLE_PW", crate::PASSWORD)
            .output()
            .expect("run status")
    })
    .await
    .expect("status ran");
    assert_eq!(wrong_scheme.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&wrong_scheme.stderr);
    assert!(
        stderr.contains("speaks HTTPS: use https://127.0.0.1:"),
        "{stderr}"
    );
    // Plain HTTP on the HTTPS port gets no answer.
    let plain = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(plain))
            .await
            .expect("handshake");
    tokio::spawn(connection);
    let request = hyper::Request::get("/api/overview")
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .expect("request");
    let answer = tokio::time::timeout(STEP, sender.send_request(request)).await;
    assert!(
        matches!(answer, Ok(Err(_)) | Err(_)),
        "plain HTTP answered: {answer:?}"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn run_console_overrides_the_address_and_refuses_to_run_without_users() {
    let dir = tempfile::tempdir().expect("tempdir");
    // jetty.xml says 8161; --console moves it (the test never binds 8161).
    write(dir.path(), "jetty.xml", &jetty_xml("8161"));
    write(dir.path(), "jetty-realm.properties", REALM);
    write(dir.path(), "activemq.xml", &activemq_importing_jetty());
    let port = crate::support::free_port();
    let console = format!("127.0.0.1:{port}");
    let child = ferromq()
        .args(["run", "--config"])
        .arg(dir.path().join("activemq.xml"))
        .args(["--console", &console])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn ferromq run");
    let _guard = crate::support::ChildGuard(child);
    let addr: std::net::SocketAddr = console.parse().expect("address");
    let deadline = tokio::time::Instant::now() + STEP * 2;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the console did not listen on {addr}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let overview = get(addr, "/api/overview", Some(VIEWER)).await;
    assert_eq!(overview.status, 200, "{}", overview.text());
    assert_eq!(overview.json()["broker_name"], "jetty");

    // No realm anywhere: the console has no users and the broker does not start.
    let bare = BrokerXml::new()
        .name("bare")
        .connector("mqtt", "mqtt://127.0.0.1:0")
        .build();
    write(dir.path(), "bare.xml", &bare);
    let output = tokio::task::spawn_blocking({
        let file = dir.path().join("bare.xml");
        let console = format!("127.0.0.1:{}", crate::support::free_port());
        move || {
            ferromq()
                .args(["run", "--config"])
                .arg(file)
                .args(["--console", &console])
                .output()
                .expect("run")
        }
    })
    .await
    .expect("ran");
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("has no users"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `run --console HOST:PORT` then a reload with nothing changed: the override holds for the
/// whole run, so the file's own address is no change (no "console changed ... needs a
/// restart"), even when the file's port is edited.
#[tokio::test]
async fn a_console_address_override_is_kept_by_reloads() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "jetty.xml", &jetty_xml("8161"));
    write(dir.path(), "jetty-realm.properties", REALM);
    write(dir.path(), "activemq.xml", &activemq_importing_jetty());
    let mut config = crate::support::xml::load_file(&dir.path().join("activemq.xml"));
    // What `run --console` does with the file's configuration.
    config.override_console_address("127.0.0.1".to_owned(), 18161);
    let (recorder, _applied) = crate::support::reload::Recorder::new();
    let mut reloader =
        ferromq::reload::Reloader::new(config, no_env(), std::sync::Arc::new(recorder), None);
    match reloader
        .reload(&[ferromq::reload::ReloadReason::Signal])
        .await
    {
        ferromq::reload::ReloadResult::NoRuntimeChange { summary } => {
            assert_eq!(summary, "no change")
        }
        other => panic!("nothing changed, yet: {other:?}"),
    }
    let console = reloader.running().console.clone().expect("console");
    assert_eq!((console.host.as_str(), console.port), ("127.0.0.1", 18161));
    // Twice: the adopted configuration keeps the override too.
    assert!(matches!(
        reloader.reload(&[ferromq::reload::ReloadReason::Signal]).await,
        ferromq::reload::ReloadResult::NoRuntimeChange { summary } if summary == "no change"
    ));
    // The file's port changes: the override still wins, nothing to restart.
    write(dir.path(), "jetty.xml", &jetty_xml("8162"));
    assert!(matches!(
        reloader.reload(&[ferromq::reload::ReloadReason::Signal]).await,
        ferromq::reload::ReloadResult::NoRuntimeChange { summary } if summary == "no change"
    ));
}

/// `status --help` names the user option as `session end` does, and its old name beside it.
#[test]
fn status_help_names_username_with_user_as_its_alias() {
    let help = ferromq()
        .args(["status", "--help"])
        .output()
        .expect("run status --help");
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success(), "{text}");
    assert!(text.contains("--username <USERNAME>"), "{text}");
    assert!(text.contains("[alias: --user]"), "{text}");
    // The password still needs a user, by either name.
    let alone = ferromq()
        .args(["status", "--password-env", "CONSOLE_PW"])
        .output()
        .expect("run status");
    assert_eq!(alone.status.code(), Some(2), "{alone:?}");
    assert!(
        String::from_utf8_lossy(&alone.stderr).contains("--username <USERNAME>"),
        "{alone:?}"
    );
}
