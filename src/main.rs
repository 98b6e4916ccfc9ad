//! The `cds-rotator` binary: parses arguments, loads the policy, wires, runs.
#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use cds_rotator::app::{self, EXIT_CLIENT_FAILED, EXIT_OK, EXIT_USAGE};
use cds_rotator::policy::{self, Policy};
use cds_rotator::rotation::PassOptions;
use cds_rotator::stop::Stop;
use cds_rotator::{daemon, demo, emulator, logging, status};
use clap::{Parser, Subcommand, ValueEnum};

/// How long `--run-now` waits for the coordination lease before giving up.
const RUN_NOW_LEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

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
struct Cli {
    /// The policy file.
    #[arg(long, global = true, env = "CDS_ROTATOR_CONFIG", default_value = policy::DEFAULT_PATH)]
    config: PathBuf,
    /// Run one pass over every client whose rotation is due, then exit.
    #[arg(long)]
    run_now: bool,
    /// With --run-now: only this client (repeatable).
    #[arg(long = "client", value_name = "NAME")]
    clients: Vec<String>,
    /// With --run-now: rotate even when not due.
    #[arg(long)]
    force: bool,
    /// With --run-now and one --client: an emergency rotation (a leaked secret). Rotates
    /// now, then deletes every other secret of the client the policy allows (managed
    /// ones; unmanaged ones with retire_unmanaged) without waiting for grace or pickup.
    #[arg(long)]
    revoke_old: bool,
    /// Confirms --revoke-old; required when stdin is a terminal.
    #[arg(long)]
    yes: bool,
    /// With --run-now: keep running passes until the old secrets are retired (grace
    /// over and pickup confirmed), at most DURATION (like 10m); without DURATION until
    /// the pickup check's timeout. Exits 3 if it gives up still waiting.
    #[arg(long, value_name = "DURATION", num_args = 0..=1, default_missing_value = "")]
    wait: Option<String>,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
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
    init_logging(cli.log_format, default_level);
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
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("cds-rotator: {e:#}");
            ExitCode::from(EXIT_CLIENT_FAILED)
        }
    }
}

fn init_logging(format: LogFormat, default_level: &str) {
    let format = match format {
        LogFormat::Text => logging::Format::Text,
        LogFormat::Json => logging::Format::Json,
    };
    logging::init(format, default_level);
}

fn usage(msg: &str) -> anyhow::Result<u8> {
    eprintln!("cds-rotator: {msg}");
    Ok(EXIT_USAGE)
}

