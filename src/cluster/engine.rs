//! [`ClusterEngine`]: the NATS connection, the JetStream assets, and the [`Durability`] and
//! [`Backplane`] faces the broker core sees.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use tokio::sync::{mpsc, Semaphore};

use super::publish::Outgoing;
use super::tracker::Tracker;
use super::{live, shard_prefix, shard_stream, NODES_BUCKET, RETAINED_BUCKET, SESSIONS_BUCKET};
use crate::broker::durability::{
    Backplane, BackplaneFuture, ClaimRequest, Claimed, Commit, Durability, DurabilityError,
    QueueOwner, QueueSeq, Recovery,
};
use crate::broker::routing::memory::MemoryGauge;
use crate::broker::runtime::BrokerCore;
use crate::broker::session::{Session, SessionState};
use crate::broker::starting;
use crate::config::JetStreamSettings;
use crate::protocol::QoS;

/// What every task of the engine shares.
pub(crate) struct Inner {
    pub node_id: String,
    /// Random per process: tells this run's messages from a previous run's with the same id.
    pub instance: u64,
    pub settings: JetStreamSettings,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    /// `js` for stores whose acknowledgement the caller bounds itself, knowing a late wake
    /// (`late_wake.rs`): its own timeout is long.
    pub stores_js: jetstream::Context,
    pub sessions_kv: kv::Store,
    pub retained_kv: kv::Store,
    pub nodes_kv: kv::Store,
    pub shards: usize,
    pub store_timeout: Duration,
    next_queue_seq: AtomicU64,
    /// Numbers this process's messages (with `instance`, a live copy's identity).
    pub counter: AtomicU64,
    pub core: OnceLock<Weak<BrokerCore>>,
    /// The quorum answered within `quorumLossTimeout` (see `node.rs`).
    pub available: AtomicBool,
    pub outgoing: mpsc::UnboundedSender<Outgoing>,
    /// The NATS connection as the client reports it: up or not, and how many times it came
    /// up (stores in flight are sent again after a reconnect, readers start over).
    pub connection: tokio::sync::watch::Receiver<Connection>,
    pub live_out: mpsc::Sender<super::publish::Live>,
    pub tracker: parking_lot::Mutex<Tracker>,
    /// Whether the process may have stalled long enough to lose sessions (`stalls.rs`).
    pub stalls: super::stalls::Stalls,
    /// Per shard: the last sequence the node's reader took (before routing it).
    pub positions: Vec<AtomicU64>,
    /// Per shard: the last sequence the node's reader routed (records' floors go no further).
    pub routed: Vec<AtomicU64>,
    /// Acknowledged stores waiting for the node's reader to read them back (`store_ack.rs`).
    pub ledger: Arc<super::ledger::Ledger>,
    pub live: live::Interest,
    /// Bounds the temporary catch-up readers (JetStream consumers stay O(shards)).
    pub catch_up: Arc<Semaphore>,
    /// Failed shard reads (consumer creates), logged without flooding (`retry_log.rs`).
    pub read_retries: parking_lot::Mutex<super::retry_log::RetryLog>,
    /// One writer at a time per session record (each write is a compare-and-set on the
    /// revision the previous one returned).
    pub record_locks: parking_lot::Mutex<HashMap<Arc<str>, Arc<tokio::sync::Mutex<()>>>>,
    /// Recent CONNECTs here and on other nodes, to close the older of two racing ones.
    pub claims: parking_lot::Mutex<super::claims::Claims>,
    /// The last `FMQ_RETAIN` revision the retained index applied, and its wake-up.
    pub retained_applied: AtomicU64,
    pub retained_progress: tokio::sync::Notify,
    /// Retained message keys -> their topic and the revision the index holds (a delete
    /// marker carries only the key).
    pub retained_keys: parking_lot::Mutex<HashMap<String, super::retained::Slot>>,
    /// Retained stores this node sent and how many of them were answered.
    pub retained_puts: super::retained::Puts,
    /// Shared subscription groups with local members (`groups.rs`).
    pub groups: super::groups::Groups,
    /// The other nodes' heartbeats as this node sees them (the will reaper's).
    pub liveness: parking_lot::Mutex<super::wills::Liveness>,
    /// This node's clean sessions' will records.
    pub clean_wills: parking_lot::Mutex<super::wills::CleanWills>,
    /// Published listeners, the other nodes' announcements, the drain (see `drain.rs`).
    pub drain: super::drain::DrainState,
    /// Inbound QoS 2 exchanges held by this node until their PUBREL.
    pub q2: super::qos2::Inbound,
    /// STOMP queues: entries pulled into local queues, their pullers (`queues.rs`).
    pub queues: super::queues::SharedQueueState,
}

