//! Who connected last with a client id, across nodes, for the few seconds in which two
//! CONNECTs on two nodes can race: every node announces each CONNECT it attached
//! (`fmq.kick.<client>`) with the time its claim started, and the older connection closes,
//! whichever announcement arrives first. Persistent sessions are serialized by their record's
//! compare-and-set as well; clean sessions keep nothing in NATS and rely on this alone.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a claim is remembered: far longer than a CONNECT takes.
const WINDOW: Duration = Duration::from_secs(30);

/// A claim's order: its wall-clock start (ms) and the claiming process (ties).
pub type ClaimStamp = (u64, u64);

/// Recent claims of this node and announcements of the others.
#[derive(Debug, Default)]
pub struct Claims {
    local: HashMap<Arc<str>, ClaimStamp>,
    remote: HashMap<Arc<str>, ClaimStamp>,
    order: VecDeque<(Instant, Arc<str>)>,
}

impl Claims {
    fn forget_old(&mut self) {
        while let Some((at, _)) = self.order.front() {
            if at.elapsed() < WINDOW {
                break;
            }
            if let Some((_, client_id)) = self.order.pop_front() {
                self.local.remove(&client_id);
                self.remote.remove(&client_id);
            }
        }
    }

    /// This node claims `client_id` now.
    pub fn claimed_here(&mut self, client_id: &Arc<str>, stamp: ClaimStamp) {
        self.forget_old();
        self.local.insert(client_id.clone(), stamp);
        self.order.push_back((Instant::now(), client_id.clone()));
    }

    /// This node's claim of `client_id`, while remembered.
    pub fn local(&self, client_id: &str) -> Option<ClaimStamp> {
        self.local.get(client_id).copied()
    }

    /// Another node announced a claim of `client_id`: whether this node's connection (if any)
    /// is the older one and must close.
    pub fn announced(&mut self, client_id: &Arc<str>, stamp: ClaimStamp) -> bool {
        self.forget_old();
        let newest = self.remote.entry(client_id.clone()).or_insert(stamp);
        *newest = (*newest).max(stamp);
        self.order.push_back((Instant::now(), client_id.clone()));
        self.local.get(client_id).is_none_or(|local| *local < stamp)
    }

    /// Whether another node announced a newer claim than this node's (this node's
    /// connection attached after that announcement arrived).
    pub fn superseded(&self, client_id: &str) -> bool {
        match (self.local.get(client_id), self.remote.get(client_id)) {
            (Some(local), Some(remote)) => local < remote,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_older_claim_loses_whichever_announcement_arrives_first() {
        let id: Arc<str> = Arc::from("c");
        let mut b = Claims::default();
        let mut c = Claims::default();
        b.claimed_here(&id, (100, 1));
        c.claimed_here(&id, (105, 2));
        // C hears B's (older) claim: C keeps its connection.
        assert!(!c.announced(&id, (100, 1)));
        // B hears C's (newer) claim: B closes its own.
        assert!(b.announced(&id, (105, 2)));
        assert!(b.superseded("c"));
        assert!(!c.superseded("c"));
        // A node with no claim of its own closes whatever it holds.
        let mut a = Claims::default();
        assert!(a.announced(&id, (105, 2)));
    }
}
