//! `ferromq check` output: every diagnostic, then a summary of the runtime graph the broker
//! would build, then `N error(s), M warning(s)`.
//!
//! Text and JSON render the same [`Summary`], so what a person reads and what a pipeline parses
//! cannot drift apart. Passwords never appear: only user names and groups.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::diagnostic::Severity;
use super::model::{
    Authentication, AuthzEntry, Config, JaasAuth, JetStreamSettings, KeyMaterial, Listener,
    LoginModuleKind, Persistence, PrincipalKind, Protocol, SharedStrategy, StoreKind,
};
use super::{properties, Loaded};

/// What `check --online` learned from the servers the configuration names, where the
/// summary shows it instead of a default.
#[derive(Debug, Clone, Copy, Default)]
pub struct Online {
    /// NATS's `max_payload` (bytes) as the server the probe reached announced it.
    pub nats_max_payload: Option<usize>,
}

/// Human-readable report.
pub fn text(loaded: &Loaded) -> String {
    text_with(loaded, Online::default())
}

/// [`text`] with what `check --online` learned.
pub fn text_with(loaded: &Loaded, online: Online) -> String {
    let mut out = loaded.diagnostics.to_string();
    match &loaded.config {
        Some(config) => render_summary(&mut out, &Summary::with(config, online)),
        None if loaded.diagnostics.has_errors() => {}
        None => out.push_str("nothing to summarise\n"),
    }
    let (errors, warnings) = counts(loaded);
    let _ = writeln!(out, "{errors} error(s), {warnings} warning(s)");
    out
}

/// `{"valid": bool, "diagnostics": [...], "summary": {...} | null}`.
pub fn json(loaded: &Loaded) -> String {
    json_with(loaded, Online::default())
}

/// [`json`] with what `check --online` learned.
pub fn json_with(loaded: &Loaded, online: Online) -> String {
    let diagnostics: Vec<JsonDiagnostic<'_>> = loaded
        .diagnostics
        .0
        .iter()
        .map(|d| JsonDiagnostic {
            severity: d.severity,
            file: d.span.as_ref().map(|s| s.file.display().to_string()),
            builtin: d.span.as_ref().is_some_and(|s| s.builtin),
            line: d.span.as_ref().map(|s| s.line),
            column: d.span.as_ref().map(|s| s.col),
            message: &d.message,
            hint: d.hint.as_deref(),
        })
        .collect();
    let (errors, warnings) = counts(loaded);
    let value = serde_json::json!({
        "valid": !loaded.diagnostics.has_errors(),
        "errors": errors,
        "warnings": warnings,
        "diagnostics": diagnostics,
        "summary": loaded.config.as_ref().map(|c| Summary::with(c, online)),
    });
    let mut text = value.to_string();
    text.push('\n');
    text
}

fn counts(loaded: &Loaded) -> (usize, usize) {
    (
        loaded.diagnostics.errors().count(),
        loaded.diagnostics.warnings().count(),
    )
}

#[derive(Serialize)]
struct JsonDiagnostic<'a> {
    severity: Severity,
    file: Option<String>,
    /// `file` is not on disk: the position is in the built-in copy that stands for it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    builtin: bool,
    line: Option<u32>,
    column: Option<u32>,
    message: &'a str,
    hint: Option<&'a str>,
}