impl Inner {
    pub fn core(&self) -> Option<Arc<BrokerCore>> {
        self.core.get().and_then(Weak::upgrade)
    }

    /// Per shard, how far the node's reader has routed.
    pub fn routed(&self) -> Vec<u64> {
        self.routed
            .iter()
            .map(|p| p.load(Ordering::Acquire))
            .collect()
    }

    pub fn is_available(&self) -> bool {
        self.available.load(Ordering::Acquire)
    }

    pub fn record_lock(&self, client_id: &Arc<str>) -> Arc<tokio::sync::Mutex<()>> {
        self.record_locks
            .lock()
            .entry(client_id.clone())
            .or_default()
            .clone()
    }
}

/// The cluster engine (see the module documentation of [`crate::cluster`]).
#[derive(Clone)]
pub struct ClusterEngine {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for ClusterEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterEngine")
            .field("node_id", &self.inner.node_id)
            .field("servers", &self.inner.settings.servers)
            .finish_non_exhaustive()
    }
}

/// Why the engine could not open.
fn open_error(what: &str, e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("cluster: {what}: {e}")
}

/// The state of the node's NATS connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Connection {
    pub up: bool,
    /// Incremented on every (re)connection.
    pub epoch: u64,
}

/// Resolves once the NATS connection came up again after `epoch` (`true`), or when the
/// engine is gone (`false`). Cancel-safe: a `select!` branch of a reader's loop.
pub async fn reconnected_since(
    connection: &mut tokio::sync::watch::Receiver<Connection>,
    epoch: u64,
) -> bool {
    loop {
        if connection.changed().await.is_err() {
            return false;
        }
        if connection.borrow_and_update().epoch != epoch {
            return true;
        }
    }
}

/// Follows the client's connection events into a watch.
fn connection_events(
    options: async_nats::ConnectOptions,
) -> (
    async_nats::ConnectOptions,
    tokio::sync::watch::Receiver<Connection>,
) {
    let (tx, rx) = tokio::sync::watch::channel(Connection::default());
    let tx = Arc::new(tx);
    let options = options.event_callback(move |event| {
        let tx = tx.clone();
        async move {
            match event {
                async_nats::Event::Connected => tx.send_modify(|c| {
                    c.up = true;
                    c.epoch += 1;
                }),
                async_nats::Event::Disconnected => {
                    tracing::warn!("cluster: NATS connection lost; reconnecting");
                    tx.send_modify(|c| c.up = false)
                }
                _ => {}
            }
        }
    });
    (options, rx)
}

