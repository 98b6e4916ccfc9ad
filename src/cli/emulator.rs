//! `cds-rotator emulator`: runs the built-in CDS emulator until stopped.
//!
//! Not here: the emulator itself (`cds_rotator::emulator`).

use std::path::PathBuf;

use cds_rotator::emulator;

use super::{CliError, EXIT_OK};

/// Serves at `listen` the tenant of `seed` (the demo seed if none), the administrator's
/// secret written to `admin_secret_file`.
pub async fn run(
    listen: String,
    seed: Option<PathBuf>,
    admin_secret_file: Option<PathBuf>,
) -> Result<u8, CliError> {
    let options = emulator::RunOptions {
        listen,
        seed,
        admin_secret_file,
    };
    emulator::run(options, &mut std::io::stdout()).await?;
    Ok(EXIT_OK)
}
