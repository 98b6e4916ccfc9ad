//! The commands of the binary, built from a validated policy: wiring of the concrete
//! CDS client, stores and notifiers into rotation jobs, and the human-readable output of
//! `--run-now`, `plan` and `status`. `main.rs` parses arguments and calls in here.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::clock::{Clock, SystemClock};
use crate::connect::http::{CredentialSource, HttpConnect, HttpConnectConfig, RetryPolicy};
use crate::connect::{ConnectApi, ConnectError};
use crate::domain::{ClientRef, Current, StoreRecord};
use crate::notify::{Notifier, OnlyKinds};
use crate::pickup::Pickup;
use crate::policy::{Policy, SecretSource};
use crate::rotation::{ClientJob, PassOptions, PassReport, PickupWaiting, Reconciler, decide};
use crate::stop::Stop;
use crate::store::SecretStore;
use crate::store::registry::Wiring;
use crate::text::escape_control;
use crate::writes::Writes;

/// Exit code: every client is fine.
pub const EXIT_OK: u8 = 0;
/// Exit code: at least one client failed.
pub const EXIT_CLIENT_FAILED: u8 = 1;
/// Exit code: bad usage or a bad policy.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: `--run-now --wait` ended with old secrets still waiting for pickup.
pub const EXIT_PICKUP_PENDING: u8 = 3;
/// Exit code: `--revoke-old` rotated, but secrets it may not delete still get tokens.
pub const EXIT_LEFT_VALID: u8 = 4;

/// How many follow-up passes `--run-now` runs over a client whose follow-up is due at
/// once (grace 0s, an ack already written), so that one run does a whole rotation.
const RUN_NOW_FOLLOW_UPS: usize = 3;

/// How often `--run-now --wait` says what it is waiting for, at most.
const WAIT_PROGRESS: std::time::Duration = std::time::Duration::from_secs(30);

/// The pieces a policy wires together.
pub struct Wired {
    /// Runs passes.
    pub reconciler: Arc<Reconciler>,
    /// One job per selected client, in policy order.
    pub jobs: Vec<Arc<ClientJob>>,
    /// How many clients at once.
    pub max_concurrency: usize,
}

/// The policy's stores by name, built once and shared by the CDS client (a credential in
/// a store) and the jobs.
pub type Stores = BTreeMap<String, Arc<dyn SecretStore>>;

/// Builds the CDS client from the policy's `connect:` section with its own stores; its
/// waits end on `stop`. [`connect_with`] shares the stores the jobs use.
pub fn connect_from(policy: &Policy, stop: &Stop) -> Result<Arc<dyn ConnectApi>, ConnectError> {
    let stores = build_stores(policy).map_err(ConnectError::Credential)?;
    connect_with(policy, &stores, stop)
}

/// Builds the CDS client from the policy's `connect:` section, reading a credential held
/// in a store through `stores`; its waits end on `stop`.
pub fn connect_with(
    policy: &Policy,
    stores: &Stores,
    stop: &Stop,
) -> Result<Arc<dyn ConnectApi>, ConnectError> {
    let c = &policy.connect;
    let credential = match &c.secret {
        SecretSource::File(path) => CredentialSource::File(path.clone()),
        SecretSource::Env(name) => CredentialSource::Env(name.clone()),
        SecretSource::Store { store, secret } => {
            let Some(s) = stores.get(store) else {
                return Err(ConnectError::Credential(format!(
                    "connect.credentials.client_secret_store: store {store} is not declared"
                )));
            };
            CredentialSource::Store(s.clone(), secret.clone())
        }
    };
    let http = HttpConnect::new(HttpConnectConfig {
        base_url: c.url.clone(),
        client_id: c.client_id.clone(),
        credential,
        request_timeout: c.request_timeout,
        retry: RetryPolicy::default(),
        stop: stop.clone(),
    })?;
    Ok(Arc::new(http))
}