async fn run(mut cli: Cli) -> anyhow::Result<u8> {
    let mut out = std::io::stdout();
    match &cli.command {
        Some(Command::Emulator {
            listen,
            seed,
            admin_secret_file,
        }) => {
            let options = emulator::RunOptions {
                listen: listen.clone(),
                seed: seed.clone(),
                admin_secret_file: admin_secret_file.clone(),
            };
            return match emulator::run(options, &mut out).await {
                Ok(()) => Ok(EXIT_OK),
                Err(e) if e.is_usage() => usage(&e.to_string()),
                Err(e) => Err(e.into()),
            };
        }
        Some(Command::Demo { dir, force }) => {
            if let Some(d) = dir
                && let Err(e) = demo::may_write_into(d, *force)
            {
                return usage(&e);
            }
            let kept = dir.is_some();
            let tmp;
            let dir = match dir {
                Some(d) => d.clone(),
                None => {
                    tmp = tempdir()?;
                    tmp.path().to_owned()
                }
            };
            return demo::run(&dir, kept, &mut out)
                .await
                .map_err(anyhow::Error::msg);
        }
        _ => {}
    }

    // Before the policy is loaded: it asks where the running daemon serves, which a
    // mistake in the file (a reload the daemon refused) does not change.
    if let Some(Command::Health) = cli.command {
        let listen = match daemon::server::served_address(&cli.config) {
            Ok(Some(listen)) => listen,
            Ok(None) => {
                return usage(
                    "health asks the daemon's /healthz, but the policy sets no daemon.listen",
                );
            }
            Err(e) => {
                eprintln!("{e}");
                return Ok(EXIT_USAGE);
            }
        };
        return Ok(match daemon::server::probe(listen).await {
            Ok(()) => {
                println!("alive");
                EXIT_OK
            }
            Err(why) => {
                println!("not alive: {why}");
                EXIT_CLIENT_FAILED
            }
        });
    }

    // validate reads no credential: a systemd credential is left to run time.
    let offline = matches!(cli.command, Some(Command::Validate));
    let loaded = if offline {
        Policy::load_offline(&cli.config)
    } else {
        Policy::load(&cli.config)
    };
    let policy = match loaded {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return Ok(EXIT_USAGE);
        }
    };
    let daemon_mode = cli.command.is_none() && !cli.run_now;
    if cli.run_now && cli.command.is_some() {
        return usage("--run-now cannot be combined with a subcommand");
    }
    if cli.revoke_old {
        if !cli.run_now || cli.clients.len() != 1 {
            return usage(
                "--revoke-old needs --run-now and exactly one --client NAME: it deletes every other secret of that client at once",
            );
        }
        if !cli.yes && std::io::stdin().is_terminal() {
            return usage(&format!(
                "--revoke-old deletes every other secret of client `{}` as soon as the new one is published, without waiting for consumers to switch: whatever still uses an old secret stops working. Add --yes to go ahead",
                cds_rotator::text::untrusted(&cli.clients[0])
            ));
        }
    } else if cli.yes {
        return usage("--yes only confirms --revoke-old");
    }
    if !cli.run_now && cli.wait.is_some() {
        return usage("--wait needs --run-now: `cds-rotator --run-now --wait 10m`");
    }
    let wait_limit = match cli.wait.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => match policy::duration::parse(text).map(|d| d.to_std()) {
            Ok(Ok(d)) => Some(d),
            _ => {
                return usage(&format!(
                    "--wait {}: expected a duration like 30s, 10m or 2h",
                    cds_rotator::text::untrusted(text)
                ));
            }
        },
    };
    if !cli.run_now && (cli.force || !cli.clients.is_empty()) {
        return usage(
            "--force and --client before a subcommand need --run-now; give them after it (`cds-rotator plan --force`), or drop them: the daemon and validate take neither",
        );
    }
    // The subcommand's own --client / --force.
    match &cli.command {
        Some(Command::Plan { clients, force, .. }) => {
            cli.clients = clients.clone();
            cli.force = *force;
        }
        Some(Command::Status { clients, .. } | Command::Check { clients, .. }) => {
            cli.clients = clients.clone();
        }
        _ => {}
    }
    if let Some(Command::Validate) = cli.command {
        println!(
            "{}: valid ({} clients, {} stores, {} notifiers)",
            cli.config.display(),
            policy.clients.len(),
            policy.stores.len(),
            policy.notifiers.len()
        );
        for note in &policy.resolved_at_run_time {
            println!("{note}");
        }
        return Ok(EXIT_OK);
    }
    // Handlers go in before any work, so that a signal at any moment is handled (the
    // default action would kill the process between a create and its publish).
    let signals = if cli.run_now || daemon_mode {
        match Signals::register() {
            Ok(s) => Some(s),
            Err(e) => anyhow::bail!("cannot listen for signals: {e}"),
        }
    } else {
        None
    };
    let stop = Stop::new();
    // One instance of each store, shared by the jobs and a credential held in a store.
    let stores = match app::build_stores(&policy) {
        Ok(s) => s,
        Err(e) => return usage(&e),
    };
    let connect = match app::connect_with(&policy, &stores, &stop) {
        Ok(c) => c,
        Err(e) => return usage(&e.to_string()),
    };
    // The processes that write (the daemon, `--run-now`) write only through one handle:
    // the coordination lease before every attempt, every write recorded in the audit log.
    // The election is set up here and campaigns once the run needs the lease.
    let writing = cli.run_now || daemon_mode;
    let mut leadership = match &policy.coordination {
        Some(spec) if writing => match cds_rotator::coordination::Leadership::new(
            spec,
            cds_rotator::coordination::identity(),
        ) {
            Ok(l) => Some(l),
            Err(e) => return usage(&e.to_string()),
        },
        _ => None,
    };
    let writes = if writing {
        match app::writes_for(&policy, leadership.as_ref().map(|l| l.fence())) {
            Ok(w) => w,
            Err(e) => return usage(&e),
        }
    } else {
        cds_rotator::writes::Writes::unfenced()
    };
    let wired = match app::wire_writing(
        &policy,
        connect,
        &stores,
        &cli.clients,
        std::sync::Arc::new(cds_rotator::clock::SystemClock),
        stop.clone(),
        writes,
    ) {
        Ok(w) => w,
        Err(e) => return usage(&e),
    };
    if let Some(Command::Check { strict, .. }) = cli.command {
        let connect = match app::connect_with(&policy, &stores, &stop) {
            Ok(c) => c,
            Err(e) => return usage(&e.to_string()),
        };
        let mut findings = cds_rotator::check::run(&policy, &connect, &wired.jobs).await;
        findings.extend(cds_rotator::check::failing_clients(&findings, strict));
        for f in &findings {
            println!("{f}");
        }
        let failed = cds_rotator::check::fails(&findings, strict);
        return Ok(if failed { EXIT_CLIENT_FAILED } else { EXIT_OK });
    }
    let options = PassOptions {
        force: cli.force,
        revoke_old: cli.revoke_old,
        ..PassOptions::default()
    };
    match cli.command {
        Some(Command::Plan { output, .. }) | Some(Command::Status { output, .. }) => {
            // `plan` shows what `--run-now` would do now (a window); `status` what the
            // daemon would, with due rotations waiting for their window.
            let is_plan = matches!(cli.command, Some(Command::Plan { .. }));
            let in_window = is_plan;
            let reports = wired
                .reconciler
                .run_all(
                    &wired.jobs,
                    wired.max_concurrency,
                    PassOptions {
                        dry_run: true,
                        in_window,
                        ..options
                    },
                )
                .await;
            let now = chrono::Utc::now();
            let mut views: Vec<status::ClientView> = wired
                .jobs
                .iter()
                .zip(&reports)
                .map(|(job, r)| status::view(job, r, now))
                .collect();
            if let Some(path) = &policy.daemon.audit_log {
                for v in &mut views {
                    match cds_rotator::audit::last_entries(
                        path,
                        &v.client_id,
                        status::RECENT_WRITES,
                    ) {
                        Ok(entries) => v.recent_writes = entries,
                        Err(e) => {
                            tracing::warn!(audit_log = %path.display(), error = %e, "cannot read the audit log")
                        }
                    }
                }
            }
            match (output, is_plan) {
                (Output::Json, _) => println!("{}", serde_json::to_string_pretty(&views)?),
                (Output::Text, true) => {
                    for r in &reports {
                        println!("{}", app::plan_line(r));
                    }
                }
                (Output::Text, false) => {
                    println!("{}", status::table(&views));
                    // One client asked for by name: its recent writes too.
                    if cli.clients.len() == 1 {
                        for v in views.iter().filter(|v| !v.recent_writes.is_empty()) {
                            println!("\n{}", status::recent_writes_text(v));
                        }
                    }
                }
            }
            Ok(if status::needs_attention(&views) {
                EXIT_CLIENT_FAILED
            } else {
                EXIT_OK
            })
        }
        _ if cli.run_now => {
            // A one-shot stops like the daemon: SIGTERM/SIGINT (a Kubernetes Job, a CI
            // timeout, Ctrl-C) or SIGHUP (its terminal went away) end the run at the next
            // step boundary; an unverified secret is deleted, a verified one published.
            if let Some(signals) = signals {
                let stop = stop.clone();
                tokio::spawn(async move {
                    signals.next_stop(None).await;
                    tracing::info!("stopping: finishing the steps in flight");
                    stop.trigger();
                });
            }
            // Under coordination a one-shot acts only as the leader, so that it never
            // races a daemon; it gives the lease back when done.
            let leadership = match leadership.take() {
                Some(mut l) => {
                    l.campaign();
                    tracing::info!(identity = %l.identity(), "waiting for the coordination lease");
                    if !l.wait_leader(RUN_NOW_LEASE_WAIT, &stop).await {
                        l.release().await;
                        eprintln!(
                            "cds-rotator: did not get the coordination lease within {}s (another cds-rotator leads, or etcd is unreachable); nothing was changed: run again later, or stop the leader",
                            RUN_NOW_LEASE_WAIT.as_secs()
                        );
                        return Ok(EXIT_CLIENT_FAILED);
                    }
                    Some(l)
                }
                None => None,
            };
            let code = if cli.wait.is_some() {
                app::run_wait(&wired, options, wait_limit, &stop, &mut out).await
            } else {
                app::run_once(&wired, options, &mut out).await
            };
            if let Some(l) = leadership {
                l.release().await;
            }
            Ok(code)
        }
        _ => {
            // SIGHUP and an edit of the policy file reload it.
            let (reload_tx, reload_rx) = tokio::sync::mpsc::unbounded_channel();
            let shutdown = {
                let reload_tx = reload_tx.clone();
                async move {
                    if let Some(signals) = signals {
                        signals.next_stop(Some(reload_tx)).await;
                    } else {
                        std::future::pending::<()>().await;
                    }
                }
            };
            daemon::watch::forward_changes(&cli.config, reload_tx);
            let health = daemon::server::Health::new();
            if let Some(addr) = policy.daemon.listen {
                match daemon::server::serve(addr, std::sync::Arc::clone(&health)).await {
                    Ok(bound) => {
                        tracing::info!(listen = %bound, "serving /healthz, /readyz and /metrics");
                        if let Err(e) =
                            daemon::server::publish_listen(&policy.lock_dir, &cli.config, bound)
                        {
                            tracing::warn!(error = %e, "cannot note where the daemon listens; `cds-rotator health` asks the policy's daemon.listen");
                        }
                    }
                    Err(e) => {
                        return usage(&format!(
                            "daemon.listen {addr}: cannot listen there ({e}); choose a free port or remove daemon.listen"
                        ));
                    }
                }
            }
            if let Some(l) = &mut leadership {
                l.campaign();
                tracing::info!(identity = %l.identity(), "campaigning for the coordination lease");
            }
            let fence = leadership.as_ref().map(|l| l.fence());
            let hooks = daemon::Hooks {
                leadership,
                health: Some(health),
                reloads: Some(reload_rx),
                reloader: Some(app::reloader(
                    cli.config.clone(),
                    stop.clone(),
                    &policy,
                    fence,
                )),
            };
            let loaded = app::loaded(&policy, wired);
            let lock_dir = policy.lock_dir.clone();
            // The jobs hold what they need: the parsed document is not kept at rest.
            drop(policy);
            let ran = daemon::run(loaded, hooks, shutdown).await;
            daemon::server::unpublish_listen(&lock_dir, &cli.config);
            ran.map_err(anyhow::Error::msg)?;
            Ok(EXIT_OK)
        }
    }
}

fn tempdir() -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("cds-rotator-demo-")
        .tempdir()
        .context("creating a temporary directory")
}

/// The signals that stop a run, registered once.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn register() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Resolves at SIGTERM or SIGINT. SIGHUP asks `reload` for a reload (the daemon);
    /// without one (`--run-now`: its terminal went away) it stops too.
    async fn next_stop(mut self, reload: Option<tokio::sync::mpsc::UnboundedSender<String>>) {
        loop {
            tokio::select! {
                _ = self.term.recv() => return,
                _ = self.int.recv() => return,
                _ = self.hup.recv() => match &reload {
                    Some(tx) => {
                        tracing::info!("SIGHUP: reloading the policy");
                        let _ = tx.send("SIGHUP".to_owned());
                    }
                    None => return,
                },
            }
        }
    }
}
