//! The `log` notifier: writes each event as a `tracing` event at info level.

use async_trait::async_trait;

use super::{Event, Notifier, NotifyError};

/// Writes events to the rotator's own log.
#[derive(Clone, Debug)]
pub struct LogNotifier {
    name: String,
}

impl LogNotifier {
    /// A log notifier named `name` in the policy.
    pub fn new(name: impl Into<String>) -> Self {
        LogNotifier { name: name.into() }
    }
}

#[async_trait]
impl Notifier for LogNotifier {
    fn name(&self) -> &str {
        &self.name
    }

    async fn notify(&self, event: &Event) -> Result<(), NotifyError> {
        tracing::info!(
            notifier = %self.name,
            event = %event.kind,
            client = %event.client,
            client_id = %event.client_id,
            secret_ids = ?event.secret_ids,
            fingerprint = event.fingerprint.as_ref().map(|f| f.as_str()),
            expiration = event
                .expiration
                .map(|e| e.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            store = event.store_location.as_deref(),
            detail = event.detail.as_deref(),
            "notification"
        );
        Ok(())
    }
}
