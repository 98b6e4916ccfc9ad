//! `cds-rotator plan`: what `--run-now` would do now, one line per client; changes
//! nothing.
//!
//! Not here: the dry-run pass it shares with `status` (`cli::status::observe`).

use std::path::Path;

use cds_rotator::app::{self, Options};
use cds_rotator::rotation::PassReport;
use cds_rotator::text::escape_control;

use super::args::{Output, RunFlags};
use super::{CliError, status, ts};

/// Plans the `clients` of the policy at `config` (all when empty); `force` plans a
/// rotation even when not due.
pub async fn run(
    config: &Path,
    flags: &RunFlags,
    clients: Vec<String>,
    force: bool,
    output: Output,
) -> Result<u8, CliError> {
    let (policy, _) = super::load(config, false, flags, true)?;
    let wired = app::wire(
        &policy,
        Options {
            only: clients,
            ..Options::default()
        },
    )?;
    let (reports, views) = status::observe(&policy, &wired, force, true).await;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&views)?),
        Output::Text => {
            for r in &reports {
                println!("{}", plan_line(r));
            }
        }
    }
    Ok(status::exit_code(&views))
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
    if cds_rotator::rotation::decide::record_missing(r.record.as_ref(), r.unrecorded, Some(plan)) {
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