/// What the broker would build from a configuration.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub broker_name: String,
    pub listeners: Vec<ListenerSummary>,
    pub tls: Option<TlsSummary>,
    pub authentication: AuthenticationSummary,
    /// `None`: no authorization plugin, every user may do everything.
    pub authorization: Option<Vec<EntrySummary>>,
    /// `cachedLDAPAuthorizationMap`: where its entries are loaded from at run time.
    pub authorization_ldap: Option<String>,
    pub store: StoreSummary,
    /// `systemUsage` values by name, as the broker applies them; the unit is the name's suffix
    /// (`_bytes`, `_ms`); a size of 0 is no limit. Includes the defaults applied where the file
    /// sets none (named in `default_limits`).
    pub limits: BTreeMap<&'static str, u64>,
    /// The names in `limits` whose value is ferromq's default, not the file's: the memory
    /// limit (1 gb, ActiveMQ's `BrokerService` default) and, with a local store, the store
    /// limit (0, none: the disk's free space bounds the store).
    pub default_limits: Vec<&'static str>,
    /// `offlineDurableSubscriberTimeout`: an offline persistent session is deleted after this
    /// long; `None`: kept until its client returns.
    pub offline_session_timeout_ms: Option<u64>,
    pub policies: Vec<String>,
    /// Dead letters, redelivery and queue prefetch, one line each.
    pub delivery: Vec<String>,
    /// How a shared subscription group picks the member that receives a message.
    pub shared_strategy: SharedStrategy,
    /// `<ferromq:systemTopics interval>`: ms between two `$SYS` publications; 0 = off.
    pub system_topics_interval_ms: u64,
    /// `<destinations>`: ActiveMQ names of the declared topics and queues.
    pub destinations: crate::config::model::DeclaredDestinations,
    /// Virtual and composite topics, one line each (`config::virtual_destinations`).
    pub virtual_destinations: Vec<String>,
    /// Polling period when runtime reload is on.
    pub reload_check_period_ms: Option<u64>,
    /// The web console: one line (address, realm file, number of users; never a password).
    pub console: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ListenerSummary {
    pub name: String,
    pub scheme: String,
    pub address: String,
    /// Keep-alive applied to clients that send 0 (ms); 0 = none. From the listener's resolved
    /// [`crate::config::Inactivity`], as the broker enforces it.
    pub default_keep_alive_ms: u64,
    /// `transport.maxKeepAlive` in seconds: the longest keep-alive an MQTT 5 client gets
    /// (announced as Server Keep Alive). Left out when there is no cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_keep_alive_secs: Option<u16>,
    /// `None`: no timeout (or the inactivity monitor is off). Resolved as above.
    pub connect_attempt_timeout_ms: Option<u64>,
    pub max_frame_size_bytes: u64,
    /// A cluster node's MQTT listener: the smaller cap NATS puts on a message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_cap: Option<ClusterCap>,
    /// `None`: unlimited.
    pub maximum_connections: Option<u32>,
    pub inactivity_monitor: bool,
    pub client_certificates: &'static str,
    /// `MQTT`, `STOMP`, or `MQTT or STOMP (WebSocket sub-protocol)`.
    pub protocols: &'static str,
    /// The STOMP options, on connectors that serve STOMP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stomp: Option<StompSummary>,
}

/// The largest MQTT message a cluster node carries: NATS's `max_payload` less the frame
/// around the message. Below `wireFormat.maxFrameSize` it is the listener's real limit (the
/// CONNACK announces it, a larger PUBLISH closes the connection).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ClusterCap {
    /// The servers' `max_payload`: as `check --online` read it, else nats-server's default.
    pub nats_max_payload_bytes: u64,
    /// `true` when read from a server (`check --online`), `false` for the default.
    pub probed: bool,
    /// Topic and payload bytes of the largest PUBLISH the node accepts.
    pub max_message_bytes: u64,
}

/// A STOMP-serving connector's options as the connection applies them.
#[derive(Debug, Serialize)]
pub struct StompSummary {
    /// `transport.defaultHeartBeat`, `cx,cy` in ms: used when CONNECT has no `heart-beat`.
    pub default_heart_beat: String,
    /// `transport.hbGracePeriodMultiplier`.
    pub hb_grace_period_multiplier: f32,
    /// `transport.maxDataLength`: the largest body.
    pub max_data_length_bytes: u32,
    /// `wireFormat.maxFrameSize`; `None`: unlimited.
    pub max_frame_size_bytes: Option<u64>,
    /// A cluster node's connector: the smaller cap NATS puts on a message (a larger SEND
    /// is refused with an ERROR), when it is below `transport.maxDataLength`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_cap: Option<ClusterCap>,
}

#[derive(Debug, Serialize)]
pub struct TlsSummary {
    pub key_store: Option<String>,
    pub trust_store: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct AuthenticationSummary {
    /// `none`, `simple`, `jaas`, `jaas-certificate`, `jaas-dual`.
    pub kind: &'static str,
    pub detail: Vec<String>,
    /// User name -> groups (never passwords).
    pub users: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Serialize)]
