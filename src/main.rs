//! The `cds-rotator` binary: parses arguments, sets up logging and the runtime, and
//! runs the command asked for (one function each, in `cli/`).
#![forbid(unsafe_code)]

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use cds_rotator::logging;
use clap::Parser;

use cli::args::{Cli, Command, LogFormat, RunFlags};
use cli::{CliError, EXIT_CLIENT_FAILED, EXIT_USAGE};

fn main() -> ExitCode {
    // Before anything holds a secret: no core dump (nor ptrace by the same user) can copy
    // this process's memory to disk, even outside systemd's LimitCORE=0.
    if let Err(e) =
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
    {
        eprintln!("cds-rotator: cannot turn core dumps off (prctl PR_SET_DUMPABLE): {e}");
        return ExitCode::from(EXIT_CLIENT_FAILED);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // `run-now` is a flag, not a subcommand: say so, not just "unrecognized".
            if e.kind() == clap::error::ErrorKind::InvalidSubcommand
                && let Some(word) = std::env::args()
                    .skip(1)
                    .find(|a| matches!(a.as_str(), "run-now" | "run_now" | "runnow" | "run"))
            {
                eprintln!(
                    "cds-rotator: `{word}` is not a subcommand; one pass over the due clients is `cds-rotator --run-now` (with --client NAME, --force)"
                );
                return ExitCode::from(EXIT_USAGE);
            }
            e.exit()
        }
    };
    // The demo prints its own account of what happened, and `plan` and `status` their
    // reports on stdout: their logs stay quiet by default (no INFO line per client).
    let default_level = match cli.command {
        Some(Command::Demo { .. } | Command::Plan { .. } | Command::Status { .. }) => "warn",
        _ => "info",
    };
    let format = match cli.log_format {
        LogFormat::Text => logging::Format::Text,
        LogFormat::Json => logging::Format::Json,
    };
    logging::init(format, default_level);
    cds_rotator::memory::limit_arenas();
    cds_rotator::rlimit::raise_nofile();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cds-rotator: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_CLIENT_FAILED);
        }
    };
    let (config, flags, command) = cli.into_parts();
    match runtime.block_on(run(config, flags, command)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            e.report();
            ExitCode::from(e.exit_code())
        }
    }
}

/// The command asked for: a subcommand, else `--run-now`, else the daemon.
async fn run(config: PathBuf, flags: RunFlags, command: Option<Command>) -> Result<u8, CliError> {
    match command {
        Some(Command::Emulator {
            listen,
            seed,
            admin_secret_file,
        }) => cli::emulator::run(listen, seed, admin_secret_file).await,
        Some(Command::Demo { dir, force }) => cli::demo::run(dir, force).await,
        Some(Command::Health) => cli::health::run(&config).await,
        Some(Command::Validate) => cli::validate::run(&config, &flags),
        Some(Command::Check { clients, strict }) => {
            cli::check::run(&config, &flags, clients, strict).await
        }
        Some(Command::Plan {
            clients,
            force,
            output,
        }) => cli::plan::run(&config, &flags, clients, force, output).await,
        Some(Command::Status { clients, output }) => {
            cli::status::run(&config, &flags, clients, output).await
        }
        None if flags.run_now => cli::run_now::run(&config, flags).await,
        None => cli::daemon::run(&config, &flags).await,
    }
}
