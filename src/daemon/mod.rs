//! The long-running service: a pass over every client at start, then a pass over each
//! client at its cron schedule and at the follow-up time its last pass asked for (a
//! grace period ending, an orphan ripening, a retry after a failure).
//!
//! One timer drives everything: the loop sleeps until the earliest due time, so an idle
//! daemon wakes up only when there is work. SIGTERM/SIGINT stop it at the next step
//! boundary of the passes in flight; it then exits cleanly. Under systemd
//! (`Type=notify`) it reports ready after the first pass, the next due client as its
//! status, and pings the watchdog only when systemd asks for one (`WatchdogSec=`).
//! Not here: what a pass does (that is `rotation`).

pub mod server;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use tracing::{error, info, warn};

use crate::rotation::{ClientJob, PassOptions, PassReport, Reconciler};

/// Parses a cron expression with seconds (`sec min hour day month weekday`).
pub fn parse_schedule(expr: &str) -> Result<Cron, String> {
    CronParser::builder()
        .seconds(Seconds::Required)
        .build()
        .parse(expr.trim())
        .map_err(|e| {
            format!("`{expr}` is not a cron expression with seconds (e.g. \"0 0 3 * * *\" for 03:00 daily): {e}")
        })
}

/// The first time `schedule` fires after `after`.
pub fn next_fire(schedule: &Cron, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    schedule.find_next_occurrence(&after, false).ok()
}

/// One client as the daemon schedules it.
struct Slot {
    job: Arc<ClientJob>,
    schedule: Cron,
    /// When the schedule fires next.
    next_fire: Option<DateTime<Utc>>,
    /// When the last pass asked to be looked at again.
    follow_up: Option<DateTime<Utc>>,
    /// Whether the follow-up retries a rotation that failed in its window (and so may
    /// rotate between windows).
    retry_in_window: bool,
}

impl Slot {
    fn due_at(&self) -> Option<DateTime<Utc>> {
        match (self.next_fire, self.follow_up) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Runs passes until `shutdown` resolves.
pub async fn run(
    reconciler: Arc<Reconciler>,
    jobs: Vec<Arc<ClientJob>>,
    max_concurrency: usize,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let now = Utc::now();
    let mut slots = Vec::with_capacity(jobs.len());
    for job in jobs {
        let schedule = parse_schedule(&job.timing.schedule)?;
        slots.push(Slot {
            next_fire: next_fire(&schedule, now),
            job,
            schedule,
            follow_up: None,
            retry_in_window: false,
        });
    }
    info!(clients = slots.len(), "daemon started");
    let systemd = crate::systemd::Notifier::from_env();
    let mut ready = false;
    // No interval, no wakeup: an idle daemon without a watchdog sleeps until its work.
    let mut watchdog = systemd.watchdog_interval().map(tokio::time::interval);
    // Client index → whether its pass runs in its rotation window. The start pass does
    // not: a due rotation waits for the schedule unless waiting is unsafe.
    let mut due: BTreeMap<usize, bool> = (0..slots.len()).map(|i| (i, false)).collect();
    if due.is_empty() {
        // No first pass to wait for.
        systemd.ready(&next_status(&slots));
        ready = true;
    }
    type Batch = Vec<(usize, bool, Option<PassReport>)>;
    let mut running: Option<tokio::task::JoinHandle<Batch>> = None;
    tokio::pin!(shutdown);

    loop {
        if running.is_none() && !due.is_empty() {
            let batch: Vec<(usize, bool)> = std::mem::take(&mut due).into_iter().collect();
            let jobs = batch
                .iter()
                .map(|&(i, in_window)| {
                    let options = PassOptions {
                        in_window,
                        ..PassOptions::default()
                    };
                    (Arc::clone(&slots[i].job), options)
                })
                .collect();
            let reconciler = Arc::clone(&reconciler);
            running = Some(tokio::spawn(async move {
                let reports = reconciler.run_each(jobs, max_concurrency).await;
                batch
                    .into_iter()
                    .zip(reports)
                    .map(|((i, w), r)| (i, w, r))
                    .collect()
            }));
        }
        let wake = slots.iter().filter_map(Slot::due_at).min();
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
                info!("stopped");
                return Ok(());
            }
            result = finished => {
                running = None;
                match result {
                    Ok(reports) => {
                        for (i, in_window, report) in reports {
                            let slot = &mut slots[i];
                            match report {
                                Some(report) => {
                                    log_report(&report);
                                    slot.follow_up = report.next_check;
                                    slot.retry_in_window = in_window && report.error.is_some();
                                }
                                // The pass panicked (a bug): look again after a while.
                                None => {
                                    slot.follow_up = Utc::now()
                                        .checked_add_signed(slot.job.timing.retry_interval);
                                    slot.retry_in_window = in_window;
                                }
                            }
                        }
                    }
                    Err(e) => error!(error = %e, "a batch of passes ended abnormally"),
                }
                crate::memory::release_freed();
                let status = next_status(&slots);
                if ready {
                    systemd.status(&status);
                } else {
                    systemd.ready(&status);
                    ready = true;
                }
            }
            () = sleep => {
                let now = Utc::now();
                for (i, slot) in slots.iter_mut().enumerate() {
                    if slot.next_fire.is_some_and(|t| t <= now) {
                        slot.next_fire = next_fire(&slot.schedule, now);
                        due.insert(i, true);
                    }
                    if slot.follow_up.is_some_and(|t| t <= now) {
                        slot.follow_up = None;
                        *due.entry(i).or_insert(false) |= slot.retry_in_window;
                    }
                }
            }
        }
    }
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

fn log_report(report: &PassReport) {
    match (&report.error, &report.rotated) {
        (Some(e), _) => warn!(client = %report.client, error = %e, "pass failed"),
        (None, Some(r)) => {
            info!(client = %report.client, secret_id = r.secret_id, fingerprint = %r.fingerprint, "pass rotated the secret")
        }
        (None, None) => {
            info!(client = %report.client, deleted = report.deleted.len(), next_check = report.next_check.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)), "pass done")
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn schedules_need_seconds_and_fire_on_time() {
        let cron = parse_schedule("0 0 3 * * *").unwrap();
        let after = Utc.with_ymd_and_hms(2026, 1, 1, 4, 0, 0).unwrap();
        assert_eq!(
            next_fire(&cron, after),
            Some(Utc.with_ymd_and_hms(2026, 1, 2, 3, 0, 0).unwrap())
        );
        assert!(parse_schedule("0 3 * * *").is_err());
        assert!(parse_schedule("every day").is_err());
    }
}
