//! Listeners: bind each connector, then accept. The accept loop only accepts (and
//! enforces `maximumConnections` by closing the extra socket at once); everything else,
//! including any TLS or WebSocket handshake, runs in the connection's own task.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use std::future::Future;

use anyhow::Context;
use arc_swap::ArcSwap;
use futures_util::future::Either;
use futures_util::FutureExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::refusals::{self, RefusalLog};
use crate::broker::connection::{
    self, ConnectionParams, ConnectionSlot, ConnectorSlots, ListenerSettings,
};
use crate::broker::runtime::BrokerCore;
use crate::config::{Listener, Protocol};
use crate::transport::{self, UpgradeLimits};

/// Pause after an accept error (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// A listening socket on `addr` with a listen queue of `backlog` (the kernel caps it at
/// `net.core.somaxconn`); SO_REUSEADDR as tokio's own `bind` sets it.
fn listen(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Bind a connector's socket. Errors name the connector and where it is configured.
pub async fn bind(listener: &Listener) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let where_ = format!(
        "connector `{}` ({}) at {}",
        listener.name, listener.uri, listener.span
    );
    let candidates: Vec<SocketAddr> =
        tokio::net::lookup_host((listener.host.as_str(), listener.port))
            .await
            .with_context(|| format!("cannot resolve host `{}` of {where_}", listener.host))?
            .collect();
    let mut last_error = None;
    for addr in candidates {
        match listen(addr, listener.options.backlog) {
            Ok(tcp) => {
                let local = tcp
                    .local_addr()
                    .with_context(|| format!("{where_}: no local address"))?;
                return Ok((tcp, local));
            }
            Err(e) => last_error = Some((addr, e)),
        }
    }
    match last_error {
        Some((addr, e)) => Err(anyhow::anyhow!("cannot listen on {addr} for {where_}: {e}")),
        None => Err(anyhow::anyhow!(
            "host `{}` of {where_} resolves to no address",
            listener.host
        )),
    }
}

/// Accept until `shutdown`; each socket gets its own task. `task_alive` is cloned into every
/// task so the broker can wait for all of them to end. `live_settings` may be swapped by a reload
/// (new options, new TLS material): each connection takes the settings current when it is
/// accepted and keeps them.
pub async fn accept_loop(
    tcp: TcpListener,
    live_settings: Arc<ArcSwap<ListenerSettings>>,
    core: Arc<BrokerCore>,
    shutdown: CancellationToken,
    task_alive: mpsc::Sender<()>,
) {
    let slots = ConnectorSlots::new(core.clone());
    core.metrics
        .listeners
        .register(live_settings.load().stats.clone());
    let mut refusals = RefusalLog::new(refusals::SUMMARY_EVERY);
    loop {
        let summary_due = refusals.summary_due();
        let accepted = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            () = sleep_until(summary_due) => {
                log_refusals(&live_settings.load(), &mut refusals);
                continue;
            }
            accepted = tcp.accept() => accepted,
        };
        let settings = live_settings.load_full();
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(listener = %settings.name, "accept failed: {e}");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        if let Some(max) = settings.options.maximum_connections {
            if slots.active() >= max {
                core.counters.connections_refused_limit();
                let reason = crate::metrics::Reason::MaxConnections;
                if refusals.refused(Instant::now()) {
                    crate::metrics::access::refused_at_accept(&settings.stats, peer, reason);
                    tracing::warn!(
                        listener = %settings.name,
                        %peer,
                        max,
                        "maximumConnections reached: connection closed (more within {} s are \
                         counted and logged as one line)",
                        refusals::SUMMARY_EVERY.as_secs()
                    );
                } else {
                    crate::metrics::access::refused_at_accept_quietly(&settings.stats, reason);
                }
                drop(stream);
                continue;
            }
        }
        core.counters.connections_accepted();
        core.counters.connection_opened();
        settings.stats.accepted.fetch_add(1, Ordering::Relaxed);
        let slot = slots.open(task_alive.clone());
        let params = ConnectionParams {
            core: core.clone(),
            listener: settings.clone(),
            peer,
            tls: false,
            peer_cert_subject: None,
            shutdown: shutdown.clone(),
        };
        tokio::spawn(serve_socket(stream, params, slot));
    }
    log_refusals(&live_settings.load(), &mut refusals);
}

/// Until `due`; never without one.
async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// The summary of the refusals at `maximumConnections` counted since the last line, if any.
fn log_refusals(settings: &ListenerSettings, refusals: &mut RefusalLog) {
    let count = refusals.take_summary(Instant::now());
    if count == 0 {
        return;
    }
    let reason = crate::metrics::Reason::MaxConnections;
    crate::metrics::access::refused_at_accept_summary(&settings.stats, reason, count);
    tracing::warn!(
        listener = %settings.name,
        max = settings.options.maximum_connections,
        count,
        "maximumConnections reached: {count} more connection(s) closed since the last such line"
    );
}