pub struct EntrySummary {
    pub destination: String,
    pub read: Vec<String>,
    pub write: Vec<String>,
    pub admin: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct StoreSummary {
    /// `durable`, `memory` or `cluster`.
    pub kind: &'static str,
    pub directory: Option<String>,
    /// `<ferromq:jetStream>`: this broker is one node of a cluster over NATS JetStream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterSummary>,
}

/// A cluster node's store: where NATS is and how state is kept there (never the password).
#[derive(Debug, Serialize)]
pub struct ClusterSummary {
    /// The node id: `brokerName`.
    pub node_id: String,
    pub servers: Vec<String>,
    pub replicas: usize,
    pub message_shards: usize,
    pub max_offline_age_ms: u64,
    pub store_timeout_ms: u64,
    pub quorum_loss_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub node_timeout_ms: u64,
    /// `credentials FILE`, `user NAME` or `none`.
    pub login: String,
}

fn cluster(node_id: &str, js: &crate::config::model::JetStreamSettings) -> ClusterSummary {
    ClusterSummary {
        node_id: node_id.to_owned(),
        servers: js.servers.clone(),
        replicas: js.replicas,
        message_shards: js.message_shards,
        max_offline_age_ms: js.max_offline_age_ms,
        store_timeout_ms: js.store_timeout_ms,
        quorum_loss_timeout_ms: js.quorum_loss_timeout_ms,
        heartbeat_interval_ms: js.heartbeat_interval_ms,
        node_timeout_ms: js.node_timeout_ms,
        login: match (&js.credentials, &js.user) {
            (Some(path), _) => format!("credentials {}", path.display()),
            (None, Some(user)) => format!("user {user}"),
            (None, None) => "none".to_owned(),
        },
    }
}

impl Summary {
    pub fn of(config: &Config) -> Summary {
        Summary::with(config, Online::default())
    }

