//! The commands of the binary, one file each: what a command does with the composition
//! root's pieces (`cds_rotator::app::wire`), what it prints, and its exit code. Each
//! command's error is a [`CliError`], which `main` prints as one line with its exit code.
//!
//! A module of the binary, not of the library: it owns the process's side (arguments,
//! stdout, exit codes, signals), which no test drives through the library; tests build
//! their pieces through the same `app::wire` as the commands here.
//!
//! Not here: building the pieces (that is `app`), what a pass does (`rotation`).

pub mod args;
pub mod check;
pub mod daemon;
pub mod demo;
pub mod emulator;
pub mod health;
pub mod plan;
pub mod run_now;
mod signals;
pub mod status;
pub mod validate;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use cds_rotator::app::WireError;
use cds_rotator::emulator::EmulatorError;
use cds_rotator::policy::{Policy, PolicyError};
use cds_rotator::text::untrusted;

use args::RunFlags;

/// Exit code: every client is fine.
pub const EXIT_OK: u8 = 0;
/// Exit code: at least one client failed.
pub const EXIT_CLIENT_FAILED: u8 = 1;
/// Exit code: bad usage or a bad policy.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: `--run-now --wait` ended with old secrets still waiting for pickup.
pub const EXIT_PICKUP_PENDING: u8 = 3;
/// Exit code: `--revoke-old` rotated, but secrets it may not delete still get tokens.
pub const EXIT_LEFT_VALID: u8 = 4;

/// Flags or a policy that do not go with the command asked for.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// `--run-now` with a subcommand.
    #[error("--run-now cannot be combined with a subcommand")]
    RunNowWithSubcommand,
    /// `--revoke-old` without `--run-now` and one `--client`.
    #[error(
        "--revoke-old needs --run-now and exactly one --client NAME: it deletes every other secret of that client at once"
    )]
    RevokeOldNeedsOneClient,
    /// `--revoke-old` at a terminal without `--yes`.
    #[error(
        "--revoke-old deletes every other secret of client `{}` as soon as the new one is published, without waiting for consumers to switch: whatever still uses an old secret stops working. Add --yes to go ahead",
        untrusted(.client)
    )]
    RevokeOldUnconfirmed {
        /// The one `--client`.
        client: String,
    },
    /// `--yes` without `--revoke-old`.
    #[error("--yes only confirms --revoke-old")]
    YesWithoutRevokeOld,
    /// `--wait` without `--run-now`.
    #[error("--wait needs --run-now: `cds-rotator --run-now --wait 10m`")]
    WaitNeedsRunNow,
    /// `--wait` with what is not a duration.
    #[error("--wait {}: expected a duration like 30s, 10m or 2h", untrusted(.text))]
    BadWait {
        /// What was given.
        text: String,
    },
    /// `--force` or `--client` before a subcommand, without `--run-now`.
    #[error(
        "--force and --client before a subcommand need --run-now; give them after it (`cds-rotator plan --force`), or drop them: the daemon and validate take neither"
    )]
    FlagsNeedRunNow,
    /// `health` with a policy that sets no `daemon.listen`.
    #[error("health asks the daemon's /healthz, but the policy sets no daemon.listen")]
    NoListen,
}

/// Why a command ended without its own exit code; [`CliError::report`] says it.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Flags that do not go together.
    #[error(transparent)]
    Usage(#[from] UsageError),
    /// A policy that could not be wired.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// A policy that is not valid (its text names the place).
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// `health` cannot read where the daemon serves.
    #[error("{0}")]
    ServedAddress(String),
    /// `daemon.listen` is taken.
    #[error(
        "daemon.listen {addr}: cannot listen there ({error}); choose a free port or remove daemon.listen"
    )]
    Listen {
        /// The policy's address.
        addr: SocketAddr,
        /// Why binding failed.
        error: std::io::Error,
    },
    /// The emulator did not start.
    #[error(transparent)]
    Emulator(#[from] EmulatorError),
    /// The demo did not run.
    #[error(transparent)]
    Demo(#[from] demo::DemoError),
    /// The demo's temporary directory.
    #[error("creating a temporary directory: {0}")]
    TempDir(std::io::Error),
    /// The signal handlers.
    #[error("cannot listen for signals: {0}")]
    Signals(std::io::Error),
    /// `--run-now` under coordination did not get the lease.
    #[error(
        "did not get the coordination lease within {}s (another cds-rotator leads, or etcd is unreachable); nothing was changed: run again later, or stop the leader",
        .0.as_secs()
    )]
    NoLease(Duration),
    /// The daemon stopped on an error.
    #[error("{0}")]
    Daemon(String),
    /// A report could not be written as JSON.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

impl CliError {
    /// The process's exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_)
            | CliError::Wire(_)
            | CliError::Policy(_)
            | CliError::ServedAddress(_)
            | CliError::Listen { .. } => EXIT_USAGE,
            CliError::Emulator(e) if e.is_usage() => EXIT_USAGE,
            CliError::Demo(e) if e.is_usage() => EXIT_USAGE,
            _ => EXIT_CLIENT_FAILED,
        }
    }

    /// Says the error on stderr, in one line: a policy's own errors stand alone (they
    /// start with the file), the others say they are cds-rotator's.
    pub fn report(&self) {
        match self {
            CliError::Policy(_) | CliError::ServedAddress(_) => eprintln!("{self}"),
            _ => eprintln!("cds-rotator: {self}"),
        }
    }
}

/// Loads the policy at `config` (`offline`: no credential is read, a systemd credential
/// is left to run time), then refuses the `--run-now` flags that do not go with the
/// command (a `subcommand` or not). Returns the policy and the `--wait` limit.
pub fn load(
    config: &Path,
    offline: bool,
    flags: &RunFlags,
    subcommand: bool,
) -> Result<(Policy, Option<Duration>), CliError> {
    let policy = if offline {
        Policy::load_offline(config)
    } else {
        Policy::load(config)
    }?;
    let limit = flags.check(subcommand, std::io::stdin().is_terminal())?;
    Ok((policy, limit))
}

/// A time as the commands print it: RFC 3339 in UTC, to the second.
fn ts(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_and_policy_problems_exit_2_and_failures_1() {
        assert_eq!(CliError::from(UsageError::NoListen).exit_code(), EXIT_USAGE);
        assert_eq!(
            CliError::ServedAddress("p: cannot read the policy".into()).exit_code(),
            EXIT_USAGE
        );
        let dir = demo::DemoError::NotEmpty { dir: "/d".into() };
        assert_eq!(CliError::from(dir).exit_code(), EXIT_USAGE);
        assert_eq!(
            CliError::from(demo::DemoError::NoAdministrator).exit_code(),
            EXIT_CLIENT_FAILED
        );
        assert_eq!(
            CliError::NoLease(Duration::from_secs(30)).exit_code(),
            EXIT_CLIENT_FAILED
        );
        assert_eq!(
            CliError::Daemon("stopped".into()).exit_code(),
            EXIT_CLIENT_FAILED
        );
    }

    #[test]
    fn a_lease_not_taken_says_how_long_it_waited_and_what_to_do() {
        assert_eq!(
            CliError::NoLease(Duration::from_secs(30)).to_string(),
            "did not get the coordination lease within 30s (another cds-rotator leads, or etcd is unreachable); nothing was changed: run again later, or stop the leader"
        );
    }
}
