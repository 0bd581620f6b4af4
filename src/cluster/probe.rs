//! `ferromq check --online` for a cluster node: connect to the NATS servers of
//! `<ferromq:jetStream>` the way the node would (same URLs, same login) and tell whether the
//! node could start there: which server answered, whether JetStream is on for the account,
//! how many servers the NATS cluster has, and whether `replicas` fits in it.
//!
//! The probe only reads: it creates no stream, bucket or consumer, so it is safe against a
//! production cluster.

use std::time::Duration;

use crate::config::model::{Config, JetStreamSettings, Persistence};
use crate::config::Diagnostic;

/// The longest the whole probe (connect, the JetStream account request, and up to
/// `RECOUNT_TRIES` looks at the cluster's servers) may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest the connection to the first server that answers may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest the JetStream account request (`$JS.API.INFO`) may take. Short enough that
/// the connection and this request end within [`PROBE_TIMEOUT`], so that a request nobody
/// answers is told apart from a server that does not answer at all.
const ACCOUNT_TIMEOUT: Duration = Duration::from_secs(4);

/// What the NATS side looks like from this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    /// The server that accepted the connection: `host:port` as it announces itself.
    pub connected_server: String,
    /// Its `server_name` (the `-n`/`server_name` of its configuration) and version.
    pub server_name: String,
    pub version: String,
    /// The server runs JetStream and the account may use it (`$JS.API.INFO` answered).
    pub jetstream: bool,
    /// The NATS cluster's name; `None` for a server that is not clustered.
    pub cluster_name: Option<String>,
    /// Servers in the cluster, counted from the client URLs the server advertises (the
    /// server itself included); 1 for a server that is not clustered; `None` for a cluster
    /// whose servers advertise no URLs (`no_advertise`).
    pub cluster_size: Option<usize>,
    /// `replicas` of the configuration.
    pub replicas: usize,
    /// The server's `max_payload` (bytes): what the node's messages are capped by.
    pub max_payload: usize,
}

impl ProbeReport {
    /// Whether every stream and bucket can have its `replicas` copies on distinct servers.
    /// Unknown sizes are given the benefit of the doubt.
    pub fn replicas_fit(&self) -> bool {
        self.cluster_size.is_none_or(|size| self.replicas <= size)
    }
}

/// Why the node could not use the servers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// No server accepted a connection (refused, unreachable, TLS, DNS, login).
    #[error("cannot connect to NATS at {servers}: {reason}")]
    Connect { servers: String, reason: String },
    /// Nothing answered within [`PROBE_TIMEOUT`].
    #[error("NATS at {servers} did not answer within {} s", PROBE_TIMEOUT.as_secs())]
    Timeout { servers: String },
    /// The `credentials` file could not be read.
    #[error("cannot read the NATS credentials file {path}: {reason}")]
    Credentials { path: String, reason: String },
    /// Connected to a clustered server that announces JetStream, but nothing answered the
    /// JetStream account request: in a NATS cluster only the JetStream meta leader answers
    /// it, and a cluster just started (or with too few of its servers running) has none yet.
    #[error(
        "NATS server {server} (cluster `{cluster}`) accepted the connection and announces \
         JetStream, but its JetStream API did not answer within {} s: the JetStream cluster \
         most likely has no meta leader yet (its servers are still starting or electing one, \
         or too few of them run to elect one)",
        ACCOUNT_TIMEOUT.as_secs()
    )]
    NoMetaLeader { server: String, cluster: String },
    /// Connected, but JetStream is off on the server or for the account.
    #[error("NATS server {server} does not offer JetStream to this account: {reason}")]
    NoJetStream { server: String, reason: String },
}

impl ProbeError {
    /// What to do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            ProbeError::Connect { .. } | ProbeError::Timeout { .. } => {
                "start the NATS servers (nats-server 2.10 or later with JetStream), or fix \
                 `servers`: the node connects to them, the check uses the same addresses and login"
            }
            ProbeError::Credentials { .. } => {
                "`credentials` names a .creds file as `nsc generate creds` writes it"
            }
            ProbeError::NoMetaLeader { .. } => {
                "wait a few seconds and run the check again: a NATS cluster elects its JetStream \
                 meta leader within seconds once enough of its servers run; if it stays like \
                 this, start the servers that do not run (a server that cannot reach the others \
                 logs `Waiting for routing to be established`; a new cluster of three waited for \
                 all three)"
            }
            ProbeError::NoJetStream { .. } => {
                "enable JetStream on every NATS server (`jetstream { store_dir: ... }` or `-js`) \
                 and for the account ferromq logs in with"
            }
        }
    }
}

/// Connect to `settings.servers` (at most [`PROBE_TIMEOUT`]) and look at the cluster.
pub async fn probe(settings: &JetStreamSettings) -> Result<ProbeReport, ProbeError> {
    let servers = settings.servers.join(",");
    match tokio::time::timeout(PROBE_TIMEOUT, probe_unbounded(settings)).await {
        Ok(result) => result,
        Err(_) => Err(ProbeError::Timeout { servers }),
    }
}