    /// [`Summary::of`] with what `check --online` learned.
    pub fn with(config: &Config, online: Online) -> Summary {
        let cap = cluster_cap(config, online);
        let mut limits = BTreeMap::new();
        let l = &config.limits;
        for (name, value) in [
            ("memory_limit_bytes", l.memory_limit_bytes),
            ("store_limit_bytes", l.store_limit_bytes),
            ("temp_limit_bytes", l.temp_limit_bytes),
            (
                "send_fail_if_no_space_after_ms",
                l.send_fail_after().map(|d| d.as_millis() as u64),
            ),
        ] {
            if let Some(v) = value {
                limits.insert(name, v);
            }
        }
        // What the broker applies where the file says nothing: printed too, so that the limit
        // a publisher meets is never a surprise.
        let mut default_limits = Vec::new();
        if l.memory_limit_bytes.is_none() {
            limits.insert(
                "memory_limit_bytes",
                crate::broker::routing::memory::DEFAULT_MEMORY_LIMIT_BYTES,
            );
            default_limits.push("memory_limit_bytes");
        }
        let local_store =
            config.broker.persistent && matches!(config.persistence, Persistence::Durable { .. });
        if l.store_limit_bytes.is_none() && local_store {
            limits.insert("store_limit_bytes", 0);
            default_limits.push("store_limit_bytes");
        }
        Summary {
            broker_name: config.broker.broker_name.clone(),
            listeners: config.listeners.iter().map(|l| listener(l, cap)).collect(),
            tls: config.ssl.as_ref().map(|s| TlsSummary {
                key_store: s.key_store.as_ref().map(material),
                trust_store: s.trust_store.as_ref().map(material),
            }),
            authentication: authentication(&config.authentication),
            authorization: config.authorization.as_ref().map(|a| {
                let mut entries: Vec<EntrySummary> =
                    a.entries.iter().map(|e| entry(e, "")).collect();
                entries.extend(
                    a.default_entry
                        .as_ref()
                        .map(|e| entry(e, "default entry: ")),
                );
                entries.extend(
                    // It applies to every temporary queue and topic: no kind nor pattern.
                    a.temp_entry.as_ref().map(|e| EntrySummary {
                        destination: "temporary destinations (tempDestinationAuthorizationEntry)"
                            .to_owned(),
                        ..entry(e, "")
                    }),
                );
                entries
            }),
            authorization_ldap: config
                .authorization
                .as_ref()
                .and_then(|a| a.ldap.as_ref())
                .map(|(m, _)| {
                    format!(
                        "{}: topics under `{}`, queues under `{}`, {}",
                        m.connection.url,
                        m.topic_search_base,
                        m.queue_search_base,
                        match m.poll_every() {
                            Some(d) => format!("reloaded every {} ms", d.as_millis()),
                            None => "loaded once (refreshDisabled)".to_owned(),
                        }
                    )
                }),
            store: match &config.persistence {
                Persistence::Durable { directory, .. } => StoreSummary {
                    kind: "durable",
                    directory: Some(directory.display().to_string()),
                    cluster: None,
                },
                Persistence::Memory => StoreSummary {
                    kind: "memory",
                    directory: None,
                    cluster: None,
                },
                Persistence::JetStream(js) => StoreSummary {
                    kind: "cluster",
                    directory: None,
                    cluster: Some(cluster(&config.broker.broker_name, js)),
                },
            },
            limits,
            default_limits,
            offline_session_timeout_ms: config.broker.offline_durable_subscriber_timeout_ms,
            policies: config
                .policies
                .iter()
                .map(|p| {
                    let limit = p
                        .pending_message_limit
                        .map_or("no pending limit".to_owned(), |n| {
                            format!("pending limit {n}")
                        });
                    format!("{:?} {}: {limit}", p.kind, p.pattern).to_lowercase()
                })
                .collect(),
            delivery: super::report_delivery::lines(&config.delivery),
            shared_strategy: config.shared_strategy,
            system_topics_interval_ms: config.system_topics.interval_ms,
            destinations: config.destinations.clone(),
            virtual_destinations: match (&config.persistence, config.virtual_destinations.is_empty()) {
                (crate::config::model::Persistence::JetStream(_), true) => vec![
                    "none: a cluster node applies no virtual destinations, not even ActiveMQ's default VirtualTopic.> (docs/cluster.md)".to_owned(),
                ],
                _ => config.virtual_destinations.lines(),
            },
            reload_check_period_ms: config.reload.as_ref().map(|r| r.check_period_ms),
            console: config.console.as_ref().map(console_line),
        }
    }
}

fn console_line(c: &crate::config::model::ConsoleConfig) -> String {
    let scheme = if c.tls { "https" } else { "http" };
    let realm = match &c.realm {
        Some(path) => format!(
            "realm {} ({} user{})",
            path.display(),
            c.users.len(),
            if c.users.len() == 1 { "" } else { "s" }
        ),
        None => "no realm file: nobody can log in".to_owned(),
    };
    let metrics = if c.metrics_open {
        ", /metrics open"
    } else {
        ""
    };
    format!(
        "{scheme}://{} from {}, {realm}{metrics}",
        c.address(),
        c.source
    )
}

/// The cap NATS puts on a cluster node's messages; `None` without a cluster.
fn cluster_cap(config: &Config, online: Online) -> Option<ClusterCap> {
    if !matches!(config.persistence, Persistence::JetStream(_)) {
        return None;
    }
    let max_payload = online
        .nats_max_payload
        .unwrap_or(JetStreamSettings::NATS_DEFAULT_MAX_PAYLOAD);
    Some(ClusterCap {
        nats_max_payload_bytes: max_payload as u64,
        probed: online.nats_max_payload.is_some(),
        max_message_bytes: JetStreamSettings::max_message_bytes(max_payload) as u64,
    })
}

fn listener(l: &Listener, cluster_cap: Option<ClusterCap>) -> ListenerSummary {
    let host = if l.host.contains(':') {
        format!("[{}]", l.host)
    } else {
        l.host.clone()
    };
    let o = &l.options;
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    ListenerSummary {
        name: l.name.clone(),
        scheme: l.scheme.to_string(),
        address: format!("{host}:{}", l.port),
        default_keep_alive_ms: l.inactivity.default_keep_alive.map_or(0, millis),
        max_keep_alive_secs: l.inactivity.max_keep_alive_secs,
        connect_attempt_timeout_ms: l.inactivity.connect_attempt_timeout.map(millis),
        max_frame_size_bytes: o.max_frame_size_bytes,
        // STOMP frames have their own limit; the cap binds only below maxFrameSize.
        cluster_cap: cluster_cap.filter(|cap| {
            l.scheme.serves(Protocol::Mqtt) && cap.max_message_bytes < o.max_frame_size_bytes
        }),
        maximum_connections: o.maximum_connections,
        inactivity_monitor: l.inactivity.monitored,
        client_certificates: match (l.scheme.is_tls(), o.need_client_auth, o.want_client_auth) {
            (false, _, _) => "n/a",
            (true, true, _) => "required",
            (true, false, true) => "requested",
            (true, false, false) => "not requested",
        },
        protocols: match l.scheme.protocol() {
            Some(Protocol::Mqtt) => "MQTT",
            Some(Protocol::Stomp) => "STOMP",
            None => "MQTT or STOMP (WebSocket sub-protocol)",
        },
        stomp: l.scheme.serves(Protocol::Stomp).then(|| StompSummary {
            default_heart_beat: o.stomp.default_heart_beat.to_string(),
            hb_grace_period_multiplier: o.stomp.hb_grace_period_multiplier,
            max_data_length_bytes: o.stomp.max_data_length_bytes,
            max_frame_size_bytes: o.stomp.max_frame_size_bytes,
            cluster_cap: cluster_cap
                .filter(|cap| cap.max_message_bytes < u64::from(o.stomp.max_data_length_bytes)),
        }),
    }
}

/// Where a cluster node's STOMP max SEND comes from, when NATS caps it below
/// `transport.maxDataLength`.
fn stomp_cap_line(out: &mut String, stomp: Option<&StompSummary>) {
    let Some((st, cap)) = stomp.and_then(|st| st.cluster_cap.map(|cap| (st, cap))) else {
        return;
    };
    cluster_cap_line(
        out,
        "max SEND",
        &cap,
        "transport.maxDataLength",
        u64::from(st.max_data_length_bytes),
    );
}

/// `      <limit> capped by the cluster: NATS max_payload ... ; <setting> <value>`.
fn cluster_cap_line(
    out: &mut String,
    limit: &str,
    cap: &ClusterCap,
    setting: &str,
    setting_bytes: u64,
) {
    let _ = writeln!(
        out,
        "      {limit} capped by the cluster: NATS max_payload {} ({}) less {} of frame; \
         {setting} {}",
        human_bytes(cap.nats_max_payload_bytes),
        if cap.probed {
            "as the server announced it"
        } else {
            "nats-server's default; check --online reads the servers' value"
        },
        human_bytes(JetStreamSettings::MESSAGE_FRAME_MARGIN as u64),
        human_bytes(setting_bytes),
    );
}

fn material(m: &KeyMaterial) -> String {
    let kind = match m.kind {
        StoreKind::Pem => "PEM",
        StoreKind::Pkcs12 => "PKCS#12",
        StoreKind::Jks => "JKS",
        StoreKind::Jceks => "JCEKS",
    };
    match (&m.key_file, &m.key_alias) {
        (Some(key), _) => format!("{} ({kind}, key {})", m.path.display(), key.display()),
        (None, Some(alias)) => format!("{} ({kind}, alias {})", m.path.display(), alias.name),
        (None, None) => format!("{} ({kind})", m.path.display()),
    }
}

fn entry(e: &AuthzEntry, prefix: &str) -> EntrySummary {
    let principals = match e.principal_kind {
        PrincipalKind::Group => "",
        PrincipalKind::User => " (names are users)",
    };
    EntrySummary {
        destination: format!(
            "{prefix}{} {}{principals}",
            format!("{:?}", e.kind).to_lowercase(),
            e.patterns.join(",")
        ),
        read: e.read.clone(),
        write: e.write.clone(),
        admin: e.admin.clone(),
    }
}

fn authentication(auth: &Authentication) -> AuthenticationSummary {
    let mut summary = AuthenticationSummary {
        kind: "none",
        detail: Vec::new(),
        users: BTreeMap::new(),
    };
    match auth {
        Authentication::None => {
            summary
                .detail
                .push("no authentication plugin: every client may connect".into());
        }
        Authentication::Simple(simple) => {
            summary.kind = "simple";
            for user in &simple.users {
                summary
                    .users
                    .insert(user.username.clone(), user.groups.clone());
            }
            summary.detail.push(if simple.anonymous_access_allowed {
                format!(
                    "anonymous clients allowed as user `{}` in group `{}`",
                    simple.anonymous_user, simple.anonymous_group
                )
            } else {
                "anonymous clients refused".into()
            });
        }
        Authentication::Jaas(jaas) => {
            summary.kind = "jaas";
            describe_jaas(&mut summary, jaas, "");
        }
        Authentication::JaasCertificate(jaas) => {
            summary.kind = "jaas-certificate";
            describe_jaas(&mut summary, jaas, "");
        }
        Authentication::JaasDual {
            password,
            certificate,
        } => {
            summary.kind = "jaas-dual";
            describe_jaas(&mut summary, password, "password (non-TLS connectors): ");
            describe_jaas(&mut summary, certificate, "certificate (TLS connectors): ");
        }
    }
    summary
}

fn describe_jaas(summary: &mut AuthenticationSummary, jaas: &JaasAuth, prefix: &str) {
    summary.detail.push(format!(
        "{prefix}entry `{}` of {}",
        jaas.configuration,
        jaas.login_config.display()
    ));
    for module in &jaas.modules {
        let class = module.class.rsplit('.').next().unwrap_or(&module.class);
        let what = match &module.kind {
            LoginModuleKind::Properties {
                users_file,
                groups_file,
                reload,
            }
            | LoginModuleKind::TextFileCertificate {
                users_file,
                groups_file,
                reload,
            } => {
                add_file_users(summary, users_file, groups_file);
                format!(
                    "users {}, groups {}{}",
                    users_file.display(),
                    groups_file.display(),
                    if *reload { ", re-read on change" } else { "" }
                )
            }
            LoginModuleKind::Guest { user, group, .. } => {
                format!("guests log in as `{user}` in group `{group}`")
            }
            LoginModuleKind::Ldap(ldap) => format!(
                "LDAP {} (users under `{}`)",
                ldap.connection.url, ldap.user_base
            ),
            LoginModuleKind::Unsupported => "not supported, ignored".to_owned(),
        };
        summary
            .detail
            .push(format!("{prefix}{class} {}: {what}", module.flag));
    }
}

/// User names and their groups from a login module's files (re-read here; the compiler already
/// checked that they exist and parse).
fn add_file_users(summary: &mut AuthenticationSummary, users_file: &Path, groups_file: &Path) {
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|t| properties::to_map(&t).ok())
            .unwrap_or_default()
    };
    let users = read(users_file);
    let groups = read(groups_file);
    // Each group's list is read once (a group of every user made this quadratic: 20,000
    // users took 17 s).
    let mut member_of: std::collections::HashMap<String, Vec<String>> =
        std::collections::HashMap::new();
    for (group, members) in &groups {
        for member in super::values::parse_comma_list(members) {
            let of = member_of.entry(member).or_default();
            if !of.contains(group) {
                of.push(group.clone());
            }
        }
    }
    for user in users.keys() {
        let mut of = member_of.remove(user).unwrap_or_default();
        of.sort();
        summary.users.insert(user.clone(), of);
    }
}

