//! The console's HTTP server: its own accept loop (plain TCP, or TLS with the broker's
//! `<sslContext>`), each connection served by hyper's HTTP/1.1 with the axum router.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::api::{self, ListenerInfo};
use super::auth::{authenticate, CsrfSecret, Peer};
use super::{jolokia, ui};
use crate::broker::BrokerCore;
use crate::config::{ConsoleConfig, ListenerOptions, SslContextConfig};
use crate::reload::ReloadStats;

/// What the console shows that the core does not hold.
#[derive(Debug, Clone)]
pub struct ConsoleInfo {
    pub broker_name: String,
    pub config_file: String,
    pub listeners: Vec<ListenerInfo>,
    pub store: StoreInfo,
    pub metrics_open: bool,
}

/// Where the broker keeps its messages, as the overview shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreInfo {
    /// `persistent="false"` or a memory adapter: no store.
    MemoryOnly,
    /// A durable store of its own, with its `storeUsage` limit (`None`: none; the free disk
    /// space still bounds it).
    Local { limit_bytes: Option<u64> },
    /// A cluster node: its messages are kept in NATS JetStream, not in a store of its own, so
    /// it has no store figures to show.
    Cluster,
}

/// The state every request handler shares.
pub struct Console {
    pub(super) core: Arc<BrokerCore>,
    pub(super) csrf: CsrfSecret,
    pub(super) info: ConsoleInfo,
    reload: Mutex<Option<watch::Receiver<ReloadStats>>>,
    /// On a cluster node: the last read of the cluster's session records.
    pub(super) kept: super::kept::KeptCache,
}

impl Console {
    /// `last_reload` of `/api/overview`.
    pub(super) fn last_reload(&self) -> Value {
        let Some(stats) = self.reload.lock().as_ref().map(|r| r.borrow().clone()) else {
            return json!({ "result": "none", "at_unix_ms": Value::Null, "diagnostics": [] });
        };
        let ms = |t: Option<std::time::SystemTime>| {
            t.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        };
        let (ok, failed) = (ms(stats.last_success), ms(stats.last_failure));
        let (result, at) = match (ok, failed) {
            (None, None) => ("none", None),
            (Some(ok), Some(failed)) if failed > ok => ("error", Some(failed)),
            (None, Some(failed)) => ("error", Some(failed)),
            (ok, _) => ("ok", ok),
        };
        let diagnostics: Vec<Value> = stats
            .last_diagnostics
            .iter()
            .map(|d| {
                json!({
                    "file": d.span.as_ref().map(|s| s.file.display().to_string()),
                    "line": d.span.as_ref().map(|s| s.line),
                    "column": d.span.as_ref().map(|s| s.col),
                    "severity": d.severity.to_string(),
                    "message": d.message,
                })
            })
            .collect();
        json!({ "result": result, "at_unix_ms": at, "diagnostics": diagnostics })
    }
}

