//! The long-running service: a pass over every client at start, then a pass over each
//! client at its cron schedule and at the follow-up time its last pass asked for (a
//! grace period ending, an orphan ripening, a retry after a failure).
//!
//! One timer drives everything: the loop sleeps until the earliest due time (kept by
//! [`scheduler::Scheduler`], read on the reconciler's clock), so an idle daemon wakes up
//! only when there is work. The other wake-up is a pickup check that sees a change
//! itself (a write to the ack file, [`crate::pickup::PickupCheck::watch`]): it runs that
//! client's pass at once, when its old secrets wait for pickup.
//! SIGTERM/SIGINT stop it at the next step boundary of the passes in flight; it then
//! exits cleanly. Under systemd (`Type=notify`) it reports ready after the first pass,
//! the next due client as its status, and pings the watchdog only when systemd asks for
//! one (`WatchdogSec=`).
//! Under `coordination:` only the leader starts passes; a standby waits for the lease
//! (one more wake-up: a change of leadership), and a new leader passes over every client.
//! A reload keeps what the daemon already told (an unmanaged secret expiring, a
//! `pickup_timeout`): the new policy's reconciler does not tell it again.
//! Not here: when each client is due (that is `scheduler`), what a pass does (that is
//! `rotation`), the election (that is `coordination`).

pub mod scheduler;
pub mod server;
pub mod watch;

use std::future::Future;
use std::sync::Arc;

use tokio::sync::mpsc::UnboundedSender;
use tracing::{error, info, warn};

use crate::rotation::{ClientJob, PassOptions, PassReport, Reconciler};
use scheduler::{Pass, PassEnd, Scheduler};

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

