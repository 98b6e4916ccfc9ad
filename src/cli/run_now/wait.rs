//! `--run-now --wait [DURATION]`: after the run's passes, more passes over the clients
//! whose old secrets (or whose newly published secret) still wait for their grace
//! period or pickup, until none waits, the limit, or a stop.
//!
//! Not here: the pickup checks (`pickup`), when a pass retires (`rotation::decide`).

use std::io::Write;
use std::sync::Arc;

use cds_rotator::app::Wired;
use cds_rotator::domain::{Current, StoreRecord};
use cds_rotator::pickup::Pickup;
use cds_rotator::rotation::{ClientJob, PassOptions, PassReport, PickupWaiting, decide};
use cds_rotator::stop::Stop;
use cds_rotator::text::escape_control;
use tokio::time::Instant;

use super::{left_valid_line, pass_and_follow_ups, summary};
use crate::cli::{EXIT_CLIENT_FAILED, EXIT_LEFT_VALID, EXIT_OK, EXIT_PICKUP_PENDING, ts};

/// How often `--run-now --wait` says what it is waiting for, at most.
const WAIT_PROGRESS: std::time::Duration = std::time::Duration::from_secs(30);

/// `--run-now --wait [DURATION]`: like [`super::run_once`], then passes over the clients whose
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
    let started = Instant::now();
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
    let mut said = Instant::now();
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
            Some(at) => Instant::now() >= at,
            None => all_overdue,
        };
        if timed_out {
            say_waiting(
                out,
                "gave up waiting: ",
                wired,
                &waiting,
                &reports,
                &published,
            );
            return if failed {
                EXIT_CLIENT_FAILED
            } else {
                EXIT_PICKUP_PENDING
            };
        }
        if said.elapsed() >= WAIT_PROGRESS {
            say_waiting(out, "still ", wired, &waiting, &reports, &published);
            said = Instant::now();
        }
        let Some(due) = next_due(wired, &reports, waiting, now, give_up_at, stop).await else {
            break;
        };
        if due.is_empty() {
            continue;
        }
        let again = PassOptions {
            force: false,
            revoke_old: false,
            ..options
        };
        failed |= pass_again(wired, &due, again, &mut reports, &mut published, out).await;
    }
    match (failed, left_valid) {
        (true, _) => EXIT_CLIENT_FAILED,
        (false, true) => EXIT_LEFT_VALID,
        (false, false) => EXIT_OK,
    }
}

/// One line per `waiting` client: `what` (gave up, still) and what it waits for.
fn say_waiting(
    out: &mut dyn Write,
    what: &str,
    wired: &Wired,
    waiting: &[usize],
    reports: &[PassReport],
    published: &[Option<StoreRecord>],
) {
    for &i in waiting {
        let _ = writeln!(
            out,
            "{}: {what}{}",
            reports[i].client,
            waiting_line(&reports[i], published[i].as_ref(), &wired.jobs[i])
        );
    }
}

/// Sleeps until the earliest follow-up of the `waiting` clients (their reports as of
/// `now`), a change a watched pickup check sees, `give_up_at` or at most
/// [`WAIT_PROGRESS`]; then says which of them are due for a pass. `None` on a stop.
async fn next_due(
    wired: &Wired,
    reports: &[PassReport],
    waiting: Vec<usize>,
    now: chrono::DateTime<chrono::Utc>,
    give_up_at: Option<Instant>,
    stop: &Stop,
) -> Option<Vec<usize>> {
    let next = waiting
        .iter()
        .fold(None, |next, &i| {
            decide::earliest(next, reports[i].next_check)
        })
        .map(|t| (t - now).to_std().unwrap_or_default());
    let mut sleep = next.unwrap_or(WAIT_PROGRESS).min(WAIT_PROGRESS);
    if let Some(at) = give_up_at {
        sleep = sleep.min(at.saturating_duration_since(Instant::now()));
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
        () = stop.wait() => return None,
    };
    let now = wired.reconciler.now();
    let due = waiting
        .into_iter()
        .filter(|&i| {
            reports[i].next_check.is_some_and(|t| t <= now)
                || (woken && watched.iter().any(|(w, _)| *w == i))
        })
        .collect();
    Some(due)
}

/// Passes over the `due` clients again, a line for each that changed something or
/// failed; says whether one failed.
async fn pass_again(
    wired: &Wired,
    due: &[usize],
    options: PassOptions,
    reports: &mut [PassReport],
    published: &mut [Option<StoreRecord>],
    out: &mut dyn Write,
) -> bool {
    let jobs: Vec<Arc<ClientJob>> = due.iter().map(|&i| Arc::clone(&wired.jobs[i])).collect();
    let later = pass_and_follow_ups(wired, &jobs, options).await;
    let mut failed = false;
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
    failed
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
        r.next_check = decide::earliest(r.next_check, Some(end));
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
    r.next_check = decide::earliest(r.next_check, wait.next_check);
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