impl ClusterEngine {
    /// Connect to NATS, create (or find) the streams and buckets, and register this node
    /// (`node_id`, the `brokerName`). Fails when NATS does not answer, JetStream is off, or
    /// another live node already uses `node_id`.
    pub async fn open(settings: &JetStreamSettings, node_id: &str) -> anyhow::Result<Self> {
        let mut options = async_nats::ConnectOptions::new()
            .name(format!("ferromq {node_id}"))
            // A server that stopped answering (paused, hung) keeps its sockets open: pings
            // find it (three unanswered, about 3 s) and a reconnect spends at most 2 s on
            // it before trying the next server, well inside `quorumLossTimeout`.
            .connection_timeout(Duration::from_secs(2))
            .ping_interval(Duration::from_secs(1))
            .max_reconnects(None::<usize>)
            // The local server first, as the deployment lists it (the client shuffles
            // otherwise).
            .retain_servers_order();
        if let Some(path) = &settings.credentials {
            options = options
                .credentials_file(path)
                .await
                .map_err(|e| open_error(&format!("credentials {}", path.display()), e))?;
        }
        if let (Some(user), Some(password)) = (&settings.user, &settings.password) {
            options = options.user_and_password(user.clone(), password.clone());
        }
        let (options, connection) = connection_events(options);
        let servers: Vec<async_nats::ServerAddr> = settings
            .servers
            .iter()
            .map(|s| s.parse())
            .collect::<Result<_, _>>()
            .map_err(|e| open_error("servers", e))?;
        starting::enter("connecting to NATS");
        let client = connect_until_setup_deadline(&settings.servers, || {
            async_nats::connect_with_options(servers.clone(), options.clone())
        })
        .await?;
        let mut js = jetstream::new(client.clone());
        // Creating streams and buckets waits for their raft groups to form (several nodes
        // starting together race for it): a longer bound than a store's.
        js.set_timeout(SETUP_TIMEOUT);
        let store_timeout = Duration::from_millis(settings.store_timeout_ms.max(1));
        let replicas = settings.replicas.max(1);
        let shards = settings.message_shards.max(1);
        starting::enter("creating the cluster's JetStream streams and buckets");
        let [sessions_kv, retained_kv, nodes_kv] =
            until_setup_deadline(|| create_assets(&js, settings, replicas, shards)).await?;
        starting::enter("agreeing on the message shards with the other nodes");
        agree_on_shards(&nodes_kv, shards).await?;
        starting::enter("waiting for the session bucket to answer");
        wait_readable(&sessions_kv, SESSIONS_BUCKET).await?;
        js.set_timeout(store_timeout);
        let (outgoing, outgoing_rx) = mpsc::unbounded_channel();
        let (live_out, live_rx) = mpsc::channel(super::publish::LIVE_BACKLOG);
        let inner = Arc::new(Inner {
            node_id: node_id.to_owned(),
            instance: rand::random::<u64>() | 1,
            settings: settings.clone(),
            client: client.clone(),
            js: js.clone(),
            stores_js: {
                let mut stores_js = js.clone();
                stores_js.set_timeout(super::late_wake::STORES_CONTEXT_TIMEOUT);
                stores_js
            },
            sessions_kv,
            retained_kv,
            nodes_kv,
            shards,
            store_timeout,
            next_queue_seq: AtomicU64::new(0),
            counter: AtomicU64::new(0),
            core: OnceLock::new(),
            available: AtomicBool::new(true),
            outgoing,
            connection,
            live_out,
            tracker: parking_lot::Mutex::new(Tracker::default()),
            stalls: super::stalls::Stalls::default(),
            positions: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            routed: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            ledger: Arc::new(super::ledger::Ledger::new(shards)),
            live: live::Interest::default(),
            catch_up: Arc::new(Semaphore::new(super::readers::CATCH_UP_READERS)),
            read_retries: parking_lot::Mutex::default(),
            record_locks: parking_lot::Mutex::default(),
            retained_keys: parking_lot::Mutex::default(),
            retained_puts: super::retained::Puts::default(),
            retained_applied: AtomicU64::new(0),
            retained_progress: tokio::sync::Notify::new(),
            claims: parking_lot::Mutex::default(),
            groups: super::groups::Groups::default(),
            liveness: parking_lot::Mutex::default(),
            clean_wills: parking_lot::Mutex::default(),
            drain: super::drain::DrainState::default(),
            q2: super::qos2::Inbound::default(),
            queues: super::queues::SharedQueueState::default(),
        });
        starting::enter("registering the node");
        super::node::register(&inner).await?;
        tokio::spawn(super::publish::run(inner.clone(), outgoing_rx));
        tokio::spawn(super::publish::run_live(inner.clone(), live_rx));
        Ok(ClusterEngine { inner })
    }
}

/// How long one setup request (create a stream or bucket) may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a node keeps trying to set the assets up at its start.
const SETUP_DEADLINE: Duration = Duration::from_secs(60);

