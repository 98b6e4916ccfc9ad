//! One actor per client across hosts (invariant I9 beyond the host locks): the rotators
//! that share a `coordination:` section elect one leader through a lease, and only the
//! leader writes.
//!
//! CDS has no conditional writes, so a write cannot be refused for a stale leader: safety
//! comes from time instead. The leader notes the monotonic instant at which it *sent*
//! each successful lease renewal; the coordination service counts the lease's TTL from
//! when it *received* it, later, so the lease is surely held until `sent + ttl`. Before
//! every attempt of a CDS or store write the write handle ([`crate::writes::Writes`])
//! asks the [`Fence`] whether the longest single request still ends, with a margin,
//! before that instant, and whether the lease is still the holding the pass began in
//! ([`Fence::term`]). A process paused past its lease (SIGSTOP, a long stall) resumes
//! with its monotonic clock having moved on, so the check fails and it writes nothing.
//! Not here: what a pass does (that is `rotation`), when passes start (that is `daemon`).

pub mod check;
pub mod etcd;
pub mod kubernetes;
pub mod spec;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::stop::Stop;
use spec::CoordinationSpec;

/// Asks whether a write may start now.
pub trait Fence: Send + Sync {
    /// Whether a request that takes at most `longest_request` ends while the lease is
    /// surely still held (with a margin for the two clocks' rates).
    fn can_write(&self, longest_request: Duration) -> bool;

    /// Which holding of the lease this is: it changes each time this process takes the
    /// lease anew (after losing it, or letting it run out), never while it renews.
    fn term(&self) -> u64 {
        0
    }
}

/// Why the coordination service could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CoordinationError {
    /// No endpoint answered.
    #[error("etcd {operation}: no endpoint answered ({detail})")]
    Unreachable {
        /// The call, like `lease/grant`.
        operation: &'static str,
        /// The last transport error.
        detail: String,
    },
    /// An endpoint answered with an error.
    #[error("etcd {operation} was refused: {detail}")]
    Refused {
        /// The call, like `lease/grant`.
        operation: &'static str,
        /// What etcd said.
        detail: String,
    },
    /// The credentials or TLS files of the policy could not be read.
    #[error("coordination: {0}")]
    Setup(String),
}

/// What this process knows about its lease, shared by the elector and the fences.
#[derive(Debug)]
pub(crate) struct LeaseState {
    identity: String,
    ttl: Duration,
    /// Held until this instant (monotonic) while leader; `None` while standing by.
    valid_until: Mutex<Option<Instant>>,
    /// Counts the holdings of the lease (see [`Fence::term`]).
    term: std::sync::atomic::AtomicU64,
    /// Whether this process leads, for the daemon loop.
    role: watch::Sender<bool>,
}

impl LeaseState {
    fn new(identity: String, ttl: Duration) -> Arc<LeaseState> {
        crate::metrics::get().set_leader(&identity, false);
        Arc::new(LeaseState {
            identity,
            ttl,
            valid_until: Mutex::new(None),
            term: std::sync::atomic::AtomicU64::new(0),
            role: watch::channel(false).0,
        })
    }

