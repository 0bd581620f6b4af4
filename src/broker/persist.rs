//! The broker's side of the durable store (issue 7): which store a configuration opens, how
//! session state maps to store records, and recovery at startup.
//!
//! The store ([`crate::store::Store`]) is the single source of truth for persistent sessions
//! and retained messages of a durable broker; the runtime's in-memory state mirrors it. Every
//! change is submitted with [`Store::submit`], which queues the batch synchronously, so the
//! store applies batches in the order the broker made the changes (an Enqueue is always applied
//! before the Dequeue of its acknowledgement). Only what gates an acknowledgement to a client
//! is awaited (a QoS 1/2 PUBLISH before PUBACK/PUBREC, a PUBREL before PUBCOMP); bookkeeping of
//! deliveries is submitted and not awaited.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::inflight::{InflightEntry, InflightStage};
use super::memory::MemoryGauge;
use super::message::Message;
use super::queue::QueuedMessage;
use super::session::{SessionState, Subscription};
use crate::config::{Authentication, Config, Persistence};
use crate::protocol::{LastWill, QoS, RetainHandling, SubscriptionOptions};
use crate::security::{Action, Principal, Security};
use crate::store::{
    Op, QueueState, Recovered, RecoveredSession, SessionRecord, Store, StoreLimits, StoreStats,
    StoredMessage, SubscriptionRecord, WillOwner, WillRecord,
};

/// `storeUsage` refusals are logged when their total is a power of two (a full store under
/// load would otherwise log every message).
fn log_every_power_of_two(total: u64) -> bool {
    total.is_power_of_two()
}

/// An open durable store as the broker uses it.
#[derive(Debug)]
pub struct Durable {
    store: Store,
    /// Lazily submitted batches that failed (logged at warn when the total is a power of two).
    /// Shared with the tasks that await background batches (which must not hold the store:
    /// the directory is released when the broker's last handle goes).
    background_failures: Arc<AtomicU64>,
}

