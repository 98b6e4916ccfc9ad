//! Notifiers: tell people and systems what the rotator did.
//!
//! An [`Event`] carries ids, fingerprints, expirations and store locations — never a
//! secret value. A notifier failure is logged and counted by the caller; it never undoes
//! a rotation. Not here: deciding which events happen (that is `rotation`).

pub mod command;
pub mod http;
pub mod log;
pub mod outbox;
pub mod registry;
pub mod slack;
pub mod spec;
pub mod teams;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::domain::{Event, EventKind};
pub use outbox::outbox;

// The event types are values in `domain`; how they read (summary, JSON, chat facts) is
// said here, next to the notifiers that send them.
impl EventKind {
    /// What happened, in words, for summaries and message titles.
    fn phrase(self) -> &'static str {
        match self {
            EventKind::Rotated => "rotated",
            EventKind::Retired => "retired old secrets",
            EventKind::RotationFailed => "rotation failed",
            EventKind::PickupTimeout => "consumers did not confirm the new secret in time",
            EventKind::ExpiringUnmanaged => {
                "a secret the rotator does not manage expires soon or never"
            }
            EventKind::OrphanDeleted => "deleted a secret left behind by an interrupted pass",
            EventKind::StoreCurrentInvalid => "the store's current secret no longer works in CDS",
            EventKind::StoreRecordMissing => "the store has no record of its value",
        }
    }
}

/// An event as notifiers send it: its fields and the one-line summary.
#[derive(Serialize)]
struct EventJson<'a> {
    #[serde(flatten)]
    event: &'a Event,
    summary: String,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl Event {
    /// One line for people, with the same facts as the fields (ids, fingerprint,
    /// expiration, store, reason, detail) and never a value: `app: rotated to secret 7
    /// (fingerprint 0123456789abcdef), expires 2027-02-21T03:00:00Z; published to
    /// file:/var/lib/cds-rotator/secrets/app`.
    pub fn summary(&self) -> String {
        // No client: the event concerns a whole batch (the rotator's own credential).
        let who = if self.client.is_empty() {
            "every client"
        } else {
            self.client.as_str()
        };
        let mut s = format!("{who}: {}", self.kind.phrase());
        let ids: Vec<String> = self.secret_ids.iter().map(ToString::to_string).collect();
        let fingerprint = self
            .fingerprint
            .as_ref()
            .map(|f| format!("fingerprint {f}"));
        let ids = match ids.len() {
            0 => None,
            1 => Some(format!("secret {}", ids[0])),
            _ => Some(format!("secrets {}", ids.join(", "))),
        };
        match (self.kind, ids) {
            (EventKind::Rotated, Some(ids)) => {
                s.push_str(&format!(" to {ids}"));
                if let Some(f) = fingerprint {
                    s.push_str(&format!(" ({f})"));
                }
            }
            (_, ids) => {
                let said: Vec<String> = ids.into_iter().chain(fingerprint).collect();
                if !said.is_empty() {
                    s.push_str(&format!(" ({})", said.join(", ")));
                }
            }
        }
        if let Some(e) = self.expiration {
            s.push_str(&format!(", expires {}", rfc3339(e)));
        }
        if let Some(l) = &self.store_location {
            let verb = match self.kind {
                EventKind::Rotated => "published to",
                _ => "store",
            };
            s.push_str(&format!("; {verb} {l}"));
        }
        if let Some(r) = &self.reason {
            s.push_str(&format!("; reason: {r}"));
        }
        if let Some(d) = &self.detail {
            s.push_str(&format!("; {}", crate::text::untrusted(d)));
        }
        crate::text::escape_control(&s)
    }

    /// The event as notifiers send it: the fields of [`Event`] (its kind as `event`) and
    /// `summary`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(EventJson {
            event: self,
            summary: self.summary(),
        })
        .unwrap_or_default()
    }

    /// The facts of the event as (title, text) pairs, for chat messages.
    pub fn facts(&self) -> Vec<(&'static str, String)> {
        let ids: Vec<String> = self.secret_ids.iter().map(ToString::to_string).collect();
        let mut facts = vec![
            ("Event", self.kind.to_string()),
            (
                "Client",
                if self.client.is_empty() {
                    "every client".to_owned()
                } else {
                    format!("{} ({})", self.client, self.client_id)
                },
            ),
            ("Tenant", self.tenant_id.clone()),
        ];
        if !ids.is_empty() {
            facts.push(("Secret ids", ids.join(", ")));
        }
        if let Some(f) = &self.fingerprint {
            facts.push(("Fingerprint", f.to_string()));
        }
        if let Some(e) = self.expiration {
            facts.push(("Expires", rfc3339(e)));
        }
        if let Some(l) = &self.store_location {
            facts.push(("Store", l.clone()));
        }
        if let Some(r) = &self.reason {
            facts.push(("Reason", r.clone()));
        }
        facts.push(("Run", self.run_id.clone()));
        facts.push(("At", rfc3339(self.at)));
        facts
    }
}