/// A running console.
pub struct ConsoleHandle {
    addr: SocketAddr,
    console: Arc<Console>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl ConsoleHandle {
    /// The bound address (port 0 in the configuration resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Report this broker's hot reloads on `/api/overview`.
    pub fn follow_reloads(&self, stats: watch::Receiver<ReloadStats>) {
        *self.console.reload.lock() = Some(stats);
    }

    /// Stop accepting and close every console connection.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Bind the console and serve it until [`ConsoleHandle::stop`]. Errors: no users to log in
/// with, the address cannot be bound, or the TLS material cannot be loaded.
pub async fn start(
    config: &ConsoleConfig,
    ssl: Option<&SslContextConfig>,
    core: Arc<BrokerCore>,
    info: ConsoleInfo,
) -> anyhow::Result<ConsoleHandle> {
    if core.console_users.load().is_empty() {
        anyhow::bail!(
            "the web console at {} has no users: name a realm file (jetty.xml's \
             securityLoginService, or <ferromq:console realm=\"...\"/>) with lines \
             `user: password, admin`",
            config.address()
        );
    }
    let tls = match (config.tls, ssl) {
        (false, _) => None,
        (true, None) => {
            anyhow::bail!("<ferromq:console sslContext=\"true\"> needs the broker's <sslContext>")
        }
        (true, Some(ssl)) => Some(
            crate::transport::SharedTls::load(ssl, &ListenerOptions::default())
                .map_err(|e| anyhow::anyhow!("cannot set up TLS for the web console: {e}"))?,
        ),
    };
    let listener = TcpListener::bind((config.host.as_str(), config.port))
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind the web console to {}: {e}", config.address()))?;
    let addr = listener.local_addr()?;
    let console = Arc::new(Console {
        core,
        csrf: CsrfSecret::random(),
        info,
        reload: Mutex::new(None),
        kept: Default::default(),
    });
    let router = router(console.clone());
    let stop = CancellationToken::new();
    let limit = Arc::new(tokio::sync::Semaphore::new(config.max_connections as usize));
    let task = tokio::spawn(accept_loop(listener, router, tls, limit, stop.clone()));
    tracing::info!(
        %addr,
        tls = config.tls,
        "web console listening ({}://{addr}/)",
        if config.tls { "https" } else { "http" }
    );
    Ok(ConsoleHandle {
        addr,
        console,
        stop,
        task,
    })
}

fn router(console: Arc<Console>) -> Router {
    // Each page at `/NAME`; the overview also at `/` and `/index.html`.
    let mut pages = Router::new();
    for name in ui::PAGES {
        let serve = get(move |s: State<Arc<Console>>, h: HeaderMap| page(s, h, name));
        pages = if name == "overview" {
            pages.route("/", serve.clone()).route("/index.html", serve)
        } else {
            pages.route(&format!("/{name}"), serve)
        };
    }
    pages
        .route("/static/{*path}", get(asset))
        .route("/api/overview", get(api::overview))
        .route("/api/clients", get(api::clients))
        .route("/api/sessions", get(api::sessions))
        .route("/api/topics", get(api::topics))
        .route("/api/queues", get(api::queues))
        .route("/api/clients/{id}/disconnect", post(api::disconnect))
        .route(
            "/api/sessions/{client_id}/delete",
            post(api::delete_session),
        )
        .route("/api/queues/{name}/purge", post(api::purge_queue))
        // The same actions with the name in the query string, which no client rewrites: the
        // pages use these (a browser removes a `.` or `..` path segment, even as `%2E`).
        .route("/api/sessions/delete", post(api::delete_session_named))
        .route("/api/queues/purge", post(api::purge_queue_named))
        // Jolokia ignores the path of a POST (Telegraf's jolokia2 input POSTs to `<url>/read`):
        // every POST under /api/jolokia/ is the bulk endpoint; the rest in `fallback`.
        .route(
            "/api/jolokia/read/{mbean}/{attribute}",
            get(jolokia::read_one).post(jolokia::post),
        )
        .route(
            "/api/jolokia/read/{mbean}",
            get(jolokia::read_all).post(jolokia::post),
        )
        .route(
            "/api/jolokia/version",
            get(jolokia::version).post(jolokia::post),
        )
        // A GET without a path is answered with the version, as Jolokia does.
        .route("/api/jolokia", get(jolokia::version).post(jolokia::post))
        .route("/api/jolokia/", get(jolokia::version).post(jolokia::post))
        .route("/metrics", get(metrics))
        .fallback(fallback)
        .layer(middleware::from_fn(security_headers))
        .layer(middleware::from_fn_with_state(
            console.clone(),
            log_failed_login,
        ))
        .with_state(console)
}

/// Not routed: a POST under /api/jolokia/ (`/api/jolokia/read`, `/api/jolokia/read/`, ...) is
/// Jolokia's POST endpoint; anything else is a 404.
async fn fallback(
    console: State<Arc<Console>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if method == Method::POST && uri.path().starts_with("/api/jolokia/") {
        return jolokia::post(console, headers, body).await;
    }
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({ "error": "not found" })),
    )
        .into_response()
}

