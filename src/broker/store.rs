//! Where persistent (clean session 0) session state goes between broker runs.
//!
//! The runtime keeps live sessions in its registry; a [`SessionStore`] only sees snapshots:
//! every persistent session is loaded at start, saved when its client goes offline and when
//! the broker shuts down, and removed when a clean-session connect discards it. The in-memory
//! store keeps snapshots for the life of the process (tests reuse one store across two broker
//! instances to check a restart); the durable store of issue 7 implements the same trait.

use std::collections::HashMap;

use parking_lot::Mutex;

use super::session::SessionState;

#[derive(Debug, thiserror::Error)]
#[error("session store: {0}")]
pub struct StoreError(pub String);

pub trait SessionStore: Send + Sync + std::fmt::Debug + 'static {
    /// Every stored session (called once at start).
    fn load_all(&self) -> Result<Vec<SessionState>, StoreError>;
    /// Insert or replace the session of `state.client_id`.
    fn save(&self, state: &SessionState) -> Result<(), StoreError>;
    /// Forget the session of `client_id` (no error when absent).
    fn remove(&self, client_id: &str) -> Result<(), StoreError>;
}

/// Snapshots in a map, for `persistent="false"` brokers and for tests.
#[derive(Debug, Default)]
pub struct MemorySessionStore {
    sessions: Mutex<HashMap<String, SessionState>>,
}

impl SessionStore for MemorySessionStore {
    fn load_all(&self) -> Result<Vec<SessionState>, StoreError> {
        Ok(self.sessions.lock().values().cloned().collect())
    }

    fn save(&self, state: &SessionState) -> Result<(), StoreError> {
        self.sessions
            .lock()
            .insert(state.client_id.clone(), state.clone());
        Ok(())
    }

    fn remove(&self, client_id: &str) -> Result<(), StoreError> {
        self.sessions.lock().remove(client_id);
        Ok(())
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
        s.inbound_qos2.insert(5);
        store.save(&s).expect("replace");
        let all = store.load_all().expect("load");
        assert_eq!(all, vec![s]);
        store.remove("a").expect("remove");
        store.remove("a").expect("remove twice");
        assert!(store.load_all().expect("load").is_empty());
    }
}
