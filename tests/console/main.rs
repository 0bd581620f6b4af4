//! The web console: a real broker started from XML on free ports (console on port 0), a real
//! HTTP client (hyper's, the stack the console itself runs on) and real MQTT and STOMP
//! clients. Logins with every password form of jetty-realm.properties, roles, CSRF and
//! Origin checks, the JSON API against what the broker really holds, the admin actions as
//! their clients observe them, the Jolokia read, jetty.xml, `check` and `ferromq status`; the
//! pages in headless Chromium (`browser`).

#[path = "../support/mod.rs"]
mod support;

#[path = "../stomp/client.rs"]
#[allow(dead_code)]
mod stomp_client;

mod actions;
mod api;
mod auth;
mod browser;
mod config;
mod http;
mod limits;

use std::net::SocketAddr;
use std::path::Path;

use support::{BrokerXml, TestBroker};

/// jetty-realm.properties of the tests. The hashed values were printed by Jetty 9.4's own
/// tool for the password `s3cret!`
/// (`java -cp jetty-util-9.4.57.jar org.eclipse.jetty.util.security.Password admin 's3cret!'`).
pub const REALM: &str = "\
# console users: admin acts, user reads
admin: OBF:1ihd1m4e1sot1y7z1sox1m801ict, admin
viewer: MD5:ca6c5d8960b5f761e1676d26b282889c, user
cryptic: CRYPT:ad.MvP/CoudYw, user
plain: plainpw, admin
nobody: nobodypw
";
pub const PASSWORD: &str = "s3cret!";
pub const ADMIN: (&str, &str) = ("admin", PASSWORD);
pub const VIEWER: (&str, &str) = ("viewer", PASSWORD);

/// A broker with MQTT and STOMP connectors and the console on a free port, its realm file in
/// a temporary directory.
pub struct Env {
    pub broker: TestBroker,
    pub console: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl Env {
    pub async fn start() -> Env {
        Env::start_with("", "").await
    }

    /// `console_attributes`: more attributes of `<ferromq:console>`; `children`: more
    /// elements of `<broker>`.
    pub async fn start_with(console_attributes: &str, children: &str) -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("jetty-realm.properties"), REALM).expect("realm");
        let xml = BrokerXml::new()
            .name("console-test")
            .child(&format!(
                r#"<console xmlns="urn:ferromq" host="127.0.0.1" port="0" realm="jetty-realm.properties" {console_attributes}/>"#
            ))
            .child(children)
            .connector("mqtt", "mqtt://127.0.0.1:0")
            .connector("stomp", "stomp://127.0.0.1:0")
            .build();
        let path = dir.path().join("activemq.xml");
        std::fs::write(&path, xml).expect("write activemq.xml");
        let broker = TestBroker::start(support::xml::load_file(&path)).await;
        let console = broker.handle.console_addr().expect("console runs");
        Env {
            broker,
            console,
            dir,
        }
    }

    pub fn listener(&self, name: &str) -> SocketAddr {
        self.broker
            .handle
            .listener_addrs()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
            .expect("listener")
    }

    pub fn realm_path(&self) -> std::path::PathBuf {
        self.dir.path().join("jetty-realm.properties")
    }
}

/// Write `text` to `dir/name`.
pub fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write");
}
