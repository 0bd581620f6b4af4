//! Deadlines that tell a stream's silence from this process's own. A deadline found passed
//! long after it was due was passed while the process did not run (SIGSTOP, a paused VM, a
//! starved machine): the answers the streams sent meanwhile wait in the NATS client's socket
//! for another task (the client's reader) to read them. Whoever waits gets [`GRACE`] more,
//! once, before it calls a store unanswered: failed, a store that was kept would be sent
//! again (past the duplicate window, a second copy) or reported as not kept.
//!
//! The stores' acknowledgements are awaited through [`Inner::stores_js`], whose own timeout
//! is long: a timeout inside the acknowledgement would fire on the same wake, before the
//! reader ran, and the caller's grace would come too late.
//!
//! [`Inner::stores_js`]: super::engine::Inner::stores_js

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How late past its deadline a wake has to be for the process to be taken as not having
/// run (rather than a stream as not having answered).
pub const LATE: Duration = Duration::from_secs(1);

/// How long a late wake waits for the NATS client to read what arrived meanwhile.
pub const GRACE: Duration = Duration::from_millis(100);

/// The timeout of [`Inner::stores_js`]'s own waits: the callers' deadlines bound them.
///
/// [`Inner::stores_js`]: super::engine::Inner::stores_js
pub const STORES_CONTEXT_TIMEOUT: Duration = Duration::from_secs(3600);

/// Whether `due`, found passed at `now`, was passed while the process did not run.
pub fn is_late(due: std::time::Instant, now: std::time::Instant) -> bool {
    now.saturating_duration_since(due) >= LATE
}

/// `future`'s output if it comes by `deadline` or, when the deadline is found passed
/// [`LATE`] or more after it, within [`GRACE`] after that; `None` otherwise.
pub async fn by<F: Future>(deadline: Instant, future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    if let Ok(output) = tokio::time::timeout_at(deadline, &mut future).await {
        return Some(output);
    }
    if Instant::now().saturating_duration_since(deadline) < LATE {
        return None;
    }
    tokio::time::timeout(GRACE, future).await.ok()
}

/// [`by`] with the deadline `limit` from now.
pub async fn within<F: Future>(limit: Duration, future: F) -> Option<F::Output> {
    by(Instant::now() + limit, future).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wait whose deadline passed while the runtime did not run (the clock advanced past it
    /// at once, as after SIGCONT) still takes an answer that is ready a moment later; one
    /// woken on time does not wait more.
    #[tokio::test(start_paused = true)]
    async fn a_late_wake_gives_the_answer_a_moment_more() {
        let (tx, rx) = tokio::sync::oneshot::channel::<u8>();
        let deadline = Instant::now() + Duration::from_millis(500);
        let waiting = tokio::spawn(by(deadline, rx));
        tokio::task::yield_now().await;
        // Frozen: the clock jumps 5 s with nothing run; the answer comes just after waking.
        tokio::time::advance(Duration::from_secs(5)).await;
        let answered = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let _ = tx.send(7);
        });
        assert_eq!(waiting.await.ok().flatten().and_then(Result::ok), Some(7));
        answered.await.ok();

        let (_tx, rx) = tokio::sync::oneshot::channel::<u8>();
        let started = Instant::now();
        assert_eq!(within(Duration::from_millis(500), rx).await, None);
        assert!(started.elapsed() < Duration::from_millis(500) + GRACE);
    }
}
