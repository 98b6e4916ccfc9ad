//! `cds-rotator` without a subcommand: the daemon, with its health and metrics server,
//! its reloads (SIGHUP, an edit of the policy file) and its campaign for the lease.
//!
//! Not here: the scheduler loop (`cds_rotator::daemon`), building the pieces (`app`).

use std::path::Path;

use cds_rotator::app::{self, Options, Writing};
use cds_rotator::daemon::{self, server};
use cds_rotator::stop::Stop;

use super::args::RunFlags;
use super::signals::Signals;
use super::{CliError, EXIT_OK};

/// Runs the daemon over the policy at `config` until SIGTERM or SIGINT.
pub async fn run(config: &Path, flags: &RunFlags) -> Result<u8, CliError> {
    let (policy, _) = super::load(config, false, flags, false)?;
    // Handlers go in before any work, so that a signal at any moment is handled (the
    // default action would kill the process between a create and its publish).
    let signals = Signals::register().map_err(CliError::Signals)?;
    let stop = Stop::new();
    // The daemon writes only through one handle: the coordination lease before every
    // attempt, every write recorded in the audit log. The election is set up here and
    // campaigns below.
    let mut wired = app::wire(
        &policy,
        Options {
            stop: stop.clone(),
            writing: Writing::Elect,
            ..Options::default()
        },
    )?;
    // SIGHUP and an edit of the policy file reload it.
    let (reload_tx, reload_rx) = tokio::sync::mpsc::unbounded_channel();
    let shutdown = {
        let reload_tx = reload_tx.clone();
        async move { signals.next_stop(Some(reload_tx)).await }
    };
    daemon::watch::forward_changes(config, reload_tx);
    let health = server::Health::new();
    if let Some(addr) = policy.daemon.listen {
        match server::serve(addr, std::sync::Arc::clone(&health)).await {
            Ok(bound) => {
                tracing::info!(listen = %bound, "serving /healthz, /readyz and /metrics");
                if let Err(e) = server::publish_listen(&policy.lock_dir, config, bound) {
                    tracing::warn!(error = %e, "cannot note where the daemon listens; `cds-rotator health` asks the policy's daemon.listen");
                }
            }
            Err(error) => return Err(CliError::Listen { addr, error }),
        }
    }
    let mut leadership = wired.leadership.take();
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
            config.to_owned(),
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
    server::unpublish_listen(&lock_dir, config);
    ran.map_err(CliError::Daemon)?;
    Ok(EXIT_OK)
}
