//! `cds-rotator status`: one row per client, from a pass that observes and decides
//! without acting; `plan` runs the same pass.
//!
//! Not here: the table and the views (`cds_rotator::status`), the pass (`rotation`).

use std::path::Path;

use cds_rotator::app::{self, Options, Wired};
use cds_rotator::policy::Policy;
use cds_rotator::rotation::{PassOptions, PassReport};
use cds_rotator::status::{self, ClientView};

use super::args::{Output, RunFlags};
use super::{CliError, EXIT_CLIENT_FAILED, EXIT_OK};

/// Shows the `clients` of the policy at `config` (all when empty) as the daemon would
/// treat them now, due rotations waiting for their window.
pub async fn run(
    config: &Path,
    flags: &RunFlags,
    clients: Vec<String>,
    output: Output,
) -> Result<u8, CliError> {
    let (policy, _) = super::load(config, false, flags, true)?;
    // One client asked for by name: its recent writes too.
    let one = clients.len() == 1;
    let wired = app::wire(
        &policy,
        Options {
            only: clients,
            ..Options::default()
        },
    )?;
    let (_, views) = observe(&policy, &wired, false, false).await;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&views)?),
        Output::Text => {
            println!("{}", status::table(&views));
            if one {
                for v in views.iter().filter(|v| !v.recent_writes.is_empty()) {
                    println!("\n{}", status::recent_writes_text(v));
                }
            }
        }
    }
    Ok(exit_code(&views))
}

/// A dry-run pass over `wired`'s clients (`force`: a rotation even when not due;
/// `in_window`: as `--run-now` would act now, else as the daemon), and a view of each
/// client with its recent writes from the audit log.
pub async fn observe(
    policy: &Policy,
    wired: &Wired,
    force: bool,
    in_window: bool,
) -> (Vec<PassReport>, Vec<ClientView>) {
    let options = PassOptions {
        force,
        dry_run: true,
        in_window,
        ..PassOptions::default()
    };
    let reports = wired
        .reconciler
        .run_all(&wired.jobs, wired.max_concurrency, options)
        .await;
    let now = chrono::Utc::now();
    let mut views: Vec<ClientView> = wired
        .jobs
        .iter()
        .zip(&reports)
        .map(|(job, r)| status::view(job, r, now))
        .collect();
    if let Some(path) = &policy.daemon.audit_log {
        for v in &mut views {
            match cds_rotator::audit::last_entries(path, &v.client_id, status::RECENT_WRITES) {
                Ok(entries) => v.recent_writes = entries,
                Err(e) => {
                    tracing::warn!(audit_log = %path.display(), error = %e, "cannot read the audit log")
                }
            }
        }
    }
    (reports, views)
}

/// 1 when a client needs attention, else 0.
pub fn exit_code(views: &[ClientView]) -> u8 {
    if status::needs_attention(views) {
        EXIT_CLIENT_FAILED
    } else {
        EXIT_OK
    }
}
