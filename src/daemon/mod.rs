//! The long-running service: a pass over every client at start, then a pass over each
//! client at its cron schedule and at the follow-up time its last pass asked for (a
//! grace period ending, an orphan ripening, a retry after a failure).
//!
//! One timer drives everything: the loop sleeps until the earliest due time, so an idle
//! daemon wakes up only when there is work. The other wake-up is a pickup check that
//! sees a change itself (a write to the ack file, [`crate::pickup::PickupCheck::watch`]):
//! it runs that client's pass at once, when its old secrets wait for pickup.
//! SIGTERM/SIGINT stop it at the next step boundary of the passes in flight; it then
//! exits cleanly. Under systemd (`Type=notify`) it reports ready after the first pass,
//! the next due client as its status, and pings the watchdog only when systemd asks for
//! one (`WatchdogSec=`).
//! Under `coordination:` only the leader starts passes; a standby waits for the lease
//! (one more wake-up: a change of leadership), and a new leader passes over every client.
//! Not here: what a pass does (that is `rotation`), the election (that is
//! `coordination`).

pub mod server;
pub mod watch;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tracing::{error, info, warn};

use crate::rotation::{ClientJob, PassOptions, PassReport, Reconciler};

/// The health budget of one pass, hooks included: the policy's pass budget
/// ([`crate::policy::Policy::pass_budget`]), plus one run of the longest pickup check (a
/// pass waits for its client's check: a command's run, an HTTP probe's requests), plus
/// the longest notifier timeout: a pass hands its events to the outbox and goes on, but
/// waits for room while the outbox is full, until some send ends (within its notifier's
/// timeout). Validation keeps every notifier timeout within the
/// pass budget, so a notifier at most doubles how long a stuck loop goes unseen.
pub fn pass_limit(
    budget: chrono::Duration,
    pickup_check: std::time::Duration,
    notifier: std::time::Duration,
) -> chrono::Duration {
    let hooks = pickup_check
        .checked_add(notifier)
        .and_then(|d| d.checked_add(crate::notify::TIMEOUT_SLACK))
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .unwrap_or(chrono::Duration::MAX);
    budget.checked_add(&hooks).unwrap_or(chrono::Duration::MAX)
}

/// One client as the daemon schedules it.
struct Slot {
    job: Arc<ClientJob>,
    /// When the schedule fires next.
    next_fire: Option<DateTime<Utc>>,
    /// When the last pass asked to be looked at again.
    follow_up: Option<DateTime<Utc>>,
    /// Whether the follow-up retries a rotation that failed in its window (and so may
    /// rotate between windows).
    retry_in_window: bool,
    /// Whether the last pass left old secrets waiting for the pickup check.
    pickup_pending: bool,
}