/// Turn an accepted socket into an MQTT byte stream for the connector's scheme (TLS and/or
/// WebSocket handshakes, bounded by the connect-attempt timeout) and serve it. Runs in the
/// connection's own task, never in the accept loop.
/// `slot` lives as long as the connection (a plain MQTT connection carries it when it parks).
fn serve_socket(
    stream: TcpStream,
    params: ConnectionParams,
    slot: ConnectionSlot,
) -> impl Future<Output = ()> + Send {
    let _ = stream.set_nodelay(true);
    let scheme = params.listener.scheme;
    if !scheme.is_tls() && !scheme.is_websocket() && scheme.protocol() != Some(Protocol::Stomp) {
        return Either::Left(connection::serve_tcp(stream, params, slot));
    }
    // Boxed: the TLS/WebSocket handshake and stream types, and a STOMP connection, are larger
    // than a plain MQTT connection, and every task would otherwise reserve room for them
    // (idle memory). `map` keeps the slot with the task without a wrapping `async` block,
    // which would hold a second copy of the socket and parameters.
    Either::Right(Box::pin(upgrade_and_serve(stream, params)).map(move |()| drop(slot)))
}

/// The TLS and/or WebSocket handshake, then the MQTT or STOMP connection over the upgraded
/// stream: STOMP on `stomp*` connectors and for WebSocket clients that chose it.
async fn upgrade_and_serve(stream: TcpStream, mut params: ConnectionParams) {
    let settings = params.listener.clone();
    // Boxed, and freed once done: the handshake's state (TLS, WebSocket) would otherwise stay
    // in this task beside the connection for its whole life (idle memory).
    let upgrade = Box::pin(transport::upgrade(
        stream,
        params.peer,
        settings.scheme,
        settings.tls.as_deref(),
        UpgradeLimits::for_listener(&settings),
    ));
    let accepted = tokio::select! {
        _ = params.shutdown.cancelled() => return,
        accepted = upgrade => accepted,
    };
    let stats = &settings.stats;
    match accepted {
        Ok(accepted) => {
            if settings.scheme.is_tls() {
                stats.tls_handshakes.fetch_add(1, Ordering::Relaxed);
            }
            params.tls = settings.scheme.is_tls();
            params.peer_cert_subject = accepted.peer_cert_subject;
            if accepted.websocket_stomp {
                let framing = connection::stomp::Framing::WebSocket;
                connection::stomp::serve(accepted.stream, params, framing).await;
            } else if settings.scheme.protocol() == Some(Protocol::Stomp) {
                let framing = connection::stomp::Framing::Stream;
                connection::stomp::serve(accepted.stream, params, framing).await;
            } else {
                connection::serve(accepted.stream, params).await;
            }
        }
        Err(e) => {
            if settings.scheme.is_tls() {
                stats.tls_failures.fetch_add(1, Ordering::Relaxed);
            }
            crate::metrics::access::refused_at_accept(
                stats,
                params.peer,
                crate::metrics::Reason::HandshakeFailed,
            );
            tracing::info!(listener = %settings.name, peer = %params.peer, "transport handshake failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::broker::durability::MemoryOnly;

    /// The whole task of a plain-TCP connection lives in one allocation of this future's size
    /// (plus the session and socket registration): keep it small, it is most of what a
    /// connection that is not parked costs. It includes the listener's slot (24 bytes, carried
    /// into the parked record when the connection parks).
    const CONNECTION_TASK_BUDGET_BYTES: usize = 1600;

    /// The connector's `backlog` is the socket's listen queue, as `ss` reports it (Send-Q of
    /// a listening socket).
    #[tokio::test]
    async fn the_backlog_option_sizes_the_listen_queue() {
        let Ok(ss) = std::process::Command::new("ss").arg("-V").output() else {
            eprintln!("SKIP: `ss` (iproute2) is not installed; cannot read the listen queue");
            return;
        };
        assert!(ss.status.success());
        for backlog in [7u32, 300] {
            let tcp = listen("127.0.0.1:0".parse().expect("addr"), backlog).expect("listen");
            let port = tcp.local_addr().expect("addr").port();
            let out = std::process::Command::new("ss")
                .args(["-Hltn", &format!("sport = :{port}")])
                .output()
                .expect("ss");
            let text = String::from_utf8_lossy(&out.stdout);
            let send_q: Vec<&str> = text.split_whitespace().collect();
            assert_eq!(send_q.get(2), Some(&backlog.to_string().as_str()), "{text}");
        }
    }

    #[tokio::test]
    async fn plain_connection_task_fits_its_memory_budget() {
        let (core, listener) = crate::broker::runtime::test_core(Arc::new(MemoryOnly::default()));
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = tcp.local_addr().expect("addr");
        let client = TcpStream::connect(addr).await.expect("connect");
        let (stream, peer) = tcp.accept().await.expect("accept");
        core.counters.connection_opened();
        let slot = ConnectorSlots::new(core.clone()).open(mpsc::channel(1).0);
        let params = ConnectionParams {
            core,
            listener,
            peer,
            tls: false,
            peer_cert_subject: None,
            shutdown: CancellationToken::new(),
        };
        let task = serve_socket(stream, params, slot);
        let size = std::mem::size_of_val(&task);
        drop((task, client));
        assert!(
            size <= CONNECTION_TASK_BUDGET_BYTES,
            "a plain connection's task is {size} bytes (budget {CONNECTION_TASK_BUDGET_BYTES})"
        );
    }
}
