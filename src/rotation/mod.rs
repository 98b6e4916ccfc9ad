//! The reconciler: one pass over one client observes CDS and the store, decides the next
//! safe steps ([`decide`]) and acts on them, in the steps of the README's "How a pass works":
//! `observe`, `clean_up`, `retire`, `make_room`, `create`, `verify`, `publish`,
//! `announce`. Nothing that correctness depends on is kept in memory between passes: a
//! pass that dies anywhere is finished or cleaned up by the next one.
//!
//! A pass reads as the design's steps: observe, then [`decide`] (pure: every rule,
//! including pickup gating and making room, so `plan` and `status` take the same
//! observe and decide and say what the pass then does), then act on the plan. The new
//! secret's life is a type ([`new_secret`]: `Created → Verified → Published | InDoubt`),
//! so only one that nobody holds can be deleted again; [`error_policy`] says what a
//! failure means. The [`PassReport`] is written by the steps, never read back by them.
//!
//! Not here: when passes run (that is `daemon`), and how CDS or a store is reached (the
//! reconciler sees only the [`ConnectApi`], [`SecretStore`] and [`Notifier`] traits).

pub mod decide;
pub mod error_policy;
pub mod last_result;
pub mod marker;
pub mod new_secret;

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use chrono::{DateTime, Utc};
use tracing::{Instrument, error, info, info_span, warn};

use crate::audit::{Action, Outcome};
use crate::clock::Clock;
use crate::connect::{ClientSecret, ConnectApi, ConnectError, MAX_SECRETS_PER_CLIENT, NewSecret};
use crate::domain::{ClientRef, Current, Event, EventKind, Fingerprint, SecretId, StoreRecord};
use crate::lock::{ClientLock, LockError};
use crate::notify::Notifier;
use crate::pickup::{Pickup, PickupCheck};
use crate::policy::Timing;
use crate::stop::Stop;
use crate::store::{SecretStore, StoreError};
use crate::writes::Writes;
pub use decide::{DeleteReason, Plan, RotateReason, Window, decide};
use error_policy::{OnError, Refused, error_policy};
use marker::Marker;
use new_secret::{Created, Facts, Publish, Published, Undo, Verified};

/// How long a pass waits for another rotator to release a client.
const LOCK_WAIT: StdDuration = StdDuration::from_secs(30);

/// How many times a create is attempted when its answer is lost.
const CREATE_ATTEMPTS: u32 = 3;

tokio::task_local! {
    /// The write handle of the pass running on this task, bound to the holding of the
    /// lease the pass started in (see [`Reconciler::pass`]).
    static PASS_WRITES: Writes;
}

/// Everything a pass needs to know about one client.
pub struct ClientJob {
    /// The client's name in the policy.
    pub name: String,
    /// The CDS client.
    pub client: ClientRef,
    /// Where its value is published.
    pub store: Arc<dyn SecretStore>,
    /// The secret's name in the store.
    pub store_key: String,
    /// Whom to tell.
    pub notifiers: Vec<Arc<dyn Notifier>>,
    /// How to learn that consumers switched.
    pub pickup: Arc<dyn PickupCheck>,
    /// When and how long.
    pub timing: Timing,
    /// Whether secrets the rotator did not create may be retired.
    pub retire_unmanaged: bool,
}

/// The steps of a pass, as named in logs, errors and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Taking the client's lock.
    Lock,
    /// Listing secrets and reading the store.
    Observe,
    /// Deleting orphans and expired managed secrets.
    CleanUp,
    /// Deleting superseded secrets after the grace period.
    Retire,
    /// Checking there is room for one more secret.
    MakeRoom,
    /// Creating the new secret.
    Create,
    /// Getting a token with it.
    Verify,
    /// Writing it to the store.
    Publish,
    /// Proving the rotator's own new credential works.
    SelfCheck,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Lock => "lock",
            Step::Observe => "observe",
            Step::CleanUp => "clean_up",
            Step::Retire => "retire",
            Step::MakeRoom => "make_room",
            Step::Create => "create",
            Step::Verify => "verify",
            Step::Publish => "publish",
            Step::SelfCheck => "self_check",
        })
    }
}

/// What went wrong in a step.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// CDS refused or did not answer.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Another rotator holds the client.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The store holds a record of another client.
    #[error(
        "{location} holds a record of client {client_id} in tenant {tenant_id}, not of this client; nothing was changed: fix the store or the policy"
    )]
    ForeignRecord {
        /// Where the record is.
        location: String,
        /// The client the record names.
        client_id: String,
        /// The tenant the record names.
        tenant_id: String,
    },
    /// No room for a new secret.
    #[error(
        "the client already has {count} secrets (CDS allows {MAX_SECRETS_PER_CLIENT}) and none can be removed safely now: {listing}; {hint}"
    )]
    Full {
        /// How many secrets it has.
        count: usize,
        /// Every secret: id, managed or not, expiration.
        listing: String,
        /// What would unblock it, given what was observed.
        hint: String,
    },
    /// The new secret never got a token; it was deleted again.
    #[error(
        "the new secret {secret_id} could not get a token within {waited}s ({last}); it was deleted{cleanup}"
    )]
    Verify {
        /// The new secret.
        secret_id: SecretId,
        /// How long it was tried.
        waited: u64,
        /// The last failure.
        last: ConnectError,
        /// What happened to the new secret if deleting it failed.
        cleanup: String,
    },
    /// A wait was cut short by a stop; nothing was changed.
    #[error("cds-rotator is stopping; nothing was changed")]
    Interrupted,
    /// This process no longer surely holds the coordination lease; the write was not
    /// made.
    #[error("lost the coordination lease; nothing more is written until this process leads again")]
    LeaseLost,
    /// The lease was lost between create and publish. The new secret is not deleted
    /// either: without the lease no write is sent (with ids reused, its id may already
    /// be another leader's current secret); nobody holds its value, so the leader deletes
    /// it as an orphan.
    #[error(
        "lost the coordination lease before publishing: the new secret {secret_id} was left to the leader, which deletes it as an orphan after orphan_grace; the leader rotates again"
    )]
    LeaseLostUndone {
        /// The new secret.
        secret_id: SecretId,
    },
    /// A stop came while the new secret was not yet accepted by CDS; it was deleted.
    #[error(
        "cds-rotator is stopping: the new secret {secret_id} was not yet accepted by CDS and was deleted{cleanup}; the next pass rotates again"
    )]
    Stopped {
        /// The new secret.
        secret_id: SecretId,
        /// What happened to the new secret if deleting it failed.
        cleanup: String,
    },
    /// The rotator's own credential got no token before the batch: no pass ran (the
    /// error is logged and announced once for the batch).
    #[error("not passed over: {detail}")]
    NoToken {
        /// Why there was no token.
        detail: String,
    },
    /// Whether the store now holds the new secret is unknown; it was kept.
    #[error(
        "{source}; the new secret {secret_id} was kept, since readers may hold it (the publish is in doubt: the write may still land): it is never deleted while it may land; a later pass publishes a new secret and retires this one as superseded once its grace is over"
    )]
    PublishInDoubt {
        /// The new secret.
        secret_id: SecretId,
        /// The store error.
        source: StoreError,
    },
    /// A stop came while the publish waited for its answer; the new secret was kept.
    #[error(
        "cds-rotator is stopping: the publish to {location} was given up before its answer came; the new secret {secret_id} was kept, since the write may have landed or still land: it is never deleted while it may land; a later pass publishes a new secret and retires this one as superseded once its grace is over"
    )]
    PublishStopped {
        /// The new secret.
        secret_id: SecretId,
        /// The store's location.
        location: String,
    },
    /// The new secret could not be published; it was deleted again.
    #[error("{source}; the new secret {secret_id} was deleted{cleanup}")]
    Publish {
        /// The new secret.
        secret_id: SecretId,
        /// The store error.
        source: StoreError,
        /// What happened to the new secret if deleting it failed.
        cleanup: String,
    },
}

/// A step that failed, before it is tied to its client.
#[derive(Debug)]
struct Failed {
    step: Step,
    source: StepError,
}

