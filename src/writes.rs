//! [`Writes`]: the one handle every write to CDS or a store goes through. It carries the
//! coordination lease's [`Fence`] (none without coordination), the audit log (if the
//! policy has one) and the longest single request, and it is given to the reconciler when
//! it is built, so no write path can leave out the fence or the audit.
//!
//! Each *attempt* of a write asks [`Writes::may_send`] first — a retry after a 429, a
//! token renewal that precedes a write, each request of a store publish — so a process
//! paused past its lease, or one whose retry waits outlast it, sends nothing more. A
//! handle bound to a pass ([`Writes::for_pass`]) also refuses every attempt once the
//! lease was lost and taken again since the pass began: the pass decided on what it
//! observed under the old holding, and another leader may have acted in between.
//!
//! Not here: holding the lease (that is `coordination`), what an entry of the audit log
//! says (that is `audit`), what to write (that is `rotation`).

use std::sync::Arc;
use std::time::Duration;

use crate::audit::AuditLog;
use crate::coordination::Fence;

/// The write handle: fence, audit log and the longest single request.
#[derive(Clone)]
pub struct Writes {
    fence: Option<Arc<dyn Fence>>,
    audit: Option<Arc<AuditLog>>,
    longest_request: Duration,
    /// The holding of the lease a pass started in; `None` until bound by `for_pass`.
    term: Option<u64>,
}

impl std::fmt::Debug for Writes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writes")
            .field("fenced", &self.fence.is_some())
            .field("audited", &self.audit.is_some())
            .field("longest_request", &self.longest_request)
            .field("term", &self.term)
            .finish()
    }
}

tokio::task_local! {
    /// The handle of the write running on this task (see [`Writes::scope`]).
    static CURRENT: Writes;
}

/// Asks the handle of the write running on this task (see [`Writes::scope`]) whether an
/// attempt may be sent now: for the requests a store's own client makes inside one
/// publish (its retries, a login before the write), where no handle is passed by hand.
/// Outside any scope nothing is fenced.
pub fn may_send_now() -> Result<(), LeaseLost> {
    CURRENT
        .try_with(|w| w.may_send(Duration::ZERO))
        .unwrap_or(Ok(()))
}

/// An attempt of a write was not sent: this process does not surely hold the lease for
/// as long as the attempt may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("lost the coordination lease; nothing more is written until this process leads again")]
pub struct LeaseLost;

impl Writes {
    /// A handle whose attempts need `fence` (none: no coordination, every attempt may go)
    /// to outlast a request of `longest_request`, recording writes in `audit`.
    pub fn new(
        fence: Option<Arc<dyn Fence>>,
        audit: Option<Arc<AuditLog>>,
        longest_request: Duration,
    ) -> Writes {
        Writes {
            fence,
            audit,
            longest_request,
            term: None,
        }
    }

    /// No coordination and no audit log: tests, the demo, and the dry runs that never
    /// write.
    pub fn unfenced() -> Writes {
        Writes::new(None, None, Duration::ZERO)
    }

    /// This handle, bound to the holding of the lease as it is now: a pass takes one as
    /// it starts, so that nothing it decided is written under a later holding.
    pub fn for_pass(&self) -> Writes {
        Writes {
            term: self.fence.as_ref().map(|f| f.term()),
            ..self.clone()
        }
    }

    /// Whether an attempt that starts after `wait` and then takes up to the longest
    /// request still ends while the lease is surely held (always, without coordination).
    pub fn may_send(&self, wait: Duration) -> Result<(), LeaseLost> {
        let Some(fence) = &self.fence else {
            return Ok(());
        };
        if self.term.is_some_and(|t| t != fence.term()) {
            return Err(LeaseLost);
        }
        if fence.can_write(wait.saturating_add(self.longest_request)) {
            Ok(())
        } else {
            Err(LeaseLost)
        }
    }