/// A failed notification.
#[derive(Debug, thiserror::Error)]
#[error("notifier {notifier}: {detail}")]
pub struct NotifyError {
    /// The notifier's name in the policy.
    pub notifier: String,
    /// What went wrong.
    pub detail: String,
}

/// Somewhere events are sent.
#[async_trait]
pub trait Notifier: Send + Sync {
    /// The notifier's name in the policy.
    fn name(&self) -> &str;

    /// How long one [`Notifier::notify`] may take, retries included; the caller stops
    /// waiting shortly after.
    fn timeout(&self) -> Duration {
        Duration::from_secs(10)
    }

    /// Whether it takes events of this kind (a client's `notify_on`).
    fn wants(&self, _kind: EventKind) -> bool {
        true
    }

    /// Sends one event.
    async fn notify(&self, event: &Event) -> Result<(), NotifyError>;
}

/// A notifier that takes only some kinds of events (a client's `notify_on`).
pub struct OnlyKinds {
    inner: Arc<dyn Notifier>,
    kinds: Vec<EventKind>,
}

impl OnlyKinds {
    /// `inner`, for `kinds` only.
    pub fn new(inner: Arc<dyn Notifier>, kinds: Vec<EventKind>) -> Self {
        OnlyKinds { inner, kinds }
    }
}

#[async_trait]
impl Notifier for OnlyKinds {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn timeout(&self) -> Duration {
        self.inner.timeout()
    }

    fn wants(&self, kind: EventKind) -> bool {
        self.kinds.contains(&kind) && self.inner.wants(kind)
    }

    async fn notify(&self, event: &Event) -> Result<(), NotifyError> {
        self.inner.notify(event).await
    }
}

/// How long past a notifier's own timeout the caller still waits for it to finish
/// (a command notifier kills its program at the timeout, then reports).
pub const TIMEOUT_SLACK: Duration = Duration::from_secs(2);

/// How long notifications under way may still take once a stop is asked for (SIGTERM
/// must end the process within 10 s).
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(3);

/// Sends `event` to every notifier that wants it, concurrently, each bounded by its
/// timeout, and by [`STOP_GRACE`] once `stop` is triggered, and waits for them. A failure
/// (an abandoned send too) is logged and counted in the metrics; it is never an error.
/// A pass does not call this: it hands its events to the [`outbox()`].
pub async fn dispatch(notifiers: &[Arc<dyn Notifier>], event: &Event, stop: &crate::stop::Stop) {
    let wanted: Vec<Arc<dyn Notifier>> = notifiers
        .iter()
        .filter(|n| n.wants(event.kind))
        .cloned()
        .collect();
    let unsent = Unsent::new(&wanted, event.kind);
    let deadline = std::sync::OnceLock::new();
    tokio::select! {
        () = send_each(&wanted, event, &unsent) => {}
        () = stop_deadline(stop, &deadline) => {}
    }
}