async fn probe_unbounded(settings: &JetStreamSettings) -> Result<ProbeReport, ProbeError> {
    let servers = settings.servers.join(",");
    let mut options = async_nats::ConnectOptions::new()
        .name("ferromq check --online")
        .connection_timeout(CONNECT_TIMEOUT)
        .max_reconnects(Some(0))
        // The servers in the order `run` tries them (the client shuffles otherwise).
        .retain_servers_order();
    if let Some(path) = &settings.credentials {
        options = options
            .credentials_file(path)
            .await
            .map_err(|e| ProbeError::Credentials {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
    }
    if let (Some(user), Some(password)) = (&settings.user, &settings.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    let client = options
        .connect(settings.servers.as_slice())
        .await
        .map_err(|e| ProbeError::Connect {
            servers: servers.clone(),
            reason: e.to_string(),
        })?;
    let mut info = client.server_info();
    let connected_server = format!("{}:{}", info.host, info.port);
    let mut jetstream = async_nats::jetstream::new(client.clone());
    jetstream.set_timeout(ACCOUNT_TIMEOUT);
    let account = jetstream.query_account().await;
    if let (Err(e), true, Some(cluster)) = (&account, info.jetstream, &info.cluster) {
        if matches!(
            e.kind(),
            async_nats::jetstream::context::AccountErrorKind::TimedOut
        ) {
            let _ = client.drain().await;
            return Err(ProbeError::NoMetaLeader {
                server: format!("`{}` at {connected_server}", info.server_name),
                cluster: cluster.clone(),
            });
        }
    }
    // The servers a cluster gossips (`connect_urls`) can miss one whose route is being made
    // again (seen under load): before saying `replicas` does not fit, look again for a while
    // (the client takes every INFO the server sends).
    for _ in 0..RECOUNT_TRIES {
        if info.cluster.is_none() || known_servers(&info) >= settings.replicas.max(1) {
            break;
        }
        tokio::time::sleep(RECOUNT_WAIT).await;
        let again = client.server_info();
        if known_servers(&again) > known_servers(&info) {
            info = again;
        }
    }
    let _ = client.drain().await;
    if let Err(e) = account {
        return Err(ProbeError::NoJetStream {
            server: connected_server,
            reason: e.to_string(),
        });
    }
    let urls = known_urls(&info);
    Ok(ProbeReport {
        connected_server,
        server_name: info.server_name.clone(),
        version: info.version.clone(),
        jetstream: true,
        cluster_name: info.cluster.clone(),
        cluster_size: match (&info.cluster, urls.len()) {
            (None, _) => Some(1),
            (Some(_), 0) => None,
            (Some(_), n) => Some(n),
        },
        replicas: settings.replicas,
        max_payload: info.max_payload,
    })
}

/// How often, and how far apart, the probe looks again at the servers a cluster gossips
/// when they seem too few for `replicas` (5 s in all: on a loaded machine a route came back
/// after more than 2 s, and `check` then said three servers were two).
const RECOUNT_TRIES: usize = 20;
const RECOUNT_WAIT: Duration = Duration::from_millis(250);

/// The distinct client URLs of the cluster's servers as the server last told them.
fn known_urls(info: &async_nats::ServerInfo) -> Vec<String> {
    let mut urls = info.connect_urls.clone();
    urls.sort();
    urls.dedup();
    urls
}

fn known_servers(info: &async_nats::ServerInfo) -> usize {
    known_urls(info).len()
}

/// What `check --online` found at the NATS servers.
#[derive(Debug, Default)]
pub struct Checked {
    /// A note with what was found, an error when the node could not run there.
    pub diagnostics: Vec<Diagnostic>,
    /// The `max_payload` the server announced, when one answered.
    pub max_payload: Option<usize>,
}

/// The probe as `check` diagnostics, at the `<ferromq:jetStream>` element. Nothing for a
/// configuration that is not a cluster node.
pub async fn check(config: &Config) -> Checked {
    let Persistence::JetStream(settings) = &config.persistence else {
        return Checked::default();
    };
    let at = config.persistence_span.clone();
    match probe(settings).await {
        Err(e) => Checked {
            diagnostics: vec![Diagnostic::error(at, e.to_string()).with_hint(e.hint())],
            max_payload: None,
        },
        Ok(report) => {
            let cluster = match (&report.cluster_name, report.cluster_size) {
                (Some(name), Some(size)) => format!("NATS cluster `{name}` of {size} server(s)"),
                (Some(name), None) => {
                    format!("NATS cluster `{name}` of unknown size (its servers advertise no URLs)")
                }
                (None, _) => "a NATS server that is not clustered".to_owned(),
            };
            let mut found = vec![Diagnostic::note(
                at.clone(),
                format!(
                    "connected to NATS server `{}` at {} (version {}); JetStream enabled; {cluster}; \
                     replicas {}; max_payload {} bytes",
                    report.server_name,
                    report.connected_server,
                    report.version,
                    report.replicas,
                    report.max_payload
                ),
            )];
            if !report.replicas_fit() {
                found.push(
                    Diagnostic::error(
                        at,
                        format!(
                            "replicas=\"{}\" but the NATS cluster has {} server(s): JetStream \
                             cannot place the copies",
                            report.replicas,
                            report.cluster_size.unwrap_or(1)
                        ),
                    )
                    .with_hint("lower replicas to the number of NATS servers, or add servers"),
                );
            }
            Checked {
                diagnostics: found,
                max_payload: Some(report.max_payload),
            }
        }
    }
}