/// A request with credentials that were refused (401): one warning per request, with the
/// peer and the user name (bounded and escaped; never the password), and a count in
/// `ferromq_auth_failures_total{reason="console"}`.
async fn log_failed_login(
    State(console): State<Arc<Console>>,
    request: Request,
    next: Next,
) -> Response {
    let user = super::auth::basic_user_name(request.headers());
    let peer = request.extensions().get::<Peer>().copied();
    let response = next.run(request).await;
    if response.status() == StatusCode::UNAUTHORIZED {
        if let Some(user) = user {
            console
                .core
                .metrics
                .console_auth_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(
                target: "ferromq::console",
                peer = %peer.map_or_else(|| "-".to_owned(), |p| p.0.to_string()),
                user = %crate::security::Bounded(&user),
                "web console: login failed (wrong user name or password)"
            );
        }
    }
    response
}

/// Headers on every response: no framing by other sites, no MIME sniffing, and no caching of
/// the API's live (and user-specific) answers.
async fn security_headers(request: Request, next: Next) -> Response {
    let api = request.uri().path().starts_with("/api") || request.uri().path() == "/metrics";
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert("x-frame-options", HeaderValue::from_static("SAMEORIGIN"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if api {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn page(State(console): State<Arc<Console>>, headers: HeaderMap, name: &str) -> Response {
    if let Err(denied) = authenticate(&console.core, &headers) {
        return denied.into_response();
    }
    match ui::page(name) {
        Some(html) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'self'; img-src 'self' data:; frame-ancestors 'self'",
                ),
            ],
            html,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn asset(
    State(console): State<Arc<Console>>,
    Path(path): Path<String>,
    headers: axum::http::HeaderMap,
) -> Response {
    if let Err(denied) = authenticate(&console.core, &headers) {
        return denied.into_response();
    }
    match ui::asset(&path) {
        Some((content_type, bytes)) => {
            ([(header::CONTENT_TYPE, content_type)], bytes).into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn metrics(State(console): State<Arc<Console>>, headers: axum::http::HeaderMap) -> Response {
    if !console.info.metrics_open {
        if let Err(denied) = authenticate(&console.core, &headers) {
            return denied.into_response();
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(&console.core),
    )
        .into_response()
}

/// Accept console connections, at most `limit` at once: a connection beyond it waits in the
/// kernel's listen backlog (holding none of the process's descriptors) until one closes, so
/// that idle or slow HTTP clients cannot take the descriptors the MQTT and STOMP listeners
/// need. An accept error (EMFILE when the process is out of descriptors anyway) is retried
/// after a pause rather than in a busy loop, and logged once per run of failures.
async fn accept_loop(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<crate::transport::SharedTls>>,
    limit: Arc<tokio::sync::Semaphore>,
    stop: CancellationToken,
) {
    let mut failing = false;
    loop {
        let permit = tokio::select! {
            _ = stop.cancelled() => return,
            permit = limit.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                // Never closed; stop serving rather than spin if it ever were.
                Err(_) => return,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    if !failing {
                        tracing::warn!(
                            "web console: accept failed: {e} (retrying every 100 ms; \
                             logged again once accepting works)"
                        );
                        failing = true;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        if failing {
            tracing::info!("web console: accepting connections again");
            failing = false;
        }
        // The peer in each request's extensions (the failed-login log, the actions' audit).
        // (A layer per connection: a few routes re-wrapped, for at most maximumConnections.)
        let service = TowerToHyperService::new(router.clone().layer(axum::Extension(Peer(peer))));
        let stop = stop.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            // Released when the connection ends.
            let _permit = permit;
            match tls {
                None => serve(TokioIo::new(stream), service, stop).await,
                Some(tls) => {
                    let handshake = tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        tls.acceptor().accept(stream),
                    );
                    match handshake.await {
                        Ok(Ok(stream)) => serve(TokioIo::new(stream), service, stop).await,
                        Ok(Err(e)) => tracing::debug!("web console: TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!("web console: TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

async fn serve<I>(io: I, service: TowerToHyperService<Router>, stop: CancellationToken)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(30))
        .serve_connection(io, service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!("web console connection: {e}");
            }
        }
        // Dropped: the console's connections close with the broker.
        _ = stop.cancelled() => {}
    }
}