impl Slot {
    fn due_at(&self) -> Option<DateTime<Utc>> {
        match (self.next_fire, self.follow_up) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// What the daemon runs: the reconciler and the jobs of one policy.
pub struct Loaded {
    /// Runs passes.
    pub reconciler: Arc<Reconciler>,
    /// One job per client, in policy order.
    pub jobs: Vec<Arc<ClientJob>>,
    /// How many clients at once.
    pub max_concurrency: usize,
    /// The longest one pass can take (its waits are all bounded): how long a batch may
    /// go on before `/healthz` calls the loop stuck, per pass slot.
    pub pass_limit: chrono::Duration,
}

/// A way to load the policy again (SIGHUP, an edit of the file).
pub type Reloader = Box<dyn FnMut() -> Result<Loaded, String> + Send>;

/// What the daemon reports to and listens to besides its clients.
#[derive(Default)]
pub struct Hooks {
    /// Liveness and readiness for `/healthz` and `/readyz`.
    pub health: Option<Arc<server::Health>>,
    /// Asks for a reload; the text says why ("SIGHUP", "the policy file changed").
    pub reloads: Option<tokio::sync::mpsc::UnboundedReceiver<String>>,
    /// Loads the policy again.
    pub reloader: Option<Reloader>,
    /// The election among rotators of one policy (`coordination:`): only the leader
    /// starts passes, and every write waits for the lease's fence (the reconcilers'
    /// write handles are built with [`crate::coordination::Leadership::fence`]).
    pub leadership: Option<crate::coordination::Leadership>,
}

/// The daemon's clients by name, with their watched pickup checks.
struct Clients {
    slots: Vec<Slot>,
    /// Forwarders of watched pickup checks; they stop when replaced.
    _watchers: AbortOnDrop,
}

impl Clients {
    /// Slots for `jobs`, carrying over what the daemon knew about a client that was
    /// already in `old` (same name and CDS client): its follow-up, its retry and pickup
    /// state, and its next scheduled time when the schedule did not change.
    fn new(
        jobs: Vec<Arc<ClientJob>>,
        old: Option<&Clients>,
        wake: &tokio::sync::mpsc::UnboundedSender<String>,
    ) -> Clients {
        let now = Utc::now();
        let mut slots = Vec::with_capacity(jobs.len());
        for job in jobs {
            let schedule = &job.timing.schedule;
            let before = old.and_then(|o| o.get(&job.name)).filter(|s| {
                s.job.client.client_id == job.client.client_id
                    && s.job.client.tenant_id == job.client.tenant_id
            });
            let slot = match before {
                Some(b) => Slot {
                    next_fire: if b.job.timing.schedule == job.timing.schedule {
                        b.next_fire
                    } else {
                        schedule.next_after(now)
                    },
                    follow_up: b.follow_up,
                    retry_in_window: b.retry_in_window,
                    pickup_pending: b.pickup_pending,
                    job,
                },
                None => Slot {
                    next_fire: schedule.next_after(now),
                    job,
                    follow_up: None,
                    retry_in_window: false,
                    pickup_pending: false,
                },
            };
            slots.push(slot);
        }
        // Watched pickup checks send their client's name when what they read changes.
        let mut watchers = Vec::new();
        for slot in &slots {
            if let Some(changed) = slot.job.pickup.watch() {
                let tx = wake.clone();
                let name = slot.job.name.clone();
                watchers.push(tokio::spawn(async move {
                    loop {
                        changed.notified().await;
                        if tx.send(name.clone()).is_err() {
                            return;
                        }
                    }
                }));
            }
        }
        Clients {
            slots,
            _watchers: AbortOnDrop(watchers),
        }
    }

    fn get(&self, name: &str) -> Option<&Slot> {
        self.slots.iter().find(|s| s.job.name == name)
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut Slot> {
        self.slots.iter_mut().find(|s| s.job.name == name)
    }
}

/// Gives the counters of every served client and notifier their zero (see
/// [`crate::metrics::Metrics::track`]).
fn track_series(clients: &Clients) {
    let names: Vec<&str> = clients.slots.iter().map(|s| s.job.name.as_str()).collect();
    let mut notifiers: Vec<&str> = clients
        .slots
        .iter()
        .flat_map(|s| s.job.notifiers.iter().map(|n| n.name()))
        .collect();
    notifiers.sort_unstable();
    notifiers.dedup();
    crate::metrics::get().track(&names, &notifiers);
}

/// Runs passes until `shutdown` resolves; reloads the policy when asked to.
pub async fn run(
    loaded: Loaded,
    mut hooks: Hooks,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let Loaded {
        mut reconciler,
        jobs,
        mut max_concurrency,
        mut pass_limit,
    } = loaded;
    // The reconciler's write handle (and each reloaded one's) holds this election's fence.
    let mut leadership = hooks.leadership.take();
    if let Some(l) = &leadership
        && let Some(h) = &hooks.health
    {
        h.set_role(if l.is_leader() { "leader" } else { "standby" });
    }
    let (wake_tx, mut wake_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut clients = Clients::new(jobs, None, &wake_tx);
    track_series(&clients);
    info!(clients = clients.slots.len(), "daemon started");
    let systemd = crate::systemd::Notifier::from_env();
    let mut ready = false;
    // No interval, no wakeup: an idle daemon without a watchdog sleeps until its work.
    let mut watchdog = systemd.watchdog_interval().map(tokio::time::interval);
    // Client name → whether its pass runs in its rotation window. The start pass does
    // not: a due rotation waits for the schedule unless waiting is unsafe.
    let mut due: BTreeMap<String, bool> = clients
        .slots
        .iter()
        .map(|s| (s.job.name.clone(), false))
        .collect();
    if due.is_empty() {
        // No first pass to wait for.
        systemd.ready(&next_status(&clients.slots));
        ready = true;
        if let Some(h) = &hooks.health {
            h.pass_done(Some(reconciler.check_credential().await));
        }
    }
    if leadership.is_some() && !ready {
        // Under coordination a standby is ready too: it serves by waiting.
        systemd.ready(&next_status(&clients.slots));
        ready = true;
    }
    type Batch = Vec<(String, bool, Option<PassReport>)>;
    let mut running: Option<tokio::task::JoinHandle<Batch>> = None;
    // The clients in the running batch.
    let mut in_batch: Vec<String> = Vec::new();
    let mut reloads = hooks.reloads.take();
    tokio::pin!(shutdown);

    loop {
        let leads = leadership.as_ref().is_none_or(|l| l.is_leader());
        if running.is_none() && !due.is_empty() && leads {
            let batch: Vec<(String, bool)> = std::mem::take(&mut due)
                .into_iter()
                .filter(|(name, _)| clients.get(name).is_some())
                .collect();
            in_batch = batch.iter().map(|(n, _)| n.clone()).collect();
            let jobs = batch
                .iter()
                .filter_map(|(name, in_window)| {
                    let options = PassOptions {
                        in_window: *in_window,
                        ..PassOptions::default()
                    };
                    Some((Arc::clone(&clients.get(name)?.job), options))
                })
                .collect();
            if let Some(h) = &hooks.health {
                let rounds = batch.len().div_ceil(max_concurrency.max(1));
                let rounds = i32::try_from(rounds).unwrap_or(i32::MAX);
                h.busy(
                    pass_limit
                        .checked_mul(rounds)
                        .unwrap_or(chrono::Duration::MAX),
                );
            }
            let reconciler = Arc::clone(&reconciler);
            let concurrency = max_concurrency;
            running = Some(tokio::spawn(async move {
                let reports = reconciler.run_each(jobs, concurrency).await;
                batch
                    .into_iter()
                    .zip(reports)
                    .map(|((n, w), r)| (n, w, r))
                    .collect()
            }));
        }
        let wake = clients.slots.iter().filter_map(Slot::due_at).min();
        if running.is_none()
            && let Some(h) = &hooks.health
        {
            h.sleeping_until(wake);
        }
        let sleep = async {
            match wake {
                Some(at) => {
                    let wait = (at - Utc::now()).to_std().unwrap_or_default();
                    tokio::time::sleep(wait).await;
                }
                None => std::future::pending().await,
            }
        };
        let finished = async {
            match running.as_mut() {
                Some(handle) => handle.await,
                None => std::future::pending().await,
            }
        };
        let watchdog_tick = async {
            match watchdog.as_mut() {
                Some(interval) => {
                    interval.tick().await;
                }
                None => std::future::pending().await,
            }
        };
        let leadership_changed = async {
            match leadership.as_mut() {
                Some(l) => l.changed().await,
                None => std::future::pending().await,
            }
        };
        let reload_asked = async {
            match reloads.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = watchdog_tick => systemd.watchdog(),
            () = &mut shutdown => {
                systemd.stopping();
                info!("stopping: finishing the steps in flight");
                reconciler.stop();
                if let Some(handle) = running.take()
                    && let Err(e) = handle.await
                {
                    error!(error = %e, "a pass ended abnormally while stopping");
                }
                // Events still under way get the stop's grace, then are counted failed.
                crate::notify::outbox().flush().await;
                if let Some(l) = leadership.take() {
                    l.release().await;
                }
                info!("stopped");
                return Ok(());
            }
            leader = leadership_changed => {
                if let Some(h) = &hooks.health {
                    h.set_role(if leader { "leader" } else { "standby" });
                }
                if leader {
                    // A new leader looks at every client, as at start: the old one may
                    // have left any of them half way.
                    for slot in &clients.slots {
                        due.entry(slot.job.name.clone()).or_insert(false);
                    }
                }
            }
            Some(why) = reload_asked => {
                let Some(reloader) = hooks.reloader.as_mut() else {
                    warn!(reason = %why, "reloading is not set up; keeping the policy");
                    continue;
                };
                match reloader().map(|l| (Clients::new(l.jobs.clone(), Some(&clients), &wake_tx), l)) {
                    Ok((new, l)) => {
                        let (added, removed) = diff(&clients, &new);
                        for name in &added {
                            due.entry(name.clone()).or_insert(false);
                        }
                        for name in &removed {
                            due.remove(name);
                        }
                        crate::metrics::get().forget_clients(&removed);
                        track_series(&new);
                        crate::metrics::get().policy_reloaded(true);
                        if let Some(h) = &hooks.health {
                            h.reload(None);
                        }
                        info!(reason = %why, clients = new.slots.len(), added = ?added, removed = ?removed, "policy reloaded");
                        clients = new;
                        reconciler = l.reconciler;
                        max_concurrency = l.max_concurrency;
                        pass_limit = l.pass_limit;
                        if ready {
                            systemd.status(&next_status(&clients.slots));
                        }
                    }
                    Err(e) => {
                        crate::metrics::get().policy_reloaded(false);
                        if let Some(h) = &hooks.health {
                            h.reload(Some(e.clone()));
                        }
                        error!(reason = %why, error = %e, "the changed policy was refused; the previous policy keeps running");
                    }
                }
            }
            Some(name) = wake_rx.recv() => {
                // Only while its old secrets wait for pickup (or its pass is running and
                // may leave them waiting): a write at any other time changes nothing.
                let pending = clients.get(&name).is_some_and(|s| s.pickup_pending);
                if pending || in_batch.contains(&name) {
                    info!(client = %name, step = "retire", "the pickup check saw a change; checking now");
                    due.entry(name).or_insert(false);
                }
            }
            result = finished => {
                running = None;
                in_batch.clear();
                match result {
                    Ok(reports) => {
                        let mut token = None;
                        for (name, in_window, report) in reports {
                            if let Some(r) = &report {
                                log_report(r);
                                match token_works(r) {
                                    Some(true) => token = Some(true),
                                    Some(false) if token.is_none() => token = Some(false),
                                    _ => {}
                                }
                            }
                            // A client the policy no longer has: its pass is done.
                            let Some(slot) = clients.get_mut(&name) else {
                                continue;
                            };
                            match report {
                                Some(report) => {
                                    slot.follow_up = report.next_check;
                                    slot.retry_in_window = in_window && report.error.is_some();
                                    slot.pickup_pending = report.pickup.is_some();
                                }
                                // The pass panicked (a bug): look again after a while.
                                None => {
                                    slot.follow_up = Utc::now()
                                        .checked_add_signed(slot.job.timing.retry_interval);
                                    slot.retry_in_window = in_window;
                                }
                            }
                        }
                        if let Some(h) = &hooks.health {
                            h.pass_done(token);
                        }
                    }
                    Err(e) => error!(error = %e, "a batch of passes ended abnormally"),
                }
                crate::memory::release_freed();
                let status = next_status(&clients.slots);
                if ready {
                    systemd.status(&status);
                } else {
                    systemd.ready(&status);
                    ready = true;
                }
            }
            () = sleep => {
                let now = Utc::now();
                for slot in &mut clients.slots {
                    let name = &slot.job.name;
                    if slot.next_fire.is_some_and(|t| t <= now) {
                        slot.next_fire = slot.job.timing.schedule.next_after(now);
                        due.insert(name.clone(), true);
                    }
                    if slot.follow_up.is_some_and(|t| t <= now) {
                        slot.follow_up = None;
                        *due.entry(name.clone()).or_insert(false) |= slot.retry_in_window;
                    }
                }
            }
        }
    }
}

/// The clients `new` adds and the ones it drops, by name.
fn diff(old: &Clients, new: &Clients) -> (Vec<String>, Vec<String>) {
    let same = |a: &Slot, b: &Slot| {
        a.job.name == b.job.name && a.job.client.client_id == b.job.client.client_id
    };
    let added = new
        .slots
        .iter()
        .filter(|n| !old.slots.iter().any(|o| same(o, n)))
        .map(|n| n.job.name.clone())
        .collect();
    let removed = old
        .slots
        .iter()
        .filter(|o| !new.slots.iter().any(|n| n.job.name == o.job.name))
        .map(|o| o.job.name.clone())
        .collect();
    (added, removed)
}

/// What a pass says about the rotator's own token: it worked (CDS was observed), it was
/// refused, or the pass does not tell.
fn token_works(report: &PassReport) -> Option<bool> {
    if report.plan.is_some() {
        return Some(true);
    }
    let e = report.error.as_ref()?;
    matches!(
        e.source,
        crate::rotation::StepError::Connect(
            crate::connect::ConnectError::OwnCredentialRefused { .. }
                | crate::connect::ConnectError::Credential(_)
                | crate::connect::ConnectError::TokenEndpointNotFound { .. }
        )
    )
    .then_some(false)
}

/// `next: client NAME at TIME`, the earliest due client (for `systemctl status`).
fn next_status(slots: &[Slot]) -> String {
    let next = slots
        .iter()
        .filter_map(|s| Some((s.due_at()?, s)))
        .min_by_key(|(at, _)| *at);
    match next {
        Some((at, slot)) => format!(
            "next: client {} at {}",
            slot.job.name,
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        None => "next: nothing scheduled".to_owned(),
    }
}

/// Stops the watch forwarders when the daemon returns.
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

fn log_report(report: &PassReport) {
    match (&report.error, &report.rotated) {
        (Some(e), _) => warn!(client = %report.client, error = %e, "pass failed"),
        (None, Some(r)) => {
            info!(client = %report.client, secret_id = r.secret_id, fingerprint = %r.fingerprint, "pass rotated the secret")
        }
        (None, None) if report.pickup.is_some() => {
            let waiting = report.pickup.as_ref().map(ToString::to_string);
            info!(client = %report.client, deleted = report.deleted.len(), next_check = report.next_check.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)), "pass done; {}", waiting.unwrap_or_default())
        }
        (None, None) => {
            info!(client = %report.client, deleted = report.deleted.len(), next_check = report.next_check.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)), "pass done")
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_health_budget_counts_the_longest_pickup_check_and_notifier_timeout() {
        let text = r#"connect:
  url: https://uswe.datahub.connect.aveva.com
  tenant_id: 8c6f1f3e-1d2c-4b5a-9e8f-7a6b5c4d3e2f
  credentials:
    client_id: 2b1f0e9d-8c7b-4a6f-9e5d-4c3b2a1f0e9d
    client_secret_file: /etc/cds-rotator/secret
stores:
  local: { type: file, dir: /var/lib/cds-rotator/secrets }
notifiers:
  quick: { type: webhook, url: "https://hooks.example.com/cds", timeout: 5s }
  hook: { type: command, program: /usr/local/bin/on-cds-rotate, timeout: 20m }
clients:
  - name: app
    client_id: 0b0c1d2e-3f40-4152-6374-8596a7b8c9d0
    store: { name: local }
    notify: [quick, hook]
  - name: web
    client_id: 1b0c1d2e-3f40-4152-6374-8596a7b8c9d0
    store: { name: local }
    pickup: { type: command, program: /usr/local/bin/switched, run_timeout: 5m, interval: 1m }
"#;
        let policy = crate::policy::Policy::parse(
            std::path::Path::new("/etc/cds-rotator/policy.yaml"),
            text,
        )
        .unwrap();
        // 40 × 30s + verify_timeout 2m + 10m.
        assert_eq!(policy.pass_budget(), chrono::Duration::minutes(32));
        // Plus web's pickup run (5m), the hook's timeout (20m) and the notifier slack.
        assert_eq!(
            crate::app::pass_limit(&policy),
            chrono::Duration::minutes(57) + chrono::Duration::seconds(2)
        );
    }
}
