//! The command line: every flag, subcommand, default and help text of `cds-rotator`
//! (clap derives parsing, `--help` and `--version` from them), and the rule for which
//! of the `--run-now` flags go together.
//!
//! Not here: what a command does (its own file in `cli/`).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use super::UsageError;

/// The version and the git commit the binary was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("CDS_ROTATOR_COMMIT"),
    ")"
);

/// Rotates the client secrets of AVEVA CONNECT data services clients into secret stores.
///
/// Without a subcommand it runs as a daemon: a pass at start, then each client on its
/// schedule. Exit codes: 0 all good, 1 at least one client failed, 2 usage or policy error,
/// 3 `--run-now --wait` gave up with old secrets still waiting for pickup, 4 `--revoke-old`
/// left secrets it may not delete valid.
#[derive(Debug, Parser)]
#[command(name = "cds-rotator", version = VERSION)]
pub struct Cli {
    /// The policy file.
    #[arg(long, global = true, env = "CDS_ROTATOR_CONFIG", default_value = cds_rotator::policy::DEFAULT_PATH)]
    pub config: PathBuf,
    /// Run one pass over every client whose rotation is due, then exit.
    #[arg(long)]
    pub run_now: bool,
    /// With --run-now: only this client (repeatable).
    #[arg(long = "client", value_name = "NAME")]
    pub clients: Vec<String>,
    /// With --run-now: rotate even when not due.
    #[arg(long)]
    pub force: bool,
    /// With --run-now and one --client: an emergency rotation (a leaked secret). Rotates
    /// now, then deletes every other secret of the client the policy allows (managed
    /// ones; unmanaged ones with retire_unmanaged) without waiting for grace or pickup.
    #[arg(long)]
    pub revoke_old: bool,
    /// Confirms --revoke-old; required when stdin is a terminal.
    #[arg(long)]
    pub yes: bool,
    /// With --run-now: keep running passes until the old secrets are retired (grace
    /// over and pickup confirmed), at most DURATION (like 10m); without DURATION until
    /// the pickup check's timeout. Exits 3 if it gives up still waiting.
    #[arg(long, value_name = "DURATION", num_args = 0..=1, default_missing_value = "")]
    pub wait: Option<String>,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show what `--run-now` would do now; changes nothing. Exits 1 when a planned step
    /// is blocked (a rotation at 10 secrets) or a client cannot be planned.
    Plan {
        /// Only this client (repeatable).
        #[arg(long = "client", value_name = "NAME")]
        clients: Vec<String>,
        /// Plan a rotation even when not due.
        #[arg(long)]
        force: bool,
        /// `text` for people, `json` for scripts (fields documented in README.md).
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Check the policy and exit (0 valid, 2 invalid). Offline: reads only the policy.
    Validate,
    /// Ask the running daemon's `/healthz` (where it noted at start that it listens,
    /// else at `daemon.listen` in the policy; nothing else in the policy is read): exit 0
    /// when its scheduler loop is alive, 1 when not or unreachable, 2 without
    /// `daemon.listen`. For container health checks (the image has no HTTP client).
    Health,
    /// Preflight: everything a pass needs except writing to CDS (the credential, a
    /// token, every client under its kind, every store writable, every lock usable).
    /// Changes nothing. One line per finding; exits 1 when what every client needs
    /// fails (credential, token, lock directory, audit log), else 0, listing the clients
    /// whose own pass would fail.
    Check {
        /// Only this client (repeatable).
        #[arg(long = "client", value_name = "NAME")]
        clients: Vec<String>,
        /// Exit 1 when anything fails, one client's problem too (for CI).
        #[arg(long)]
        strict: bool,
    },
    /// One row per client: state, secrets, current secret, expiry, next rotation window,
    /// last pass. Exits 1 when a client needs attention (its store secret is missing or
    /// expired in CDS, it is blocked at 10 secrets, its store record is missing, its
    /// pickup is overdue, or it cannot be observed, e.g. its store value was changed by
    /// hand).
    Status {
        /// Only this client (repeatable).
        #[arg(long = "client", value_name = "NAME")]
        clients: Vec<String>,
        /// `text` for people, `json` for scripts (fields documented in README.md).
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Run the built-in CDS emulator (for tests and trials).
    Emulator {
        /// Address to listen on: IP:PORT or HOST:PORT (port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Seed file (YAML) with the tenant and its clients; the demo seed if omitted.
        #[arg(long)]
        seed: Option<PathBuf>,
        /// Write the administrator's client secret to this file (mode 0600).
        #[arg(long, value_name = "PATH")]
        admin_secret_file: Option<PathBuf>,
    },
    /// Rotate a few emulated clients end to end, without a tenant.
    Demo {
        /// Keep the demo's files here (default: a temporary directory, removed after).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Write into --dir even when it holds files (they are overwritten).
        #[arg(long, requires = "dir")]
        force: bool,
    },
}

impl Cli {
    /// The policy file, the `--run-now` flags and the subcommand, apart.
    pub fn into_parts(self) -> (PathBuf, RunFlags, Option<Command>) {
        let flags = RunFlags {
            run_now: self.run_now,
            clients: self.clients,
            force: self.force,
            revoke_old: self.revoke_old,
            yes: self.yes,
            wait: self.wait,
        };
        (self.config, flags, self.command)
    }
}

/// The flags of `--run-now`, given before any subcommand.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunFlags {
    /// `--run-now`.
    pub run_now: bool,
    /// `--client NAME`, in order.
    pub clients: Vec<String>,
    /// `--force`.
    pub force: bool,
    /// `--revoke-old`.
    pub revoke_old: bool,
    /// `--yes`.
    pub yes: bool,
    /// `--wait [DURATION]`: `Some("")` without a duration.
    pub wait: Option<String>,
}

impl RunFlags {
    /// Refuses flags that do not go together, with a `subcommand` or not, in the order
    /// they were always checked; `interactive` is whether stdin is a terminal (where
    /// `--revoke-old` needs `--yes`). Returns the `--wait` limit, if one was given.
    pub fn check(
        &self,
        subcommand: bool,
        interactive: bool,
    ) -> Result<Option<Duration>, UsageError> {
        if self.run_now && subcommand {
            return Err(UsageError::RunNowWithSubcommand);
        }
        if self.revoke_old {
            let [client] = self.clients.as_slice() else {
                return Err(UsageError::RevokeOldNeedsOneClient);
            };
            if !self.run_now {
                return Err(UsageError::RevokeOldNeedsOneClient);
            }
            if !self.yes && interactive {
                return Err(UsageError::RevokeOldUnconfirmed {
                    client: client.clone(),
                });
            }
        } else if self.yes {
            return Err(UsageError::YesWithoutRevokeOld);
        }
        if !self.run_now && self.wait.is_some() {
            return Err(UsageError::WaitNeedsRunNow);
        }
        let limit = match self.wait.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => match cds_rotator::policy::duration::parse(text).map(|d| d.to_std()) {
                Ok(Ok(d)) => Some(d),
                _ => {
                    return Err(UsageError::BadWait {
                        text: text.to_owned(),
                    });
                }
            },
        };
        if !self.run_now && (self.force || !self.clients.is_empty()) {
            return Err(UsageError::FlagsNeedRunNow);
        }
        Ok(limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_now() -> RunFlags {
        RunFlags {
            run_now: true,
            ..RunFlags::default()
        }
    }

    #[test]
    fn run_now_goes_with_no_subcommand() {
        assert_eq!(run_now().check(false, false), Ok(None));
        assert_eq!(
            run_now().check(true, false),
            Err(UsageError::RunNowWithSubcommand)
        );
        assert_eq!(RunFlags::default().check(true, true), Ok(None));
    }

    #[test]
    fn revoke_old_needs_run_now_one_client_and_a_yes_at_a_terminal() {
        let revoke = |clients: &[&str], yes: bool| RunFlags {
            revoke_old: true,
            yes,
            clients: clients.iter().map(|c| c.to_string()).collect(),
            ..run_now()
        };
        assert_eq!(
            revoke(&[], false).check(false, false),
            Err(UsageError::RevokeOldNeedsOneClient)
        );
        assert_eq!(
            revoke(&["a", "b"], true).check(false, false),
            Err(UsageError::RevokeOldNeedsOneClient)
        );
        assert_eq!(
            revoke(&["a"], false).check(false, true),
            Err(UsageError::RevokeOldUnconfirmed {
                client: "a".to_owned()
            })
        );
        assert_eq!(revoke(&["a"], false).check(false, false), Ok(None));
        assert_eq!(revoke(&["a"], true).check(false, true), Ok(None));
        let without_run_now = RunFlags {
            run_now: false,
            ..revoke(&["a"], true)
        };
        assert_eq!(
            without_run_now.check(false, false),
            Err(UsageError::RevokeOldNeedsOneClient)
        );
        let yes = RunFlags {
            yes: true,
            ..run_now()
        };
        assert_eq!(
            yes.check(false, false),
            Err(UsageError::YesWithoutRevokeOld)
        );
    }

    #[test]
    fn wait_takes_a_duration_or_none_and_needs_run_now() {
        let wait = |text: &str| RunFlags {
            wait: Some(text.to_owned()),
            ..run_now()
        };
        assert_eq!(wait("").check(false, false), Ok(None));
        assert_eq!(
            wait(" 10m ").check(false, false),
            Ok(Some(Duration::from_secs(600)))
        );
        assert_eq!(
            wait("soon").check(false, false),
            Err(UsageError::BadWait {
                text: "soon".to_owned()
            })
        );
        let daemon = RunFlags {
            run_now: false,
            ..wait("10m")
        };
        assert_eq!(daemon.check(false, false), Err(UsageError::WaitNeedsRunNow));
    }

    #[test]
    fn client_and_force_before_a_subcommand_need_run_now() {
        let force = RunFlags {
            force: true,
            ..RunFlags::default()
        };
        assert_eq!(force.check(true, false), Err(UsageError::FlagsNeedRunNow));
        let client = RunFlags {
            clients: vec!["a".to_owned()],
            ..RunFlags::default()
        };
        assert_eq!(client.check(false, false), Err(UsageError::FlagsNeedRunNow));
        let run = RunFlags {
            force: true,
            clients: vec!["a".to_owned()],
            ..run_now()
        };
        assert_eq!(run.check(false, false), Ok(None));
    }
}
