//! The memory-only engine: `persistent="false"` or `memoryPersistenceAdapter`. The runtime's
//! own state is everything; commits are done at once and nothing survives the process, as in
//! ActiveMQ. Persistent sessions may be handed from one broker instance to the next as
//! snapshots ([`MemorySessionStore`]): saved when their client goes offline and at shutdown,
//! loaded at start.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::{Change, Commit, Durability, DurabilityError, RecoveredSession, Recovery};
use crate::broker::routing::memory::MemoryGauge;
use crate::broker::session::SessionState;

#[derive(Debug, thiserror::Error)]
#[error("session store: {0}")]
pub struct StoreError(pub String);

/// Where the snapshots of persistent sessions go between broker instances of one process.
pub trait SessionStore: Send + Sync + std::fmt::Debug + 'static {
    /// Every stored session (called once at start).
    fn load_all(&self) -> Result<Vec<SessionState>, StoreError>;
    /// Insert or replace the session of `state.client_id`.
    fn save(&self, state: &SessionState) -> Result<(), StoreError>;
    /// Forget the session of `client_id` (no error when absent).
    fn remove(&self, client_id: &str) -> Result<(), StoreError>;
    /// Keep a topic that now exists in the broker's destination map (see
    /// [`Change::DestinationCreated`]). A store that keeps none forgets them.
    fn save_destination(&self, _topic: &Arc<str>) -> Result<(), StoreError> {
        Ok(())
    }
    /// Every topic kept with [`SessionStore::save_destination`] (called once at start).
    fn load_destinations(&self) -> Result<Vec<Arc<str>>, StoreError> {
        Ok(Vec::new())
    }
}

/// Snapshots in a map.
#[derive(Debug, Default)]
pub struct MemorySessionStore {
    sessions: Mutex<HashMap<String, SessionState>>,
    destinations: Mutex<std::collections::BTreeSet<Arc<str>>>,
}

impl SessionStore for MemorySessionStore {
    fn load_all(&self) -> Result<Vec<SessionState>, StoreError> {
        Ok(self.sessions.lock().values().cloned().collect())
    }

    fn save(&self, state: &SessionState) -> Result<(), StoreError> {
        self.sessions
            .lock()
            .insert(state.client_id.to_string(), state.clone());
        Ok(())
    }

    fn remove(&self, client_id: &str) -> Result<(), StoreError> {
        self.sessions.lock().remove(client_id);
        Ok(())
    }

    fn save_destination(&self, topic: &Arc<str>) -> Result<(), StoreError> {
        self.destinations.lock().insert(topic.clone());
        Ok(())
    }

    fn load_destinations(&self) -> Result<Vec<Arc<str>>, StoreError> {
        Ok(self.destinations.lock().iter().cloned().collect())
    }
}

/// The memory-only engine (see the module documentation).
#[derive(Debug, Default)]
pub struct MemoryOnly {
    next_seq: AtomicU64,
    snapshots: Option<Arc<dyn SessionStore>>,
}

impl MemoryOnly {
    /// Keeps persistent sessions in `snapshots` between broker instances of this process.
    pub fn with_snapshots(snapshots: Arc<dyn SessionStore>) -> MemoryOnly {
        MemoryOnly {
            next_seq: AtomicU64::new(0),
            snapshots: Some(snapshots),
        }
    }

    fn save(&self, state: &SessionState) {
        if let Some(snapshots) = &self.snapshots {
            if let Err(e) = snapshots.save(state) {
                tracing::warn!(client_id = %crate::security::Bounded(&state.client_id), "{e}");
            }
        }
    }
}

impl Durability for MemoryOnly {
    fn location(&self) -> String {
        "memory".into()
    }

    fn next_seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn commit(&self, changes: Vec<Change>) -> Commit {
        if let Some(snapshots) = &self.snapshots {
            for change in &changes {
                let saved = match change {
                    Change::SessionEnded { client_id } => snapshots.remove(client_id),
                    Change::DestinationCreated { topic } => snapshots.save_destination(topic),
                    _ => Ok(()),
                };
                if let Err(e) = saved {
                    tracing::warn!("{e}");
                }
            }
        }
        Commit::done()
    }

    fn session_offline(&self, state: &SessionState) -> Commit {
        self.save(state);
        Commit::done()
    }

    fn keeps_sessions(&self) -> bool {
        self.snapshots.is_some()
    }

    fn shutdown(&self, persistent: &[SessionState]) {
        for state in persistent {
            self.save(state);
        }
    }

    fn recover(&self, memory: &Arc<MemoryGauge>) -> Result<Recovery, DurabilityError> {
        let Some(snapshots) = &self.snapshots else {
            return Ok(Recovery::default());
        };
        let states = snapshots
            .load_all()
            .map_err(|e| DurabilityError::Unavailable(e.to_string()))?;
        let mut recovery = Recovery {
            destinations: snapshots
                .load_destinations()
                .map_err(|e| DurabilityError::Unavailable(e.to_string()))?,
            ..Recovery::default()
        };
        recovery.counts.sessions = states.len();
        // Their messages are still charged to the gauge of the instance that saved them.
        let _ = memory;
        for state in states {
            // A will kept while its client was connected is not due (this engine keeps
            // nothing across a crash); a pending one is re-armed.
            let will = state
                .kept_will
                .as_deref()
                .cloned()
                .filter(|w| w.deadline_ms.is_some());
            recovery.sessions.push(RecoveredSession {
                state,
                offline_for: Duration::ZERO,
                will,
            });
        }
        Ok(recovery)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_replace_remove() {
        let store = MemorySessionStore::default();
        let mut s = SessionState::new("a", true);
        store.save(&s).expect("save");
        s.inbound_qos2_mut().insert(5);
        store.save(&s).expect("replace");
        let all = store.load_all().expect("load");
        assert_eq!(all, vec![s]);
        store.remove("a").expect("remove");
        store.remove("a").expect("remove twice");
        assert!(store.load_all().expect("load").is_empty());
    }

    #[test]
    fn offline_sessions_are_handed_to_the_next_instance() {
        let store: Arc<MemorySessionStore> = Arc::default();
        let first = MemoryOnly::with_snapshots(store.clone());
        first.session_offline(&SessionState::new("a", true));
        first.shutdown(&[SessionState::new("b", true)]);
        let memory = MemoryGauge::new(u64::MAX);
        let second = MemoryOnly::with_snapshots(store.clone());
        let mut ids: Vec<_> = second
            .recover(&memory)
            .expect("recover")
            .sessions
            .into_iter()
            .map(|s| s.state.client_id.to_string())
            .collect();
        ids.sort();
        assert_eq!(ids, ["a", "b"]);
        second.commit(vec![Change::SessionEnded {
            client_id: Arc::from("a"),
        }]);
        assert_eq!(store.load_all().expect("load").len(), 1);
    }
}
