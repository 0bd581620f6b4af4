//! The session registry: client id -> session (used at CONNECT and close) and session id ->
//! session (used by publishers when they resolve a route, behind a read lock; a resolved route
//! is reused while the routes generation kept here is unchanged, see
//! `broker/runtime/route_cache.rs`).
//!
//! Lock order, everywhere: registry client-id map -> a session's mutex -> subscription tree.
//! Publishers take only the id map (read) and then one session mutex at a time.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use crate::broker::session::keyed::{ByClientId, ById};
use crate::broker::session::kind::SessionKind;
use crate::broker::session::{AttachToken, Session, SessionId, SessionState};

/// Why a CONNECT could not get its session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachError {
    #[error("client id already connected and allowLinkStealing is false")]
    ClientIdInUse,
    /// The shared engine refused the persistent session at once (in a cluster: another node
    /// took it during this CONNECT, or this node is draining): nothing was attached.
    #[error("{0}")]
    Refused(String),
}

/// A connection's session after CONNECT.
#[derive(Debug)]
pub struct Attached {
    pub session: Arc<Session>,
    pub token: AttachToken,
    /// The CONNACK session-present flag.
    pub session_present: bool,
    /// A previous session of this client id that was discarded: the caller removes its
    /// subscriptions from the tree (and from the store when it was persistent).
    pub discarded: Option<Arc<Session>>,
}

/// What closing a connection did to its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detached {
    /// Another connection took the session over: nothing to do.
    TakenOver,
    /// Persistent session, now offline.
    KeptOffline,
    /// Clean session: removed; the caller removes its subscriptions.
    Ended,
}

/// How long a session outlives the connection that attaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionLifetime {
    /// Clean session 1 (MQTT 3), Session Expiry Interval 0 (MQTT 5).
    EndsAtDisconnect,
    /// Persistent: kept offline for `expiry_secs` (`None`: until the broker-wide
    /// `offlineDurableSubscriberTimeout`, if any).
    Kept { expiry_secs: Option<u32> },
}

impl SessionLifetime {
    /// MQTT 3.1/3.1.1: clean session decides everything.
    pub fn of_v3(clean_session: bool) -> Self {
        if clean_session {
            SessionLifetime::EndsAtDisconnect
        } else {
            SessionLifetime::Kept { expiry_secs: None }
        }
    }

    /// MQTT 5 Session Expiry Interval (absent = 0; 0xFFFFFFFF = never expires).
    pub fn of_v5(expiry_interval_secs: Option<u32>) -> Self {
        match expiry_interval_secs.unwrap_or(0) {
            0 => SessionLifetime::EndsAtDisconnect,
            u32::MAX => SessionLifetime::Kept { expiry_secs: None },
            secs => SessionLifetime::Kept {
                expiry_secs: Some(secs),
            },
        }
    }
}

#[derive(Debug, Default)]
pub struct SessionRegistry {
    by_client_id: Mutex<HashSet<ByClientId>>,
    /// Looked up once per delivery: ahash, not the default SipHash (a session id is a
    /// process-local counter, not attacker-chosen, so HashDoS resistance buys nothing here).
    by_id: RwLock<HashSet<ById, ahash::RandomState>>,
    next_session_id: AtomicU64,
    next_generation: AtomicU64,
    /// Bumped after every change that can change where a publish goes: a session removed
    /// here, a subscription added or removed in the tree (see
    /// [`crate::broker::runtime::BrokerCore::subscriptions_write`]). Routes cached by
    /// publishers are valid only for the generation they were resolved at. Written rarely
    /// (subscribe, unsubscribe, a session's end), read once per publish.
    routes_generation: AtomicU64,
}