/// What a pass observed and decided: what every acting step reads (the report is only
/// written).
struct Seen {
    /// The client's secrets as listed.
    secrets: Vec<ClientSecret>,
    /// The store's record, if it has one.
    record: Option<StoreRecord>,
    /// The store holds a value without a record (see [`Current::Unrecorded`]).
    unrecorded: bool,
    /// What decide made of it.
    plan: Plan,
    /// When it was observed.
    now: DateTime<Utc>,
}

/// Tags a step's error with the step: `.map_err(at(Step::Observe))`.
fn at(step: Step) -> impl Fn(StepError) -> Failed {
    move |source| Failed { step, source }
}

/// A time as logs and messages write it: RFC 3339, seconds, UTC.
fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `t + d`, or `None` past the end of the calendar (never a panic).
fn plus(t: DateTime<Utc>, d: chrono::Duration) -> Option<DateTime<Utc>> {
    t.checked_add_signed(d)
}

/// The warning when the store holds no record but CDS holds managed secrets.
fn record_missing(location: &str, unrecorded: bool, kept: &[SecretId]) -> String {
    let what = if unrecorded {
        format!("{location} holds a value but no record of which CDS secret it is")
    } else {
        format!("{location} has no record")
    };
    let ids: Vec<String> = kept.iter().map(ToString::to_string).collect();
    let kept = if ids.is_empty() {
        String::new()
    } else {
        format!(
            "; managed secret(s) {} may be what consumers hold: kept, and retired only after grace once a new secret is published",
            ids.join(", ")
        )
    };
    format!(
        "{what} (removed by hand, a partial restore, a renamed client or a changed store){kept}; restore the record to keep the current secret, or let this pass publish a new one"
    )
}

/// A failed pass over one client. The message names the client, the step and the cause.
#[derive(Debug, thiserror::Error)]
#[error("client {client} ({client_id}): step {step}: {source}")]
pub struct RotationError {
    /// The client's name in the policy.
    pub client: String,
    /// The CDS client id.
    pub client_id: String,
    /// The step that failed.
    pub step: Step,
    /// Why.
    #[source]
    pub source: StepError,
}

/// A rotation that happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rotated {
    /// The new secret.
    pub secret_id: SecretId,
    /// Its value's fingerprint.
    pub fingerprint: Fingerprint,
    /// When it expires.
    pub expiration: DateTime<Utc>,
    /// Where it was published.
    pub location: String,
}

/// What one pass over one client did.
#[derive(Debug)]
pub struct PassReport {
    /// The client's name in the policy.
    pub client: String,
    /// What was decided (None if observing failed).
    pub plan: Option<Plan>,
    /// The store record as observed.
    pub record: Option<StoreRecord>,
    /// The secrets as observed.
    pub secrets: Vec<ClientSecret>,
    /// Secrets deleted, and why.
    pub deleted: Vec<(SecretId, DeleteReason)>,
    /// The rotation, if one happened.
    pub rotated: Option<Rotated>,
    /// Why the pass failed, if it did.
    pub error: Option<RotationError>,
    /// Where and how the pass gave way to a stop (SIGTERM, SIGINT), if it did.
    pub stopped: Option<String>,
    /// The store holds a value without a record (see [`Current::Unrecorded`]).
    pub unrecorded: bool,
    /// How the last real pass over this client ended (read for dry runs: `status`).
    pub last: Option<last_result::LastResult>,
    /// When the daemon should look at this client again, besides its schedule.
    pub next_check: Option<DateTime<Utc>>,
    /// Old secrets wait for the pickup check to confirm the current one (grace is over).
    pub pickup: Option<PickupWaiting>,
    /// After `--revoke-old`: unexpired secrets the policy did not let it delete
    /// (unmanaged, `retire_unmanaged: false`). They still get tokens.
    pub left_valid: Vec<ClientSecret>,
}

/// Old secrets are kept because the pickup check has not confirmed the current secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PickupWaiting {
    /// What the check said.
    pub reason: String,
    /// When it is overdue (`published_at + grace + timeout`), if the check has a timeout.
    pub deadline: Option<DateTime<Utc>>,
    /// Whether it is past that deadline (`pickup_timeout` was sent).
    pub overdue: bool,
}

impl fmt::Display for PickupWaiting {
    /// `waiting for pickup (why; overdue since …)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "waiting for pickup ({}", self.reason)?;
        match (self.deadline, self.overdue) {
            (Some(d), true) => write!(f, "; overdue since {}, both secrets kept", rfc3339(d))?,
            (Some(d), false) => write!(f, "; timeout at {}", rfc3339(d))?,
            (None, _) => {}
        }
        f.write_str(")")
    }
}

impl PassReport {
    /// An empty report for the client named `client`.
    fn new(client: &str) -> Self {
        PassReport {
            client: client.to_owned(),
            plan: None,
            record: None,
            secrets: Vec::new(),
            deleted: Vec::new(),
            rotated: None,
            error: None,
            stopped: None,
            unrecorded: false,
            last: None,
            next_check: None,
            pickup: None,
            left_valid: Vec::new(),
        }
    }

    /// Takes in a follow-up pass over the same client (`--run-now` runs one when it is
    /// due at once): what it did is added, what it observed replaces this pass's.
    pub fn absorb(&mut self, later: PassReport) {
        self.deleted.extend(later.deleted);
        if later.rotated.is_some() {
            self.rotated = later.rotated;
        }
        self.plan = later.plan;
        self.record = later.record;
        self.secrets = later.secrets;
        self.error = later.error;
        self.stopped = later.stopped;
        self.unrecorded = later.unrecorded;
        self.next_check = later.next_check;
        self.pickup = later.pickup;
        self.left_valid.extend(later.left_valid);
    }

    /// Whether the pass wrote anything (to CDS or to the store).
    pub fn changed_anything(&self) -> bool {
        !self.deleted.is_empty() || self.rotated.is_some()
    }
}

/// How a pass runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PassOptions {
    /// Rotate even when not due.
    pub force: bool,
    /// Observe and decide only: change nothing (`plan`, `status`).
    pub dry_run: bool,
    /// The pass runs in the client's rotation window (a scheduled time, `--run-now`, a
    /// retry after a failed rotation): a due rotation happens. Outside it, only what
    /// cannot safely wait for the next scheduled time does (see [`Window`]).
    pub in_window: bool,
    /// An emergency rotation (`--revoke-old`, for a leaked secret): rotate now and, once
    /// the new secret is verified and published, delete every other secret the policy
    /// lets the rotator delete, without waiting for grace or pickup.
    pub revoke_old: bool,
}

impl Default for PassOptions {
    /// A pass like `--run-now`: in the window, not forced, not a dry run.
    fn default() -> Self {
        PassOptions {
            force: false,
            dry_run: false,
            in_window: true,
            revoke_old: false,
        }
    }
}

/// Runs passes over clients against one CDS tenant.
pub struct Reconciler {
    connect: Arc<dyn ConnectApi>,
    clock: Arc<dyn Clock>,
    own_client_id: String,
    run_id: String,
    lock_dir: PathBuf,
    attempts: AtomicU64,
    stop: Stop,
    /// Unmanaged secrets already reported as expiring, by client id: told once per
    /// process, not on every pass.
    told_expiring: std::sync::Mutex<std::collections::HashSet<(String, SecretId)>>,
    /// The only way to write: the coordination lease every attempt needs, the audit log
    /// every write is recorded in, and the longest single request.
    writes: Writes,
    /// The fingerprint whose `pickup_timeout` was sent, per (tenant, client id): once per
    /// published secret and process (a restarted rotator sends it again, once).
    pickup_timeouts: Mutex<HashMap<(String, String), Fingerprint>>,
}

