//! A real OpenLDAP server (`/usr/sbin/slapd`, Debian's `slapd` package) for the LDAP tests:
//! started on free loopback ports (ldap:// with StartTLS, and ldaps://) from a generated
//! slapd.conf with an mdb database in a temporary directory, loaded with an LDIF shaped like
//! ActiveMQ's LDAP examples, stopped by its process id.
//!
//! Directory (suffix `dc=activemq,dc=apache,dc=org`, as ActiveMQ's OpenLDAP example):
//! users `uid=<name>,ou=User,ou=ActiveMQ,...` (password `<name>-pw`); groups
//! `cn=<group>,ou=Group,ou=ActiveMQ,...` (groupOfNames, `member` = user DNs); destinations
//! `cn=<pattern>,ou=Topic|Queue,ou=Destination,ou=ActiveMQ,...` with `cn=admin|read|write`
//! children whose `member` values are group DNs (`$` in a pattern is `>`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::tls::Ca;

pub const SLAPD: &str = "/usr/sbin/slapd";
pub const SUFFIX: &str = "dc=activemq,dc=apache,dc=org";
pub const ROOT_DN: &str = "cn=admin,dc=activemq,dc=apache,dc=org";
pub const ROOT_PW: &str = "root-secret";
/// The service account the broker binds as (ActiveMQ's `connectionUsername`).
pub const BROKER_DN: &str = "uid=mqbroker,ou=Services,dc=activemq,dc=apache,dc=org";
pub const BROKER_PW: &str = "mqbroker-pw";
pub const USER_BASE: &str = "ou=User,ou=ActiveMQ,dc=activemq,dc=apache,dc=org";
pub const GROUP_BASE: &str = "ou=Group,ou=ActiveMQ,dc=activemq,dc=apache,dc=org";
pub const TOPIC_BASE: &str = "ou=Topic,ou=Destination,ou=ActiveMQ,dc=activemq,dc=apache,dc=org";
pub const QUEUE_BASE: &str = "ou=Queue,ou=Destination,ou=ActiveMQ,dc=activemq,dc=apache,dc=org";
pub const TEMP_BASE: &str = "ou=Temp,ou=Destination,ou=ActiveMQ,dc=activemq,dc=apache,dc=org";

/// Is slapd installed? When not, a test says so and returns early; under CI (`CI` set) a
/// missing slapd is a failure, since .ci/run installs it.
pub fn available(test: &str) -> bool {
    if Path::new(SLAPD).exists() && which("ldapmodify") {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: slapd/ldap-utils missing under CI; .ci/run installs them"
    );
    eprintln!("SKIPPED {test}: {SLAPD} or ldapmodify missing (apt-get install slapd ldap-utils)");
    false
}

fn which(tool: &str) -> bool {
    Command::new(tool)
        .arg("-VV")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

pub fn user_dn(name: &str) -> String {
    format!("uid={name},{USER_BASE}")
}

pub fn group_dn(name: &str) -> String {
    format!("cn={name},{GROUP_BASE}")
}

pub struct Slapd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub ldaps_port: u16,
    /// The CA that signed slapd's certificate (for ldaps:// and StartTLS).
    pub ca_file: PathBuf,
    conf: PathBuf,
    child: Option<Child>,
}