/// Resolves [`STOP_GRACE`] after `stop` is first seen triggered here.
async fn stop_deadline(stop: &crate::stop::Stop, at: &std::sync::OnceLock<tokio::time::Instant>) {
    stop.wait().await;
    let at = *at.get_or_init(|| tokio::time::Instant::now() + STOP_GRACE);
    tokio::time::sleep_until(at).await;
}

/// Sends `event` to each of `notifiers` concurrently, each bounded by its timeout (plus
/// [`TIMEOUT_SLACK`]), and tells `unsent` how each ended.
async fn send_each(notifiers: &[Arc<dyn Notifier>], event: &Event, unsent: &Unsent) {
    let sends = notifiers.iter().map(|n| async move {
        let limit = n.timeout() + TIMEOUT_SLACK;
        let result = match tokio::time::timeout(limit, n.notify(event)).await {
            Ok(r) => r,
            Err(_) => Err(NotifyError {
                notifier: n.name().to_owned(),
                detail: format!("no answer within {}s (timeout)", limit.as_secs()),
            }),
        };
        unsent.ended(n.name(), result.is_ok());
        if let Err(e) = result {
            tracing::warn!(
                step = "announce",
                notifier = n.name(),
                event = %event.kind,
                error = %crate::text::escape_control(&e.to_string()),
                "notification failed"
            );
        }
    });
    futures::future::join_all(sends).await;
}

/// The notifiers an event is still to reach: counted in the metrics as each ends, and
/// the ones left when it is dropped (abandoned at a stop) as failed.
struct Unsent {
    names: std::sync::Mutex<Vec<String>>,
    kind: EventKind,
}

impl Unsent {
    fn new(notifiers: &[Arc<dyn Notifier>], kind: EventKind) -> Self {
        Unsent {
            names: std::sync::Mutex::new(notifiers.iter().map(|n| n.name().to_owned()).collect()),
            kind,
        }
    }

    /// The send to `name` ended, well or not.
    fn ended(&self, name: &str, ok: bool) {
        let mut names = self
            .names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(i) = names.iter().position(|n| n == name) {
            names.swap_remove(i);
            crate::metrics::get().count_notification(name, ok);
        }
    }
}

