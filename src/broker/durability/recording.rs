//! A recording engine for unit tests: every committed change in order, commits that finish
//! only when the test says so ([`Recording::hold_when`]) and refusals on demand
//! ([`Recording::refuse_when`]). It keeps nothing across instances.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::{Change, Commit, Durability, DurabilityError, Recovery};
use crate::broker::routing::memory::MemoryGauge;

#[derive(Debug, Default)]
struct State {
    changes: Vec<Change>,
    /// The same changes, one vector per commit.
    batches: Vec<Vec<Change>>,
    /// Commits with a change matching this stay pending until [`Recording::release`].
    hold: Option<fn(&Change) -> bool>,
    waiting: Vec<oneshot::Sender<()>>,
    /// Commits with a change matching this are refused with the error.
    refusal: Option<(ChangeFilter, DurabilityError)>,
}

/// Which changes a hold or a refusal applies to.
type ChangeFilter = fn(&Change) -> bool;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Recording {
    next_seq: AtomicU64,
    state: Mutex<State>,
}

impl Recording {
    pub fn new() -> Arc<Recording> {
        Arc::default()
    }

    /// Every change committed so far, in commit order (refused ones are not recorded).
    pub fn changes(&self) -> Vec<Change> {
        self.state.lock().changes.clone()
    }

    /// Every commit so far, in order, as the batch it was (refused ones are not recorded).
    pub fn batches(&self) -> Vec<Vec<Change>> {
        self.state.lock().batches.clone()
    }

    /// From now on, commits with a change for which `matches` is true stay pending until
    /// [`Recording::release`].
    pub fn hold_when(&self, matches: fn(&Change) -> bool) {
        self.state.lock().hold = Some(matches);
    }

    /// Finish every pending commit and stop holding new ones.
    pub fn release(&self) {
        let waiting = {
            let mut state = self.state.lock();
            state.hold = None;
            std::mem::take(&mut state.waiting)
        };
        for done in waiting {
            let _ = done.send(());
        }
    }

    /// Fail every pending commit (a group commit whose write failed: its waiters get
    /// `Unavailable`) and stop holding new ones. Their changes stay in [`Recording::changes`].
    pub fn fail_held(&self) {
        let waiting = {
            let mut state = self.state.lock();
            state.hold = None;
            std::mem::take(&mut state.waiting)
        };
        drop(waiting);
    }

    /// Refuse every commit that carries a message with `error` (`None`: accept again).
    pub fn refuse_with(&self, error: Option<DurabilityError>) {
        self.refuse_when(|c| matches!(c, Change::Message { .. }), error);
    }

    /// Refuse every commit with a change for which `matches` is true with `error` (`None`:
    /// accept again).
    pub fn refuse_when(&self, matches: fn(&Change) -> bool, error: Option<DurabilityError>) {
        self.state.lock().refusal = error.map(|e| (matches, e));
    }
}

impl Durability for Recording {
    fn location(&self) -> String {
        "recording".into()
    }

    fn next_seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn commit(&self, changes: Vec<Change>) -> Commit {
        let mut state = self.state.lock();
        if let Some((matches, error)) = &state.refusal {
            if changes.iter().any(matches) {
                return Commit::Done(Err(error.clone()));
            }
        }
        let held = state
            .hold
            .is_some_and(|matches| changes.iter().any(matches));
        state.batches.push(changes.clone());
        state.changes.extend(changes);
        if !held {
            return Commit::done();
        }
        let (done, wait) = oneshot::channel();
        state.waiting.push(done);
        Commit::Pending(Box::pin(async move {
            wait.await
                .map_err(|_| DurabilityError::Unavailable("recording dropped".into()))
        }))
    }

    fn recover(&self, _memory: &Arc<MemoryGauge>) -> Result<Recovery, DurabilityError> {
        Ok(Recovery::default())
    }
}
