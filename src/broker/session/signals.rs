//! What a session signals to the connection attached to it: "you were kicked" (a takeover, the
//! console, the session's end, a cluster drain) and "something was queued for you".
//!
//! Both live in one allocation per attachment. They used to be a `CancellationToken` (112
//! bytes on the heap: a tree node with a mutex and a child list this use never needs) and an
//! `Arc<Notify>` (48 bytes), two allocations for every connection, parked or not
//! (docs/scaling.md's accounting of an idle connection's memory).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::sync::futures::Notified;
use tokio::sync::Notify;

/// A connection's kick flag and wake-up, shared by its session's attachment and the connection.
#[derive(Debug, Default)]
pub struct AttachSignals {
    kicked: AtomicBool,
    /// Wakes the tasks waiting in [`AttachSignals::kicked`].
    kick_waiters: Notify,
    /// Notified (one permit) when messages are queued for the connection.
    pub wake: Notify,
}

impl AttachSignals {
    /// Kick the connection: [`AttachSignals::is_kicked`] is true from now on and every task
    /// waiting in [`AttachSignals::kicked`] returns. Idempotent.
    pub fn kick(&self) {
        self.kicked.store(true, Ordering::Release);
        self.kick_waiters.notify_waiters();
    }

    pub fn is_kicked(&self) -> bool {
        self.kicked.load(Ordering::Acquire)
    }

    /// Completes once the connection is kicked (at once if it was already). Cancel-safe: a
    /// `select!` may drop it and call it again.
    pub fn kicked(&self) -> Kicked<'_> {
        Kicked {
            signals: self,
            // Created before the flag is first read: a `notify_waiters` after its creation
            // completes it even before it is polled, so a kick between the two is not missed.
            notified: self.kick_waiters.notified(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`AttachSignals::kicked`]. Written out rather than an `async fn`: it sits
    /// in every connection task's `select!`, and the `async fn` took 104 bytes there against
    /// 72 (the `CancellationToken` future it replaced).
    pub struct Kicked<'a> {
        signals: &'a AttachSignals,
        #[pin]
        notified: Notified<'a>,
    }
}

impl Future for Kicked<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        loop {
            if this.signals.is_kicked() {
                return Poll::Ready(());
            }
            match this.notified.as_mut().poll(cx) {
                // Registered now; the flag is read again in case the kick came in between.
                Poll::Pending if this.signals.is_kicked() => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
                // A wake-up without the flag cannot happen (the flag is set first); wait anew.
                Poll::Ready(()) => this.notified.set(this.signals.kick_waiters.notified()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::AttachSignals;

    #[tokio::test]
    async fn a_kick_reaches_waiters_before_and_after_it() {
        let signals = Arc::new(AttachSignals::default());
        let waiting = tokio::spawn({
            let signals = signals.clone();
            async move { signals.kicked().await }
        });
        tokio::task::yield_now().await;
        assert!(!signals.is_kicked());
        signals.kick();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("a waiter from before the kick returns")
            .expect("the waiter did not panic");
        tokio::time::timeout(Duration::from_secs(5), signals.kicked())
            .await
            .expect("a waiter after the kick returns at once");
        assert!(signals.is_kicked());
    }

    #[tokio::test]
    async fn not_kicked_waits() {
        let signals = AttachSignals::default();
        let waited = tokio::time::timeout(Duration::from_millis(50), signals.kicked()).await;
        assert!(waited.is_err(), "kicked() returned without a kick");
    }

    #[test]
    fn one_small_allocation_and_a_small_future() {
        let size = std::mem::size_of::<AttachSignals>();
        assert!(size <= 80, "AttachSignals is {size} bytes");
        let signals = AttachSignals::default();
        let future = std::mem::size_of_val(&signals.kicked());
        assert!(future <= 72, "kicked() is {future} bytes");
    }
}