impl Durable {
    /// Opens the store the configuration asks for: `Some` for a durable broker
    /// (`persistent="true"` with kahaDB, the default), `None` for `persistent="false"` or
    /// `memoryPersistenceAdapter` (everything stays in memory, nothing survives a restart).
    /// Fails when another broker holds the directory.
    pub async fn open(config: &Config) -> anyhow::Result<Option<(Durable, Recovered)>> {
        let directory = match (&config.persistence, config.broker.persistent) {
            (Persistence::Durable { directory, .. }, true) => directory.clone(),
            _ => return Ok(None),
        };
        let limits = StoreLimits {
            store_limit_bytes: config.limits.store_limit_bytes,
        };
        let opened = tokio::task::spawn_blocking(move || {
            let store = Store::open(&directory, limits)
                .map_err(|e| anyhow::anyhow!("cannot open the durable store: {e}"))?;
            let recovered = store
                .recover()
                .map_err(|e| anyhow::anyhow!("cannot recover the durable store: {e}"))?;
            Ok::<_, anyhow::Error>((store, recovered))
        })
        .await
        .map_err(|e| anyhow::anyhow!("store recovery task failed: {e}"))??;
        let (store, recovered) = opened;
        Ok(Some((
            Durable {
                store,
                background_failures: Arc::new(AtomicU64::new(0)),
            },
            recovered,
        )))
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn stats(&self) -> StoreStats {
        self.store.stats()
    }

    pub fn allocate_id(&self) -> u64 {
        self.store.allocate_id()
    }

    /// Submit bookkeeping that gates nothing; failures are logged (rate-limited).
    pub fn submit_background(&self, ops: Vec<Op>) {
        if ops.is_empty() {
            return;
        }
        let failures = self.background_failures.clone();
        match self.store.submit(ops) {
            Ok(done) => {
                tokio::spawn(async move {
                    if let Err(e) = done.await {
                        background_failed(&failures, &e);
                    }
                });
            }
            Err(e) => background_failed(&failures, &e),
        }
    }
}

fn background_failed(failures: &AtomicU64, e: &crate::store::StoreError) {
    let total = failures.fetch_add(1, Ordering::Relaxed) + 1;
    if log_every_power_of_two(total) {
        tracing::warn!(failures_total = total, "durable store update failed: {e}");
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Whether a `StoreError::Full` refusal should be logged now (rate limit).
pub fn should_log_refusal(total: u64) -> bool {
    log_every_power_of_two(total)
}

pub fn stored_message(message: &Message) -> StoredMessage {
    StoredMessage {
        topic: message.topic.clone(),
        payload: message.payload.clone(),
        qos: message.qos,
        retain: message.retain,
        properties: bytes::Bytes::new(),
    }
}

fn message_from_stored(stored: StoredMessage) -> Message {
    Message {
        topic: stored.topic,
        payload: stored.payload,
        qos: stored.qos,
        retain: stored.retain,
        v5: None,
    }
}

/// The will as kept with a persistent session, with the principal that connected with it.
/// MQTT 5 will properties are not kept yet.
pub fn will_record(will: &LastWill, owner: &Principal) -> WillRecord {
    WillRecord {
        topic: Arc::from(will.topic.as_str()),
        payload: will.payload.clone(),
        qos: will.qos,
        retain: will.retain,
        properties: bytes::Bytes::new(),
        owner: Some(WillOwner {
            user: owner.user.clone(),
            anonymous: owner.anonymous,
        }),
    }
}

/// A will found in the store at startup: its client was connected when the broker stopped
/// without a clean shutdown.
#[derive(Debug)]
pub struct RecoveredWill {
    pub client_id: Arc<str>,
    /// Writes the session record without the will: in the batch that publishes it.
    pub forget: Op,
    pub will: WillRecord,
}

/// Publish the wills of a crash (see [`super::BrokerCore::restore_durable`]): each authorized
/// as its owner as of now with `config`'s security (unknown or unauthorized owner: not
/// published, logged), then routed like a publish, QoS and retain flag honoured. The will's
/// removal from its session record is in the same store batch as its queue entries, so it is
/// published at most once.
pub fn publish_recovered_wills(
    core: &super::BrokerCore,
    wills: Vec<RecoveredWill>,
    config: &Config,
) {
    let authentication_enabled = !matches!(config.authentication, Authentication::None);
    let security = core.security();
    for RecoveredWill {
        client_id,
        forget,
        will,
    } in wills
    {
        let owner = will_owner_now(&security, authentication_enabled, will.owner.as_ref());
        let allowed = owner
            .as_ref()
            .is_some_and(|principal| security.authorize(principal, Action::Write, &will.topic));
        if !allowed {
            tracing::info!(
                %client_id,
                topic = %will.topic,
                user = will.owner.as_ref().map_or("unknown", |o| &*o.user),
                "will of a client connected at the last stop not published: its owner is \
                 unknown or not authorized to write the topic now"
            );
            core.persist_background(vec![forget]);
            continue;
        }
        let message = core.memory.charge(Message {
            topic: will.topic.clone(),
            payload: will.payload.clone(),
            qos: will.qos,
            retain: will.retain,
            v5: None,
        });
        let (plan, mut ops) = core.plan_route(message);
        ops.push(forget);
        core.persist_background(ops);
        core.complete_route(plan);
        core.counters.wills_published();
        tracing::info!(%client_id, topic = %will.topic,
            "will of a client connected at the last stop published");
    }
}

/// The principal a will left by a crash is published as: its owner as the security snapshot
/// knows them NOW (groups looked up again), so a user removed or moved out of a group since is
/// not trusted with their old rights. `None`: unknown owner (not published).
fn will_owner_now(
    security: &Security,
    authentication_enabled: bool,
    owner: Option<&WillOwner>,
) -> Option<Principal> {
    let owner = owner?;
    if !authentication_enabled {
        // Everyone connects as the anonymous principal now, whoever they were then.
        return Some(Principal::anonymous());
    }
    security.groups_of(&owner.user).map(|groups| Principal {
        user: owner.user.clone(),
        groups,
        anonymous: owner.anonymous,
    })
}

/// The store record of a session's own data (not its queue).
pub fn session_record(state: &SessionState) -> SessionRecord {
    SessionRecord {
        subscriptions: state
            .subscriptions
            .iter()
            .map(|(filter, sub)| SubscriptionRecord {
                filter: Arc::from(filter.as_str()),
                options: SubscriptionOptions {
                    qos: sub.qos,
                    no_local: false,
                    retain_as_published: false,
                    retain_handling: RetainHandling::SendAtSubscribe,
                },
                subscription_id: None,
            })
            .collect(),
        will: state.stored_will.clone(),
        expiry_ms: state.expiry_secs.map(|secs| u64::from(secs) * 1000),
        last_seen_ms: now_ms(),
    }
}

/// The op that writes a session's own record.
pub fn put_session_op(state: &SessionState) -> Op {
    Op::PutSession {
        client_id: Arc::from(state.client_id.as_str()),
        session: session_record(state),
    }
}

/// Rebuild a session's state from the store: queued entries become pending, sent ones
/// in-flight (re-sent with DUP=1 on reconnect), released ones awaiting PUBCOMP (PUBREL
/// re-sent). Returns the state and the will it held (the client was connected when the broker
/// stopped, if it is set). Every message is charged to `memory` (it is held in memory now).
pub fn restore_session(
    recovered: RecoveredSession,
    memory: &Arc<MemoryGauge>,
) -> (SessionState, Option<WillRecord>) {
    let mut state = SessionState::new(&recovered.client_id, true);
    // Whole seconds were stored (MQTT 5 Session Expiry Interval); saturate anything larger.
    state.expiry_secs = recovered
        .record
        .expiry_ms
        .map(|ms| u32::try_from(ms / 1000).unwrap_or(u32::MAX - 1));
    for sub in recovered.record.subscriptions {
        state.subscriptions.insert(
            sub.filter.to_string(),
            Subscription {
                qos: sub.options.qos,
            },
        );
    }
    for entry in recovered.queue {
        let message = memory.charge(message_from_stored(entry.message));
        let (qos, retain, seq) = (entry.entry.qos, entry.entry.retain, Some(entry.seq));
        let (packet_id, stage) = match entry.entry.state {
            QueueState::Queued => {
                state.pending.push(
                    QueuedMessage {
                        message,
                        qos,
                        retain,
                        seq,
                    },
                    usize::MAX,
                );
                continue;
            }
            QueueState::Sent { packet_id } if qos == QoS::ExactlyOnce => {
                (packet_id, InflightStage::AwaitingPubRec)
            }
            QueueState::Sent { packet_id } => (packet_id, InflightStage::AwaitingPubAck),
            QueueState::Released { packet_id } => (packet_id, InflightStage::AwaitingPubComp),
        };
        let restored = state.inflight.restore(InflightEntry {
            packet_id,
            message: message.clone(),
            qos,
            retain,
            stage,
            seq,
        });
        if !restored {
            // Two entries claim one packet id (cannot happen unless the file was edited):
            // send the later one again as a new delivery rather than lose it.
            state.pending.push(
                QueuedMessage {
                    message,
                    qos,
                    retain,
                    seq,
                },
                usize::MAX,
            );
        }
    }
    state.inbound_qos2 = recovered.inbound_qos2;
    (state, recovered.record.will)
}

/// Counts for the startup log line.
#[derive(Debug, Default, Clone, Copy)]
pub struct RecoveredCounts {
    pub sessions: usize,
    pub retained: usize,
    pub queued: usize,
    pub inflight: usize,
    pub inbound_qos2: usize,
}

impl RecoveredCounts {
    pub fn of(recovered: &Recovered) -> Self {
        let mut counts = RecoveredCounts {
            sessions: recovered.sessions.len(),
            retained: recovered.retained.len(),
            ..RecoveredCounts::default()
        };
        for s in &recovered.sessions {
            for e in &s.queue {
                match e.entry.state {
                    QueueState::Queued => counts.queued += 1,
                    _ => counts.inflight += 1,
                }
            }
            counts.inbound_qos2 += s.inbound_qos2.len();
        }
        counts
    }
}

/// The retained messages of the store, for the runtime's retained index, charged to `memory`.
pub fn restore_retained(
    recovered: Vec<(Arc<str>, crate::store::RecoveredMessage)>,
    memory: &Arc<MemoryGauge>,
) -> Vec<Message> {
    recovered
        .into_iter()
        .map(|(_, m)| memory.charge(message_from_stored(m.message)))
        .collect()
}

/// When abandoned persistent sessions expire: ActiveMQ's `offlineDurableSubscriberTimeout`
/// and `offlineDurableSubscriberTaskSchedule` (both ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionExpiry {
    /// A session whose client has been offline this long is deleted with its queue.
    pub timeout_ms: u64,
    /// How often sessions are checked.
    pub check_every_ms: u64,
}

impl SessionExpiry {
    /// `None` when the configuration keeps offline sessions forever (ActiveMQ's default).
    pub fn of(config: &Config) -> Option<SessionExpiry> {
        let broker = &config.broker;
        broker
            .offline_durable_subscriber_timeout_ms
            .map(|timeout_ms| SessionExpiry {
                timeout_ms,
                check_every_ms: broker.offline_durable_subscriber_task_schedule_ms.max(1),
            })
    }
}

/// Every `expiry.check_every_ms`, delete the persistent sessions whose clients have been
/// offline longer than `expiry.timeout_ms` with their queued messages: from the durable store
/// (which knows the last-seen time across restarts) and from memory, or from memory only for a
/// broker without a durable store. Ends at broker shutdown.
pub async fn expire_sessions_periodically(
    core: Arc<super::BrokerCore>,
    expiry: SessionExpiry,
    shutdown: tokio_util::sync::CancellationToken,
    _task_alive: tokio::sync::mpsc::Sender<()>,
) {
    let mut ticks = tokio::time::interval(Duration::from_millis(expiry.check_every_ms));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let expired = match core.durable().cloned() {
            Some(durable) => {
                let online = core.registry.attached_client_ids();
                match durable
                    .store()
                    .expire_sessions(now_ms(), expiry.timeout_ms, online)
                    .await
                {
                    Ok(expired) => expired,
                    Err(e) => {
                        tracing::warn!("persistent session expiry failed: {e}");
                        continue;
                    }
                }
            }
            None => offline_longer_than(&core, Duration::from_millis(expiry.timeout_ms)),
        };
        if !expired.is_empty() {
            tracing::info!(
                sessions = expired.len(),
                offline_durable_subscriber_timeout_ms = expiry.timeout_ms,
                "abandoned persistent sessions expired with their queued messages"
            );
            core.drop_expired(&expired, false);
        }
    }
}

/// Client ids of the in-memory persistent sessions offline for more than `timeout`.
fn offline_longer_than(core: &super::BrokerCore, timeout: Duration) -> Vec<Arc<str>> {
    core.registry
        .persistent_sessions()
        .into_iter()
        .filter(|s| s.offline_for().is_some_and(|offline| offline > timeout))
        .map(|s| s.client_id().clone())
        .collect()
}
