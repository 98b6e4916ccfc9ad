//! The signals that stop a run (SIGTERM, SIGINT) or reload the daemon's policy
//! (SIGHUP), registered before any work so that a signal at any moment is handled.
//!
//! Not here: what a stop or a reload does (the run's `Stop`, the daemon's reloader).

/// The signals that stop a run, registered once.
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn register() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Resolves at SIGTERM or SIGINT. SIGHUP asks `reload` for a reload (the daemon);
    /// without one (`--run-now`: its terminal went away) it stops too.
    pub async fn next_stop(mut self, reload: Option<tokio::sync::mpsc::UnboundedSender<String>>) {
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
