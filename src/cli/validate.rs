//! `cds-rotator validate`: checks the policy offline and says what it holds.
//!
//! Not here: the rules a policy must follow (`cds_rotator::policy`).

use std::path::Path;

use super::args::RunFlags;
use super::{CliError, EXIT_OK};

/// Loads the policy at `config` without reading any credential (a systemd credential is
/// left to run time) and prints a line of counts, then what is resolved only at run time.
pub fn run(config: &Path, flags: &RunFlags) -> Result<u8, CliError> {
    let (policy, _) = super::load(config, true, flags, true)?;
    println!(
        "{}: valid ({} clients, {} stores, {} notifiers)",
        config.display(),
        policy.clients.len(),
        policy.stores.len(),
        policy.notifiers.len()
    );
    for note in &policy.resolved_at_run_time {
        println!("{note}");
    }
    Ok(EXIT_OK)
}