/// A step of a node's start, tried every 500 ms until [`SETUP_DEADLINE`]: while a stream's
/// raft group forms or elects (nodes and servers starting together, a loaded machine) one
/// request can time out, and a node that gave up then would exit instead of serving.
/// Errors: the last attempt's, past the deadline.
async fn until_setup_deadline<T, F, Fut>(mut attempt: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let deadline = tokio::time::Instant::now() + SETUP_DEADLINE;
    loop {
        match attempt().await {
            Ok(done) => return Ok(done),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!("{e}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                return Err(anyhow::anyhow!(
                    "{e:#} (tried for {} s); hint: a NATS cluster answers \"JetStream system \
                     temporarily unavailable\" (10008), or lets requests time out, while it has \
                     no JetStream meta leader, most often because fewer than a majority of its \
                     servers run: start the others; `ferromq check --online FILE` reports what \
                     the servers say",
                    SETUP_DEADLINE.as_secs()
                ))
            }
        }
    }
}

/// The first wait between two connection attempts at a node's start; each failure doubles it,
/// up to [`CONNECT_RETRY_MAX`].
const CONNECT_RETRY_FIRST: Duration = Duration::from_millis(250);
/// The longest wait between two connection attempts at a node's start.
const CONNECT_RETRY_MAX: Duration = Duration::from_secs(5);

/// The node's first connection to NATS, tried again with a growing wait until
/// [`SETUP_DEADLINE`] after the first attempt: a node started a moment before its
/// nats-servers (a host's services starting together) waits for them instead of exiting.
/// Each failed attempt is one WARN line with the servers tried. An error a new attempt
/// cannot mend (a refused login, TLS, an address that does not parse) ends the start at once.
/// SIGTERM during the wait ends the start at once (`run` owns the stop signals from before
/// the start and logs the step they interrupted). Errors: the last attempt's, past the deadline, with the servers and the
/// time waited.
async fn connect_until_setup_deadline<T, F, Fut>(
    servers: &[String],
    mut connect: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, async_nats::ConnectError>>,
{
    let shown = servers.join(", ");
    let started = tokio::time::Instant::now();
    let deadline = started + SETUP_DEADLINE;
    let mut wait = CONNECT_RETRY_FIRST;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let error = match connect().await {
            Ok(client) => {
                if attempts > 1 {
                    tracing::info!(
                        "cluster: connected to NATS ({shown}) after {attempts} attempts"
                    );
                }
                return Ok(client);
            }
            Err(e) => e,
        };
        if !connect_may_succeed_later(&error.kind()) {
            return Err(open_error(
                &format!("cannot connect to NATS ({shown})"),
                error,
            ));
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(anyhow::anyhow!(
                "cluster: cannot connect to NATS: no server of {shown} accepted a connection \
                 within {} s ({attempts} attempts; the last: {error}); start the NATS servers \
                 first, or check <ferromq:jetStream servers=\"...\">",
                SETUP_DEADLINE.as_secs()
            ));
        }
        let pause = wait.min(deadline - now);
        tracing::warn!(
            "cluster: cannot connect to NATS ({shown}): {error}; trying again in {} ms \
             (for up to {} s after the first attempt)",
            pause.as_millis(),
            SETUP_DEADLINE.as_secs()
        );
        tokio::time::sleep(pause).await;
        wait = (wait * 2).min(CONNECT_RETRY_MAX);
    }
}

/// Whether a failed connection may succeed later without a change of configuration: a server
/// not up yet (refused, timed out, not resolvable yet), not a refused login or TLS setup.
fn connect_may_succeed_later(kind: &async_nats::ConnectErrorKind) -> bool {
    use async_nats::ConnectErrorKind as K;
    match kind {
        K::Io | K::TimedOut | K::Dns | K::MaxReconnects => true,
        K::ServerParse | K::Authentication | K::AuthorizationViolation | K::Tls => false,
    }
}

/// The state of stream `name`, read at a node's start (retried, see [`until_setup_deadline`]:
/// the request runs with the store timeout).
pub(super) async fn stream_state_at_start(
    js: &jetstream::Context,
    name: &str,
) -> anyhow::Result<stream::State> {
    until_setup_deadline(|| async {
        let mut found = js
            .get_stream(name)
            .await
            .map_err(|e| open_error(&format!("stream {name}"), e))?;
        let info = found
            .info()
            .await
            .map_err(|e| open_error(&format!("stream {name}"), e))?;
        Ok(info.state.clone())
    })
    .await
}