/// Users listed one per line in the text report; a users file of thousands would bury the
/// rest of it (the JSON report lists them all).
const USERS_LISTED: usize = 20;

fn render_summary(out: &mut String, s: &Summary) {
    let _ = writeln!(out, "broker `{}` would build:", s.broker_name);
    let _ = writeln!(out, "  listeners:");
    if s.listeners.is_empty() {
        let _ = writeln!(
            out,
            "    none: no MQTT or STOMP connector, clients cannot connect"
        );
    }
    for l in &s.listeners {
        let certificates = if l.client_certificates == "n/a" {
            String::new()
        } else {
            format!(", client certificates {}", l.client_certificates)
        };
        let stomp = l.stomp.as_ref().map(|st| {
            // NATS caps what a cluster node carries as a whole: destination, headers and body.
            let size = match st.cluster_cap {
                Some(cap) => format!(
                    "max SEND {} (destination, headers and body)",
                    human_bytes(cap.max_message_bytes)
                ),
                None => format!(
                    "max body {}",
                    human_bytes(u64::from(st.max_data_length_bytes))
                ),
            };
            format!(
                "heart-beat {} ms for clients that send none, heart-beat grace x{}, {size}, \
                 max STOMP frame {}",
                st.default_heart_beat,
                st.hb_grace_period_multiplier,
                st.max_frame_size_bytes
                    .map_or("unlimited".to_owned(), human_bytes)
            )
        });
        let mut keep_alive = match l.default_keep_alive_ms {
            0 => "none".to_owned(),
            ms => format!("{ms} ms"),
        };
        if let Some(secs) = l.max_keep_alive_secs {
            keep_alive.push_str(&format!(", MQTT 5 keep-alive at most {secs} s"));
        }
        let timeout = l
            .connect_attempt_timeout_ms
            .map_or("off".to_owned(), |ms| format!("{ms} ms"));
        let max_conn = l
            .maximum_connections
            .map_or("unlimited".to_owned(), |n| n.to_string());
        if l.protocols == "STOMP" {
            let _ = writeln!(
                out,
                "    {}: {}://{} (STOMP; {}, connect timeout {timeout}, max connections {max_conn}{certificates})",
                l.name,
                l.scheme,
                l.address,
                stomp.unwrap_or_default(),
            );
            stomp_cap_line(out, l.stomp.as_ref());
            continue;
        }
        let max_frame = l
            .cluster_cap
            .as_ref()
            .map_or(l.max_frame_size_bytes, |cap| cap.max_message_bytes);
        let _ = writeln!(
            out,
            "    {}: {}://{} (default keep-alive {keep_alive}, connect timeout {timeout}, max frame {}, max connections {max_conn}{certificates})",
            l.name,
            l.scheme,
            l.address,
            human_bytes(max_frame),
        );
        if let Some(cap) = &l.cluster_cap {
            cluster_cap_line(
                out,
                "max frame",
                cap,
                "wireFormat.maxFrameSize",
                l.max_frame_size_bytes,
            );
        }
        if let Some(stomp) = stomp {
            let _ = writeln!(out, "      STOMP by sub-protocol: {stomp}");
            stomp_cap_line(out, l.stomp.as_ref());
        }
    }
    match &s.tls {
        None => {
            let _ = writeln!(out, "  TLS: none");
        }
        Some(tls) => {
            let none = || "none".to_owned();
            let _ = writeln!(
                out,
                "  TLS: key store {}; trust store {}",
                tls.key_store.clone().unwrap_or_else(none),
                tls.trust_store.clone().unwrap_or_else(none)
            );
        }
    }
    let _ = writeln!(out, "  authentication: {}", s.authentication.kind);
    for line in &s.authentication.detail {
        let _ = writeln!(out, "    {line}");
    }
    for (user, groups) in s.authentication.users.iter().take(USERS_LISTED) {
        let _ = writeln!(out, "    user {user}: groups {}", list_or_none(groups));
    }
    if let Some(more) = s.authentication.users.len().checked_sub(USERS_LISTED) {
        if more > 0 {
            let _ = writeln!(
                out,
                "    ... and {more} more user{} (all of them with --format json)",
                if more == 1 { "" } else { "s" }
            );
        }
    }
    match &s.authorization {
        None => {
            let _ = writeln!(
                out,
                "  authorization: none (every client may publish and subscribe anywhere)"
            );
        }
        Some(entries) => {
            let _ = writeln!(
                out,
                "  authorization: {} entr{}",
                entries.len(),
                if entries.len() == 1 { "y" } else { "ies" }
            );
            if let Some(ldap) = &s.authorization_ldap {
                let _ = writeln!(out, "    plus entries from LDAP {ldap}");
            }
            for e in entries {
                let _ = writeln!(
                    out,
                    "    {}  read: {}  write: {}  admin: {}",
                    e.destination,
                    list_or_none(&e.read),
                    list_or_none(&e.write),
                    list_or_none(&e.admin)
                );
            }
        }
    }
    match (&s.store.directory, &s.store.cluster) {
        (_, Some(c)) => {
            let _ = writeln!(
                out,
                "  store: cluster node `{}` over NATS JetStream at {}",
                c.node_id,
                c.servers.join(", ")
            );
            let _ = writeln!(
                out,
                "    replicas {}, message shards {}, messages kept {} ms, store timeout {} ms",
                c.replicas, c.message_shards, c.max_offline_age_ms, c.store_timeout_ms
            );
            let _ = writeln!(
                out,
                "    heartbeat every {} ms, node dead after {} ms, quorum lost after {} ms; login: {}",
                c.heartbeat_interval_ms, c.node_timeout_ms, c.quorum_loss_timeout_ms, c.login
            );
        }
        (Some(dir), None) => {
            let _ = writeln!(out, "  store: durable, in {dir}");
        }
        (None, None) => {
            let _ = writeln!(out, "  store: memory only (nothing survives a restart)");
        }
    }
    if !s.limits.is_empty() {
        let limits: Vec<String> = s
            .limits
            .iter()
            .map(|(k, v)| {
                let figure = match k.strip_suffix("_ms") {
                    Some(name) => format!("{name} {v} ms"),
                    // A limit of 0 is ActiveMQ's "no limit".
                    None if *v == 0 => format!("{} no limit", k.trim_end_matches("_limit_bytes")),
                    None => format!("{} {}", k.trim_end_matches("_limit_bytes"), human_bytes(*v)),
                };
                if s.default_limits.contains(k) {
                    format!("{figure} (default)")
                } else {
                    figure
                }
            })
            .collect();
        let _ = writeln!(out, "  limits: {}", limits.join(", "));
    }
    let _ = match s.offline_session_timeout_ms {
        None => writeln!(
            out,
            "  offline persistent sessions: kept until their client returns"
        ),
        Some(ms) => writeln!(
            out,
            "  offline persistent sessions: deleted with their queues after {ms} ms offline"
        ),
    };
    for policy in &s.policies {
        let _ = writeln!(out, "  policy: {policy}");
    }
    for line in &s.delivery {
        let _ = writeln!(out, "  {line}");
    }
    let _ = if s.store.kind == "cluster" {
        writeln!(
            out,
            "  shared subscriptions: across nodes (QoS 0 by a NATS queue group, QoS 1 by one \
             JetStream consumer per group, QoS 2 granted as QoS 1); among one node's members {}",
            s.shared_strategy
        )
    } else {
        writeln!(
            out,
            "  shared subscriptions: one member per group, {} (online members first)",
            s.shared_strategy
        )
    };
    let _ = match s.system_topics_interval_ms {
        0 => writeln!(out, "  $SYS topics: off"),
        ms => writeln!(out, "  $SYS topics: every {ms} ms"),
    };
    if let Some(console) = &s.console {
        let _ = writeln!(out, "  web console: {console}");
    }
    let d = &s.destinations;
    if !d.topics.is_empty() || !d.queues.is_empty() {
        let list = |names: &[String]| match names {
            [] => "none".to_owned(),
            names => names.join(", "),
        };
        let _ = writeln!(
            out,
            "  destinations: topics {}; queues {} (kept for STOMP, not served over MQTT)",
            list(&d.topics),
            list(&d.queues)
        );
    }
    for line in &s.virtual_destinations {
        let _ = writeln!(out, "  {line}");
    }
    let _ = match s.reload_check_period_ms {
        None => writeln!(out, "  reload: off"),
        Some(0) => writeln!(out, "  reload: on (file events and SIGHUP; no polling)"),
        Some(ms) => writeln!(out, "  reload: on, checking every {ms} ms"),
    };
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(",")
    }
}