impl Slapd {
    /// slapd with the base tree, the service account, and `users` (name, groups).
    pub fn start(users: &[(&str, &[&str])]) -> Slapd {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::new("slapd test CA");
        let server = ca.server(7);
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).expect("ca");
        std::fs::write(dir.path().join("server.pem"), server.cert.pem()).expect("cert");
        std::fs::write(dir.path().join("server.key"), server.key.serialize_pem()).expect("key");
        std::fs::create_dir(dir.path().join("db")).expect("db dir");
        let conf = dir.path().join("slapd.conf");
        std::fs::write(&conf, slapd_conf(dir.path())).expect("slapd.conf");
        let ldif = dir.path().join("base.ldif");
        std::fs::write(&ldif, base_ldif(users)).expect("ldif");
        // Offline load: no server needed, and the data is there before the first connect.
        let out = Command::new("/usr/sbin/slapadd")
            .arg("-f")
            .arg(&conf)
            .arg("-l")
            .arg(&ldif)
            .output()
            .expect("slapadd runs");
        assert!(
            out.status.success(),
            "slapadd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut slapd = Slapd {
            dir,
            port: 0,
            ldaps_port: 0,
            ca_file,
            conf,
            child: None,
        };
        slapd.port = free_port();
        slapd.ldaps_port = free_port();
        slapd.restart();
        slapd
    }

    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// ldaps:// by host name `localhost` (the test certificate names localhost and 127.0.0.1).
    pub fn ldaps_url(&self) -> String {
        format!("ldaps://localhost:{}", self.ldaps_port)
    }

    /// Start (again) on the same ports and database.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "slapd is running");
        let urls = format!(
            "ldap://127.0.0.1:{}/ ldaps://127.0.0.1:{}/",
            self.port, self.ldaps_port
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("slapd.log"))
            .expect("log");
        // -d: stay in the foreground (the child is the server, stopped by its pid), logging
        // connections and operations ("stats", 256) to slapd.log for [`Slapd::accepted`].
        let child = Command::new(SLAPD)
            .arg("-f")
            .arg(&self.conf)
            .arg("-h")
            .arg(&urls)
            .arg("-d")
            .arg("256")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("slapd starts");
        self.child = Some(child);
        self.wait_ready();
    }

    /// Answering searches (not just accepting TCP): an anonymous ldapsearch of the root DSE.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = Command::new("ldapsearch")
                .args(["-x", "-H", &self.url(), "-b", "", "-s", "base", "-LLL"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    let log = std::fs::read_to_string(self.dir.path().join("slapd.log"))
                        .unwrap_or_default();
                    panic!("slapd exited with {status}:\n{log}");
                }
            }
            assert!(Instant::now() < deadline, "slapd did not answer in 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop the server (SIGTERM by pid, then wait); the database stays for [`Slapd::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Connections slapd accepted so far (from its stats log).
    pub fn accepted(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("slapd.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(" ACCEPT from "))
            .count()
    }

    /// StartTLS operations slapd performed so far (from its stats log).
    pub fn start_tls_count(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("slapd.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("EXT oid=1.3.6.1.4.1.1466.20037"))
            .count()
    }

    /// Apply an LDIF change (ldapmodify as the root DN).
    pub fn modify(&self, ldif: &str) {
        use std::io::Write as _;
        let mut child = Command::new("ldapmodify")
            .args(["-x", "-H", &self.url(), "-D", ROOT_DN, "-w", ROOT_PW])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ldapmodify runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(ldif.as_bytes())
            .expect("write ldif");
        let out = child.wait_with_output().expect("ldapmodify");
        assert!(
            out.status.success(),
            "ldapmodify: {}\n{ldif}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Add a destination entry with its permission children, as in ActiveMQ's examples:
    /// `kind_base` is [`TOPIC_BASE`] or [`QUEUE_BASE`], `pattern` uses `$` for `>`,
    /// each permission lists member DNs.
    pub fn add_destination(&self, kind_base: &str, pattern: &str, perms: &[(&str, &[String])]) {
        let mut ldif = format!(
            "dn: cn={pattern},{kind_base}\nchangetype: add\nobjectClass: applicationProcess\ncn: {pattern}\n\n"
        );
        for (perm, members) in perms {
            ldif.push_str(&permission_ldif(kind_base, pattern, perm, members));
        }
        self.modify(&ldif);
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One `cn=admin|read|write` child of a destination entry.
pub fn permission_ldif(kind_base: &str, pattern: &str, perm: &str, members: &[String]) -> String {
    let mut ldif = format!(
        "dn: cn={perm},cn={pattern},{kind_base}\nchangetype: add\nobjectClass: groupOfNames\ncn: {perm}\n"
    );
    for m in members {
        ldif.push_str(&format!("member: {m}\n"));
    }
    ldif.push('\n');
    ldif
}

fn free_port() -> u16 {
    super::free_port()
}

fn slapd_conf(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
pidfile {d}/slapd.pid
argsfile {d}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
TLSCACertificateFile {d}/ca.pem
TLSCertificateFile {d}/server.pem
TLSCertificateKeyFile {d}/server.key
database mdb
maxsize 33554432
suffix \"{SUFFIX}\"
rootdn \"{ROOT_DN}\"
rootpw {ROOT_PW}
directory {d}/db
access to attrs=userPassword by anonymous auth by * none
access to * by * read
"
    )
}

fn ou(name: &str, parent: &str) -> String {
    format!("dn: ou={name},{parent}\nobjectClass: organizationalUnit\nou: {name}\n\n")
}

fn base_ldif(users: &[(&str, &[&str])]) -> String {
    let activemq = format!("ou=ActiveMQ,{SUFFIX}");
    let destination = format!("ou=Destination,{activemq}");
    let mut ldif = format!(
        "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: ActiveMQ\ndc: activemq\n\n"
    );
    ldif.push_str(&ou("Services", SUFFIX));
    ldif.push_str(&format!(
        "dn: {BROKER_DN}\nobjectClass: account\nobjectClass: simpleSecurityObject\nuid: mqbroker\nuserPassword: {BROKER_PW}\n\n"
    ));
    ldif.push_str(&ou("ActiveMQ", SUFFIX));
    ldif.push_str(&ou("User", &activemq));
    ldif.push_str(&ou("Group", &activemq));
    ldif.push_str(&ou("Destination", &activemq));
    for kind in ["Topic", "Queue", "Temp"] {
        ldif.push_str(&ou(kind, &destination));
    }
    let mut groups: Vec<(&str, Vec<String>)> = Vec::new();
    for (name, member_of) in users {
        ldif.push_str(&format!(
            "dn: {}\nobjectClass: top\nobjectClass: person\nobjectClass: organizationalPerson\nobjectClass: inetOrgPerson\nuid: {name}\ncn: {name}\nsn: {name}\nuserPassword: {name}-pw\n\n",
            user_dn(name)
        ));
        for g in *member_of {
            match groups.iter_mut().find(|(n, _)| n == g) {
                Some((_, members)) => members.push(user_dn(name)),
                None => groups.push((g, vec![user_dn(name)])),
            }
        }
    }
    for (group, members) in groups {
        ldif.push_str(&format!(
            "dn: {}\nobjectClass: groupOfNames\ncn: {group}\n",
            group_dn(group)
        ));
        for m in members {
            ldif.push_str(&format!("member: {m}\n"));
        }
        ldif.push('\n');
    }
    ldif
}

// ---- broker configurations over this directory (shared by the LDAP test binaries) ----

use std::sync::Arc;

use ferromq::broker::BrokerCore;
use ferromq::config::Config;
use ferromq::protocol::{ConnectReason, ProtocolVersion};
use ferromq::security::Principal;

use super::client::{connect_packet, connect_v5, RawClient};
use super::xml::no_env;

/// alice: viewers; bob: writers and viewers; carol: no group.
pub fn directory() -> Slapd {
    Slapd::start(&[
        ("alice", &["viewers"]),
        ("bob", &["writers", "viewers"]),
        ("carol", &[]),
    ])
}

/// login.config with one LDAPLoginModule as ActiveMQ documents it, plus `extra` options.
pub fn login_config(url: &str, extra: &str) -> String {
    format!(
        r#"activemq {{
    org.apache.activemq.jaas.LDAPLoginModule required
        debug=true
        initialContextFactory=com.sun.jndi.ldap.LdapCtxFactory
        connectionURL="{url}"
        connectionUsername="{broker}"
        connectionPassword="{broker_pw}"
        connectionProtocol=s
        authentication=simple
        userBase="{users}"
        userSearchMatching="(uid={{0}})"
        userSearchSubtree=false
        roleBase="{groups}"
        roleName=cn
        roleSearchMatching="(member={{0}})"
        roleSearchSubtree=false
        {extra};
}};
"#,
        broker = BROKER_DN,
        broker_pw = BROKER_PW,
        users = USER_BASE,
        groups = GROUP_BASE,
    )
}

/// The broker XML: JAAS authentication, `entries` as an authorizationMap, MQTT on port 0.
pub fn broker_xml(authorization: &str) -> String {
    format!(
        r#"<beans xmlns="http://www.springframework.org/schema/beans">
  <broker xmlns="http://activemq.apache.org/schema/core" persistent="false">
    <plugins>
      <jaasAuthenticationPlugin configuration="activemq"/>
      {authorization}
    </plugins>
    <transportConnectors>
      <transportConnector name="mqtt" uri="mqtt://127.0.0.1:0"/>
    </transportConnectors>
  </broker>
</beans>"#
    )
}

pub fn load(dir: &Path, login: &str, xml: &str) -> Config {
    std::fs::write(dir.join("login.config"), login).expect("login.config");
    let loaded = ferromq::config::load_str(xml, dir, &no_env());
    let diagnostics = loaded.diagnostics.to_string();
    loaded
        .into_result()
        .unwrap_or_else(|_| panic!("invalid test config:\n{diagnostics}"))
}

pub fn map_xml(url: &str, extra: &str) -> String {
    format!(
        r#"<authorizationPlugin><map>
        <cachedLDAPAuthorizationMap connectionURL="{url}"
            connectionUsername="{broker}" connectionPassword="{pw}"
            queueSearchBase="{queues}" topicSearchBase="{topics}" tempSearchBase="{temps}"
            {extra}/>
      </map></authorizationPlugin>"#,
        broker = BROKER_DN,
        pw = BROKER_PW,
        queues = QUEUE_BASE,
        topics = TOPIC_BASE,
        temps = TEMP_BASE,
    )
}

pub fn principal(user: &str, groups: &[&str]) -> Principal {
    Principal {
        user: Arc::from(user),
        groups: groups.iter().map(|g| Arc::from(*g)).collect(),
        anonymous: false,
    }
}

/// Wait (on the security snapshot's change signal) until `pred` holds for the current one.
pub async fn until_security(
    core: &Arc<BrokerCore>,
    what: &str,
    pred: impl Fn(&ferromq::security::Security) -> bool,
) {
    let mut changes = core.watch_security();
    let wait = async {
        loop {
            if pred(&core.security()) {
                return;
            }
            if changes.changed().await.is_err() {
                panic!("broker gone");
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within 10 s"));
}

pub async fn login(addr: std::net::SocketAddr, user: &str) -> RawClient {
    let mut connect = connect_packet(user, true, 0);
    connect.username = Some(user.into());
    connect.password = Some(format!("{user}-pw").into_bytes().into());
    let (client, ack) = RawClient::connect(addr, connect).await;
    assert_eq!(ack.reason, ConnectReason::Success, "{user}");
    client
}

pub fn plant_entries(ldap: &Slapd) {
    ldap.add_destination(
        TOPIC_BASE,
        "plant.$",
        &[
            ("read", &[group_dn("viewers")]),
            ("write", &[group_dn("writers")]),
            ("admin", &[group_dn("viewers"), group_dn("writers")]),
        ],
    );
}

/// A CONNECT with a user name and password at `version`: the client and its CONNACK reason.
pub async fn connack(
    addr: std::net::SocketAddr,
    version: ProtocolVersion,
    id: &str,
    user: &str,
    password: &str,
) -> (RawClient, ConnectReason) {
    let mut connect = match version {
        ProtocolVersion::V5 => connect_v5(id, true, None),
        _ => connect_packet(id, true, 0),
    };
    connect.username = Some(user.into());
    connect.password = Some(password.as_bytes().to_vec().into());
    let (client, ack) = RawClient::connect(addr, connect).await;
    (client, ack.reason)
}
