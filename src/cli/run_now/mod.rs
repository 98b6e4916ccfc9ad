//! `cds-rotator --run-now`: one pass over the due clients (with `--client`, `--force`),
//! its follow-ups, an emergency rotation (`--revoke-old`), and a wait for the old
//! secrets to be retired (`--wait`, in `wait.rs`); a line per client.
//!
//! Not here: what a pass does (`rotation`), the daemon's schedule (`cli::daemon`).

mod wait;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use cds_rotator::app::{self, Options, Wired, Writing};
use cds_rotator::rotation::{ClientJob, PassOptions, PassReport};
use cds_rotator::stop::Stop;
use cds_rotator::text::escape_control;

use super::args::RunFlags;
use super::signals::Signals;
use super::{CliError, EXIT_CLIENT_FAILED, EXIT_LEFT_VALID, EXIT_OK, ts};

/// How long `--run-now` waits for the coordination lease before giving up.
const RUN_NOW_LEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// How many follow-up passes `--run-now` runs over a client whose follow-up is due at
/// once (grace 0s, an ack already written), so that one run does a whole rotation.
const RUN_NOW_FOLLOW_UPS: usize = 3;

/// Runs the passes `flags` ask for over the policy at `config`.
pub async fn run(config: &Path, flags: RunFlags) -> Result<u8, CliError> {
    let (policy, wait_limit) = super::load(config, false, &flags, false)?;
    // Handlers go in before any work, so that a signal at any moment is handled (the
    // default action would kill the process between a create and its publish).
    let signals = Signals::register().map_err(CliError::Signals)?;
    let stop = Stop::new();
    // It writes only through one handle: the coordination lease before every attempt,
    // every write recorded in the audit log.
    let mut wired = app::wire(
        &policy,
        Options {
            only: flags.clients.clone(),
            stop: stop.clone(),
            writing: Writing::Elect,
            ..Options::default()
        },
    )?;
    let options = PassOptions {
        force: flags.force,
        revoke_old: flags.revoke_old,
        ..PassOptions::default()
    };
    // A one-shot stops like the daemon: SIGTERM/SIGINT (a Kubernetes Job, a CI
    // timeout, Ctrl-C) or SIGHUP (its terminal went away) end the run at the next
    // step boundary; an unverified secret is deleted, a verified one published.
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            signals.next_stop(None).await;
            tracing::info!("stopping: finishing the steps in flight");
            stop.trigger();
        });
    }
    // Under coordination a one-shot acts only as the leader, so that it never
    // races a daemon; it gives the lease back when done.
    let leadership = match wired.leadership.take() {
        Some(mut l) => {
            l.campaign();
            tracing::info!(identity = %l.identity(), "waiting for the coordination lease");
            if !l.wait_leader(RUN_NOW_LEASE_WAIT, &stop).await {
                l.release().await;
                return Err(CliError::NoLease(RUN_NOW_LEASE_WAIT));
            }
            Some(l)
        }
        None => None,
    };
    let mut out = std::io::stdout();
    let code = if flags.wait.is_some() {
        wait::run_wait(&wired, options, wait_limit, &stop, &mut out).await
    } else {
        run_once(&wired, options, &mut out).await
    };
    if let Some(l) = leadership {
        l.release().await;
    }
    Ok(code)
}

/// Runs one pass over each of `jobs`, then follow-up passes over those whose pass
/// changed something and asked to be looked at again already (a rotation with grace 0s
/// whose pickup is confirmed retires the old secret in the same run). Bounded.
pub(super) async fn pass_and_follow_ups(
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
    cds_rotator::notify::outbox().flush().await;
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
            && (job.retire_unmanaged || cds_rotator::rotation::decide::is_managed(s))
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
                .map(|d| format!(", \"{}\"", cds_rotator::text::untrusted(d)))
                .unwrap_or_default();
            format!("secret {} ({exp}{desc})", s.id)
        })
        .collect();
    Some(escape_control(&format!(
        "{}: NOT REVOKED, STILL VALID: {}; {}",
        r.client,
        secrets.join(", "),
        cds_rotator::rotation::revoke_advice(&r.client)
    )))
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