    /// Runs `write` (a store publish) with this handle as the one its requests ask
    /// through [`may_send_now`].
    pub async fn scope<F: std::future::Future>(&self, write: F) -> F::Output {
        CURRENT.scope(self.clone(), write).await
    }

    /// Whether attempts need a lease at all.
    pub fn is_fenced(&self) -> bool {
        self.fence.is_some()
    }

    /// The audit log every write is recorded in, if there is one.
    pub fn audit(&self) -> Option<&AuditLog> {
        self.audit.as_deref()
    }

    /// The longest single request an attempt may take.
    pub fn longest_request(&self) -> Duration {
        self.longest_request
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::time::Instant;

    /// A lease surely held until `until`, in holding `term`.
    struct Lease(Mutex<(Option<Instant>, u64)>);

    impl Lease {
        fn held_for(d: Duration) -> Arc<Lease> {
            Arc::new(Lease(Mutex::new((Some(Instant::now() + d), 1))))
        }
        fn retake(&self, d: Duration) {
            let mut l = self.0.lock().unwrap();
            *l = (Some(Instant::now() + d), l.1 + 1);
        }
    }

    impl Fence for Lease {
        fn can_write(&self, longest_request: Duration) -> bool {
            self.0
                .lock()
                .unwrap()
                .0
                .is_some_and(|u| Instant::now() + longest_request < u)
        }
        fn term(&self) -> u64 {
            self.0.lock().unwrap().1
        }
    }

    fn writes(lease: &Arc<Lease>, longest: u64) -> Writes {
        Writes::new(
            Some(Arc::clone(lease) as Arc<dyn Fence>),
            None,
            Duration::from_secs(longest),
        )
    }

    #[tokio::test]
    async fn requests_inside_a_scope_ask_its_handle_and_outside_any_go() {
        let lease = Lease::held_for(Duration::from_secs(2));
        assert_eq!(may_send_now(), Ok(()));
        assert_eq!(
            writes(&lease, 1).scope(async { may_send_now() }).await,
            Ok(())
        );
        assert_eq!(
            writes(&lease, 5).scope(async { may_send_now() }).await,
            Err(LeaseLost)
        );
    }

    #[test]
    fn without_coordination_every_attempt_may_go() {
        let w = Writes::unfenced().for_pass();
        assert_eq!(w.may_send(Duration::from_secs(3600)), Ok(()));
        assert!(!w.is_fenced());
    }

    #[test]
    fn an_attempt_is_refused_when_its_wait_and_timeout_would_outlast_the_lease() {
        let lease = Lease::held_for(Duration::from_secs(20));
        let w = writes(&lease, 5).for_pass();
        assert_eq!(w.may_send(Duration::ZERO), Ok(()));
        assert_eq!(w.may_send(Duration::from_secs(10)), Ok(()));
        // A Retry-After of 16 s plus a 5 s request ends after the 20 s left.
        assert_eq!(w.may_send(Duration::from_secs(16)), Err(LeaseLost));
    }

    #[test]
    fn a_request_longer_than_the_lease_left_is_refused_even_without_a_wait() {
        let lease = Lease::held_for(Duration::from_secs(4));
        assert_eq!(writes(&lease, 5).may_send(Duration::ZERO), Err(LeaseLost));
        assert_eq!(writes(&lease, 1).may_send(Duration::ZERO), Ok(()));
    }

    #[test]
    fn a_pass_writes_nothing_once_the_lease_was_lost_and_taken_again() {
        let lease = Lease::held_for(Duration::from_secs(20));
        let pass = writes(&lease, 1).for_pass();
        assert_eq!(pass.may_send(Duration::ZERO), Ok(()));
        lease.retake(Duration::from_secs(20));
        assert_eq!(
            pass.may_send(Duration::ZERO),
            Err(LeaseLost),
            "decided under the old holding"
        );
        // A pass that starts now may write.
        assert_eq!(
            writes(&lease, 1).for_pass().may_send(Duration::ZERO),
            Ok(())
        );
    }
}
