//! `cds-rotator health`: asks the running daemon's `/healthz` (for container health
//! checks; the image has no HTTP client).
//!
//! Not here: the server that answers (`cds_rotator::daemon::server`).

use std::path::Path;

use cds_rotator::daemon::server;

use super::{CliError, EXIT_CLIENT_FAILED, EXIT_OK, UsageError};

/// Asks where the daemon of the policy at `config` noted that it listens (else its
/// `daemon.listen`): before the policy is loaded, since a mistake in the file (a reload
/// the daemon refused) does not change where it serves. Prints `alive` or why not.
pub async fn run(config: &Path) -> Result<u8, CliError> {
    let listen = server::served_address(config)
        .map_err(CliError::ServedAddress)?
        .ok_or(UsageError::NoListen)?;
    Ok(match server::probe(listen).await {
        Ok(()) => {
            println!("alive");
            EXIT_OK
        }
        Err(why) => {
            println!("not alive: {why}");
            EXIT_CLIENT_FAILED
        }
    })
}