impl Drop for Unsent {
    fn drop(&mut self) {
        let names = std::mem::take(
            self.names
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        if names.is_empty() {
            return;
        }
        for name in &names {
            crate::metrics::get().count_notification(name, false);
        }
        tracing::warn!(
            step = "announce",
            event = %self.kind,
            notifiers = ?names,
            "stopping: notifications still under way were abandoned"
        );
    }
}

/// Builds the notifier `name` from its policy entry, reading the URLs and keys it takes
/// from variables or files now (a missing one is an error at start, naming where).
/// `sender` is the one HTTP client of every HTTP notifier.
pub fn from_spec(
    name: &str,
    spec: &registry::NotifierSpec,
    sender: &http::HttpSender,
) -> Result<Arc<dyn Notifier>, String> {
    spec.build(name, sender)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A `rotated` event with every fact set.
    pub(crate) fn rotated() -> Event {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().to_utc();
        Event {
            kind: EventKind::Rotated,
            tenant_id: "t".into(),
            client: "app".into(),
            client_id: "c".into(),
            secret_ids: vec![7],
            fingerprint: Some(serde_json::from_str("\"0123456789abcdef\"").unwrap()),
            expiration: Some(at("2027-02-21T03:00:00Z")),
            store_location: Some("file:/var/lib/cds-rotator/secrets/app".into()),
            detail: None,
            reason: None,
            run_id: "r".into(),
            at: at("2026-11-23T03:00:00Z"),
        }
    }

    #[test]
    fn a_summary_is_one_line_with_the_facts() {
        assert_eq!(
            rotated().summary(),
            "app: rotated to secret 7 (fingerprint 0123456789abcdef), expires 2027-02-21T03:00:00Z; published to file:/var/lib/cds-rotator/secrets/app"
        );
        let mut e = rotated();
        e.kind = EventKind::RotationFailed;
        e.secret_ids.clear();
        e.fingerprint = None;
        e.expiration = None;
        e.store_location = None;
        e.detail = Some("verify: no token\nforged line".into());
        assert_eq!(
            e.summary(),
            r"app: rotation failed; verify: no token\nforged line"
        );
    }

    #[test]
    fn the_event_json_names_the_kind_event_and_carries_the_summary() {
        let j = rotated().to_json();
        let mut keys: Vec<&str> = j.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "at",
                "client",
                "client_id",
                "detail",
                "event",
                "expiration",
                "fingerprint",
                "reason",
                "run_id",
                "secret_ids",
                "store_location",
                "summary",
                "tenant_id"
            ]
        );
        assert_eq!(j["event"], "rotated");
        assert_eq!(j["secret_ids"], serde_json::json!([7]));
        assert_eq!(j["summary"], rotated().summary());
    }

    #[test]
    fn every_kind_has_a_name_that_reads_back() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::from_name(&k.to_string()), Some(k));
        }
        assert_eq!(EventKind::from_name("rotate"), None);
    }

    #[test]
    fn a_command_notifier_needs_its_program_at_start() {
        let sender = http::HttpSender::new();
        let spec = super::registry::NotifierSpec::Command(crate::command::Program {
            program: "/nonexistent/on-cds-rotate".into(),
            args: vec![],
            pass_env: vec![],
            withheld: vec![],
            timeout: Duration::from_secs(1),
        });
        let e = from_spec("script", &spec, &sender).err().unwrap();
        assert!(
            e.starts_with("notifier `script`: program /nonexistent/on-cds-rotate does not exist"),
            "{e}"
        );
    }

    struct Hangs;

    #[async_trait]
    impl Notifier for Hangs {
        fn name(&self) -> &str {
            "hangs"
        }
        fn timeout(&self) -> Duration {
            Duration::from_millis(10)
        }
        async fn notify(&self, _: &Event) -> Result<(), NotifyError> {
            std::future::pending().await
        }
    }

    #[tokio::test]
    async fn a_hanging_notifier_is_given_up_and_counted_as_failed() {
        let n: Arc<dyn Notifier> = Arc::new(Hangs);
        dispatch(&[n], &rotated(), &crate::stop::Stop::new()).await;
        let text = crate::metrics::get().encode();
        assert!(
            text.contains(
                "cds_rotator_notifications_total{notifier=\"hangs\",result=\"failed\"} 1"
            ),
            "{text}"
        );
        assert!(!text.contains("notifier=\"hangs\",result=\"ok\""), "{text}");
    }

    struct HangsLong;

    #[async_trait]
    impl Notifier for HangsLong {
        fn name(&self) -> &str {
            "hangs-long"
        }
        fn timeout(&self) -> Duration {
            Duration::from_secs(3600)
        }
        async fn notify(&self, _: &Event) -> Result<(), NotifyError> {
            std::future::pending().await
        }
    }

    #[tokio::test]
    async fn a_stop_ends_the_wait_for_notifications_after_a_grace() {
        let n: Arc<dyn Notifier> = Arc::new(HangsLong);
        let stop = crate::stop::Stop::new();
        let trigger = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            trigger.trigger();
        });
        // Ends (after STOP_GRACE), although the notifier's own timeout is an hour.
        dispatch(&[n], &rotated(), &stop).await;
        assert!(stop.is_set());
    }

    #[tokio::test]
    async fn notify_on_leaves_out_other_kinds() {
        let n: Arc<dyn Notifier> = Arc::new(OnlyKinds::new(
            Arc::new(Hangs),
            vec![EventKind::RotationFailed],
        ));
        assert!(!n.wants(EventKind::Rotated));
        assert!(n.wants(EventKind::RotationFailed));
        // Nothing is sent, so nothing hangs.
        dispatch(&[n], &rotated(), &crate::stop::Stop::new()).await;
    }
}
