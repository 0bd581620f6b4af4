//! A node whose process did not run for a while (SIGSTOP, a paused VM, a starved machine)
//! may have lost sessions meanwhile: another node takes a session whose owner does not answer
//! its kick within `KICK_TIMEOUT`. On waking, what its connections read from their sockets
//! was sent before their clients moved: a publish of a session taken from it would be stored
//! a second time, since its client sends it again where the session resumed. So from the
//! moment the process may have stalled until each of its persistent sessions is checked
//! against its record, that session's publishes are refused (its connection tries them
//! again, and stops once the session is fenced). Sessions checked as still this node's go on
//! at once; the check is `sessions::verify_all`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::engine::Inner;
use super::sessions::KICK_TIMEOUT;

/// How often the watch ticks.
const TICK: Duration = Duration::from_millis(100);

/// A gap between ticks this long means the process may have lost sessions.
const STALL: Duration = KICK_TIMEOUT;

/// What the watch saw: its last tick, and the sessions not checked since a stall.
pub struct Stalls {
    origin: Instant,
    /// Milliseconds from `origin` to the last tick.
    ticked_ms: AtomicU64,
    /// Checks running: while none runs, `unverified` is empty and is not locked at all (the
    /// publish path asks `uncertain` for every persistent publish).
    checking: AtomicUsize,
    unverified: parking_lot::Mutex<HashSet<Arc<str>>>,
}

impl Default for Stalls {
    fn default() -> Stalls {
        Stalls {
            origin: Instant::now(),
            ticked_ms: AtomicU64::new(0),
            checking: AtomicUsize::new(0),
            unverified: parking_lot::Mutex::new(HashSet::new()),
        }
    }
}

impl Stalls {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether `client_id`'s session may have been taken while this process did not run:
    /// the watch has not ticked for [`STALL`] (the process just woke, before the watch ran),
    /// or it saw a stall and the session is not checked yet.
    pub fn uncertain(&self, client_id: &str) -> bool {
        let silent = self
            .now_ms()
            .saturating_sub(self.ticked_ms.load(Ordering::Acquire));
        if silent >= stall_ms() {
            return true;
        }
        // `checking` is raised before the tick that ends the silence is recorded, so a
        // reader past the silence check sees it.
        self.checking.load(Ordering::Acquire) > 0 && self.unverified.lock().contains(client_id)
    }

    /// `client_id` was checked against its record (still this node's, or fenced).
    pub fn verified(&self, client_id: &str) {
        if self.checking.load(Ordering::Acquire) > 0 {
            self.unverified.lock().remove(client_id);
        }
    }

    /// A stall was seen: `sessions` wait for a check, which the caller starts.
    fn check_started(&self, sessions: Vec<Arc<str>>) {
        let mut unverified = self.unverified.lock();
        unverified.extend(sessions);
        self.checking.fetch_add(1, Ordering::AcqRel);
    }

    /// A check ended. Only the last running check clears what is left: a check started by a
    /// later stall still owes its sessions a look.
    fn check_ended(&self) {
        let mut unverified = self.unverified.lock();
        if self.checking.fetch_sub(1, Ordering::AcqRel) == 1 {
            unverified.clear();
        }
    }
}

fn stall_ms() -> u64 {
    u64::try_from(STALL.as_millis()).unwrap_or(u64::MAX)
}

/// Tick; after a gap of [`STALL`] or more, check every persistent session against its record
/// (`patience`: how long a record may stay unreadable before its session is dropped here).
pub fn watch(inner: &Arc<Inner>, patience: Duration) {
    let weak = Arc::downgrade(inner);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(inner) = weak.upgrade() else {
                return;
            };
            if inner.drain.is_finished() {
                return;
            }
            let stalls = &inner.stalls;
            let now = stalls.now_ms();
            let gap = now.saturating_sub(stalls.ticked_ms.load(Ordering::Acquire));
            if gap >= stall_ms() && stalls.ticked_ms.load(Ordering::Acquire) > 0 {
                let sessions: Vec<Arc<str>> =
                    inner.tracker.lock().sessions.keys().cloned().collect();
                tracing::warn!(
                    node = %inner.node_id,
                    gap_ms = gap,
                    sessions = sessions.len(),
                    "this process did not run for longer than a takeover waits (stopped, \
                     paused or starved): its sessions' publishes wait until each is checked \
                     against its record"
                );
                // Marked before the tick is recorded: no moment where neither holds them.
                stalls.check_started(sessions);
                stalls.ticked_ms.store(now, Ordering::Release);
                let inner = inner.clone();
                tokio::spawn(async move {
                    super::sessions::verify_all(&inner, patience).await;
                    inner.stalls.check_ended();
                });
            } else {
                stalls.ticked_ms.store(now, Ordering::Release);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticked(stalls: &Stalls) {
        stalls.ticked_ms.store(stalls.now_ms(), Ordering::Release);
    }

    #[test]
    fn a_session_waits_from_the_stall_until_checked() {
        let stalls = Stalls::default();
        ticked(&stalls);
        assert!(!stalls.uncertain("a"));
        stalls.check_started(vec![Arc::from("a"), Arc::from("b")]);
        assert!(stalls.uncertain("a") && stalls.uncertain("b"));
        stalls.verified("a");
        assert!(!stalls.uncertain("a") && stalls.uncertain("b"));
        stalls.check_ended();
        assert!(!stalls.uncertain("b"));
    }

    #[test]
    fn the_first_check_ending_leaves_a_later_stalls_sessions_waiting() {
        let stalls = Stalls::default();
        ticked(&stalls);
        stalls.check_started(vec![Arc::from("a")]);
        stalls.check_started(vec![Arc::from("b")]);
        stalls.check_ended();
        assert!(
            stalls.uncertain("b"),
            "the second check has not looked at b yet"
        );
        stalls.check_ended();
        assert!(!stalls.uncertain("b"));
    }

    #[test]
    fn silence_past_the_stall_bound_is_uncertain_before_the_watch_runs() {
        let stalls = Stalls::default();
        stalls.ticked_ms.store(0, Ordering::Release);
        let stalls = Stalls {
            origin: Instant::now() - STALL - Duration::from_millis(10),
            ..stalls
        };
        assert!(stalls.uncertain("anyone"));
    }
}
