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
    /// Notified (one permit) when messages are queued for the connection; taken through
    /// [`AttachSignals::woken`] only, which keeps `wake_stored` true.
    wake: Notify,
    /// A permit is stored on `wake` (or being taken): a delivery need not notify again. Every
    /// message delivered to a busy subscriber used to notify, and a notify is a
    /// compare-and-swap on a cache line the subscriber's task writes too (10% of the broker's
    /// CPU in a fan-in of ten publishers into one subscriber); this flag is read, not written,
    /// by deliveries while the permit waits.
    wake_stored: AtomicBool,
}

impl AttachSignals {
    /// Messages were queued for the connection: wake it unless a wake-up waits for it already.
    /// Call it under the session's lock (deliveries are serialized by it).
    pub fn wake_up(&self) {
        if !self.wake_stored.load(Ordering::SeqCst) {
            self.wake_stored.store(true, Ordering::SeqCst);
            self.wake.notify_one();
        }
    }

    /// Completes when messages were queued since the last wake-up was taken; the connection
    /// then looks at its queue (under the session's lock). Cancel-safe.
    ///
    /// Why no delivery is missed: the flag is cleared after the permit is taken and before
    /// the queue is looked at. A delivery that saw the flag set pushed its message before
    /// reading the flag, under the session's lock, and the clear comes after that read
    /// (sequentially consistent), so the look at the queue, under the same lock, finds it.
    pub fn woken(&self) -> Woken<'_> {
        Woken {
            signals: self,
            notified: self.wake.notified(),
        }
    }

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

pin_project_lite::pin_project! {
    /// The future of [`AttachSignals::woken`].
    pub struct Woken<'a> {
        signals: &'a AttachSignals,
        #[pin]
        notified: Notified<'a>,
    }
}

impl Future for Woken<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        match this.notified.poll(cx) {
            Poll::Ready(()) => {
                this.signals.wake_stored.store(false, Ordering::SeqCst);
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
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

    #[tokio::test]
    async fn a_wake_up_taken_is_given_again_by_the_next_delivery() {
        use futures_util::FutureExt;
        let signals = AttachSignals::default();
        assert!(
            signals.woken().now_or_never().is_none(),
            "nothing queued yet"
        );
        signals.wake_up();
        signals.wake_up();
        assert!(
            signals.woken().now_or_never().is_some(),
            "one wake-up stored"
        );
        assert!(signals.woken().now_or_never().is_none(), "and only one");
        signals.wake_up();
        tokio::time::timeout(Duration::from_secs(5), signals.woken())
            .await
            .expect("a delivery after the wake-up was taken wakes again");
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
