//! `cds-rotator check`: the preflight, one line per finding.
//!
//! Not here: the checks themselves (`cds_rotator::check`).

use std::path::Path;

use cds_rotator::app::{self, Options};
use cds_rotator::check;

use super::args::RunFlags;
use super::{CliError, EXIT_CLIENT_FAILED, EXIT_OK};

/// Runs every check over the `clients` of the policy at `config` (all when empty);
/// `strict` fails on one client's problem too.
pub async fn run(
    config: &Path,
    flags: &RunFlags,
    clients: Vec<String>,
    strict: bool,
) -> Result<u8, CliError> {
    let (policy, _) = super::load(config, false, flags, true)?;
    let wired = app::wire(
        &policy,
        Options {
            only: clients,
            ..Options::default()
        },
    )?;
    let mut findings = check::run(&policy, &wired.connect, &wired.jobs).await;
    findings.extend(check::failing_clients(&findings, strict));
    for f in &findings {
        println!("{f}");
    }
    let failed = check::fails(&findings, strict);
    Ok(if failed { EXIT_CLIENT_FAILED } else { EXIT_OK })
}
