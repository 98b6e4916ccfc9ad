//! The stop signal: SIGTERM or SIGINT ask every pass in flight and every wait to end.
//!
//! One [`Stop`] is shared by the reconciler and the CDS client of a process. Waits
//! (verify's backoff, `Retry-After`, retry backoff) end at once when it is triggered;
//! the reconciler checks it at every step boundary. Not here: which signals trigger it
//! (that is `main.rs` and `daemon`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// A cloneable stop flag with an awaitable edge.
#[derive(Clone, Debug)]
pub struct Stop(Arc<watch::Sender<bool>>);

impl Default for Stop {
    fn default() -> Self {
        Stop::new()
    }
}

impl Stop {
    /// A signal not yet triggered.
    pub fn new() -> Self {
        Stop(Arc::new(watch::Sender::new(false)))
    }

    /// Asks everything that shares this signal to stop. Idempotent.
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }

    /// Whether a stop was asked for.
    pub fn is_set(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once a stop is asked for (at once if it already was).
    pub async fn wait(&self) {
        let mut rx = self.0.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|stopping| *stopping).await;
    }

    /// Sleeps for `duration` unless a stop comes first; `true` when the sleep ran out,
    /// `false` when it was cut short by a stop.
    pub async fn sleep(&self, duration: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(duration) => true,
            () = self.wait() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stop_cuts_a_sleep_short_and_later_sleeps_end_at_once() {
        let stop = Stop::new();
        assert!(stop.sleep(Duration::from_millis(10)).await);
        let waker = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            waker.trigger();
        });
        assert!(!stop.sleep(Duration::from_secs(3600)).await);
        assert!(stop.is_set());
        assert!(!stop.sleep(Duration::from_secs(3600)).await);
    }
}