/// The message streams and the buckets, created when missing; returns the session, retained
/// and node buckets, in that order (each step of a node's start is retried as a whole).
async fn create_assets(
    js: &jetstream::Context,
    settings: &JetStreamSettings,
    replicas: usize,
    shards: usize,
) -> anyhow::Result<[kv::Store; 3]> {
    for k in 0..shards {
        let config = stream::Config {
            name: shard_stream(k),
            subjects: vec![format!("{}.>", shard_prefix(k))],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            num_replicas: replicas,
            max_age: Duration::from_millis(settings.max_offline_age_ms),
            duplicate_window: duplicate_window(settings),
            allow_direct: true,
            max_consumers: super::MAX_CONSUMERS_PER_STREAM,
            ..Default::default()
        };
        let stream = js
            .get_or_create_stream(config)
            .await
            .map_err(|e| open_error(&format!("stream {}", shard_stream(k)), e))?;
        super::raise_consumer_limit(js, &stream).await;
        let running = &stream.cached_info().config;
        let max_age = Duration::from_millis(settings.max_offline_age_ms);
        if k == 0 && (running.num_replicas != replicas || running.max_age != max_age) {
            // The streams exist: their settings are the cluster's (changed with NATS's own
            // tools, `nats stream edit`), not one node's.
            tracing::warn!(
                "cluster: stream {} exists with replicas {} and max_age {} s; this node's \
                 replicas {replicas} and maxOfflineAge {} s are not applied to it",
                shard_stream(k),
                running.num_replicas,
                running.max_age.as_secs(),
                max_age.as_secs()
            );
        }
    }
    Ok([
        bucket(js, SESSIONS_BUCKET, replicas).await?,
        bucket(js, RETAINED_BUCKET, replicas).await?,
        bucket(js, NODES_BUCKET, replicas).await?,
    ])
}

/// How long a stream remembers a message id: a store is sent again (same id) until
/// `storeTimeout` after its first send, so twice that, and at least 20 s; short, because
/// NATS keeps every id of the window in memory.
pub(super) fn duplicate_window(settings: &JetStreamSettings) -> Duration {
    Duration::from_millis(settings.store_timeout_ms.saturating_mul(2)).max(Duration::from_secs(20))
}

