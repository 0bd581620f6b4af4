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

/// A claim's order: its wall-clock start (µs) and the claiming process (ties).
pub type ClaimStamp = (u64, u64);

/// The wall clock in µs since the Unix epoch: two CONNECTs of one client a CONNACK apart on
/// one machine are ordered by it (milliseconds could tie).
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Recent claims of this node and announcements of the others.
#[derive(Debug, Default)]
pub struct Claims {
    local: HashMap<Arc<str>, ClaimStamp>,
    remote: HashMap<Arc<str>, ClaimStamp>,
    /// Sessions this node let go of (handed over on a kick, fenced), with the stamp of its
    /// claim that was current then.
    let_go: HashMap<Arc<str>, ClaimStamp>,
    /// Claims of this node that found no session to resume (no record, a clean start, an
    /// expired record): the only claims whose connection may start a new session here.
    starts_here: HashMap<Arc<str>, ClaimStamp>,
    /// When each client id was last claimed or announced: it is forgotten [`WINDOW`] after
    /// that, not after its first mention.
    last_heard: HashMap<Arc<str>, Instant>,
    order: VecDeque<(Instant, Arc<str>)>,
}

/// Whether a connection whose session this node does not track may start a new one here
/// (see [`Claims::new_session`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewSession {
    /// This node's latest claim found no session to resume, and nothing let it go since.
    Allowed,
    /// The session of this node's latest claim was let go since (another node's kick, a
    /// fence): another node holds it now.
    LetGo,
    /// This node's latest claim restored or confirmed a session (its copy was dropped
    /// since), or no claim is remembered: starting afresh would replace the session's record
    /// with fresh floors.
    NotClaimedNew,
}

impl Claims {
    fn forget_old(&mut self) {
        while let Some((at, _)) = self.order.front() {
            if at.elapsed() < WINDOW {
                break;
            }
            let Some((_, client_id)) = self.order.pop_front() else {
                break;
            };
            let heard_since = self
                .last_heard
                .get(&client_id)
                .is_some_and(|at| at.elapsed() < WINDOW);
            if !heard_since {
                self.local.remove(&client_id);
                self.remote.remove(&client_id);
                self.let_go.remove(&client_id);
                self.starts_here.remove(&client_id);
                self.last_heard.remove(&client_id);
            }
        }
    }

    fn heard_of(&mut self, client_id: &Arc<str>) {
        let now = Instant::now();
        self.last_heard.insert(client_id.clone(), now);
        self.order.push_back((now, client_id.clone()));
    }

    /// This node claims `client_id` now (`now_us`, wall clock; `instance` breaks ties) and
    /// returns the claim's stamp: later than every claim of `client_id` this node knows of,
    /// so a CONNECT that follows another's announcement wins whatever the clocks say.
    pub fn claimed_here(&mut self, client_id: &Arc<str>, now_us: u64, instance: u64) -> ClaimStamp {
        self.forget_old();
        let known = [self.local.get(client_id), self.remote.get(client_id)]
            .into_iter()
            .flatten()
            .map(|(us, _)| us + 1)
            .max()
            .unwrap_or(0);
        let stamp = (now_us.max(known), instance);
        self.local.insert(client_id.clone(), stamp);
        self.heard_of(client_id);
        stamp
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
        self.heard_of(client_id);
        self.local.get(client_id).is_none_or(|local| *local < stamp)
    }

    /// This node let `client_id`'s session go (another node takes it): a connection of this
    /// node's latest claim that attaches only now must not make it a new session here.
    pub fn let_go(&mut self, client_id: &Arc<str>) {
        if let Some(stamp) = self.local.get(client_id).copied() {
            self.let_go.insert(client_id.clone(), stamp);
        }
    }

    /// News that `client_id`'s session left this node, about the claim `about` (a kick's
    /// kicking claim, or the claim a fenced copy came from; `None`: not known):
    /// [`Claims::let_go`], unless this node's latest claim is newer than `about`. That claim
    /// (a CONNECT read by a node woken from a freeze, while a kick or a check of the copy it
    /// held before arrives late) wrote the record itself and restores its own copy.
    pub fn let_go_unless_newer_here(&mut self, client_id: &Arc<str>, about: Option<ClaimStamp>) {
        let newer_here = about
            .zip(self.local.get(client_id))
            .is_some_and(|(about, latest)| about < *latest);
        if !newer_here {
            self.let_go(client_id);
        }
    }

    /// This node's latest claim of `client_id` found no session to resume: its connection
    /// starts a new one.
    pub fn starts_here(&mut self, client_id: &Arc<str>) {
        if let Some(stamp) = self.local.get(client_id).copied() {
            self.starts_here.insert(client_id.clone(), stamp);
        }
    }