impl SessionRegistry {
    /// Attach a new connection of `client_id` (non-empty) to its session, creating, resuming or
    /// replacing it per MQTT 3.1.1 3.1.2.4 / MQTT 5 3.1.2.4 and `allowLinkStealing`.
    /// `lifetime`: how long the session outlives this connection. `mqtt5`: the connection
    /// speaks MQTT 5 (a resumed session takes this version, see [`SessionState::mqtt5`]).
    pub fn attach(
        &self,
        client_id: &str,
        clean_start: bool,
        lifetime: SessionLifetime,
        allow_link_stealing: bool,
        mqtt5: bool,
    ) -> Result<Attached, AttachError> {
        let mut by_client_id = self.by_client_id.lock();
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed) + 1;
        let existing = by_client_id.get(client_id).map(|e| e.0.clone());
        if let Some(old) = &existing {
            if old.is_attached() && !allow_link_stealing {
                return Err(AttachError::ClientIdInUse);
            }
            // A clean-start connect discards the old state; so does a resuming connect that
            // finds a clean session (its lifetime was the old connection).
            if !clean_start && old.is_persistent() {
                // The stored record stays (the session is persistent); a connection asking
                // for no lifetime makes it end at its disconnect (MQTT 5 expiry 0).
                let expiry_secs = match lifetime {
                    SessionLifetime::EndsAtDisconnect => Some(0),
                    SessionLifetime::Kept { expiry_secs } => expiry_secs,
                };
                old.with_state_unchecked(|s| s.expiry_secs = expiry_secs);
                old.set_mqtt5(mqtt5);
                let token = old.attach(generation);
                return Ok(Attached {
                    session: old.clone(),
                    token,
                    session_present: true,
                    discarded: None,
                });
            }
            old.end();
            self.remove_by_id(old.id());
        }
        let mut state = SessionState::new(client_id, lifetime != SessionLifetime::EndsAtDisconnect);
        if let SessionLifetime::Kept { expiry_secs } = lifetime {
            state.expiry_secs = expiry_secs;
        }
        state.mqtt5 = mqtt5;
        let session = self.insert_locked(&mut by_client_id, state, Duration::ZERO);
        let token = session.attach(generation);
        Ok(Attached {
            session,
            token,
            session_present: false,
            discarded: existing,
        })
    }

    /// Add an offline persistent session loaded from a store; returns it so the caller can
    /// index its subscriptions.
    /// `offline_for`: how long its client had been gone when the broker stopped.
    pub fn restore(&self, state: SessionState, offline_for: Duration) -> Arc<Session> {
        let mut by_client_id = self.by_client_id.lock();
        if let Some(old) = by_client_id.get(&*state.client_id).map(|e| e.0.clone()) {
            old.end();
            self.remove_by_id(old.id());
        }
        self.insert_locked(&mut by_client_id, state, offline_for)
    }

    fn insert_locked(
        &self,
        by_client_id: &mut HashSet<ByClientId>,
        state: SessionState,
        offline_for: Duration,
    ) -> Arc<Session> {
        let id = self.next_session_id.fetch_add(1, Ordering::Relaxed) + 1;
        let session = Arc::new(Session::restored(id, state, offline_for));
        // `replace`: a session this one supersedes leaves the set (`insert` would keep it).
        by_client_id.replace(ByClientId(session.clone()));
        self.by_id.write().replace(ById(session.clone()));
        session
    }

    /// The connection `generation` of `session` closed.
    pub fn detach(&self, session: &Arc<Session>, generation: u64) -> Detached {
        let mut by_client_id = self.by_client_id.lock();
        if !session.detach(generation) {
            return Detached::TakenOver;
        }
        if session.is_persistent() && session.expiry_secs() != Some(0) {
            return Detached::KeptOffline;
        }
        session.end();
        if by_client_id
            .get(&**session.client_id())
            .is_some_and(|s| Arc::ptr_eq(&s.0, session))
        {
            by_client_id.remove(&**session.client_id());
        }
        self.remove_by_id(session.id());
        Detached::Ended
    }

    /// Remove `id` from the id map; the routes cached with it are stale from now on.
    fn remove_by_id(&self, id: SessionId) {
        self.by_id.write().remove(&id);
        self.routes_changed();
    }

    /// Something that decides routes changed (after the change, before it is acknowledged
    /// to anyone): every route cached before is resolved again.
    pub fn routes_changed(&self) {
        self.routes_generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The current routes generation: a route resolved after reading it is valid while the
    /// generation stays the same.
    pub fn routes_generation(&self) -> u64 {
        self.routes_generation.load(Ordering::SeqCst)
    }

    /// The session with `id`, if it still exists.
    pub fn get(&self, id: SessionId) -> Option<Arc<Session>> {
        self.by_id.read().get(&id).map(|e| e.0.clone())
    }

    /// Run `f` once per run of equal ids in `items` (sorted by id) whose session still exists,
    /// with that run, holding the read lock once.
    pub fn for_each_run<T>(
        &self,
        items: &[(SessionId, T)],
        mut f: impl FnMut(&Arc<Session>, &[(SessionId, T)]),
    ) {
        let by_id = self.by_id.read();
        for run in items.chunk_by(|a, b| a.0 == b.0) {
            if let Some(s) = run.first().and_then(|(id, _)| by_id.get(id)) {
                f(&s.0, run);
            }
        }
    }

    /// Run `f` for each listed session that still exists, holding the read lock once.
    pub fn for_each_of<T: Copy>(
        &self,
        items: &[(SessionId, T)],
        mut f: impl FnMut(&Arc<Session>, T),
    ) {
        let by_id = self.by_id.read();
        for (id, extra) in items {
            if let Some(s) = by_id.get(id) {
                f(&s.0, *extra);
            }
        }
    }

    /// The session of `client_id`, online or offline.
    pub fn by_client_id(&self, client_id: &str) -> Option<Arc<Session>> {
        self.by_client_id.lock().get(client_id).map(|e| e.0.clone())
    }

    /// Every session, online or offline (for the console).
    pub fn all(&self) -> Vec<Arc<Session>> {
        self.by_client_id
            .lock()
            .iter()
            .map(|e| e.0.clone())
            .collect()
    }

    /// Every persistent session (for the store at shutdown).
    pub fn persistent_sessions(&self) -> Vec<Arc<Session>> {
        self.by_client_id
            .lock()
            .iter()
            .filter(|s| s.0.is_persistent())
            .map(|s| s.0.clone())
            .collect()
    }

    /// Client ids of the sessions a connection holds now (the durable store's session expiry
    /// spares them).
    pub fn attached_client_ids(&self) -> std::collections::HashSet<Arc<str>> {
        self.by_client_id
            .lock()
            .iter()
            .filter(|s| s.0.is_attached())
            .map(|s| s.0.client_id().clone())
            .collect()
    }

    /// Remove the session of `client_id` if no connection holds it (expired in the durable
    /// store); returns it so the caller can drop its subscriptions. An attached session is
    /// kept and returned as `Err` (its client came back meanwhile).
    pub fn remove_offline(&self, client_id: &str) -> Option<Result<Arc<Session>, Arc<Session>>> {
        let mut by_client_id = self.by_client_id.lock();
        let session = by_client_id.get(client_id).map(|e| e.0.clone())?;
        if session.is_attached() {
            return Some(Err(session));
        }
        by_client_id.remove(client_id);
        session.end();
        self.remove_by_id(session.id());
        Some(Ok(session))
    }

    /// Remove the session of `client_id`, attached or not, because another broker took it
    /// over (a cluster): its connection is kicked (it closes as taken over) and nothing of it
    /// is ended in the shared engine. Returns it so the caller can drop its subscriptions.
    pub fn remove_handed_over(&self, client_id: &str) -> Option<Arc<Session>> {
        let mut by_client_id = self.by_client_id.lock();
        let session = by_client_id.take(client_id)?.0;
        session.end_handed_over();
        self.remove_by_id(session.id());
        Some(session)
    }

    pub fn len(&self) -> usize {
        self.by_client_id.lock().len()
    }

    /// Sessions online and offline and their queues, for the metrics scrape: one pass, each
    /// session's lock taken on its own (never under the registry's). MQTT sessions and STOMP
    /// durable subscriptions are counted apart (the console lists MQTT sessions as sessions);
    /// STOMP's other internal sessions are not counted, their queues are.
    pub fn census(&self) -> SessionCensus {
        let sessions: Vec<Arc<Session>> = self
            .by_client_id
            .lock()
            .iter()
            .map(|e| e.0.clone())
            .collect();
        let mut census = SessionCensus::default();
        for session in sessions {
            let attached = session.is_attached();
            let offline = !attached && session.is_persistent();
            match SessionKind::of(session.client_id()) {
                SessionKind::Mqtt if attached => census.online += 1,
                SessionKind::Mqtt if offline => census.offline += 1,
                SessionKind::StompDurable { .. } if attached => census.stomp_durable_online += 1,
                SessionKind::StompDurable { .. } if offline => census.stomp_durable_offline += 1,
                _ => {}
            }
            let depth = session.with_state_unchecked(|s| s.pending().len()) as u64;
            census.queued += depth;
            census.deepest_queue = census.deepest_queue.max(depth);
        }
        census
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What [`SessionRegistry::census`] counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SessionCensus {
    /// MQTT sessions a connection holds.
    pub online: u64,
    /// Persistent MQTT sessions without a connection.
    pub offline: u64,
    /// STOMP durable topic subscriptions a connected client consumes.
    pub stomp_durable_online: u64,
    /// STOMP durable topic subscriptions kept without a consumer.
    pub stomp_durable_offline: u64,
    /// Messages queued for delivery over all sessions: MQTT sessions and STOMP topic
    /// subscriptions.
    pub queued: u64,
    /// The longest session queue.
    pub deepest_queue: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persistent_session_is_resumed_with_session_present() {
        let r = SessionRegistry::default();
        let a = r
            .attach("c", false, SessionLifetime::of_v3(false), true, false)
            .expect("attach");
        assert!(!a.session_present);
        assert_eq!(
            r.detach(&a.session, a.token.generation),
            Detached::KeptOffline
        );
        let b = r
            .attach("c", false, SessionLifetime::of_v3(false), true, false)
            .expect("attach");
        assert!(b.session_present);
        assert!(Arc::ptr_eq(&a.session, &b.session));
    }

    #[test]
    fn clean_session_discards_the_old_one() {
        let r = SessionRegistry::default();
        let a = r
            .attach("c", false, SessionLifetime::of_v3(false), true, false)
            .expect("attach");
        r.detach(&a.session, a.token.generation);
        let b = r
            .attach("c", true, SessionLifetime::of_v3(true), true, false)
            .expect("attach");
        assert!(!b.session_present);
        assert!(b.discarded.is_some_and(|d| Arc::ptr_eq(&d, &a.session)));
        assert!(r.get(a.session.id()).is_none());
        assert_eq!(r.detach(&b.session, b.token.generation), Detached::Ended);
        assert!(r.is_empty());
    }

    #[test]
    fn takeover_respects_allow_link_stealing() {
        let r = SessionRegistry::default();
        let a = r
            .attach("c", true, SessionLifetime::of_v3(true), true, false)
            .expect("attach");
        assert_eq!(
            r.attach("c", true, SessionLifetime::of_v3(true), false, false)
                .err(),
            Some(AttachError::ClientIdInUse)
        );
        let b = r
            .attach("c", true, SessionLifetime::of_v3(true), true, false)
            .expect("steal");
        assert!(a.token.signals.is_kicked());
        assert_eq!(
            r.detach(&a.session, a.token.generation),
            Detached::TakenOver
        );
        assert_eq!(r.detach(&b.session, b.token.generation), Detached::Ended);
        assert!(r.is_empty());
    }

    #[test]
    fn v5_lifetimes_decide_persistence_and_a_resume_with_zero_ends_at_disconnect() {
        assert_eq!(
            SessionLifetime::of_v5(None),
            SessionLifetime::EndsAtDisconnect
        );
        assert_eq!(
            SessionLifetime::of_v5(Some(u32::MAX)),
            SessionLifetime::Kept { expiry_secs: None }
        );
        let r = SessionRegistry::default();
        let a = r
            .attach("c", true, SessionLifetime::of_v5(Some(30)), true, true)
            .expect("attach");
        assert_eq!(a.session.expiry_secs(), Some(30));
        assert_eq!(
            r.detach(&a.session, a.token.generation),
            Detached::KeptOffline
        );
        let b = r
            .attach("c", false, SessionLifetime::of_v5(Some(0)), true, true)
            .expect("attach");
        assert!(b.session_present);
        assert_eq!(r.detach(&b.session, b.token.generation), Detached::Ended);
        assert!(r.is_empty());
    }

    #[test]
    fn a_resumed_session_takes_the_new_connections_protocol_version() {
        let r = SessionRegistry::default();
        let a = r
            .attach("c", true, SessionLifetime::of_v5(Some(30)), true, true)
            .expect("attach");
        assert!(a.session.is_mqtt5());
        r.detach(&a.session, a.token.generation);
        let b = r
            .attach("c", false, SessionLifetime::of_v3(false), true, false)
            .expect("attach");
        assert!(b.session_present);
        assert!(!b.session.is_mqtt5());
        assert!(
            !b.session.snapshot().mqtt5,
            "kept in the state for the store too"
        );
    }
}