/// The cluster's number of message shards, written by its first node: a node with another
/// `messageShards` would route topics to other streams than its peers read, so it refuses to
/// start.
async fn agree_on_shards(nodes: &kv::Store, shards: usize) -> anyhow::Result<()> {
    const KEY: &str = "cluster.messageShards";
    let deadline = tokio::time::Instant::now() + SETUP_DEADLINE;
    loop {
        match nodes.get(KEY).await {
            Ok(Some(value)) => {
                let theirs: usize = String::from_utf8_lossy(&value).trim().parse().unwrap_or(0);
                if theirs != shards {
                    anyhow::bail!(
                        "cluster: this node's messageShards is {shards} but the cluster's is \
                         {theirs}: every node of a cluster needs the same messageShards"
                    );
                }
                return Ok(());
            }
            Ok(None) => {
                if nodes.create(KEY, shards.to_string().into()).await.is_ok() {
                    return Ok(());
                }
            }
            // A bucket whose raft group has no leader yet answers "no responders".
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!("cluster: node registry: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(open_error("node registry", e)),
        }
    }
}

/// Wait until `store` answers a read: a bucket whose raft group has no leader yet, or whose
/// replicas do not serve direct gets yet (just created by a node starting at the same time),
/// answers "no responders", and a node opens its listeners only once it can answer a
/// CONNECT's claim. The key read is not a client's (those are 32 hex digits).
async fn wait_readable(store: &kv::Store, name: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + SETUP_DEADLINE;
    loop {
        match store.entry("fmq-ready-probe").await {
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!("cluster: bucket {name} not readable yet: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(open_error(&format!("bucket {name}"), e)),
        }
    }
}

/// The KV bucket `name`, created with `replicas` when it does not exist (an existing one is
/// used as it is: its replicas are the operator's to change).
async fn bucket(js: &jetstream::Context, name: &str, replicas: usize) -> anyhow::Result<kv::Store> {
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    js.create_key_value(kv::Config {
        bucket: name.to_owned(),
        history: 1,
        num_replicas: replicas,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| open_error(&format!("bucket {name}"), e))
}

impl Durability for ClusterEngine {
    fn location(&self) -> String {
        format!(
            "NATS JetStream {} (node {}, {} message shards)",
            self.inner.settings.servers.join(","),
            self.inner.node_id,
            self.inner.shards
        )
    }

    fn next_seq(&self) -> QueueSeq {
        self.inner.next_queue_seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The origin counter of the message's frame, from which its store's message id is
    /// derived (see `publish.rs`).
    fn store_id(&self) -> Option<u64> {
        Some(self.inner.counter.fetch_add(1, Ordering::Relaxed))
    }

    fn commit(&self, changes: Vec<crate::broker::durability::Change>) -> Commit {
        self.inner.groups.observe(&changes);
        let acknowledged = super::queues::observe(&self.inner, &changes);
        let rest = super::sessions::commit(&self.inner, changes);
        match acknowledged {
            Commit::Done(Ok(())) => rest,
            acknowledged => Commit::Pending(Box::pin(async move {
                let first = acknowledged.wait().await;
                rest.wait().await.and(first)
            })),
        }
    }

    fn session_offline(&self, state: &SessionState) -> Commit {
        super::sessions::session_offline(&self.inner, state)
    }

    fn check_room(&self, _incoming_bytes: u64) -> Result<(), DurabilityError> {
        if self.inner.is_available() {
            Ok(())
        } else {
            Err(DurabilityError::Unavailable(
                "the cluster store's quorum is unreachable from this node".into(),
            ))
        }
    }

    fn shutdown(&self, _persistent: &[SessionState]) {
        super::sessions::flush_all_blocking(&self.inner);
    }

    fn keeps_sessions(&self) -> bool {
        true
    }

    fn recover(&self, _memory: &Arc<MemoryGauge>) -> Result<Recovery, DurabilityError> {
        // Sessions are claimed from the store when their clients connect; retained messages
        // are loaded by the watch in `Backplane::start`.
        Ok(Recovery::default())
    }

    fn backplane(&self) -> Option<Arc<dyn Backplane>> {
        Some(Arc::new(self.clone()))
    }
}

impl Backplane for ClusterEngine {
    fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    fn start(&self, core: Weak<BrokerCore>) -> BackplaneFuture<anyhow::Result<()>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            if let Some(core) = core.upgrade() {
                // STOMP queues are kept in the cluster's queue stream (`queues.rs`).
                core.queues
                    .set_shared(Arc::new(super::queues::ClusterQueues::new(&inner)));
            }
            let _ = inner.core.set(core);
            super::retained::start(&inner).await?;
            super::readers::start(&inner).await?;
            super::live::start(&inner);
            super::sessions::start(&inner).await?;
            super::drain::start(&inner).await?;
            super::queue_purge::start(&inner).await?;
            super::give_backs::start(&inner).await?;
            super::queue_redo::start(&inner);
            super::node::start(&inner);
            // As long as the heartbeats' check of a silence waits for a record.
            let patience = Duration::from_millis(inner.settings.node_timeout_ms)
                .max(super::sessions::VERIFY_QUICKLY);
            super::stalls::watch(&inner, patience);
            super::reaper::start(&inner);
            Ok(())
        })
    }

    fn claim(&self, request: ClaimRequest) -> BackplaneFuture<Result<Claimed, DurabilityError>> {
        let inner = self.inner.clone();
        Box::pin(async move { super::sessions::claim(&inner, request).await })
    }

    fn attached(&self, session: &Arc<Session>) {
        super::readers::attached(&self.inner, session);
        super::wills::attached(&self.inner, session);
    }

    fn session_ended(&self, session: &Session) {
        super::wills::ended(&self.inner, session);
    }

    fn subscribing(&self, session: crate::broker::session::SessionId, filter: &str) {
        // A message the reader has read and not routed yet (its position) may be one of this
        // node's acknowledged stores too: the ledger forgets a store when it is read, before
        // it is routed. Read after the ledger, whose lock orders it after the reader's store.
        let floors = self
            .inner
            .ledger
            .unread_high()
            .into_iter()
            .zip(&self.inner.positions)
            .map(|(unread, position)| unread.max(position.load(Ordering::Acquire)))
            .collect();
        let routed = self.inner.routed();
        self.inner
            .tracker
            .lock()
            .subscribing(session, filter, floors, &routed);
    }

    fn interest(&self, filter: &str, added: bool) {
        if super::groups::is_shared(filter) {
            self.inner.groups.changed(&self.inner, filter, added);
            return;
        }
        self.inner.live.changed(&self.inner, filter, added);
    }

    fn interest_ready(&self, filters: Vec<String>) -> BackplaneFuture<()> {
        let inner = self.inner.clone();
        let (shared, filters): (Vec<String>, Vec<String>) = filters
            .into_iter()
            .partition(|f| super::groups::is_shared(f));
        // A group's first SUBSCRIBE makes its consumer (and the stream of the groups, for the
        // first group): a raft round or two, slower than a core subscription.
        let groups = self
            .inner
            .groups
            .ready(&shared, super::groups::READY_TIMEOUT);
        let live = self
            .inner
            .live
            .ready(&filters, super::sessions::KICK_TIMEOUT);
        Box::pin(async move {
            groups.await;
            live.await;
            super::retained::caught_up(&inner, super::sessions::KICK_TIMEOUT).await;
        })
    }

    fn is_available(&self) -> bool {
        self.inner.is_available()
    }

    fn maximum_qos(&self) -> QoS {
        // QoS 2 exactly once across nodes: `qos2.rs`.
        QoS::ExactlyOnce
    }

    fn shared_subscriptions(&self) -> bool {
        // Served across nodes by `groups.rs`.
        true
    }

    fn topic_fits(&self, topic: &str) -> bool {
        super::subject::topic_fits(topic)
    }

    fn topic_bytes_carried(&self, topic: &str) -> (usize, usize) {
        (
            super::subject::topic_subject_bytes(topic),
            super::subject::MAX_SUBJECT_LEN,
        )
    }

    fn filter_fits(&self, filter: &str) -> bool {
        super::subject::filter_fits(filter)
    }

    fn listening(&self, listeners: Vec<(crate::config::Scheme, String, u16)>) {
        self.inner.drain.set_listeners(listeners);
        let inner = self.inner.clone();
        tokio::spawn(async move { super::node::announce(&inner).await });
    }

    fn is_draining(&self) -> bool {
        self.inner.drain.is_draining()
    }

    fn drain(&self) -> BackplaneFuture<()> {
        let inner = self.inner.clone();
        Box::pin(async move { super::drain::drain(&inner).await })
    }

    fn server_reference(&self, scheme: crate::config::Scheme, client_id: &str) -> Option<String> {
        super::drain::server_reference(&self.inner, scheme, client_id)
    }

    fn kept_sessions(
        &self,
        limit: usize,
    ) -> BackplaneFuture<Result<crate::broker::durability::KeptSessions, DurabilityError>> {
        let inner = self.inner.clone();
        Box::pin(async move { super::kept::read(&inner, limit).await })
    }

    fn kept_session(
        &self,
        client_id: &str,
    ) -> BackplaneFuture<Result<Option<crate::broker::durability::KeptSession>, DurabilityError>>
    {
        let inner = self.inner.clone();
        let client_id = client_id.to_owned();
        Box::pin(async move { super::kept::read_one(&inner, &client_id).await })
    }

    fn maximum_message_bytes(&self) -> usize {
        // NATS's max_payload (1 MiB by default) less room for the frame around the message
        // (origin, publisher client id, lengths).
        JetStreamSettings::max_message_bytes(self.inner.client.server_info().max_payload)
    }
}

/// A single node's group queue cannot be kept in a cluster (shared subscriptions have their
/// own consumers, `groups.rs`): refused, so that nothing advertises what the nodes do not
/// share. Named queues are kept by the queue stream (`queues.rs`), which needs no record of
/// the queue.
pub(crate) fn refuses_owner(owner: &QueueOwner) -> bool {
    matches!(owner, QueueOwner::Group(_))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A step that keeps failing is tried every 500 ms until the start's deadline, then its
    /// last error, with the likely cause and what to run, ends the start (the node exits with
    /// it instead of hanging).
    #[tokio::test(start_paused = true)]
    async fn a_start_step_that_keeps_failing_gives_up_at_the_deadline_with_its_error() {
        let attempts = AtomicU32::new(0);
        let started = tokio::time::Instant::now();
        let result: anyhow::Result<()> = until_setup_deadline(|| async {
            let n = attempts.fetch_add(1, Ordering::Relaxed) + 1;
            Err(anyhow::anyhow!("attempt {n}: no JetStream"))
        })
        .await;
        let waited = started.elapsed();
        let error = result.expect_err("gives up").to_string();
        let tried = attempts.load(Ordering::Relaxed);
        assert!(error.starts_with(&format!("attempt {tried}:")), "{error}");
        // What an admin does about it: a cluster without a JetStream meta leader.
        assert!(
            error.contains("no JetStream meta leader") && error.contains("check --online"),
            "{error}"
        );
        assert!(
            (SETUP_DEADLINE..SETUP_DEADLINE + Duration::from_secs(1)).contains(&waited),
            "{waited:?}"
        );
        assert_eq!(tried, 121, "every 500 ms for 60 s, and once at the start");
    }

    fn refused() -> async_nats::ConnectError {
        async_nats::ConnectError::with_source(
            async_nats::ConnectErrorKind::Io,
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        )
    }

    /// NATS servers that come up after the node: the connection is tried again, with a
    /// growing wait, until one accepts.
    #[tokio::test(start_paused = true)]
    async fn a_first_connection_refused_is_tried_again_until_a_server_accepts() {
        let attempts = AtomicU32::new(0);
        let started = tokio::time::Instant::now();
        let servers = ["nats://127.0.0.1:1".to_owned()];
        let result = connect_until_setup_deadline(&servers, || async {
            match attempts.fetch_add(1, Ordering::Relaxed) {
                0..=4 => Err(refused()),
                n => Ok(n),
            }
        })
        .await;
        assert_eq!(result.expect("connected"), 5);
        // 250 + 500 + 1000 + 2000 + 4000 ms.
        assert_eq!(started.elapsed(), Duration::from_millis(7_750));
    }

    /// Servers that never come: the start ends at the deadline, saying which servers it
    /// tried for how long.
    #[tokio::test(start_paused = true)]
    async fn a_first_connection_refused_until_the_deadline_ends_the_start() {
        let attempts = AtomicU32::new(0);
        let started = tokio::time::Instant::now();
        let servers = [
            "nats://127.0.0.1:1".to_owned(),
            "nats://127.0.0.1:2".to_owned(),
        ];
        let result: anyhow::Result<()> = connect_until_setup_deadline(&servers, || async {
            attempts.fetch_add(1, Ordering::Relaxed);
            Err(refused())
        })
        .await;
        let error = result.expect_err("gives up").to_string();
        assert_eq!(started.elapsed(), SETUP_DEADLINE);
        assert!(
            error.contains("nats://127.0.0.1:1, nats://127.0.0.1:2") && error.contains("60 s"),
            "{error}"
        );
        // At 0, 0.25, 0.75, 1.75, 3.75 s, then every 5 s from 7.75 to 57.75 s, and at 60 s
        // (the last wait cut at the deadline).
        assert_eq!(attempts.load(Ordering::Relaxed), 17);
    }

    /// A refused login is not mended by waiting: the start ends at the first attempt.
    #[tokio::test(start_paused = true)]
    async fn a_refused_login_ends_the_start_at_once() {
        let attempts = AtomicU32::new(0);
        let servers = ["nats://127.0.0.1:1".to_owned()];
        let result: anyhow::Result<()> = connect_until_setup_deadline(&servers, || async {
            attempts.fetch_add(1, Ordering::Relaxed);
            Err(async_nats::ConnectErrorKind::AuthorizationViolation.into())
        })
        .await;
        assert!(result.is_err());
        assert_eq!(attempts.load(Ordering::Relaxed), 1);
    }

    /// A step that fails while a raft group forms and then succeeds is not given up on.
    #[tokio::test(start_paused = true)]
    async fn a_start_step_that_succeeds_late_is_kept() {
        let attempts = AtomicU32::new(0);
        let result = until_setup_deadline(|| async {
            match attempts.fetch_add(1, Ordering::Relaxed) {
                0..=5 => Err(anyhow::anyhow!("no leader yet")),
                n => Ok(n),
            }
        })
        .await;
        assert_eq!(result.expect("kept trying"), 6);
    }
}