    /// Whether a connection of `client_id` whose session this node does not track may make
    /// a new one: only when this node's latest claim said the session starts here and the
    /// session was not let go since (a newer claim here is a new question).
    pub fn new_session(&self, client_id: &str) -> NewSession {
        let Some(latest) = self.local.get(client_id) else {
            return NewSession::NotClaimedNew;
        };
        if self.let_go.get(client_id) == Some(latest) {
            return NewSession::LetGo;
        }
        if self.starts_here.get(client_id) == Some(latest) {
            NewSession::Allowed
        } else {
            NewSession::NotClaimedNew
        }
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
        b.claimed_here(&id, 100, 1);
        c.claimed_here(&id, 105, 2);
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

    #[test]
    fn only_a_claim_that_found_no_session_starts_a_new_one() {
        let id: Arc<str> = Arc::from("c");
        let mut a = Claims::default();
        a.starts_here(&id);
        assert_eq!(
            a.new_session("c"),
            NewSession::NotClaimedNew,
            "no claim here: nothing allowed"
        );
        a.claimed_here(&id, 100, 1);
        assert_eq!(
            a.new_session("c"),
            NewSession::NotClaimedNew,
            "a claim that restored or confirmed a session"
        );
        a.starts_here(&id);
        assert_eq!(a.new_session("c"), NewSession::Allowed);
        a.let_go(&id);
        assert_eq!(
            a.new_session("c"),
            NewSession::LetGo,
            "handed over after the claim"
        );
        a.claimed_here(&id, 100, 1);
        assert_eq!(
            a.new_session("c"),
            NewSession::NotClaimedNew,
            "a newer claim here is a new question"
        );
        a.starts_here(&id);
        assert_eq!(a.new_session("c"), NewSession::Allowed);
    }

    #[test]
    fn a_claim_is_remembered_for_the_window_after_its_latest_mention() {
        let id: Arc<str> = Arc::from("c");
        let other: Arc<str> = Arc::from("d");
        let mut a = Claims::default();
        a.claimed_here(&id, 100, 1);
        a.claimed_here(&id, 200, 1);
        a.starts_here(&id);
        // The first mention aged out of the window; the claim after it did not.
        let first = a.order.front_mut().expect("mentioned");
        first.0 = first
            .0
            .checked_sub(WINDOW)
            .expect("a clock past the window");
        a.claimed_here(&other, 300, 1);
        assert_eq!(a.order.len(), 2, "the aged mention is gone");
        assert_eq!(a.local("c"), Some((200, 1)));
        assert_eq!(a.new_session("c"), NewSession::Allowed);
    }

    #[test]
    fn a_claim_after_an_announcement_wins_whatever_the_clock_says() {
        let id: Arc<str> = Arc::from("c");
        let mut a = Claims::default();
        // A heard of a claim stamped 100 by a process with a higher tie-breaker.
        assert!(a.announced(&id, (100, 9)));
        let stamp = a.claimed_here(&id, 100, 1);
        assert!(stamp > (100, 9));
        assert!(!a.superseded("c"));
        let mut b = Claims::default();
        b.claimed_here(&id, 100, 9);
        assert!(b.announced(&id, stamp), "the earlier claim closes");
    }

    #[test]
    fn a_fenced_copy_lets_go_of_its_own_claim_not_of_a_newer_one() {
        let mut a = Claims::default();
        let id: Arc<str> = Arc::from("c");
        let old = a.claimed_here(&id, 100, 1);
        let newer = a.claimed_here(&id, 200, 1);
        assert!(old < newer);
        a.let_go_unless_newer_here(&id, Some(old));
        assert_eq!(
            a.new_session("c"),
            NewSession::NotClaimedNew,
            "the newer claim restores its own copy"
        );
        a.let_go_unless_newer_here(&id, Some(newer));
        assert_eq!(a.new_session("c"), NewSession::LetGo);
        let other: Arc<str> = Arc::from("d");
        a.claimed_here(&other, 300, 1);
        a.let_go_unless_newer_here(&other, None);
        assert_eq!(
            a.new_session("d"),
            NewSession::LetGo,
            "a copy of unknown origin lets go as before"
        );
    }

    #[test]
    fn a_kick_older_than_the_latest_claim_here_does_not_let_it_go() {
        let mut a = Claims::default();
        let id: Arc<str> = Arc::from("c");
        let latest = a.claimed_here(&id, 500, 1);
        a.let_go_unless_newer_here(&id, Some((400, 2)));
        assert_eq!(a.new_session("c"), NewSession::NotClaimedNew);
        a.let_go_unless_newer_here(&id, Some((latest.0 + 1, 2)));
        assert_eq!(a.new_session("c"), NewSession::LetGo);
        let other: Arc<str> = Arc::from("d");
        a.claimed_here(&other, 500, 1);
        a.let_go_unless_newer_here(&other, None);
        assert_eq!(
            a.new_session("d"),
            NewSession::LetGo,
            "an older node's kick"
        );
    }
}