    fn until(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.valid_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The leader key is ours, on a lease renewed by a request sent at `sent`.
    fn hold(&self, sent: Instant) {
        {
            let mut until = self.until();
            // Taken anew (not renewed while surely held): a new holding, in which nothing
            // decided under the last one is written.
            if until.is_none_or(|v| Instant::now() >= v) {
                self.term.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            *until = Some(sent + self.ttl);
        }
        if !*self.role.borrow() {
            self.role.send_replace(true);
            crate::metrics::get().set_leader(&self.identity, true);
            info!(identity = %self.identity, role = "leader", "took the coordination lease; this process runs the passes");
        }
    }

    /// The lease was renewed by a request sent at `sent` (the key, bound to the lease,
    /// stays ours while it lives).
    fn renewed(&self, sent: Instant) {
        let mut until = self.until();
        if until.is_some() {
            *until = Some(sent + self.ttl);
        }
    }

    /// Not (or no longer) the leader.
    fn lose(&self, why: &str) {
        *self.until() = None;
        if *self.role.borrow() {
            self.role.send_replace(false);
            crate::metrics::get().set_leader(&self.identity, false);
            warn!(identity = %self.identity, role = "standby", reason = %why, "lost the coordination lease; no pass starts and no write is made until this process leads again");
        }
    }

    /// Steps down once the lease may have run out.
    fn check_deadline(&self) {
        let expired = self.until().is_some_and(|v| Instant::now() >= v);
        if expired {
            self.lose("the lease could not be renewed before it ran out");
        }
    }

    fn is_leader(&self) -> bool {
        self.until().is_some_and(|v| Instant::now() < v)
    }

    /// Room left for the two clocks' rates and scheduling: a tenth of the TTL.
    fn margin(&self) -> Duration {
        self.ttl / 10
    }
}

impl Fence for LeaseState {
    fn can_write(&self, longest_request: Duration) -> bool {
        let margin = self.margin();
        self.until()
            .is_some_and(|v| Instant::now() + longest_request + margin < v)
    }

    fn term(&self) -> u64 {
        self.term.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// This process's part in the election: campaigns and renews in the background.
pub struct Leadership {
    state: Arc<LeaseState>,
    changes: watch::Receiver<bool>,
    elector: Elector,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// The service that holds the lease.
enum Elector {
    Etcd(Arc<etcd::Elector>),
    Kubernetes(Arc<kubernetes::Elector>),
}

impl Leadership {
    /// Starts campaigning for the lease of `spec` as `identity`.
    pub fn start(
        spec: &CoordinationSpec,
        identity: String,
    ) -> Result<Leadership, CoordinationError> {
        let mut l = Leadership::new(spec, identity)?;
        l.campaign();
        Ok(l)
    }

    /// Sets up the election of `spec` as `identity` without campaigning yet: its
    /// [`Leadership::fence`] refuses every write until [`Leadership::campaign`] takes the
    /// lease, so the write handle can be built first.
    pub fn new(spec: &CoordinationSpec, identity: String) -> Result<Leadership, CoordinationError> {
        let state = LeaseState::new(identity.clone(), spec.lease_ttl);
        let changes = state.role.subscribe();
        let elector = match spec.kind {
            spec::CoordinationKind::Etcd => {
                Elector::Etcd(Arc::new(etcd::Elector::new(spec, identity)?))
            }
            spec::CoordinationKind::KubernetesLease { .. } => {
                Elector::Kubernetes(Arc::new(kubernetes::Elector::new(spec, identity)?))
            }
        };
        Ok(Leadership {
            state,
            changes,
            elector,
            task: None,
        })
    }

    /// Campaigns for the lease and renews it in the background (once; again does nothing).
    pub fn campaign(&mut self) {
        if self.task.is_some() {
            return;
        }
        let state = Arc::clone(&self.state);
        self.task = Some(match &self.elector {
            Elector::Etcd(e) => tokio::spawn(Arc::clone(e).run(state)),
            Elector::Kubernetes(e) => tokio::spawn(Arc::clone(e).run(state)),
        });
    }

    /// Who this process is in the election (`host_uuid`).
    pub fn identity(&self) -> &str {
        &self.state.identity
    }

    /// Whether this process holds the lease now.
    pub fn is_leader(&self) -> bool {
        self.state.is_leader()
    }

    /// The check the write handle ([`crate::writes::Writes`]) makes before each attempt.
    pub fn fence(&self) -> Arc<dyn Fence> {
        Arc::clone(&self.state) as Arc<dyn Fence>
    }

    /// Waits until this process takes or loses the lease; says whether it leads now.
    pub async fn changed(&mut self) -> bool {
        if self.changes.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        *self.changes.borrow_and_update()
    }

    /// Waits up to `limit` for the lease (a stop ends the wait); says whether it is held.
    pub async fn wait_leader(&mut self, limit: Duration, stop: &Stop) -> bool {
        let deadline = Instant::now() + limit;
        while !self.is_leader() {
            tokio::select! {
                _ = self.changes.changed() => {}
                () = tokio::time::sleep_until(deadline) => return self.is_leader(),
                () = stop.wait() => return false,
            }
        }
        true
    }

    /// Stops campaigning and gives the lease back, so that a standby takes over at once.
    pub async fn release(self) {
        if let Some(task) = self.task {
            task.abort();
            let _ = task.await;
        }
        let held = self.state.is_leader();
        self.state.lose("released on stop");
        match &self.elector {
            Elector::Etcd(e) => e.revoke().await,
            Elector::Kubernetes(e) => e.revoke().await,
        }
        if held {
            info!(identity = %self.state.identity, "released the coordination lease");
        }
    }
}

/// This process's name in the election: the host name and a random part made once per
/// process (`host_uuid`, as client-go's leader election names its candidates). Host
/// and PID alone are shared by two hostNetwork pods on one node, or two containers
/// whose rotator is PID 1.
pub fn identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    identity_of(&host, uuid::Uuid::new_v4())
}

/// The identity on `host` with the random part `random`.
fn identity_of(host: &str, random: uuid::Uuid) -> String {
    format!("{host}_{random}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ago(secs: u64) -> Instant {
        Instant::now()
            .checked_sub(Duration::from_secs(secs))
            .unwrap()
    }

    #[test]
    fn the_fence_opens_only_with_a_whole_request_of_lease_to_spare() {
        let state = LeaseState::new("test-1".to_owned(), Duration::from_secs(15));
        assert!(
            !state.can_write(Duration::from_secs(1)),
            "a standby never writes"
        );
        state.hold(Instant::now());
        assert!(state.is_leader());
        assert!(state.can_write(Duration::from_secs(5)));
        // 15s lease, 1.5s margin: a 14s request does not fit.
        assert!(!state.can_write(Duration::from_secs(14)));
        // Renewed by a request sent 10s ago: 5s left, less the margin.
        state.renewed(ago(10));
        assert!(state.can_write(Duration::from_secs(3)));
        assert!(!state.can_write(Duration::from_secs(4)));
    }

    #[test]
    fn a_leader_paused_past_its_lease_cannot_write_and_steps_down() {
        let state = LeaseState::new("test-2".to_owned(), Duration::from_secs(3));
        state.hold(ago(10));
        assert!(!state.can_write(Duration::ZERO));
        assert!(!state.is_leader());
        assert!(*state.role.borrow(), "not yet told");
        state.check_deadline();
        assert!(!*state.role.borrow());
    }

    #[test]
    fn identities_on_one_host_differ_per_process() {
        let a = identity();
        let b = identity();
        assert_ne!(a, b);
        let host = a.split('_').next().unwrap();
        assert!(b.starts_with(&format!("{host}_")), "{a} {b}");
        assert_eq!(
            identity_of("node-1", uuid::Uuid::nil()),
            "node-1_00000000-0000-0000-0000-000000000000"
        );
    }

    #[test]
    fn a_lease_taken_anew_is_a_new_term_and_a_renewal_is_not() {
        let state = LeaseState::new("test-4".to_owned(), Duration::from_secs(15));
        state.hold(Instant::now());
        let first = state.term();
        state.hold(Instant::now());
        state.renewed(Instant::now());
        assert_eq!(state.term(), first, "renewed while held");
        state.lose("test");
        state.hold(Instant::now());
        assert_ne!(state.term(), first);
        let second = state.term();
        // Held until an instant that has passed (paused past it), then taken again.
        state.hold(ago(20));
        state.hold(Instant::now());
        assert_ne!(state.term(), second);
    }

    #[test]
    fn a_renewal_does_not_make_a_standby_lead() {
        let state = LeaseState::new("test-3".to_owned(), Duration::from_secs(3));
        state.hold(Instant::now());
        state.lose("test");
        state.renewed(Instant::now());
        assert!(!state.is_leader());
        assert!(!state.can_write(Duration::ZERO));
    }
}