/// Builds every store the policy declares.
pub fn build_stores(policy: &Policy) -> Result<Stores, String> {
    let mut stores = Stores::new();
    for (name, spec) in &policy.stores {
        let wiring = Wiring {
            request_timeout: policy.connect.request_timeout,
            tenant_id: &policy.connect.tenant_id,
            publishers: policy
                .clients
                .iter()
                .filter(|c| &c.store == name)
                .map(|c| (c.secret.as_str(), c.client_id.as_str()))
                .collect(),
        };
        stores.insert(name.clone(), spec.build(name, &wiring)?);
    }
    Ok(stores)
}

/// Wires the clients named in `only` (all when empty) into jobs, on the system clock;
/// passes stop at the next step boundary when `stop` is triggered.
pub fn wire(
    policy: &Policy,
    connect: Arc<dyn ConnectApi>,
    only: &[String],
    stop: Stop,
) -> Result<Wired, String> {
    wire_with_clock(policy, connect, only, Arc::new(SystemClock), stop)
}

/// Like [`wire`], reading the time from `clock` (tests move it by hand).
pub fn wire_with_clock(
    policy: &Policy,
    connect: Arc<dyn ConnectApi>,
    only: &[String],
    clock: Arc<dyn Clock>,
    stop: Stop,
) -> Result<Wired, String> {
    let stores = build_stores(policy)?;
    wire_with_stores(policy, connect, &stores, only, clock, stop)
}

/// Like [`wire_with_clock`], with stores already built (shared with [`connect_with`]).
/// No coordination and no audit log: the processes that write use [`wire_writing`].
pub fn wire_with_stores(
    policy: &Policy,
    connect: Arc<dyn ConnectApi>,
    stores: &Stores,
    only: &[String],
    clock: Arc<dyn Clock>,
    stop: Stop,
) -> Result<Wired, String> {
    wire_writing(
        policy,
        connect,
        stores,
        only,
        clock,
        stop,
        Writes::unfenced(),
    )
}

/// Like [`wire_with_stores`], every write going through `writes` (see [`writes_for`]).
pub fn wire_writing(
    policy: &Policy,
    connect: Arc<dyn ConnectApi>,
    stores: &Stores,
    only: &[String],
    clock: Arc<dyn Clock>,
    stop: Stop,
    writes: Writes,
) -> Result<Wired, String> {
    for name in only {
        if policy.client(name).is_none() {
            let names: Vec<&str> = policy.clients.iter().map(|c| c.name.as_str()).collect();
            return Err(format!(
                "--client {name}: no such client in {} (clients: {})",
                policy.path.display(),
                names.join(", ")
            ));
        }
    }
    let sender = crate::notify::http::HttpSender::new();
    let mut notifiers: BTreeMap<&str, Arc<dyn Notifier>> = BTreeMap::new();
    for (name, spec) in &policy.notifiers {
        notifiers.insert(name, crate::notify::from_spec(name, spec, &sender)?);
    }
    let mut jobs = Vec::new();
    for c in &policy.clients {
        if !only.is_empty() && !only.contains(&c.name) {
            continue;
        }
        let store = stores
            .get(c.store.as_str())
            .cloned()
            .ok_or_else(|| format!("client {}: store {} is not declared", c.name, c.store))?;
        let pickup = crate::pickup::from_spec(
            &c.pickup,
            crate::pickup::ClientInfo {
                name: c.name.clone(),
                store_location: store.location(&c.secret),
                store: store.clone(),
                store_key: c.secret.clone(),
            },
        );
        jobs.push(Arc::new(ClientJob {
            name: c.name.clone(),
            client: ClientRef {
                tenant_id: policy.connect.tenant_id.clone(),
                client_id: c.client_id.clone(),
                kind: c.kind,
            },
            store,
            store_key: c.secret.clone(),
            notifiers: c
                .notify
                .iter()
                .filter_map(|n| notifiers.get(n.as_str()).cloned())
                .map(|n| match &c.notify_on {
                    Some(kinds) => Arc::new(OnlyKinds::new(n, kinds.clone())) as Arc<dyn Notifier>,
                    None => n,
                })
                .collect(),
            pickup,
            timing: c.timing.clone(),
            retire_unmanaged: c.retire_unmanaged,
        }));
    }
    let reconciler = Reconciler::new(
        connect,
        clock,
        policy.connect.client_id.clone(),
        policy.lock_dir.clone(),
        stop,
        writes,
    );
    Ok(Wired {
        reconciler: Arc::new(reconciler),
        jobs,
        max_concurrency: policy.connect.max_concurrency,
    })
}

