//! The `log` notifier: writes each event to the rotator's own log at info level.
//!
//! With `--log-format json` an event is written as one JSON line in the shape of the
//! other log lines, with the event's fields as JSON values (`secret_ids` an array, times
//! RFC 3339), because `tracing` fields can only be numbers and strings.

pub mod spec;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use chrono::SecondsFormat;

use super::{Notifier, NotifyError};
use crate::domain::Event;

static JSON: AtomicBool = AtomicBool::new(false);

/// Says whether logs are JSON lines (`--log-format json`); set once at start.
pub fn use_json(on: bool) {
    JSON.store(on, Ordering::Relaxed);
}

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

/// One JSON log line for an event (no secret value: an [`Event`] holds none).
fn json_line(notifier: &str, event: &Event) -> serde_json::Value {
    let ts = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
    serde_json::json!({
        "timestamp": chrono::Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
        "level": "INFO",
        "fields": {
            "message": "notification",
            "notifier": notifier,
            "event": event.kind,
            "tenant_id": event.tenant_id,
            "client": event.client,
            "client_id": event.client_id,
            "secret_ids": event.secret_ids,
            "fingerprint": event.fingerprint,
            "expiration": event.expiration.map(ts),
            "store": event.store_location,
            "detail": event.detail,
            "reason": event.reason,
            "run_id": event.run_id,
            "at": ts(event.at),
            "summary": event.summary(),
        },
        "target": module_path!(),
    })
}

#[async_trait]
impl Notifier for LogNotifier {
    fn name(&self) -> &str {
        &self.name
    }

    async fn notify(&self, event: &Event) -> Result<(), NotifyError> {
        if JSON.load(Ordering::Relaxed) {
            if tracing::enabled!(tracing::Level::INFO) {
                let mut line = json_line(&self.name, event).to_string();
                line.push('\n');
                // One write per line, so it never interleaves with other log lines.
                let _ = std::io::stderr().lock().write_all(line.as_bytes());
            }
            return Ok(());
        }
        let ids: Vec<String> = event.secret_ids.iter().map(ToString::to_string).collect();
        tracing::info!(
            notifier = %self.name,
            event = %event.kind,
            client = %event.client,
            client_id = %event.client_id,
            secret_ids = %ids.join(","),
            fingerprint = event.fingerprint.as_ref().map(|f| f.as_str()),
            expiration = event
                .expiration
                .map(|e| e.to_rfc3339_opts(SecondsFormat::Secs, true)),
            store = event.store_location.as_deref(),
            detail = event.detail.as_deref(),
            "notification"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::EventKind;

    #[test]
    fn a_json_event_keeps_ids_as_an_array_and_times_as_rfc3339() {
        let event = Event {
            kind: EventKind::Retired,
            tenant_id: "t".into(),
            client: "app".into(),
            client_id: "c".into(),
            secret_ids: vec![1, 5],
            fingerprint: None,
            expiration: None,
            store_location: None,
            detail: None,
            reason: None,
            run_id: "r".into(),
            at: chrono::DateTime::parse_from_rfc3339("2026-11-23T03:00:00Z")
                .unwrap()
                .to_utc(),
        };
        let line = json_line("ops", &event);
        assert_eq!(line["fields"]["secret_ids"], serde_json::json!([1, 5]));
        assert_eq!(line["fields"]["event"], "retired");
        assert_eq!(line["fields"]["at"], "2026-11-23T03:00:00Z");
    }
}
