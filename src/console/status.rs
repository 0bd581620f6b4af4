//! `ferromq status`: the overview of a running broker, read from its console's
//! `/api/overview` and printed as plain text.

use std::time::Duration;

use base64::Engine;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// How long `status` waits for the console.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The console `status` asks when neither `--console` nor the configuration names one:
/// ActiveMQ's jetty.xml address.
pub fn default_url() -> String {
    use crate::config::compile::console::{DEFAULT_HOST, DEFAULT_PORT};
    format!("http://{DEFAULT_HOST}:{DEFAULT_PORT}")
}

/// The URL of the console `console` configures, as a client on this machine reaches it: https
/// when it serves the broker's `<sslContext>`, and a wildcard host (`0.0.0.0`, `::`), which
/// names no address to connect to, as the loopback address of its family.
pub fn url_of(console: &crate::config::ConsoleConfig) -> String {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let scheme = if console.tls { "https" } else { "http" };
    let host = console.host.trim_start_matches('[').trim_end_matches(']');
    let host = match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) if ip.is_unspecified() => Ipv4Addr::LOCALHOST.to_string(),
        Ok(IpAddr::V6(ip)) if ip.is_unspecified() => Ipv6Addr::LOCALHOST.to_string(),
        _ => host.to_owned(),
    };
    if host.contains(':') {
        format!("{scheme}://[{host}]:{}", console.port)
    } else {
        format!("{scheme}://{host}:{}", console.port)
    }
}

/// GET `path` from the console at `base` (`http://host:port` or `https://host:port`; a
/// trailing `/` and ActiveMQ's console path `/admin/` are ignored) with basic auth; the status
/// code and the body. Over https the console's certificate must chain to a CA certificate of
/// `cacert` (a PEM file: the CA that signed the broker's `<sslContext>` key) and name the host
/// of `base`. Errors: a bad URL (credentials or another path in it), https without `cacert`,
/// an unreadable `cacert`, unreachable, a failed handshake (saying so when the console speaks
/// the other scheme), not HTTP.
pub async fn get(
    base: &str,
    path: &str,
    credentials: Option<(&str, &str)>,
    cacert: Option<&std::path::Path>,
) -> anyhow::Result<(u16, Vec<u8>)> {
    let (tls, authority) = parse_url(base)?;
    let stream = connect(authority).await?;
    if !tls {
        return match exchange(stream, authority, path, credentials).await {
            Ok(answer) => Ok(answer),
            Err(_) if speaks_tls(authority).await => anyhow::bail!(
                "the console at {authority} speaks HTTPS: use https://{authority} (with --cacert)"
            ),
            Err(e) => Err(e),
        };
    }
    let cacert = cacert.ok_or_else(|| {
        anyhow::anyhow!("{base}: https needs --cacert FILE (the CA of the console's certificate)")
    })?;
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client_config(cacert)?));
    let host = host_of(authority);
    let name = rustls_pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| anyhow::anyhow!("{host}: not a host name for TLS: {e}"))?;
    let handshake = tokio::time::timeout(TIMEOUT, connector.connect(name, stream)).await;
    let stream = match handshake {
        Err(_) => anyhow::bail!(
            "{authority}: no TLS handshake within {} s",
            TIMEOUT.as_secs()
        ),
        Ok(Ok(stream)) => stream,
        Ok(Err(_)) if speaks_plain_http(authority).await => anyhow::bail!(
            "the console at {authority} speaks plain HTTP, not HTTPS: use http://{authority}"
        ),
        Ok(Err(e)) => {
            anyhow::bail!("TLS handshake with the console at {authority} failed: {e}")
        }
    };
    exchange(stream, authority, path, credentials).await
}

/// `http://HOST:PORT[/]` or `https://...`: whether TLS, and `HOST:PORT`. ActiveMQ's console
/// URL (`/admin/`) is accepted for the same console; any other path, and credentials in the
/// URL, are refused with what to give instead.
fn parse_url(base: &str) -> anyhow::Result<(bool, &str)> {
    let (tls, rest) = if let Some(rest) = base.strip_prefix("http://") {
        (false, rest)
    } else if let Some(rest) = base.strip_prefix("https://") {
        (true, rest)
    } else {
        anyhow::bail!("the console URL must start with http:// or https:// (got {base})");
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if authority.contains('@') {
        anyhow::bail!(
            "the console URL must not carry a user name or password (user:password@): give \
             --username and --password-env instead"
        );
    }
    if authority.is_empty() {
        anyhow::bail!("the console URL names no host (got {base})");
    }
    if !matches!(path.trim_end_matches('/'), "" | "/admin") {
        anyhow::bail!(
            "the console URL takes no path (got {path}): ferromq's console is served at the \
             root, give {}://{authority}",
            if tls { "https" } else { "http" }
        );
    }
    Ok((tls, authority))
}

async fn connect(authority: &str) -> anyhow::Result<tokio::net::TcpStream> {
    tokio::time::timeout(TIMEOUT, tokio::net::TcpStream::connect(authority))
        .await
        .map_err(|_| anyhow::anyhow!("{authority}: no answer within {} s", TIMEOUT.as_secs()))?
        .map_err(|e| anyhow::anyhow!("cannot reach the console at {authority}: {e}"))
}

/// After plain HTTP failed: does `authority` answer a TLS handshake? (A certificate that no
/// root of an empty trust store vouches for is the server's answer: it speaks TLS.)
async fn speaks_tls(authority: &str) -> bool {
    use tokio_rustls::rustls;
    let Ok(stream) = connect(authority).await else {
        return false;
    };
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let Ok(builder) =
        rustls::ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions()
    else {
        return false;
    };
    let config = builder
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let host = host_of(authority).to_owned();
    let Ok(name) = rustls_pki_types::ServerName::try_from(host) else {
        return false;
    };
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    match tokio::time::timeout(TIMEOUT, connector.connect(name, stream)).await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) => e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .is_some_and(|e| matches!(e, rustls::Error::InvalidCertificate(_))),
        Err(_) => false,
    }
}

