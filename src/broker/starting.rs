//! Which step a broker's start is at, so that a stop signal received before it serves can say
//! what it interrupted (a cluster node may wait up to a minute on NATS at its start).
//!
//! The start runs inside [`tracked`]; its steps call [`enter`], which does nothing outside it
//! (tests and library users that start brokers directly).

use std::future::Future;
use std::sync::Arc;

tokio::task_local! {
    static STEP: Arc<parking_lot::Mutex<&'static str>>;
}

/// The first step of every start.
pub const OPENING_THE_STORE: &str = "opening the persistent store";

/// Where a start tracked by [`tracked`] is; cheap to clone.
#[derive(Debug, Clone)]
pub struct Step(Arc<parking_lot::Mutex<&'static str>>);

impl Default for Step {
    fn default() -> Step {
        Step(Arc::new(parking_lot::Mutex::new(OPENING_THE_STORE)))
    }
}

impl Step {
    /// The step entered last, e.g. `creating the cluster's JetStream streams and buckets`.
    pub fn current(&self) -> &'static str {
        *self.0.lock()
    }
}

/// Runs `start`, its [`enter`] calls recorded in `step` (they are made on the task that polls
/// `start`, not on tasks it spawns).
pub async fn tracked<F: Future>(step: &Step, start: F) -> F::Output {
    STEP.scope(step.0.clone(), start).await
}

/// The start reached `step` (a phrase: "connecting to NATS").
pub fn enter(step: &'static str) {
    let _ = STEP.try_with(|current| *current.lock() = step);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn steps_are_recorded_inside_the_tracked_start_only() {
        enter("outside");
        let step = Step::default();
        tracked(&step, async {
            enter("connecting to NATS");
            tokio::task::yield_now().await;
            enter("binding the listeners");
        })
        .await;
        assert_eq!(step.current(), "binding the listeners");
        enter("after");
        assert_eq!(step.current(), "binding the listeners");
    }
}