/// Runs one pass over each of `jobs`, then follow-up passes over those whose pass
/// changed something and asked to be looked at again already (a rotation with grace 0s
/// whose pickup is confirmed retires the old secret in the same run). Bounded.
async fn pass_and_follow_ups(
    wired: &Wired,
    jobs: &[Arc<ClientJob>],
    options: PassOptions,
) -> Vec<PassReport> {
    let mut reports = wired
        .reconciler
        .run_all(jobs, wired.max_concurrency, options)
        .await;
    let mut changed: Vec<bool> = reports.iter().map(PassReport::changed_anything).collect();
    for _ in 0..RUN_NOW_FOLLOW_UPS {
        let now = wired.reconciler.now();
        let due: Vec<usize> = (0..reports.len())
            .filter(|&i| {
                let r = &reports[i];
                changed[i]
                    && r.error.is_none()
                    && r.stopped.is_none()
                    && r.next_check.is_some_and(|t| t <= now)
                    && may_retire(&jobs[i], r)
            })
            .collect();
        if due.is_empty() {
            break;
        }
        let again: Vec<Arc<ClientJob>> = due.iter().map(|&i| Arc::clone(&jobs[i])).collect();
        // Never forced again (nor an emergency again): the follow-up only finishes what
        // the first pass started.
        let follow = PassOptions {
            force: false,
            revoke_old: false,
            ..options
        };
        let later = wired
            .reconciler
            .run_all(&again, wired.max_concurrency, follow)
            .await;
        for (&i, r) in due.iter().zip(later) {
            changed[i] = r.changed_anything();
            reports[i].absorb(r);
        }
    }
    // The passes handed their events to the outbox: they are delivered (or have failed)
    // before the run reports and exits.
    crate::notify::outbox().flush().await;
    reports
}

/// Whether the pass left secrets that a later pass may retire: observed, not deleted,
/// not the one the store now holds, and managed (or `retire_unmanaged`).
fn may_retire(job: &ClientJob, r: &PassReport) -> bool {
    // The secret the store holds after the pass.
    let current = match (&r.rotated, &r.record) {
        (Some(rot), _) => Some(rot.secret_id),
        (None, rec) => rec.as_ref().map(|rec| rec.secret_id),
    };
    r.secrets.iter().any(|s| {
        current != Some(s.id)
            && !r.deleted.iter().any(|(id, _)| *id == s.id)
            && (job.retire_unmanaged
                || crate::rotation::marker::Marker::parse(s.description.as_deref()).is_some())
    })
}

/// Runs one pass over the wired clients and prints a line per client.
pub async fn run_once(wired: &Wired, options: PassOptions, out: &mut dyn Write) -> u8 {
    let reports = pass_and_follow_ups(wired, &wired.jobs, options).await;
    let mut code = EXIT_OK;
    for r in &reports {
        if r.error.is_some() {
            code = EXIT_CLIENT_FAILED;
        }
        let _ = writeln!(out, "{}", summary(r));
        if let Some(line) = left_valid_line(r) {
            let _ = writeln!(out, "{line}");
            if code == EXIT_OK {
                code = EXIT_LEFT_VALID;
            }
        }
    }
    code
}