/// What the daemon runs: the reconciler and the jobs of one policy.
pub struct Loaded {
    /// Runs passes.
    pub reconciler: Arc<Reconciler>,
    /// One job per client, in policy order.
    pub jobs: Vec<Arc<ClientJob>>,
    /// `connect.max_concurrency` (see `app::Wired::max_concurrency`).
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

/// The daemon's clients, with their watched pickup checks.
struct Clients {
    /// One job per client, in policy order.
    jobs: Vec<Arc<ClientJob>>,
    /// Forwarders of watched pickup checks; they stop when replaced.
    _watchers: AbortOnDrop,
}

impl Clients {
    /// The clients of `jobs`; each watched pickup check sends its client's name to
    /// `wake` when what it reads changes.
    fn new(jobs: Vec<Arc<ClientJob>>, wake: &UnboundedSender<String>) -> Clients {
        let mut watchers = Vec::new();
        for job in &jobs {
            if let Some(changed) = job.pickup.watch() {
                let tx = wake.clone();
                let name = job.name.clone();
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
            jobs,
            _watchers: AbortOnDrop(watchers),
        }
    }

    fn get(&self, name: &str) -> Option<&Arc<ClientJob>> {
        self.jobs.iter().find(|j| j.name == name)
    }

    /// The clients as the scheduler sees them.
    fn timetable(&self) -> Vec<scheduler::Client> {
        self.jobs
            .iter()
            .map(|j| scheduler::Client {
                name: j.name.clone(),
                tenant_id: j.client.tenant_id.clone(),
                client_id: j.client.client_id.clone(),
                schedule: j.timing.schedule.clone(),
                retry_interval: j.timing.retry_interval,
            })
            .collect()
    }
}

/// Gives the counters of every served client and notifier their zero (see
/// [`crate::metrics::Metrics::track`]).
fn track_series(clients: &Clients) {
    let names: Vec<&str> = clients.jobs.iter().map(|j| j.name.as_str()).collect();
    let mut notifiers: Vec<&str> = clients
        .jobs
        .iter()
        .flat_map(|j| j.notifiers.iter().map(|n| n.name()))
        .collect();
    notifiers.sort_unstable();
    notifiers.dedup();
    crate::metrics::get().track(&names, &notifiers);
}

/// The passes of one batch with their reports (`None`: the pass panicked).
type Batch = Vec<(Pass, Option<PassReport>)>;

/// Runs passes until `shutdown` resolves; reloads the policy when asked to.
pub async fn run(
    loaded: Loaded,
    mut hooks: Hooks,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    // The reconciler's write handle (and each reloaded one's) holds this election's fence.
    let mut leadership = hooks.leadership.take();
    let mut reloads = hooks.reloads.take();
    let (wake_tx, mut wake_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let systemd = crate::systemd::Notifier::from_env();
    // No interval, no wakeup: an idle daemon without a watchdog sleeps until its work.
    let mut watchdog = systemd.watchdog_interval().map(tokio::time::interval);
    let mut daemon = Daemon::start(loaded, hooks, systemd, wake_tx, leadership.as_ref()).await;
    let mut running: Option<tokio::task::JoinHandle<Batch>> = None;
    tokio::pin!(shutdown);

    loop {
        let leads = leadership.as_ref().is_none_or(|l| l.is_leader());
        if running.is_none() && daemon.scheduler.has_due() && leads {
            running = Some(daemon.start_batch());
        }
        let wake = daemon.scheduler.next_wake().map(|(at, _)| at);
        if running.is_none()
            && let Some(h) = &daemon.health
        {
            h.sleeping_until(wake);
        }
        // The wait is read on the daemon's clock (the reconciler's), so a test's clock
        // drives it too.
        let wait = wake.map(|at| (at - daemon.reconciler.now()).to_std().unwrap_or_default());
        let sleep = async {
            match wait {
                Some(wait) => tokio::time::sleep(wait).await,
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
            () = watchdog_tick => daemon.systemd.watchdog(),
            () = &mut shutdown => {
                daemon.stop(running.take(), leadership.take()).await;
                return Ok(());
            }
            leader = leadership_changed => daemon.leadership_changed(leader),
            Some(why) = reload_asked => daemon.reload(&why),
            Some(name) = wake_rx.recv() => daemon.pickup_changed(&name),
            result = finished => {
                running = None;
                daemon.batch_finished(result);
            }
            () = sleep => daemon.scheduler.fire(daemon.reconciler.now()),
        }
    }
}

/// What the loop keeps between wake-ups, besides what it waits on.
struct Daemon {
    reconciler: Arc<Reconciler>,
    clients: Clients,
    scheduler: Scheduler,
    max_concurrency: usize,
    pass_limit: chrono::Duration,
    health: Option<Arc<server::Health>>,
    reloader: Option<Reloader>,
    systemd: crate::systemd::Notifier,
    /// Whether systemd was told the daemon is ready.
    ready: bool,
    /// Where watched pickup checks send their client's name.
    wake_tx: UnboundedSender<String>,
    /// The reconciler the running batch runs on (a reload may replace `reconciler`
    /// meanwhile).
    running_on: Option<Arc<Reconciler>>,
}

impl Daemon {
    /// The daemon of `loaded`, with its first pass over every client due; ready at once
    /// when there is no first pass to wait for, or under coordination.
    async fn start(
        loaded: Loaded,
        hooks: Hooks,
        systemd: crate::systemd::Notifier,
        wake_tx: UnboundedSender<String>,
        leadership: Option<&crate::coordination::Leadership>,
    ) -> Daemon {
        let Loaded {
            reconciler,
            jobs,
            max_concurrency,
            pass_limit,
        } = loaded;
        if let Some(l) = leadership
            && let Some(h) = &hooks.health
        {
            h.set_role(if l.is_leader() { "leader" } else { "standby" });
        }
        let clients = Clients::new(jobs, &wake_tx);
        // The start pass runs out of the window: a due rotation waits for the schedule
        // unless waiting is unsafe.
        let scheduler = Scheduler::new(clients.timetable(), reconciler.now());
        track_series(&clients);
        info!(clients = clients.jobs.len(), "daemon started");
        let mut daemon = Daemon {
            reconciler,
            clients,
            scheduler,
            max_concurrency,
            pass_limit,
            health: hooks.health,
            reloader: hooks.reloader,
            systemd,
            ready: false,
            wake_tx,
            running_on: None,
        };
        if !daemon.scheduler.has_due() {
            // No first pass to wait for.
            daemon.systemd.ready(&daemon.status());
            daemon.ready = true;
            if let Some(h) = &daemon.health {
                h.pass_done(Some(daemon.reconciler.check_credential().await));
            }
        }
        if leadership.is_some() && !daemon.ready {
            // Under coordination a standby is ready too: it serves by waiting.
            daemon.systemd.ready(&daemon.status());
            daemon.ready = true;
        }
        daemon
    }

    /// Starts the due passes as one batch.
    fn start_batch(&mut self) -> tokio::task::JoinHandle<Batch> {
        let batch = self.scheduler.start_batch();
        let jobs = batch
            .iter()
            .filter_map(|pass| {
                let options = PassOptions {
                    in_window: pass.in_window,
                    ..PassOptions::default()
                };
                Some((Arc::clone(self.clients.get(&pass.client)?), options))
            })
            .collect();
        if let Some(h) = &self.health {
            let rounds = batch.len().div_ceil(self.max_concurrency.max(1));
            let rounds = i32::try_from(rounds).unwrap_or(i32::MAX);
            h.busy(
                self.pass_limit
                    .checked_mul(rounds)
                    .unwrap_or(chrono::Duration::MAX),
            );
        }
        let reconciler = Arc::clone(&self.reconciler);
        self.running_on = Some(Arc::clone(&reconciler));
        let concurrency = self.max_concurrency;
        tokio::spawn(async move {
            let reports = reconciler.run_each(jobs, concurrency).await;
            batch.into_iter().zip(reports).collect()
        })
    }

    /// The running batch ended: logs its reports and feeds them to the scheduler.
    fn batch_finished(&mut self, result: Result<Batch, tokio::task::JoinError>) {
        // A batch that ran on the reconciler of a policy since reloaded: what it told
        // stays told.
        if let Some(ran_on) = self.running_on.take()
            && !Arc::ptr_eq(&ran_on, &self.reconciler)
        {
            self.reconciler.remember_told_by(&ran_on);
        }
        let now = self.reconciler.now();
        match result {
            Ok(reports) => {
                let mut token = None;
                let mut ends = Vec::with_capacity(reports.len());
                for (pass, report) in reports {
                    let end = match &report {
                        Some(r) => {
                            log_report(r);
                            match token_works(r) {
                                Some(true) => token = Some(true),
                                Some(false) if token.is_none() => token = Some(false),
                                _ => {}
                            }
                            PassEnd::Reported {
                                next_check: r.next_check,
                                failed: r.error.is_some(),
                                pickup_waiting: r.pickup.is_some(),
                            }
                        }
                        // The pass panicked (a bug): look again after a while.
                        None => PassEnd::Panicked,
                    };
                    ends.push((pass, end));
                }
                self.scheduler.batch_done(ends, now);
                if let Some(h) = &self.health {
                    h.pass_done(token);
                }
            }
            Err(e) => {
                self.scheduler.batch_done([], now);
                error!(error = %e, "a batch of passes ended abnormally");
            }
        }
        crate::memory::release_freed();
        let status = self.status();
        if self.ready {
            self.systemd.status(&status);
        } else {
            self.systemd.ready(&status);
            self.ready = true;
        }
    }

    /// A watched pickup check of `name` saw a change.
    fn pickup_changed(&mut self, name: &str) {
        if self.scheduler.pickup_changed(name) {
            info!(client = %name, step = "retire", "the pickup check saw a change; checking now");
        }
    }

    fn leadership_changed(&mut self, leader: bool) {
        if let Some(h) = &self.health {
            h.set_role(if leader { "leader" } else { "standby" });
        }
        self.scheduler.leadership(leader);
    }

    /// Loads the policy again (`why`: what asked); on a refusal the running one stays.
    fn reload(&mut self, why: &str) {
        let Some(reloader) = self.reloader.as_mut() else {
            warn!(reason = %why, "reloading is not set up; keeping the policy");
            return;
        };
        match reloader() {
            Ok(l) => {
                // What the running reconciler already told stays told.
                l.reconciler.remember_told_by(&self.reconciler);
                let clients = Clients::new(l.jobs, &self.wake_tx);
                let changed = self
                    .scheduler
                    .reload(clients.timetable(), l.reconciler.now());
                crate::metrics::get().forget_clients(&changed.removed);
                track_series(&clients);
                crate::metrics::get().policy_reloaded(true);
                if let Some(h) = &self.health {
                    h.reload(None);
                }
                info!(reason = %why, clients = clients.jobs.len(), added = ?changed.added, removed = ?changed.removed, "policy reloaded");
                self.clients = clients;
                self.reconciler = l.reconciler;
                self.max_concurrency = l.max_concurrency;
                self.pass_limit = l.pass_limit;
                if self.ready {
                    self.systemd.status(&self.status());
                }
            }
            Err(e) => {
                crate::metrics::get().policy_reloaded(false);
                if let Some(h) = &self.health {
                    h.reload(Some(e.clone()));
                }
                error!(reason = %why, error = %e, "the changed policy was refused; the previous policy keeps running");
            }
        }
    }

    /// Stops at the next step boundary of the passes in flight, flushes the outbox and
    /// gives up the lease.
    async fn stop(
        &mut self,
        running: Option<tokio::task::JoinHandle<Batch>>,
        leadership: Option<crate::coordination::Leadership>,
    ) {
        self.systemd.stopping();
        info!("stopping: finishing the steps in flight");
        self.reconciler.stop();
        if let Some(handle) = running
            && let Err(e) = handle.await
        {
            error!(error = %e, "a pass ended abnormally while stopping");
        }
        // Events still under way get the stop's grace, then are counted failed.
        crate::notify::outbox().flush().await;
        if let Some(l) = leadership {
            l.release().await;
        }
        info!("stopped");
    }

    /// `next: client NAME at TIME`, the earliest due client (for `systemctl status`).
    fn status(&self) -> String {
        match self.scheduler.next() {
            Some((at, _, name)) => format!(
                "next: client {} at {}",
                name,
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            None => "next: nothing scheduled".to_owned(),
        }
    }
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

    const TENANT: &str = "8c6f1f3e-1d2c-4b5a-9e8f-7a6b5c4d3e2f";
    const ADMIN: &str = "2b1f0e9d-8c7b-4a6f-9e5d-4c3b2a1f0e9d";
    const ADMIN_SECRET: &str = "admin-Seed-Secret-Value-0123456789abcdef";
    const APP: &str = "0b0c1d2e-3f40-4152-6374-8596a7b8c9d0";

    /// How many `expiring_unmanaged` events the command notifier wrote to `events`.
    fn expiring_told(events: &std::path::Path) -> usize {
        std::fs::read_to_string(events)
            .unwrap_or_default()
            .matches("\"expiring_unmanaged\"")
            .count()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reload_does_not_tell_again_what_was_told() {
        use crate::emulator::{Emulator, Seed};
        let seed = format!(
            r#"tenant_id: {TENANT}
region: primary
id_policy: increasing
clients:
  - id: {ADMIN}
    name: admin
    kind: client_credentials
    roles: [tenant_administrator]
    secrets:
      - value: "{ADMIN_SECRET}"
        description: "admin, made by hand"
        expiration: 2099-01-01T00:00:00Z
        expires: true
  - id: {APP}
    name: app
    kind: client_credentials
"#
        );
        let emulator = Emulator::start(([127, 0, 0, 1], 0).into(), Seed::from_yaml(&seed).unwrap())
            .await
            .unwrap();
        // A hand-made secret that expires within rotate_before: told once per process.
        emulator.add_secret(
            TENANT,
            APP,
            "hand-made-expiring-value-0123456789",
            Some("made by hand"),
            Some(chrono::Utc::now() + chrono::Duration::days(5)),
            Some(true),
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("admin-secret"), ADMIN_SECRET).unwrap();
        let events = dir.path().join("events");
        let path = dir.path().join("policy.yaml");
        std::fs::write(
            &path,
            format!(
                r#"connect:
  url: {url}
  tenant_id: {TENANT}
  credentials:
    client_id: {ADMIN}
    client_secret_file: {cred}
  request_timeout: 2s
lock_dir: {locks}
stores:
  local: {{ type: file, dir: {secrets} }}
notifiers:
  seen: {{ type: command, program: /bin/sh, args: ["-c", "cat >> {events}; echo >> {events}"] }}
defaults:
  schedule: "* * * * * *"
  grace: 0s
  verify_timeout: 5s
clients:
  - name: app
    client_id: {APP}
    kind: client_credentials
    store: {{ name: local, secret: app }}
    notify: [seen]
"#,
                url = emulator.url(),
                cred = dir.path().join("admin-secret").display(),
                locks = dir.path().join("locks").display(),
                secrets = dir.path().join("secrets").display(),
                events = events.display(),
            ),
        )
        .unwrap();
        let policy = crate::policy::Policy::load(&path).unwrap();
        let stop = crate::stop::Stop::new();
        let options = crate::app::Options {
            stop: stop.clone(),
            ..crate::app::Options::default()
        };
        let wired = crate::app::wire(&policy, options).unwrap();
        let (reload, reloads) = tokio::sync::mpsc::unbounded_channel();
        let hooks = super::Hooks {
            reloads: Some(reloads),
            reloader: Some(crate::app::reloader(path.clone(), stop, &policy, None)),
            ..super::Hooks::default()
        };
        let (quit, quitting) = tokio::sync::oneshot::channel::<()>();
        let daemon = tokio::spawn(super::run(
            crate::app::loaded(&policy, wired),
            hooks,
            async move {
                let _ = quitting.await;
            },
        ));
        let lock_dir = policy.lock_dir.clone();
        let last_pass = || crate::rotation::last_result::read(&lock_dir, TENANT, APP).map(|r| r.at);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        while expiring_told(&events) == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no expiring_unmanaged told"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let reloaded_at = chrono::Utc::now();
        reload.send("a test".to_owned()).unwrap();
        // Passes every second: wait for two that started after the reload, on its
        // reconciler, and for what they sent to be delivered.
        while last_pass().is_none_or(|at| at < reloaded_at + chrono::Duration::seconds(3)) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no pass after the reload"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let _ = quit.send(());
        daemon.await.unwrap().unwrap();
        assert_eq!(
            expiring_told(&events),
            1,
            "{}",
            std::fs::read_to_string(&events).unwrap()
        );
    }
}