/// `67108864` -> `64 mb`: exact values only, so the text never rounds a limit, and in ActiveMQ's
/// own units (kb, mb, gb; `b` below a whole kilobyte), so that a figure copied into a size
/// attribute (`limit="64 mb"`) reads back as the same size ([`crate::config::values::parse_size_bytes`]).
fn human_bytes(bytes: u64) -> String {
    const UNITS: [(&str, u32); 3] = [("gb", 30), ("mb", 20), ("kb", 10)];
    for (unit, shift) in UNITS {
        let size = 1u64 << shift;
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{} {unit}", bytes / size);
        }
    }
    format!("{bytes} b")
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn human_bytes_is_exact() {
        assert_eq!(human_bytes(64 << 20), "64 mb");
        assert_eq!(human_bytes(100 << 30), "100 gb");
        assert_eq!(human_bytes(1 << 40), "1024 gb");
        assert_eq!(human_bytes(1536), "1536 b");
        assert_eq!(human_bytes(1025), "1025 b");
        assert_eq!(human_bytes(1024), "1 kb");
    }

    /// Every figure `check` prints reads back as the same size in a size attribute.
    #[test]
    fn printed_sizes_read_back_as_the_same_size() {
        for bytes in [
            1u64,
            1023,
            1024,
            1536,
            64 << 20,
            100 << 30,
            1 << 40,
            5 << 50,
        ] {
            let printed = human_bytes(bytes);
            assert_eq!(
                crate::config::values::parse_size_bytes(&printed),
                Ok(bytes),
                "{printed}"
            );
        }
    }
}