/// After `--revoke-old`, what still gets tokens and how to revoke it, on its own line.
pub fn left_valid_line(r: &PassReport) -> Option<String> {
    if r.left_valid.is_empty() {
        return None;
    }
    let secrets: Vec<String> = r
        .left_valid
        .iter()
        .map(|s| {
            let exp = s.expires_at().map_or_else(
                || "never expires".to_owned(),
                |e| format!("expires {}", ts(e)),
            );
            let desc = s
                .description
                .as_deref()
                .map(|d| format!(", \"{}\"", crate::text::untrusted(d)))
                .unwrap_or_default();
            format!("secret {} ({exp}{desc})", s.id)
        })
        .collect();
    Some(escape_control(&format!(
        "{}: NOT REVOKED, STILL VALID: {}; {}",
        r.client,
        secrets.join(", "),
        crate::rotation::revoke_advice(&r.client)
    )))
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// One line saying what a pass did.
pub fn summary(r: &PassReport) -> String {
    let mut parts = Vec::new();
    for (id, why) in &r.deleted {
        parts.push(format!("deleted secret {id} ({why})"));
    }
    if let Some(rot) = &r.rotated {
        parts.push(format!(
            "rotated: new secret {} (fingerprint {}, expires {}) published to {}",
            rot.secret_id,
            rot.fingerprint,
            ts(rot.expiration),
            rot.location
        ));
    }
    if let Some(e) = &r.error {
        parts.push(format!("FAILED: {e}"));
    }
    if let Some(why) = &r.stopped {
        parts.push(format!("stopped: {why}"));
    }
    if let Some(w) = &r.pickup {
        let kept: Vec<String> = r
            .plan
            .iter()
            .flat_map(|p| p.retire.iter().map(ToString::to_string))
            .collect();
        parts.push(format!("old secret(s) {} kept: {w}", kept.join(", ")));
    }
    if parts.is_empty() {
        let current = r
            .record
            .as_ref()
            .map(|rec| format!("current secret {}", rec.secret_id))
            .unwrap_or_else(|| "no current secret".to_owned());
        parts.push(format!("up to date ({current})"));
    }
    // Error text can quote CDS or a store: no control character reaches a terminal.
    escape_control(&format!("{}: {}", r.client, parts.join("; ")))
}

/// What a dry-run pass would do, one line per client.
pub fn plan_line(r: &PassReport) -> String {
    let Some(plan) = &r.plan else {
        return match &r.error {
            Some(e) => escape_control(&format!("{}: cannot plan: {e}", r.client)),
            None => format!("{}: cannot plan", r.client),
        };
    };
    let mut steps = Vec::new();
    for (id, why) in &plan.clean_up {
        steps.push(format!("delete secret {id} ({why})"));
    }
    for id in &plan.retire {
        match &r.pickup {
            Some(w) => steps.push(format!("keep secret {id} (superseded, grace over; {w})")),
            None => steps.push(format!("retire secret {id} (superseded, grace over)")),
        }
    }
    if r.record.is_none() && (r.unrecorded || !plan.possibly_in_use.is_empty()) {
        let ids: Vec<String> = plan.possibly_in_use.iter().map(|i| i.to_string()).collect();
        steps.push(format!(
            "WARNING: the store has no record{}; keep managed secret(s) [{}] until grace after the next publish",
            if r.unrecorded { " of the value it holds" } else { "" },
            ids.join(", ")
        ));
    }
    match (&plan.rotate, plan.full) {
        (Some(reason), false) => steps.push(format!("rotate ({reason})")),
        (Some(reason), true) => steps.push(format!(
            "rotate ({reason}) — BLOCKED: the client has no room for another secret"
        )),
        (None, _) => {}
    }
    if steps.is_empty() {
        steps.push("nothing to do".to_owned());
    }
    // The report's: the plan's, or sooner when a pending pickup is asked again.
    let next = r
        .next_check
        .or(plan.next_check)
        .map(|t| format!(" (next check {})", ts(t)))
        .unwrap_or_default();
    escape_control(&format!("{}: {}{next}", r.client, steps.join("; ")))
}

/// Whether old secrets of the client still wait: for the pickup check, or for their
/// grace period to end (`--run-now --wait` waits for both; not for a current secret that
/// does not work, which is not a wait with an end).
fn still_waiting(r: &PassReport) -> bool {
    r.error.is_none()
        && r.stopped.is_none()
        && (r.pickup.is_some()
            || r.plan
                .as_ref()
                .is_some_and(|p| !p.retire_later.0.is_empty() && p.retire_later.1.is_some()))
}

/// `--run-now --wait [DURATION]`: like [`run_once`], then passes over the clients whose
/// old secrets still wait, at their follow-up times (and at once when a watched pickup
/// check sees a change), until none waits. Without `limit` it gives up once every
/// waiting check is past its timeout; with it, after `limit`. Says what it waits for at
/// most every 30 s. Exits [`EXIT_PICKUP_PENDING`] when it gave up still waiting.
pub async fn run_wait(
    wired: &Wired,
    options: PassOptions,
    limit: Option<std::time::Duration>,
    stop: &Stop,
    out: &mut dyn Write,
) -> u8 {
    let started = tokio::time::Instant::now();
    let give_up_at = limit.map(|l| started + l);
    // Watching starts before the first pass, so that no write after it is missed.
    for job in &wired.jobs {
        let _ = job.pickup.watch();
    }
    let mut reports = pass_and_follow_ups(wired, &wired.jobs, options).await;
    let mut failed = false;
    let mut left_valid = false;
    for r in &reports {
        failed |= r.error.is_some();
        let _ = writeln!(out, "{}", summary(r));
        if let Some(line) = left_valid_line(r) {
            let _ = writeln!(out, "{line}");
            left_valid = true;
        }
    }
    // What this run published, per client, until its pickup is confirmed: a rotation
    // whose old secret is kept (unmanaged) or superseded only now leaves nothing
    // waiting in its own pass, yet --wait is for the consumers to take the new one.
    let mut published: Vec<Option<StoreRecord>> = Vec::with_capacity(reports.len());
    for (job, r) in wired.jobs.iter().zip(&reports) {
        published.push(published_now(job, r).await);
    }
    for i in 0..reports.len() {
        settle_published(
            &wired.jobs[i],
            &mut reports[i],
            &mut published[i],
            wired,
            out,
        )
        .await;
    }
    let mut said = tokio::time::Instant::now();
    loop {
        let waiting: Vec<usize> = (0..reports.len())
            .filter(|&i| still_waiting(&reports[i]) || published[i].is_some())
            .collect();
        if waiting.is_empty() || stop.is_set() {
            break;
        }
        let now = wired.reconciler.now();
        let all_overdue = waiting
            .iter()
            .all(|&i| reports[i].pickup.as_ref().is_some_and(|w| w.overdue));
        let timed_out = match give_up_at {
            Some(at) => tokio::time::Instant::now() >= at,
            None => all_overdue,
        };
        if timed_out {
            for &i in &waiting {
                let _ = writeln!(
                    out,
                    "{}: gave up waiting: {}",
                    reports[i].client,
                    waiting_line(&reports[i], published[i].as_ref(), &wired.jobs[i])
                );
            }
            return if failed {
                EXIT_CLIENT_FAILED
            } else {
                EXIT_PICKUP_PENDING
            };
        }
        if said.elapsed() >= WAIT_PROGRESS {
            for &i in &waiting {
                let _ = writeln!(
                    out,
                    "{}: still {}",
                    reports[i].client,
                    waiting_line(&reports[i], published[i].as_ref(), &wired.jobs[i])
                );
            }
            said = tokio::time::Instant::now();
        }
        // Sleep until the earliest follow-up, a watched change, the limit or a stop.
        let next = waiting
            .iter()
            .filter_map(|&i| reports[i].next_check)
            .min()
            .map(|t| (t - now).to_std().unwrap_or_default());
        let mut sleep = next.unwrap_or(WAIT_PROGRESS).min(WAIT_PROGRESS);
        if let Some(at) = give_up_at {
            sleep = sleep.min(at.saturating_duration_since(tokio::time::Instant::now()));
        }
        let watched: Vec<(usize, Arc<tokio::sync::Notify>)> = waiting
            .iter()
            .filter_map(|&i| wired.jobs[i].pickup.watch().map(|w| (i, w)))
            .collect();
        let changed = async {
            if watched.is_empty() {
                std::future::pending::<()>().await;
            }
            futures::future::select_all(watched.iter().map(|(_, w)| Box::pin(w.notified()))).await;
        };
        let woken = tokio::select! {
            () = tokio::time::sleep(sleep) => false,
            () = changed => true,
            () = stop.wait() => break,
        };
        let now = wired.reconciler.now();
        let due: Vec<usize> = waiting
            .into_iter()
            .filter(|&i| {
                reports[i].next_check.is_some_and(|t| t <= now)
                    || (woken && watched.iter().any(|(w, _)| *w == i))
            })
            .collect();
        if due.is_empty() {
            continue;
        }
        let jobs: Vec<Arc<ClientJob>> = due.iter().map(|&i| Arc::clone(&wired.jobs[i])).collect();
        let again = PassOptions {
            force: false,
            revoke_old: false,
            ..options
        };
        let later = pass_and_follow_ups(wired, &jobs, again).await;
        for (&i, r) in due.iter().zip(later) {
            failed |= r.error.is_some();
            if r.changed_anything() || r.error.is_some() {
                let _ = writeln!(out, "{}", summary(&r));
            }
            reports[i] = r;
            settle_published(
                &wired.jobs[i],
                &mut reports[i],
                &mut published[i],
                wired,
                out,
            )
            .await;
        }
    }
    match (failed, left_valid) {
        (true, _) => EXIT_CLIENT_FAILED,
        (false, true) => EXIT_LEFT_VALID,
        (false, false) => EXIT_OK,
    }
}

/// The store's record of the secret `r`'s pass published, if it did and the store
/// still holds it as current.
async fn published_now(job: &ClientJob, r: &PassReport) -> Option<StoreRecord> {
    let rotated = r.rotated.as_ref()?;
    if r.error.is_some() || r.stopped.is_some() {
        return None;
    }
    match job.store.read_current(&job.store_key).await {
        Ok(Current::Published(record)) if record.secret_id == rotated.secret_id => Some(record),
        _ => None,
    }
}

/// For a client whose `published` secret still waits for its pickup, after a pass that
/// left `r`: given up when the pass failed or the store holds another secret; left to
/// the pass while the pass itself waits (for grace or pickup before retiring); else
/// asked here once the grace period is over (until then, a follow-up at its end). A
/// pending check is reported in `r` as the pass reports one.
async fn settle_published(
    job: &ClientJob,
    r: &mut PassReport,
    published: &mut Option<StoreRecord>,
    wired: &Wired,
    out: &mut dyn Write,
) {
    let Some(record) = published.as_ref() else {
        return;
    };
    // The pass that rotated observed the record before it; later ones observe it.
    let current = r
        .rotated
        .as_ref()
        .map(|n| n.secret_id)
        .or(r.record.as_ref().map(|c| c.secret_id))
        .is_none_or(|id| id == record.secret_id);
    if r.error.is_some() || r.stopped.is_some() || !current {
        *published = None;
        return;
    }
    if still_waiting(r) {
        return;
    }
    let now = wired.reconciler.now();
    let grace_end = record.published_at.checked_add_signed(job.timing.grace);
    if let Some(end) = grace_end.filter(|end| *end > now) {
        r.next_check = Some(r.next_check.map_or(end, |n| n.min(end)));
        return;
    }
    let why = match job.pickup.check(record).await {
        Pickup::Confirmed => {
            let _ = writeln!(
                out,
                "{}: pickup of secret {} (fingerprint {}) confirmed",
                r.client, record.secret_id, record.fingerprint
            );
            *published = None;
            return;
        }
        Pickup::Pending(why) => why,
    };
    let wait = decide::pickup_wait(
        record,
        job.timing.grace,
        job.pickup.timeout(),
        job.pickup.interval(),
        now,
    );
    if let Some(again) = wait.next_check {
        r.next_check = Some(r.next_check.map_or(again, |n| n.min(again)));
    }
    r.pickup = Some(PickupWaiting {
        reason: why,
        deadline: wait.deadline,
        overdue: wait.overdue,
    });
}

/// What a client's old secrets (or the secret this run `published`) wait for, in one
/// line.
fn waiting_line(r: &PassReport, published: Option<&StoreRecord>, job: &ClientJob) -> String {
    let published_grace = published.and_then(|p| {
        let end = p.published_at.checked_add_signed(job.timing.grace)?;
        Some((p.secret_id, end))
    });
    let line = match (&r.pickup, r.plan.as_ref().and_then(|p| p.retire_later.1)) {
        (Some(w), _) => w.to_string(),
        (None, Some(end)) => format!("waiting for the grace period to end at {}", ts(end)),
        (None, None) => match published_grace {
            Some((id, end)) => format!(
                "waiting for the grace period of secret {id} to end at {}, then for its pickup",
                ts(end)
            ),
            None => "waiting".to_owned(),
        },
    };
    escape_control(&line)
}

/// The longest one pass over a client of `policy` can take, the hooks it may wait for
/// included (see [`crate::daemon::pass_limit`]): a batch running longer than this per
/// round is stuck. It only feeds `/healthz`.
pub fn pass_limit(policy: &Policy) -> chrono::Duration {
    let pickup = policy
        .clients
        .iter()
        .map(|c| c.pickup.check_wait())
        .max()
        .unwrap_or_default();
    let notifier = policy
        .notifiers
        .values()
        .map(crate::policy::NotifierSpec::timeout)
        .max()
        .unwrap_or_default();
    crate::daemon::pass_limit(policy.pass_budget(), pickup, notifier)
}

/// Opens the policy's audit log, if it has one.
pub fn open_audit(policy: &Policy) -> Result<Option<Arc<crate::audit::AuditLog>>, String> {
    match &policy.daemon.audit_log {
        Some(path) => crate::audit::AuditLog::open(path, &policy.connect.client_id)
            .map(|log| Some(Arc::new(log)))
            .map_err(|e| e.to_string()),
        None => Ok(None),
    }
}

/// The write handle of a process that writes for `policy`: `fence` (the coordination
/// lease, if any) before every attempt, the policy's audit log (opened here), and the
/// policy's request timeout as the longest single request.
pub fn writes_for(
    policy: &Policy,
    fence: Option<Arc<dyn crate::coordination::Fence>>,
) -> Result<Writes, String> {
    Ok(Writes::new(
        fence,
        open_audit(policy)?,
        policy.connect.request_timeout,
    ))
}

/// What the daemon runs for `policy`, from its wired pieces.
pub fn loaded(policy: &Policy, wired: Wired) -> crate::daemon::Loaded {
    crate::daemon::Loaded {
        reconciler: wired.reconciler,
        jobs: wired.jobs,
        max_concurrency: wired.max_concurrency,
        pass_limit: pass_limit(policy),
    }
}

/// Loads the policy at `path` again for the daemon (SIGHUP, an edit): validated, every
/// store, notifier and credential source built, the audit log opened — or an error, and
/// the daemon keeps the policy it has. `started` is the policy the daemon started with:
/// a new `daemon.listen` takes effect at the next start; a policy that changes the
/// coordination section (its lease and fence are set up once), `lock_dir` or
/// `daemon.audit_log` is refused until a restart. A pass may be running with the locks
/// of the old directory while an operator's `--run-now` reads the new one, so on such a
/// refusal the daemon also takes, and holds until a reload moves it back or the
/// process ends, every client's lock in the new directory: whoever follows the file on
/// disk waits for this daemon, as with one directory.
/// `fence` is the lease's (set up once, at start), for every reloaded write handle.
pub fn reloader(
    path: std::path::PathBuf,
    stop: Stop,
    started: &Policy,
    fence: Option<Arc<dyn crate::coordination::Fence>>,
) -> crate::daemon::Reloader {
    let listen = started.daemon.listen;
    let coordination = started.coordination.clone();
    let lock_dir = started.lock_dir.clone();
    let audit_log = started.daemon.audit_log.clone();
    let tenant_id = started.connect.tenant_id.clone();
    let mut clients: Vec<String> = started
        .clients
        .iter()
        .map(|c| c.client_id.clone())
        .collect();
    // The locks held in the directory a refused policy moved lock_dir to.
    let mut held: Vec<crate::lock::ClientLock> = Vec::new();
    let mut held_in: Option<std::path::PathBuf> = None;
    Box::new(move || {
        let policy = Policy::load(&path).map_err(|e| e.to_string())?;
        if policy.coordination != coordination {
            return Err(format!(
                "{}: the coordination section changed; it applies only at a start: restart cds-rotator (the running policy stays)",
                path.display()
            ));
        }
        if policy.lock_dir != lock_dir && held_in.as_ref() != Some(&policy.lock_dir) {
            held.clear();
            held_in = Some(policy.lock_dir.clone());
            let mut busy = Vec::new();
            for client_id in &clients {
                match crate::lock::ClientLock::try_acquire_now(
                    &policy.lock_dir,
                    &tenant_id,
                    client_id,
                ) {
                    Ok(lock) => held.push(lock),
                    Err(e) => busy.push(e.to_string()),
                }
            }
            for e in &busy {
                tracing::error!(lock_dir = %policy.lock_dir.display(), error = %e, "cannot hold a client's lock in the new lock_dir");
            }
        }
        if policy.lock_dir != lock_dir {
            return Err(format!(
                "{}: lock_dir changed from {} to {}; it takes effect at the next start: restart cds-rotator when no pass runs (the running policy stays; until then this daemon holds {} of {} client locks in {} too, so a --run-now that reads the new policy waits for it)",
                path.display(),
                lock_dir.display(),
                policy.lock_dir.display(),
                held.len(),
                clients.len(),
                policy.lock_dir.display()
            ));
        }
        held.clear();
        held_in = None;
        if policy.daemon.audit_log != audit_log {
            let shown = |p: &Option<std::path::PathBuf>| {
                p.as_ref()
                    .map_or_else(|| "none".to_owned(), |p| p.display().to_string())
            };
            return Err(format!(
                "{}: daemon.audit_log changed from {} to {}; it takes effect at the next start: restart cds-rotator (the running policy stays)",
                path.display(),
                shown(&audit_log),
                shown(&policy.daemon.audit_log)
            ));
        }
        if policy.daemon.listen != listen {
            tracing::warn!(
                "daemon.listen changed: the health and metrics server keeps its address until cds-rotator restarts"
            );
        }
        let stores = build_stores(&policy)?;
        let connect = connect_with(&policy, &stores, &stop).map_err(|e| e.to_string())?;
        let writes = writes_for(&policy, fence.clone())?;
        let wired = wire_writing(
            &policy,
            connect,
            &stores,
            &[],
            Arc::new(SystemClock),
            stop.clone(),
            writes,
        )?;
        clients = policy.clients.iter().map(|c| c.client_id.clone()).collect();
        Ok(loaded(&policy, wired))
    })
}
