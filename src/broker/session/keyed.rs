//! Sessions in hash sets, found by a key they hold themselves: the registry's maps store one
//! pointer per session (8 bytes an entry) instead of a copy of the key beside it (a client
//! id's `Arc<str>` took 16 more, a session id 8), which at tens of thousands of idle
//! connections is part of each one's memory (docs/scaling.md).
//!
//! Each wrapper hashes and compares exactly as its key type does, so that a set of them is
//! searched with a plain `&str` or `&SessionId` (`Borrow`'s contract).

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use super::{Session, SessionId};

/// A session keyed by its client id.
#[derive(Debug, Clone)]
pub(super) struct ByClientId(pub(super) Arc<Session>);

impl Borrow<str> for ByClientId {
    fn borrow(&self) -> &str {
        self.0.client_id()
    }
}

impl Hash for ByClientId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let key: &str = self.borrow();
        key.hash(state);
    }
}

impl PartialEq for ByClientId {
    fn eq(&self, other: &Self) -> bool {
        self.0.client_id() == other.0.client_id()
    }
}

impl Eq for ByClientId {}

/// A session keyed by its process-unique id.
#[derive(Debug, Clone)]
pub(super) struct ById(pub(super) Arc<Session>);

impl Borrow<SessionId> for ById {
    fn borrow(&self) -> &SessionId {
        &self.0.id
    }
}

impl Hash for ById {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.id.hash(state);
    }
}

impl PartialEq for ById {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for ById {}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::broker::session::SessionState;

    fn session(id: SessionId, client_id: &str) -> Arc<Session> {
        Arc::new(Session::new(id, SessionState::new(client_id, false)))
    }

    #[test]
    fn sets_are_searched_with_the_plain_key() {
        let (a, b) = (session(1, "a"), session(2, "b"));
        let by_client_id: HashSet<ByClientId> =
            [ByClientId(a.clone()), ByClientId(b.clone())].into();
        assert!(Arc::ptr_eq(&by_client_id.get("b").expect("b").0, &b));
        assert!(!by_client_id.contains("c"));
        let by_id: HashSet<ById, ahash::RandomState> =
            [ById(a.clone()), ById(b)].into_iter().collect();
        assert!(Arc::ptr_eq(&by_id.get(&1).expect("1").0, &a));
        assert!(!by_id.contains(&3));
    }

    #[test]
    fn an_entry_is_as_small_as_a_pointer() {
        assert_eq!(std::mem::size_of::<ByClientId>(), 8);
        assert_eq!(std::mem::size_of::<ById>(), 8);
    }
}
