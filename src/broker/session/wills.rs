//! Pending wills (MQTT 5 Will Delay Interval, 3.1.2.5 and 3.1.3-9): wills whose connection
//! ended without a normal DISCONNECT and whose session lives on, each due at the earlier of its
//! delay and its session's expiry. One deadline-ordered set for the whole broker, waited on by
//! the session sweeper ([`super::expiry::sweep_periodically`]), not one task per will.
//!
//! The set only says *when* to look: the will itself is the session's `kept_will` (with its
//! deadline), which is also what the durability engine keeps. Whoever takes it from the
//! session first publishes it: the sweeper at the deadline, or the session's end (expiry,
//! replaced by a Clean Start connection). A connection that resumes the session replaces it,
//! so a stale entry here finds nothing and publishes nothing.
//!
//! Deadlines are on tokio's clock, so tests can run with paused time.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::broker::session::Session;
use crate::security::Principal;

/// Who a pending will is published as.
#[derive(Debug, Clone)]
pub enum WillPublisher {
    /// The principal its connection had.
    Connected(Principal),
    /// Read back from the durability engine after a restart: its owner is looked up in the
    /// security snapshot of the time it is published (`authentication_enabled`: whether the
    /// configuration authenticates; without, everyone is anonymous).
    Recovered { authentication_enabled: bool },
}

/// One armed will.
#[derive(Debug, Clone)]
pub struct PendingWill {
    pub session: Arc<Session>,
    pub publisher: WillPublisher,
}

/// The pending wills of one broker, by deadline (see the module documentation).
#[derive(Debug, Default)]
pub struct PendingWills {
    inner: Mutex<Armed>,
    /// Signalled when a will is armed (its deadline may be the new earliest).
    armed: Notify,
}

#[derive(Debug, Default)]
struct Armed {
    by_deadline: BTreeMap<(Instant, u64), PendingWill>,
    /// Client id -> its entry's key (a client has at most one pending will).
    by_client: HashMap<Arc<str>, (Instant, u64)>,
    next_id: u64,
}

impl PendingWills {
    /// Look at `will`'s session at `deadline`, replacing what its client had armed before.
    pub fn arm(&self, deadline: Instant, will: PendingWill) {
        {
            let mut armed = self.inner.lock();
            armed.next_id += 1;
            let key = (deadline, armed.next_id);
            let client_id = will.session.client_id().clone();
            if let Some(old) = armed.by_client.insert(client_id, key) {
                armed.by_deadline.remove(&old);
            }
            armed.by_deadline.insert(key, will);
        }
        self.armed.notify_one();
    }

    /// Disarm the will of `session` (not another session of the same client id).
    pub fn cancel(&self, session: &Session) -> Option<PendingWill> {
        let mut armed = self.inner.lock();
        let key = *armed.by_client.get(session.client_id())?;
        let same = armed
            .by_deadline
            .get(&key)
            .is_some_and(|p| p.session.id() == session.id());
        if !same {
            return None;
        }
        armed.by_client.remove(session.client_id());
        armed.by_deadline.remove(&key)
    }

    /// Remove and return every will due at `now`, earliest first.
    pub fn take_due(&self, now: Instant) -> Vec<PendingWill> {
        let mut armed = self.inner.lock();
        let mut due = Vec::new();
        while let Some(entry) = armed.by_deadline.first_entry() {
            let key = *entry.key();
            if key.0 > now {
                break;
            }
            let will = entry.remove();
            let client_id = will.session.client_id();
            if armed.by_client.get(client_id) == Some(&key) {
                armed.by_client.remove(client_id);
            }
            due.push(will);
        }
        due
    }

    /// How many wills are armed.
    pub fn len(&self) -> usize {
        self.inner.lock().by_deadline.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Return once the earliest armed deadline has passed (waiting through new arms).
    /// Cancel-safe: it keeps no state between calls.
    pub async fn wait_due(&self) {
        loop {
            let armed = self.armed.notified();
            tokio::pin!(armed);
            // Registered before looking, so a will armed right after still wakes us.
            armed.as_mut().enable();
            let next = self.inner.lock().by_deadline.keys().next().map(|k| k.0);
            match next {
                Some(at) if at <= Instant::now() => return,
                Some(at) => tokio::select! {
                    _ = tokio::time::sleep_until(at) => return,
                    _ = armed => {}
                },
                None => armed.await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::broker::session::SessionState;

    fn pending(id: u64, client_id: &str) -> PendingWill {
        PendingWill {
            session: Arc::new(Session::new(id, SessionState::new(client_id, true))),
            publisher: WillPublisher::Recovered {
                authentication_enabled: false,
            },
        }
    }

    #[tokio::test(start_paused = true)]
    async fn wills_come_due_in_deadline_order_and_not_before() {
        let wills = PendingWills::default();
        let start = Instant::now();
        wills.arm(start + Duration::from_secs(3), pending(1, "late"));
        wills.arm(start + Duration::from_secs(1), pending(2, "early"));
        assert!(wills.take_due(start).is_empty());
        wills.wait_due().await;
        assert_eq!(Instant::now() - start, Duration::from_secs(1));
        let due = wills.take_due(Instant::now());
        assert_eq!(due.len(), 1);
        assert_eq!(&**due[0].session.client_id(), "early");
        wills.wait_due().await;
        assert_eq!(Instant::now() - start, Duration::from_secs(3));
        assert_eq!(wills.take_due(Instant::now()).len(), 1);
        assert!(wills.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_will_armed_while_waiting_wakes_the_waiter() {
        let wills = Arc::new(PendingWills::default());
        let start = Instant::now();
        wills.arm(start + Duration::from_secs(60), pending(1, "a"));
        let waiter = tokio::spawn({
            let wills = wills.clone();
            async move { wills.wait_due().await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        wills.arm(start + Duration::from_secs(2), pending(2, "b"));
        waiter.await.expect("waiter");
        assert_eq!(Instant::now() - start, Duration::from_secs(2));
    }

    #[test]
    fn a_client_has_one_will_and_cancel_touches_only_its_session() {
        let wills = PendingWills::default();
        let now = Instant::now();
        let first = pending(1, "c");
        wills.arm(now, first.clone());
        let second = pending(2, "c");
        wills.arm(now + Duration::from_secs(5), second.clone());
        assert_eq!(wills.len(), 1, "re-arming replaces");
        assert!(wills.cancel(&first.session).is_none(), "another session");
        assert!(wills.cancel(&second.session).is_some());
        assert!(wills.is_empty());
    }
}
