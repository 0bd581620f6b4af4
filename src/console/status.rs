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

/// GET `path` from the console at `base` (`http://host:port`) with basic auth; the status
/// code and the body. Errors: unreachable, not HTTP, HTTPS (not supported by this client).
pub async fn get(
    base: &str,
    path: &str,
    credentials: Option<(&str, &str)>,
) -> anyhow::Result<(u16, Vec<u8>)> {
    let rest = base
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("the console URL must start with http:// (got {base})"))?;
    let authority = rest.trim_end_matches('/');
    let stream = tokio::time::timeout(TIMEOUT, tokio::net::TcpStream::connect(authority))
        .await
        .map_err(|_| anyhow::anyhow!("{authority}: no answer within {} s", TIMEOUT.as_secs()))?
        .map_err(|e| anyhow::anyhow!("cannot reach the console at {authority}: {e}"))?;
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
    let _ = writeln!(
        out,
        "memory: {} of {} bytes ({}%)",
        s(&mem["used_bytes"]),
        s(&mem["limit_bytes"]),
        s(&mem["percent"])
    );
    let store = &overview["store"];
    if !store.is_null() {
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