/// After a TLS handshake failed: does `authority` answer plain HTTP?
async fn speaks_plain_http(authority: &str) -> bool {
    match connect(authority).await {
        Ok(stream) => exchange(stream, authority, "/", None).await.is_ok(),
        Err(_) => false,
    }
}

/// The host of `host:port` or `[v6]:port`, without brackets.
fn host_of(authority: &str) -> &str {
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

/// TLS client settings trusting the certificates of the PEM file `path`.
fn client_config(path: &std::path::Path) -> anyhow::Result<tokio_rustls::rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    let bytes =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("--cacert {}: {e}", path.display()))?;
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&bytes) {
        let cert = cert.map_err(|e| anyhow::anyhow!("--cacert {}: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| anyhow::anyhow!("--cacert {}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        anyhow::bail!(
            "--cacert {}: no PEM certificate in the file",
            path.display()
        );
    }
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    Ok(
        tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| anyhow::anyhow!("TLS settings: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// One HTTP/1.1 GET over `stream`.
async fn exchange<S>(
    stream: S,
    authority: &str,
    path: &str,
    credentials: Option<(&str, &str)>,
) -> anyhow::Result<(u16, Vec<u8>)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut request = hyper::Request::get(path).header(hyper::header::HOST, authority);
    if let Some((user, password)) = credentials {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        request = request.header(hyper::header::AUTHORIZATION, format!("Basic {encoded}"));
    }
    let response = tokio::time::timeout(
        TIMEOUT,
        sender.send_request(request.body(Empty::<Bytes>::new())?),
    )
    .await
    .map_err(|_| anyhow::anyhow!("the console did not answer within {} s", TIMEOUT.as_secs()))??;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes().to_vec();
    Ok((status, body))
}

/// The overview as text, from `/api/overview`'s JSON.
pub fn describe(overview: &Value) -> String {
    use std::fmt::Write;
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "broker {} (ferromq {}), up {} s, config {}",
        s(&overview["broker_name"]),
        s(&overview["version"]),
        s(&overview["uptime_secs"]),
        s(&overview["config_file"])
    );
    let reload = &overview["last_reload"];
    let _ = writeln!(out, "last reload: {}", s(&reload["result"]));
    for d in reload["diagnostics"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  {}:{}:{}: {}: {}",
            s(&d["file"]),
            s(&d["line"]),
            s(&d["column"]),
            s(&d["severity"]),
            s(&d["message"])
        );
    }
    for l in overview["listeners"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "listener {} {} {} ({}{}): {} connections",
            s(&l["name"]),
            s(&l["scheme"]),
            s(&l["address"]),
            s(&l["protocol"]),
            if l["tls"] == Value::Bool(true) {
                ", tls"
            } else {
                ""
            },
            s(&l["connections"])
        );
    }
    let c = &overview["connections"];
    let _ = writeln!(
        out,
        "connections: {} (mqtt {}, stomp {})",
        s(&c["current"]),
        s(&c["mqtt"]),
        s(&c["stomp"])
    );
    let sessions = &overview["sessions"];
    let _ = writeln!(
        out,
        "sessions: {} online, {} offline; subscriptions: {}",
        s(&sessions["online"]),
        s(&sessions["offline"]),
        s(&overview["subscriptions"])
    );
    let m = &overview["messages"];
    let _ = writeln!(
        out,
        "messages: {} received, {} sent",
        s(&m["received"]),
        s(&m["sent"])
    );
    let mem = &overview["memory"];
    let _ = if mem["limit_bytes"].is_null() {
        // `memoryUsage limit="0"`: no limit, so no share of one either.
        writeln!(out, "memory: {} bytes (no limit)", s(&mem["used_bytes"]))
    } else {
        writeln!(
            out,
            "memory: {} of {} bytes ({}%)",
            s(&mem["used_bytes"]),
            s(&mem["limit_bytes"]),
            s(&mem["percent"])
        )
    };
    let store = &overview["store"];
    if store["kind"] == "cluster" {
        let _ = writeln!(
            out,
            "store: in the cluster ({}); this node keeps none of its own",
            s(&store["engine"])
        );
    } else if store.is_null() {
        let _ = writeln!(out, "store: none (memory only)");
    } else if store["limit_bytes"].is_null() {
        // No `storeUsage` limit (ferromq applies no default one): what bounds the store is
        // the reserve of free disk space it keeps (docs/durable-store.md, "Disk full").
        let _ = writeln!(
            out,
            "store: {} bytes (no storeUsage limit; the disk's free space bounds it)",
            s(&store["used_bytes"])
        );
    } else {
        let _ = writeln!(
            out,
            "store: {} of {} bytes ({}%)",
            s(&store["used_bytes"]),
            s(&store["limit_bytes"]),
            s(&store["percent"])
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn console(host: &str, port: u16, tls: bool) -> crate::config::ConsoleConfig {
        crate::config::ConsoleConfig {
            host: host.to_owned(),
            port,
            source: "jetty.xml",
            realm: None,
            users: Vec::new(),
            metrics_open: false,
            tls,
            max_connections: 1,
            span: None,
        }
    }

    #[test]
    fn a_cluster_nodes_store_is_described_as_the_clusters() {
        let mut overview = serde_json::json!({
            "store": { "kind": "cluster", "engine": "NATS JetStream" },
        });
        let text = describe(&overview);
        assert!(
            text.contains("store: in the cluster (NATS JetStream); this node keeps none"),
            "{text}"
        );
        assert!(
            !text.contains("store: - of"),
            "no local store figures: {text}"
        );
        overview["store"] = serde_json::json!({
            "kind": "local", "used_bytes": 5, "limit_bytes": 10, "percent": 50,
        });
        assert!(describe(&overview).contains("store: 5 of 10 bytes (50%)"));
        overview["store"] = serde_json::json!({
            "kind": "local", "used_bytes": 5, "limit_bytes": null, "percent": 0,
        });
        let text = describe(&overview);
        assert!(
            text.contains("store: 5 bytes (no storeUsage limit; the disk's free space bounds it)"),
            "{text}"
        );
        overview["store"] = serde_json::Value::Null;
        assert!(describe(&overview).contains("store: none (memory only)"));
    }

    #[test]
    fn a_memory_without_a_limit_is_described_so() {
        let overview = serde_json::json!({
            "memory": { "used_bytes": 7, "limit_bytes": null, "percent": 0 },
        });
        let text = describe(&overview);
        assert!(text.contains("memory: 7 bytes (no limit)"), "{text}");
    }

    #[test]
    fn a_configured_console_is_asked_where_a_local_client_reaches_it() {
        assert_eq!(
            url_of(&console("127.0.0.1", 8162, false)),
            "http://127.0.0.1:8162"
        );
        assert_eq!(
            url_of(&console("broker.example", 8443, true)),
            "https://broker.example:8443"
        );
        assert_eq!(
            url_of(&console("0.0.0.0", 8161, false)),
            "http://127.0.0.1:8161"
        );
        assert_eq!(url_of(&console("::", 8161, false)), "http://[::1]:8161");
        assert_eq!(url_of(&console("[::]", 8161, false)), "http://[::1]:8161");
        assert_eq!(url_of(&console("fe80::1", 9, false)), "http://[fe80::1]:9");
        assert_eq!(default_url(), "http://127.0.0.1:8161");
    }

    #[test]
    fn urls_with_credentials_or_a_path_are_refused_with_what_to_give() {
        assert_eq!(
            parse_url("http://127.0.0.1:8161").ok(),
            Some((false, "127.0.0.1:8161"))
        );
        assert_eq!(parse_url("https://h:1/").ok(), Some((true, "h:1")));
        assert_eq!(
            parse_url("http://h:8161/admin/").ok(),
            Some((false, "h:8161"))
        );
        assert_eq!(
            parse_url("http://h:8161/admin").ok(),
            Some((false, "h:8161"))
        );
        let refused = |url: &str| {
            parse_url(url)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(
            refused("http://admin:admin@127.0.0.1:8161").contains("--username and --password-env")
        );
        assert!(refused("http://admin@h:1/").contains("--password-env"));
        assert!(refused("http://h:8161/console").contains("takes no path (got /console)"));
        assert!(refused("http://h:8161/console").contains("give http://h:8161"));
        assert!(refused("ftp://h:1").contains("http:// or https://"));
        assert!(refused("http:///admin/").contains("no host"));
    }

    #[test]
    fn host_of_strips_the_port_and_brackets() {
        assert_eq!(super::host_of("127.0.0.1:8161"), "127.0.0.1");
        assert_eq!(super::host_of("localhost:8161"), "localhost");
        assert_eq!(super::host_of("[::1]:8161"), "::1");
        assert_eq!(super::host_of("example.org"), "example.org");
    }
}