impl Reconciler {
    /// A reconciler acting through `connect` as `own_client_id`, locking in `lock_dir`,
    /// stopping when `stop` is triggered, writing only through `writes` (a write it
    /// refuses ends the pass with a lost lease).
    pub fn new(
        connect: Arc<dyn ConnectApi>,
        clock: Arc<dyn Clock>,
        own_client_id: impl Into<String>,
        lock_dir: PathBuf,
        stop: Stop,
        writes: Writes,
    ) -> Self {
        Reconciler {
            connect,
            clock,
            own_client_id: own_client_id.into(),
            run_id: uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
            lock_dir,
            attempts: AtomicU64::new(1),
            stop,
            told_expiring: std::sync::Mutex::default(),
            writes,
            pickup_timeouts: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the rotator's own credential gets a token now.
    pub async fn check_credential(&self) -> bool {
        self.connect.check_credential().await.is_ok()
    }

    /// The time on the reconciler's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Takes over what `earlier` already told (unmanaged secrets reported as expiring,
    /// the `pickup_timeout` of each published secret), so that the reconciler of a
    /// reloaded policy does not tell it again.
    pub fn remember_told_by(&self, earlier: &Reconciler) {
        let told = earlier
            .told_expiring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        self.told_expiring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(told);
        let sent = earlier
            .pickup_timeouts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut mine = self
            .pickup_timeouts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for (client, fingerprint) in sent {
            mine.entry(client).or_insert(fingerprint);
        }
    }

    /// The write handle of the pass on this task (bound when the pass started), or one
    /// bound now outside a pass.
    fn writes(&self) -> Writes {
        PASS_WRITES
            .try_with(Writes::clone)
            .unwrap_or_else(|_| self.writes.for_pass())
    }

    /// Whether a write may start now (always, without coordination).
    fn fenced(&self) -> Result<(), StepError> {
        self.writes()
            .may_send(StdDuration::ZERO)
            .map_err(|_| StepError::LeaseLost)
    }

    /// Asks passes in flight to stop at the next step boundary (a create that started
    /// is still verified and published, or undone). Passes started later do nothing.
    pub fn stop(&self) {
        self.stop.trigger();
    }

    fn stopping(&self) -> bool {
        self.stop.is_set()
    }

    /// Runs one pass over each job, at most twice `max_concurrency` started at once (the
    /// CDS client bounds the requests in flight). One failing client does not stop the
    /// others. Reports come back in the order of `jobs`.
    pub async fn run_all(
        self: &Arc<Self>,
        jobs: &[Arc<ClientJob>],
        max_concurrency: usize,
        options: PassOptions,
    ) -> Vec<PassReport> {
        let each = jobs.iter().map(|j| (Arc::clone(j), options)).collect();
        self.run_each(each, max_concurrency)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Like [`Reconciler::run_all`], with options per job (the daemon: a client at its
    /// scheduled time runs in its window, another on a follow-up does not). The report
    /// of job `i` is at `i`; `None` where a pass panicked.
    pub async fn run_each(
        self: &Arc<Self>,
        jobs: Vec<(Arc<ClientJob>, PassOptions)>,
        max_concurrency: usize,
    ) -> Vec<Option<PassReport>> {
        if let Some(refused) = self.without_token(&jobs).await {
            return refused;
        }
        let count = jobs.len();
        let spawn =
            |tasks: &mut tokio::task::JoinSet<_>,
             (i, (job, options)): (usize, (Arc<ClientJob>, PassOptions))| {
                let this = Arc::clone(self);
                tasks.spawn(async move { (i, this.pass(&job, options).await) });
            };
        // Passes are started as earlier ones end, at most twice max_concurrency at a time:
        // the CDS client bounds the requests in flight (`connect.max_concurrency`), and
        // the extra passes stand ready while others wait (a verify, a retry, the store's
        // write) without one. Starting all N at once kept N pass
        // futures (about 4 KB each) alive through the batch and scattered what outlives
        // it (metrics series) across a heap that large.
        let mut pending = jobs.into_iter().enumerate();
        let mut tasks = tokio::task::JoinSet::new();
        for next in pending
            .by_ref()
            .take(max_concurrency.max(1).saturating_mul(2))
        {
            spawn(&mut tasks, next);
        }
        let mut reports: Vec<Option<PassReport>> = (0..count).map(|_| None).collect();
        while let Some(joined) = tasks.join_next().await {
            if let Some(next) = pending.next() {
                spawn(&mut tasks, next);
            }
            match joined {
                Ok((i, report)) => reports[i] = Some(report),
                Err(e) => error!(error = %e, "a client's pass panicked"),
            }
        }
        reports
    }

    /// Asks the rotator's own token once before a batch. Refused (or not answered),
    /// the batch stops before any client: one error logged, one `rotation_failed` event
    /// (without a client, `reason: credential_refused`) to the notifiers of the batch's
    /// clients, and a report per job that says no pass ran, with its retry.
    async fn without_token(
        &self,
        jobs: &[(Arc<ClientJob>, PassOptions)],
    ) -> Option<Vec<Option<PassReport>>> {
        if jobs.is_empty() || self.stopping() {
            return None;
        }
        let err = self.connect.token_ready().await.err()?;
        // A stop cut it short: the passes see the stop themselves and do nothing.
        if self.stopping() {
            return None;
        }
        let detail = err.to_string();
        error!(clients = jobs.len(), error = %detail, "the rotator's own credential got no token; no client was passed over");
        let mut notifiers: Vec<Arc<dyn Notifier>> = Vec::new();
        for (job, _) in jobs {
            for n in &job.notifiers {
                if n.wants(EventKind::RotationFailed)
                    && !notifiers.iter().any(|m| m.name() == n.name())
                {
                    notifiers.push(Arc::clone(n));
                }
            }
        }
        if !notifiers.is_empty() && !jobs.iter().all(|(_, o)| o.dry_run) {
            let event = Event {
                kind: EventKind::RotationFailed,
                tenant_id: jobs[0].0.client.tenant_id.clone(),
                client: String::new(),
                client_id: String::new(),
                secret_ids: Vec::new(),
                fingerprint: None,
                expiration: None,
                store_location: None,
                detail: Some(format!(
                    "no client was passed over ({} in this batch): {detail}",
                    jobs.len()
                )),
                reason: Some("credential_refused".to_owned()),
                run_id: self.run_id.clone(),
                at: self.clock.now(),
            };
            let key = format!("{}/", event.tenant_id);
            crate::notify::outbox()
                .send(&key, &notifiers, event, &self.stop)
                .await;
        }
        let again =
            |job: &ClientJob, error: &StepError| match error_policy(error, false, &job.timing) {
                OnError::Failed { retry_after } => plus(self.clock.now(), retry_after),
                OnError::GaveWay => None,
            };
        Some(
            jobs.iter()
                .map(|(job, options)| {
                    let mut report = PassReport::new(&job.name);
                    if options.dry_run {
                        report.last = last_result::read(
                            &self.lock_dir,
                            &job.client.tenant_id,
                            &job.client.client_id,
                        );
                    }
                    let source = StepError::NoToken {
                        detail: detail.clone(),
                    };
                    report.next_check = again(job, &source);
                    report.error = Some(RotationError {
                        client: job.name.clone(),
                        client_id: job.client.client_id.clone(),
                        step: Step::Observe,
                        source,
                    });
                    Some(report)
                })
                .collect(),
        )
    }

    /// One pass over one client.
    pub async fn pass(&self, job: &ClientJob, options: PassOptions) -> PassReport {
        let span = info_span!("pass", client = %job.name, client_id = %job.client.client_id);
        async {
            let mut report = PassReport::new(&job.name);
            // Bound as the pass starts: what it observes and decides is written under
            // this holding of the lease or not at all.
            let outcome = PASS_WRITES
                .scope(
                    self.writes.for_pass(),
                    self.steps(job, options, &mut report),
                )
                .await;
            if let Err(Failed { step, source }) = outcome {
                report.error = Some(RotationError {
                    client: job.name.clone(),
                    client_id: job.client.client_id.clone(),
                    step,
                    source,
                });
            }
            self.finish(job, report, options).await
        }
        .instrument(span)
        .await
    }

    /// The steps of design.md, in order. A stop asked for between steps ends the pass
    /// with `report.stopped` set; a failed step ends it with its error. `plan` and
    /// `status` (a dry run) take the same observe and decide, then only ask the pickup
    /// check; nothing below [`Reconciler::act`] knows about dry runs.
    async fn steps(
        &self,
        job: &ClientJob,
        options: PassOptions,
        report: &mut PassReport,
    ) -> Result<(), Failed> {
        if self.stop_here(report, "before the pass started") {
            return Ok(());
        }
        let _lock = if options.dry_run {
            None
        } else {
            Some(self.lock(job).await.map_err(at(Step::Lock))?)
        };
        let seen = self
            .observe_and_decide(job, options)
            .await
            .map_err(at(Step::Observe))?;
        report.secrets = seen.secrets.clone();
        report.record = seen.record.clone();
        report.unrecorded = seen.unrecorded;
        report.plan = Some(seen.plan.clone());
        report.next_check = seen.plan.next_check;
        if options.dry_run {
            // Reads only: what the pickup check says now, for `plan` and `status`.
            let plan = self.gate_pickup(job, &seen, report, false).await;
            report.plan = Some(plan);
            return Ok(());
        }
        self.act(job, options, &seen, report).await
    }

    /// observe, then decide: everything a pass acts on, read once.
    async fn observe_and_decide(
        &self,
        job: &ClientJob,
        options: PassOptions,
    ) -> Result<Seen, StepError> {
        let started = std::time::Instant::now();
        let (secrets, current) = self.observe(job).await?;
        timed(Step::Observe, started);
        let unrecorded = current == Current::Unrecorded;
        let now = self.clock.now();
        let window = Window::of(options.in_window, &job.timing.schedule, now);
        let plan = decide(
            &secrets,
            current.record(),
            &job.timing,
            job.store.late_write(),
            job.retire_unmanaged,
            options.force || options.revoke_old,
            window,
            now,
        );
        info!(
            step = "observe",
            secrets = secrets.len(),
            current = current.record().map(|r| r.secret_id),
            published = current.record().map(|r| format!(
                "{} ({} ago)",
                rfc3339(r.published_at),
                crate::policy::duration::format(
                    (now - r.published_at).max(chrono::Duration::zero())
                )
            )),
            rotate = plan.rotate.as_ref().map(|r| r.to_string()),
            waits_for_window = plan.deferred.as_ref().map(|(_, at)| at.to_rfc3339()),
            clean_up = plan.clean_up.len(),
            retire = plan.retire.len(),
            "observed"
        );
        Ok(Seen {
            secrets,
            record: current.into_record(),
            unrecorded,
            plan,
            now,
        })
    }

    /// The acting steps, following what was decided: alert, clean up, retire, make room,
    /// then create, verify, publish, announce (and the self-check, the revoke).
    async fn act(
        &self,
        job: &ClientJob,
        options: PassOptions,
        seen: &Seen,
        report: &mut PassReport,
    ) -> Result<(), Failed> {
        self.alert(job, seen).await;
        let started = std::time::Instant::now();
        self.clean_up(job, &seen.plan, report)
            .await
            .map_err(at(Step::CleanUp))?;
        timed(Step::CleanUp, started);
        if self.stop_here(report, "before retiring old secrets") {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let plan = self
            .retire(job, seen, report)
            .await
            .map_err(at(Step::Retire))?;
        timed(Step::Retire, started);
        report.plan = Some(plan.clone());
        let Some(reason) = plan.rotate.clone() else {
            return Ok(());
        };
        if self.stop_here(report, "before rotating") {
            return Ok(());
        }
        info!(step = "decide", reason = %reason, "rotation due");
        self.make_room(job, seen, &plan)
            .map_err(at(Step::MakeRoom))?;
        let rotated = self.rotate(job, options.revoke_old).await?;
        let new_id = rotated.secret_id;
        // Look again when the superseded secret's grace ends (or earlier, if an orphan
        // ripens first).
        report.next_check = decide::earliest(report.next_check, plus(seen.now, job.timing.grace));
        report.rotated = Some(rotated);
        if job.client.client_id == self.own_client_id {
            // The rotator's own credential: switch to the new secret and prove it with a
            // call. Nothing old is retired before the grace period anyway.
            self.connect.reload_credential();
            self.connect
                .list_secrets(&job.client)
                .await
                .map_err(|e| at(Step::SelfCheck)(e.into()))?;
        }
        if options.revoke_old {
            self.revoke(job, new_id, report)
                .await
                .map_err(at(Step::Retire))?;
        }
        Ok(())
    }

    /// The end of an emergency rotation: every secret but the one just published
    /// (`current`) that the policy lets the rotator delete goes now ([`decide::revoke`]).
    /// Listed afresh: the pass's first listing predates the new secret. A stop does not
    /// skip it (each delete still gets the HTTP client's stop grace): the leaked value
    /// should not outlive the rotation.
    async fn revoke(
        &self,
        job: &ClientJob,
        current: SecretId,
        report: &mut PassReport,
    ) -> Result<(), StepError> {
        let secrets = self.connect.list_secrets(&job.client).await?;
        let mut revoked = Vec::new();
        let mut left_valid = Vec::new();
        let mut result = Ok(());
        let now = self.clock.now();
        for what in decide::revoke(&secrets, current, job.retire_unmanaged, now) {
            let id = match what {
                decide::Revoke::LeaveValid(s) => {
                    left_valid.push(s.clone());
                    continue;
                }
                decide::Revoke::Delete(id) => id,
            };
            if let Err(e) = self
                .delete(job, id, Step::Retire, DeleteReason::Revoked)
                .await
            {
                result = Err(e);
                break;
            }
            report.deleted.push((id, DeleteReason::Revoked));
            revoked.push(id);
        }
        // What still gets tokens is said as plainly as what was revoked: the leaked value
        // may be among it.
        let left = (!left_valid.is_empty()).then(|| {
            let kept: Vec<&ClientSecret> = left_valid.iter().collect();
            format!(
                "still valid, not revoked: {}; {}",
                listing(&kept),
                revoke_advice(&job.name)
            )
        });
        if let Some(left) = &left {
            warn!(step = "retire", secret_ids = ?left_valid.iter().map(|s| s.id).collect::<Vec<_>>(), "{left}");
        }
        report.left_valid.extend(left_valid);
        if !revoked.is_empty() || left.is_some() {
            self.announce(job, EventKind::Retired, |e| {
                e.secret_ids = revoked;
                e.reason = Some("emergency".to_owned());
                e.detail = left;
            })
            .await;
        }
        result
    }

    /// Whether to stop here; if so, says where in the report.
    fn stop_here(&self, report: &mut PassReport, at: &str) -> bool {
        if self.stopping() {
            report.stopped = Some(format!("stopped {at}"));
            true
        } else {
            false
        }
    }

    /// lock: one actor per client (I9). Waiting for another holder ends on a stop.
    async fn lock(&self, job: &ClientJob) -> Result<ClientLock, StepError> {
        let acquire = ClientLock::acquire(
            &self.lock_dir,
            &job.client.tenant_id,
            &job.client.client_id,
            LOCK_WAIT,
        );
        tokio::select! {
            lock = acquire => Ok(lock?),
            () = self.stop.wait() => Err(StepError::Interrupted),
        }
    }

    /// observe: the client's secrets in CDS and what the store holds.
    async fn observe(&self, job: &ClientJob) -> Result<(Vec<ClientSecret>, Current), StepError> {
        let secrets = self.connect.list_secrets(&job.client).await?;
        let current = job.store.read_current(&job.store_key).await?;
        if let Some(r) = current.record()
            && (r.client_id != job.client.client_id || r.tenant_id != job.client.tenant_id)
        {
            // Acting on it would retire this client's secrets by another client's record.
            return Err(StepError::ForeignRecord {
                location: job.store.location(&job.store_key),
                client_id: r.client_id.clone(),
                tenant_id: r.tenant_id.clone(),
            });
        }
        Ok((secrets, current))
    }

    /// Warns about what consumers may be broken by, or what the rotator cannot prove.
    async fn alert(&self, job: &ClientJob, seen: &Seen) {
        let plan = &seen.plan;
        if let Some(reason) = plan.rotate.as_ref().filter(|r| r.current_invalid()) {
            warn!(step = "observe", reason = %reason, "the store's current secret does not work in CDS; rotating now");
            self.announce(job, EventKind::StoreCurrentInvalid, |e| {
                e.secret_ids = seen.record.iter().map(|r| r.secret_id).collect();
                e.detail = Some(reason.to_string());
            })
            .await;
        }
        if decide::record_missing(seen.record.as_ref(), seen.unrecorded, Some(plan)) {
            let location = job.store.location(&job.store_key);
            let detail = record_missing(&location, seen.unrecorded, &plan.possibly_in_use);
            warn!(step = "observe", store = %location, kept = ?plan.possibly_in_use, "{detail}");
            self.announce(job, EventKind::StoreRecordMissing, |e| {
                e.secret_ids = plan.possibly_in_use.clone();
                e.store_location = Some(location);
                e.detail = Some(detail);
            })
            .await;
        }
        self.alert_expiring_unmanaged(job, seen).await;
    }

    /// Tells, once per process, about secrets the rotator does not manage that expire
    /// within `rotate_before` or never.
    async fn alert_expiring_unmanaged(&self, job: &ClientJob, seen: &Seen) {
        let fresh: Vec<&ClientSecret> = {
            let mut told = self
                .told_expiring
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            seen.secrets
                .iter()
                .filter(|s| seen.plan.expiring_unmanaged.contains(&s.id))
                .filter(|s| told.insert((job.client.client_id.clone(), s.id)))
                .collect()
        };
        if fresh.is_empty() {
            return;
        }
        // Each case its own advice: a secret that expires soon needs its users moved
        // before that date; one that never expires should not exist at all.
        let (never, soon): (Vec<&ClientSecret>, Vec<&ClientSecret>) =
            fresh.iter().partition(|s| s.expires_at().is_none());
        let mut said = Vec::new();
        if !soon.is_empty() {
            said.push(format!(
                "secret(s) the rotator did not create and does not retire expire within rotate_before ({}): {}; whoever still uses them must switch to the store's secret before then",
                crate::policy::duration::format(job.timing.rotate_before),
                listing(&soon)
            ));
        }
        if !never.is_empty() {
            said.push(format!(
                "secret(s) the rotator did not create and does not retire never expire: {}; every secret should expire: move their users to the store's secret and delete them in the portal",
                listing(&never)
            ));
        }
        let detail = format!(
            "{}; or hand the client over with retire_unmanaged: true",
            said.join("; ")
        );
        warn!(step = "observe", secret_ids = ?fresh.iter().map(|s| s.id).collect::<Vec<_>>(), "{detail}");
        let ids = fresh.iter().map(|s| s.id).collect();
        let earliest = fresh.iter().filter_map(|s| s.expires_at()).min();
        self.announce(job, EventKind::ExpiringUnmanaged, |e| {
            e.secret_ids = ids;
            e.expiration = earliest;
            e.detail = Some(detail);
        })
        .await;
    }

    /// clean_up: orphans and expired managed secrets.
    async fn clean_up(
        &self,
        job: &ClientJob,
        plan: &Plan,
        report: &mut PassReport,
    ) -> Result<(), StepError> {
        for &(id, why) in &plan.clean_up {
            if self.stop_here(report, "while cleaning up") {
                return Ok(());
            }
            self.delete(job, id, Step::CleanUp, why).await?;
            report.deleted.push((id, why));
            if why == DeleteReason::Orphan {
                self.announce(job, EventKind::OrphanDeleted, |e| e.secret_ids = vec![id])
                    .await;
            }
        }
        Ok(())
    }

    /// retire: superseded secrets past their grace, once the pickup check confirms.
    /// Gives back the plan as the pickup check left it ([`Plan::after_pickup`]).
    async fn retire(
        &self,
        job: &ClientJob,
        seen: &Seen,
        report: &mut PassReport,
    ) -> Result<Plan, StepError> {
        let plan = self.gate_pickup(job, seen, report, true).await;
        let mut retired = Vec::new();
        let mut result = Ok(());
        for &id in plan.retire_now() {
            if self.stop_here(report, "while retiring old secrets") {
                break;
            }
            if let Err(e) = self
                .delete(job, id, Step::Retire, DeleteReason::Superseded)
                .await
            {
                result = Err(e);
                break;
            }
            report.deleted.push((id, DeleteReason::Superseded));
            retired.push(id);
        }
        if !retired.is_empty() {
            self.announce(job, EventKind::Retired, |e| e.secret_ids = retired)
                .await;
        }
        result.map(|()| plan)
    }

    /// Pickup gating: when the plan retires secrets, asks the pickup check about the
    /// current record and gives back the plan as its answer leaves it. While it is
    /// pending: records why in the report, asks for a follow-up (decide::pickup_wait)
    /// and, past the timeout, sends `pickup_timeout` once per published secret (when
    /// `announce`).
    async fn gate_pickup(
        &self,
        job: &ClientJob,
        seen: &Seen,
        report: &mut PassReport,
        announce: bool,
    ) -> Plan {
        let plan = seen.plan.clone();
        if plan.retire.is_empty() {
            return plan;
        }
        let Some(current) = &seen.record else {
            return plan.after_pickup(false);
        };
        let why = match job.pickup.check(current).await {
            Pickup::Confirmed => return plan.after_pickup(true),
            Pickup::Pending(why) => why,
        };
        let wait = decide::pickup_wait(
            current,
            job.timing.grace,
            job.pickup.timeout(),
            job.pickup.interval(),
            seen.now,
        );
        info!(step = "retire", waiting_for = %why, next_check = wait.next_check.map(rfc3339), overdue = wait.overdue, "pickup not confirmed yet; old secrets kept");
        report.next_check = decide::earliest(report.next_check, wait.next_check);
        if wait.overdue && announce && self.first_pickup_timeout(job, current) {
            let kept: Vec<SecretId> = std::iter::once(current.secret_id)
                .chain(plan.retire.iter().copied())
                .collect();
            warn!(step = "retire", fingerprint = %current.fingerprint, kept = ?kept, waiting_for = %why, "pickup not confirmed within the timeout after grace; both secrets are kept and the check goes on");
            self.announce(job, EventKind::PickupTimeout, |e| {
                e.secret_ids = kept;
                e.fingerprint = Some(current.fingerprint.clone());
                e.expiration = Some(current.expiration);
                e.store_location = Some(job.store.location(&job.store_key));
                e.detail = Some(why.clone());
            })
            .await;
        }
        report.pickup = Some(PickupWaiting {
            reason: why,
            deadline: wait.deadline,
            overdue: wait.overdue,
        });
        plan.after_pickup(false)
    }

    /// Whether no `pickup_timeout` was sent yet for `current` (and marks it sent).
    fn first_pickup_timeout(&self, job: &ClientJob, current: &StoreRecord) -> bool {
        let mut sent = self
            .pickup_timeouts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let key = (job.client.tenant_id.clone(), job.client.client_id.clone());
        if sent.get(&key) == Some(&current.fingerprint) {
            return false;
        }
        sent.insert(key, current.fingerprint.clone());
        true
    }

    /// make_room: CDS holds at most 10 secrets; never go past it (I5). Follows the
    /// plan's room decision ([`Plan::has_room`]), the one `plan` and `status` show.
    fn make_room(&self, job: &ClientJob, seen: &Seen, plan: &Plan) -> Result<(), StepError> {
        if plan.has_room() {
            return Ok(());
        }
        let remaining = plan.remaining(&seen.secrets);
        Err(StepError::Full {
            count: remaining.len(),
            listing: listing(&remaining),
            hint: full_hint(job, plan, seen.record.as_ref(), &remaining),
        })
    }

    /// create, verify, publish, announce. Any failure after the create deletes the new
    /// secret again while nobody can hold it ([`Created`], [`Verified`]), so the store
    /// and CDS stay as they were; one that may be held ([`new_secret::InDoubt`]) is kept.
    async fn rotate(&self, job: &ClientJob, emergency: bool) -> Result<Rotated, Failed> {
        let started = std::time::Instant::now();
        let created = self.create(job).await.map_err(at(Step::Create))?;
        let Facts {
            id,
            fingerprint,
            expiration,
        } = created.facts().clone();
        // Programs that read the store must not get it into our log (nor the one before).
        crate::command::hold(&format!("client {}", job.name), created.value());
        timed(Step::Create, started);
        info!(step = "create", secret_id = id, expiration = %rfc3339(expiration), fingerprint = %fingerprint, "created");

        let verified = self.verify(job, created).await?;
        let published = self.publish(job, verified).await?;
        let location = job.store.location(&job.store_key);
        info!(step = "publish", secret_id = id, fingerprint = %fingerprint, store = %location, "published");

        let rotated = Rotated {
            secret_id: published.facts().id,
            fingerprint,
            expiration,
            location,
        };
        self.announce(job, EventKind::Rotated, |e| {
            e.secret_ids = vec![id];
            e.fingerprint = Some(rotated.fingerprint.clone());
            e.expiration = Some(expiration);
            e.store_location = Some(rotated.location.clone());
            e.reason = emergency.then(|| "emergency".to_owned());
        })
        .await;
        Ok(rotated)
    }

    /// verify: a token with the new secret, within `verify_timeout`; on failure (or a
    /// stop) the new secret is deleted again.
    async fn verify(&self, job: &ClientJob, created: Created) -> Result<Verified, Failed> {
        let waited = job.timing.verify_timeout.to_std().unwrap_or_default();
        let started = std::time::Instant::now();
        let verified = created
            .verify(&*self.connect, &job.client.client_id, waited, &self.stop)
            .await;
        let (created, last) = match verified {
            Ok(verified) => {
                timed(Step::Verify, started);
                info!(
                    step = "verify",
                    secret_id = verified.facts().id,
                    "the new secret gets tokens"
                );
                return Ok(verified);
            }
            Err(failed) => failed,
        };
        let secret_id = created.facts().id;
        let cleanup = self.undo_create(job, created.undo(), Step::Verify).await;
        let source = if self.stopping() {
            StepError::Stopped { secret_id, cleanup }
        } else {
            StepError::Verify {
                secret_id,
                waited: waited.as_secs(),
                last,
                cleanup,
            }
        };
        Err(at(Step::Verify)(source))
    }

    /// publish, only while the lease surely holds. A refused publish deletes the new
    /// secret again; one in doubt or given up at a stop keeps it.
    async fn publish(&self, job: &ClientJob, verified: Verified) -> Result<Published, Failed> {
        let Facts {
            id,
            fingerprint,
            expiration,
        } = verified.facts().clone();
        if let Err(StepError::LeaseLost) = self.fenced() {
            return Err(at(Step::Publish)(StepError::LeaseLostUndone {
                secret_id: id,
            }));
        }
        let record = StoreRecord {
            client_id: job.client.client_id.clone(),
            tenant_id: job.client.tenant_id.clone(),
            secret_id: id,
            expiration,
            published_at: self.clock.now(),
            fingerprint: fingerprint.clone(),
        };
        let started = std::time::Instant::now();
        let writes = self.writes();
        let published = verified
            .publish(&*job.store, &writes, &job.store_key, &record, &self.stop)
            .await;
        timed(Step::Publish, started);
        self.audit(job, Action::Publish, Step::Publish, |e| {
            e.secret_id = Some(id);
            e.store = Some(job.store.location(&job.store_key));
            e.fingerprint = Some(fingerprint.to_string());
            match &published {
                Publish::Published(_) => {}
                Publish::GivenUp(_) => {
                    e.result = Outcome::Unknown;
                    e.error = Some("given up at a stop before its answer came".to_owned());
                }
                Publish::InDoubt(_, err) => {
                    e.result = Outcome::Unknown;
                    e.error = Some(crate::text::untrusted(&err.to_string()));
                }
                Publish::Failed(_, err) => {
                    e.result = Outcome::Failed;
                    e.error = Some(crate::text::untrusted(&err.to_string()));
                }
            }
        });
        match published {
            Publish::Published(published) => Ok(published),
            Publish::GivenUp(kept) => Err(at(Step::Publish)(StepError::PublishStopped {
                secret_id: kept.facts().id,
                location: job.store.location(&job.store_key),
            })),
            // Consumers may hold it: keep it. The next pass reads what the store holds;
            // a secret it does not hold is an orphan or superseded then.
            Publish::InDoubt(kept, source) => Err(at(Step::Publish)(StepError::PublishInDoubt {
                secret_id: kept.facts().id,
                source,
            })),
            Publish::Failed(verified, source) => {
                // Refused by the lease (before or during the publish, with nothing
                // written): no delete may be sent either; the leader deletes it as an
                // orphan.
                let refused = error_policy::refused_publish(&source, self.fenced().is_ok());
                if refused == Refused::LeaveToLeader {
                    return Err(at(Step::Publish)(StepError::LeaseLostUndone {
                        secret_id: verified.facts().id,
                    }));
                }
                let cleanup = self.undo_create(job, verified.undo(), Step::Publish).await;
                Err(at(Step::Publish)(StepError::Publish {
                    secret_id: id,
                    source,
                    cleanup,
                }))
            }
        }
    }

    /// Creates a secret. When the answer is lost, the secrets are listed and our own
    /// attempt is recognised by its run id: its value is unknown, so it is deleted and
    /// the create is tried again — never blindly re-posted.
    async fn create(&self, job: &ClientJob) -> Result<Created, StepError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.fenced()?;
            let now = self.clock.now();
            let marker = Marker {
                created: now,
                run: format!(
                    "{}.{}",
                    self.run_id,
                    self.attempts.fetch_add(1, Ordering::Relaxed)
                ),
            };
            let new = NewSecret {
                // The policy caps lifetime at 730d; past the calendar's end CDS refuses
                // an expiration that is not in the future, with a clear error.
                expiration: plus(now, job.timing.lifetime).unwrap_or(now),
                description: marker.description(),
            };
            let result = self
                .connect
                .create_secret(&self.writes(), &job.client, &new)
                .await;
            self.audit_cds(
                job,
                Action::CreateSecret,
                Step::Create,
                None,
                &result,
                |e| {
                    if let Ok(c) = &result {
                        e.secret_id = Some(c.secret.id);
                        e.fingerprint = Some(Fingerprint::of(&c.value).to_string());
                    }
                },
            );
            match result {
                Ok(created) => return Ok(Created::new(created, self.clock.now())),
                Err(ConnectError::OutcomeUnknown { operation, detail })
                    if attempt < CREATE_ATTEMPTS =>
                {
                    warn!(step = "create", attempt, %detail, "the answer to the create was lost; looking for it");
                    let secrets = self.connect.list_secrets(&job.client).await?;
                    if let Some(lost) = secrets
                        .iter()
                        .find(|s| s.description.as_deref() == Some(new.description.as_str()))
                    {
                        info!(
                            step = "create",
                            secret_id = lost.id,
                            "found the lost create; its value is unknown, deleting it"
                        );
                        let result = self
                            .connect
                            .delete_secret(&self.writes(), &job.client, lost.id)
                            .await;
                        self.audit_cds(
                            job,
                            Action::DeleteSecret,
                            Step::Create,
                            Some("undo"),
                            &result,
                            |e| {
                                e.secret_id = Some(lost.id);
                            },
                        );
                        result?;
                    } else {
                        info!(step = "create", %operation, "the lost create did not happen; creating again");
                    }
                    if self.stopping() {
                        return Err(ConnectError::Stopped { operation }.into());
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Deletes a secret the failed pass created (only a [`Created`] or [`Verified`] one
    /// gives the [`Undo`]); says what is left if that fails too.
    async fn undo_create(&self, job: &ClientJob, undo: Undo, step: Step) -> String {
        let id = undo.id();
        let result = self
            .connect
            .delete_secret(&self.writes(), &job.client, id)
            .await;
        self.audit_cds(
            job,
            Action::DeleteSecret,
            step,
            Some("undo"),
            &result,
            |e| {
                e.secret_id = Some(id);
            },
        );
        match result {
            Ok(()) => {
                info!(step = %step, secret_id = id, "deleted the new secret again");
                String::new()
            }
            Err(e) => {
                error!(step = %step, secret_id = id, error = %e, "could not delete the new secret; a later pass deletes it");
                format!(
                    " (deleting it failed: {e}; a later pass deletes it: as an orphan after orphan_grace, or, while the store has no record, as superseded after grace)"
                )
            }
        }
    }

    async fn delete(
        &self,
        job: &ClientJob,
        id: SecretId,
        step: Step,
        why: DeleteReason,
    ) -> Result<(), StepError> {
        self.fenced()?;
        let result = self
            .connect
            .delete_secret(&self.writes(), &job.client, id)
            .await;
        let reason = why.to_string();
        self.audit_cds(
            job,
            Action::DeleteSecret,
            step,
            Some(&reason),
            &result,
            |e| {
                e.secret_id = Some(id);
            },
        );
        result?;
        info!(step = %step, secret_id = id, reason = %why, "deleted");
        Ok(())
    }

    /// Sets the client's metrics from what a pass saw and did.
    fn export(&self, job: &ClientJob, report: &PassReport) {
        let m = crate::metrics::get();
        let expiration = report
            .rotated
            .as_ref()
            .map(|r| r.expiration)
            .or(report.record.as_ref().map(|r| r.expiration));
        if let Some(at) = expiration {
            m.set_expiration(&job.name, at.timestamp());
        }
        if report.error.is_none() && report.stopped.is_none() {
            m.set_last_success(&job.name, self.clock.now().timestamp());
        }
        let rotation_failed = report
            .error
            .as_ref()
            .is_some_and(|e| error_policy::is_rotation_failure(e.step));
        if report.rotated.is_some() || rotation_failed {
            m.count_rotation(&job.name, !rotation_failed);
        }
        if report.plan.is_some() {
            let left = report
                .secrets
                .iter()
                .filter(|s| !report.deleted.iter().any(|(id, _)| *id == s.id));
            let (managed, unmanaged) = left.fold((0, 0), |(m, u), s| {
                if decide::is_managed(s) {
                    (m + 1, u)
                } else {
                    (m, u + 1)
                }
            });
            let new = usize::from(report.rotated.is_some());
            m.set_secrets(&job.name, managed + new, unmanaged);
            m.set_pickup_pending(&job.name, report.pickup.is_some());
        }
    }

    /// Appends a CDS write and how it ended to the audit log, if there is one.
    fn audit_cds<T>(
        &self,
        job: &ClientJob,
        action: Action,
        step: Step,
        reason: Option<&str>,
        result: &Result<T, ConnectError>,
        fill: impl FnOnce(&mut crate::audit::Entry),
    ) {
        self.audit(job, action, step, |e| {
            e.reason = reason.map(str::to_owned);
            if let Err(err) = result {
                let (status, op) = err.status_and_operation_id();
                e.result = if err.outcome_unknown() {
                    Outcome::Unknown
                } else {
                    Outcome::Failed
                };
                e.status = status;
                e.operation_id = op.map(crate::text::untrusted);
                e.error = Some(crate::text::untrusted(&err.to_string()));
            }
            fill(e);
        });
    }

    /// Appends one entry about `job`, filled in by `fill`, to the audit log if there is
    /// one (an entry is only built when there is).
    fn audit(
        &self,
        job: &ClientJob,
        action: Action,
        step: Step,
        fill: impl FnOnce(&mut crate::audit::Entry),
    ) {
        let Some(log) = self.writes.audit() else {
            return;
        };
        let mut e = log.entry(
            &self.run_id,
            (&job.client.tenant_id, &job.name, &job.client.client_id),
            action,
            &step.to_string(),
        );
        fill(&mut e);
        log.record(&e);
    }

    /// Logs and announces a failure and schedules a retry; a dry run only reports it.
    async fn finish(
        &self,
        job: &ClientJob,
        mut report: PassReport,
        options: PassOptions,
    ) -> PassReport {
        // A stop is not a failure: nobody is paged for a restart. It stays a failure only
        // when undoing an unpublished secret failed too.
        let on_error = report
            .error
            .as_ref()
            .map(|e| error_policy(&e.source, self.stopping(), &job.timing));
        if let Some(err) = report.error.take_if(|_| on_error == Some(OnError::GaveWay)) {
            info!(step = %err.step, "{}", err.source);
            report.stopped = Some(format!("step {}: {}", err.step, err.source));
        }
        if options.dry_run {
            report.last =
                last_result::read(&self.lock_dir, &job.client.tenant_id, &job.client.client_id);
            return report;
        }
        // Only once the lock was held: the lock directory is then known to be safe.
        let locked =
            report.plan.is_some() || report.error.as_ref().is_some_and(|e| e.step != Step::Lock);
        if locked {
            let (outcome, step, message) = match (&report.error, &report.stopped) {
                (Some(e), _) => (
                    last_result::Outcome::Failed,
                    Some(e.step.to_string()),
                    Some(e.source.to_string()),
                ),
                (None, Some(why)) => (last_result::Outcome::Stopped, None, Some(why.clone())),
                (None, None) => (last_result::Outcome::Ok, None, None),
            };
            let result = last_result::LastResult {
                at: self.clock.now(),
                outcome,
                step,
                message,
                rotated: report.rotated.as_ref().map(|r| r.secret_id),
            };
            // On the blocking pool: it creates a file (see `ClientLock::acquire`). Best
            // effort, like the write itself: a lost report changes no decision.
            let (lock_dir, tenant_id, client_id) = (
                self.lock_dir.clone(),
                job.client.tenant_id.clone(),
                job.client.client_id.clone(),
            );
            let span = tracing::Span::current();
            let _ = tokio::task::spawn_blocking(move || {
                let _in_pass = span.enter();
                last_result::write(&lock_dir, &tenant_id, &client_id, &result);
            })
            .await;
        }
        self.export(job, &report);
        if let Some(err) = &report.error {
            error!(step = %err.step, error = %err, "pass failed");
            let detail = err.to_string();
            self.announce(job, EventKind::RotationFailed, |e| e.detail = Some(detail))
                .await;
            if let Some(OnError::Failed { retry_after }) = on_error {
                let again = plus(self.clock.now(), retry_after);
                report.next_check = decide::earliest(report.next_check, again);
            }
        }
        report
    }

    /// Hands an event for the client's notifiers to the outbox, which sends it in the
    /// background after the client's earlier events: no step waits for a notifier.
    /// Failures are logged and counted, never fatal.
    async fn announce(&self, job: &ClientJob, kind: EventKind, fill: impl FnOnce(&mut Event)) {
        if job.notifiers.is_empty() {
            return;
        }
        let mut event = Event {
            kind,
            tenant_id: job.client.tenant_id.clone(),
            client: job.name.clone(),
            client_id: job.client.client_id.clone(),
            secret_ids: Vec::new(),
            fingerprint: None,
            expiration: None,
            store_location: None,
            detail: None,
            reason: None,
            run_id: self.run_id.clone(),
            at: self.clock.now(),
        };
        fill(&mut event);
        let key = format!("{}/{}", job.client.tenant_id, job.client.client_id);
        crate::notify::outbox()
            .send(&key, &job.notifiers, event, &self.stop)
            .await;
    }
}

/// Records how long a step that started at `started` took.
fn timed(step: Step, started: std::time::Instant) {
    crate::metrics::get().observe_step(&step.to_string(), started.elapsed());
}

/// What would unblock a client at 10 secrets, from what the pass saw: only advice that
/// helps (retire_unmanaged does nothing while no secret of the rotator's is current).
fn full_hint(
    job: &ClientJob,
    plan: &Plan,
    record: Option<&StoreRecord>,
    remaining: &[&ClientSecret],
) -> String {
    let mut hints = Vec::new();
    if let (ids, Some(end)) = &plan.retire_later
        && !ids.is_empty()
    {
        hints.push(format!(
            "wait: {} superseded secret(s) are retired once the grace period ends at {}",
            ids.len(),
            rfc3339(*end)
        ));
    }
    let unmanaged = remaining.iter().filter(|s| !decide::is_managed(s)).count();
    let current_works = plan
        .rotate
        .as_ref()
        .is_none_or(|why| !why.current_invalid());
    if record.is_some() && current_works && unmanaged > 0 && !job.retire_unmanaged {
        hints.push(format!(
            "set retire_unmanaged: true to let the rotator retire the {unmanaged} secret(s) it did not create once the current one is past its grace"
        ));
    }
    if record.is_none() && !plan.possibly_in_use.is_empty() {
        hints.push(
            "restore the store's record (then superseded secrets can be retired), or delete secrets you know are unused".to_owned(),
        );
    }
    hints.push("delete a secret you no longer use in the CDS portal".to_owned());
    hints.join("; or ")
}

/// One line listing secrets, for errors: `3 (managed, expires …), 4 (unmanaged, never expires)`.
/// How to revoke the secrets an emergency rotation of `client` had to leave valid.
pub fn revoke_advice(client: &str) -> String {
    format!(
        "they were not created by the rotator and retire_unmanaged is false: delete them in the CDS portal, or set retire_unmanaged: true for client {client} and run --revoke-old again"
    )
}

fn listing(secrets: &[&ClientSecret]) -> String {
    secrets
        .iter()
        .map(|s| {
            let owner = if decide::is_managed(s) {
                "managed"
            } else {
                "unmanaged"
            };
            let exp = s
                .expires_at()
                .map_or_else(|| "never expires".to_owned(), |e| format!("expires {e}"));
            // Descriptions come from CDS: whoever wrote them, they cannot forge lines.
            let desc = s
                .description
                .as_deref()
                .map(|d| format!(", \"{}\"", crate::text::untrusted(d)))
                .unwrap_or_default();
            format!("{} ({owner}, {exp}{desc})", s.id)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    use async_trait::async_trait;
    use chrono::TimeZone;
    use secrecy::SecretString;

    use crate::clock::ManualClock;
    use crate::connect::CreatedSecret;
    use crate::domain::ClientKind;
    use crate::store::file::FileStore;

    /// CDS as a list in memory: what a pass lists, creates and deletes.
    struct Cds {
        secrets: Mutex<Vec<ClientSecret>>,
        creates: AtomicU64,
    }

    #[async_trait]
    impl ConnectApi for Cds {
        async fn list_secrets(&self, _: &ClientRef) -> Result<Vec<ClientSecret>, ConnectError> {
            Ok(self.secrets.lock().unwrap().clone())
        }
        async fn create_secret(
            &self,
            _: &Writes,
            _: &ClientRef,
            new: &NewSecret,
        ) -> Result<CreatedSecret, ConnectError> {
            self.creates.fetch_add(1, Ordering::Relaxed);
            let secret = ClientSecret {
                id: 11,
                description: Some(new.description.clone()),
                expiration: Some(new.expiration),
                expires: Some(true),
            };
            self.secrets.lock().unwrap().push(secret.clone());
            Ok(CreatedSecret {
                secret,
                value: SecretString::from("new value".to_owned()),
            })
        }
        async fn delete_secret(
            &self,
            _: &Writes,
            _: &ClientRef,
            id: SecretId,
        ) -> Result<(), ConnectError> {
            self.secrets.lock().unwrap().retain(|s| s.id != id);
            Ok(())
        }
        async fn verify_secret(&self, _: &str, _: &SecretString) -> Result<(), ConnectError> {
            Ok(())
        }
        async fn check_credential(&self) -> Result<(), ConnectError> {
            Ok(())
        }
        async fn client_exists(&self, _: &ClientRef) -> Result<bool, ConnectError> {
            Ok(true)
        }
    }

    /// A pickup check that always says the same.
    struct Says(bool);

    #[async_trait]
    impl PickupCheck for Says {
        async fn check(&self, _: &StoreRecord) -> Pickup {
            if self.0 {
                Pickup::Confirmed
            } else {
                Pickup::Pending("the app still reports the old fingerprint".to_owned())
            }
        }
    }

    /// Ten secrets: the store's current one (published 70 days ago, expiring in 20, so
    /// a rotation is due) and nine superseded ones past their grace, which only a
    /// confirmed pickup retires.
    async fn ten_secrets(
        pickup: bool,
        dir: &std::path::Path,
    ) -> (Arc<Reconciler>, Arc<Cds>, Arc<ClientJob>) {
        let now = Utc.with_ymd_and_hms(2026, 6, 1, 3, 0, 0).unwrap();
        let managed = |id, created| ClientSecret {
            id,
            description: Some(
                Marker {
                    created,
                    run: format!("r.{id}"),
                }
                .description(),
            ),
            expiration: Some(now + chrono::Duration::days(20)),
            expires: Some(true),
        };
        let published = now - chrono::Duration::days(70);
        let mut secrets = vec![managed(1, published - chrono::Duration::minutes(1))];
        secrets.extend((2..=10).map(|id| managed(id, now - chrono::Duration::days(100))));
        let cds = Arc::new(Cds {
            secrets: Mutex::new(secrets),
            creates: AtomicU64::new(0),
        });
        let client = ClientRef {
            tenant_id: "t".into(),
            client_id: "c".into(),
            kind: ClientKind::ClientCredentials,
        };
        let store = Arc::new(FileStore::new("files", dir.join("store")));
        std::fs::create_dir_all(dir.join("store")).unwrap();
        std::fs::create_dir_all(dir.join("locks")).unwrap();
        let record = StoreRecord {
            client_id: "c".into(),
            tenant_id: "t".into(),
            secret_id: 1,
            expiration: now + chrono::Duration::days(20),
            published_at: published,
            fingerprint: Fingerprint::of_bytes(b"old value"),
        };
        store
            .publish("app", &SecretString::from("old value".to_owned()), &record)
            .await
            .unwrap();
        let job = Arc::new(ClientJob {
            name: "app".into(),
            client,
            store,
            store_key: "app".into(),
            notifiers: Vec::new(),
            pickup: Arc::new(Says(pickup)),
            timing: Timing::default(),
            retire_unmanaged: false,
        });
        let reconciler = Arc::new(Reconciler::new(
            Arc::clone(&cds) as Arc<dyn ConnectApi>,
            Arc::new(ManualClock::new(now)),
            "rotator",
            dir.join("locks"),
            Stop::new(),
            Writes::unfenced(),
        ));
        (reconciler, cds, job)
    }

    #[tokio::test]
    async fn plan_and_the_pass_agree_at_ten_secrets_when_the_pickup_holds_the_retire() {
        let dir = tempfile::tempdir().unwrap();
        let (reconciler, cds, job) = ten_secrets(false, dir.path()).await;
        let dry_run = PassOptions {
            dry_run: true,
            ..PassOptions::default()
        };
        let planned = reconciler.pass(&job, dry_run).await;
        let plan = planned.plan.as_ref().unwrap();
        assert_eq!(plan.retire.len(), 9, "{plan:?}");
        assert!(planned.pickup.is_some());
        assert!(plan.full, "plan must say the rotation is blocked: {plan:?}");
        let passed = reconciler.pass(&job, PassOptions::default()).await;
        let err = passed.error.expect("the pass fails at make_room");
        assert_eq!(err.step, Step::MakeRoom);
        assert!(
            matches!(err.source, StepError::Full { count: 10, .. }),
            "{}",
            err.source
        );
        assert!(passed.plan.as_ref().unwrap().full);
        assert_eq!(cds.creates.load(Ordering::Relaxed), 0);
        assert!(passed.deleted.is_empty());
    }

    #[tokio::test]
    async fn plan_and_the_pass_agree_at_ten_secrets_when_the_pickup_confirms() {
        let dir = tempfile::tempdir().unwrap();
        let (reconciler, cds, job) = ten_secrets(true, dir.path()).await;
        let dry_run = PassOptions {
            dry_run: true,
            ..PassOptions::default()
        };
        let planned = reconciler.pass(&job, dry_run).await;
        assert!(!planned.plan.as_ref().unwrap().full);
        let passed = reconciler.pass(&job, PassOptions::default()).await;
        assert!(passed.error.is_none(), "{:?}", passed.error);
        assert_eq!(passed.deleted.len(), 9);
        assert!(passed.rotated.is_some());
        assert_eq!(cds.creates.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_hostile_description_cannot_forge_lines_in_the_full_listing() {
        let s = ClientSecret {
            id: 4,
            description: Some("by hand\n\u{1b}[2Japp: rotated: FORGED".into()),
            expiration: None,
            expires: Some(false),
        };
        let text = listing(&[&s]);
        assert!(!text.contains('\n') && !text.contains('\u{1b}'), "{text}");
        assert!(text.starts_with("4 (unmanaged, never expires"), "{text}");
    }
}
