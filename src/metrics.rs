//! The process's metrics, in Prometheus text format (served on `/metrics` by the daemon
//! when `daemon.listen` is set).
//!
//! One registry per process, shared by the reconciler, the CDS client and the notifiers
//! and kept across policy reloads, so counters never reset while the process lives.
//! Labels hold client names, steps, methods, statuses and notifier names — never a
//! secret value, a token or a URL. Not here: serving them (that is `daemon::server`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabel {
    step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodStatus {
    method: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotifierResult {
    notifier: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IdentityLabel {
    identity: String,
}

type StepHistogram = Family<StepLabel, Histogram, fn() -> Histogram>;

/// Every metric the rotator exports.
pub struct Metrics {
    registry: Registry,
    /// The per-client series: expiration, last success, rotations, secrets, pickup.
    clients: Arc<PerClient>,
    step_duration: StepHistogram,
    cds_requests: Family<MethodStatus, Counter>,
    notifications: Family<NotifierResult, Counter>,
    /// The notifiers whose series were given their zero by [`Metrics::track`].
    tracked_notifiers: Mutex<BTreeSet<String>>,
    policy_reload_failed: Gauge,
    policy_reloads: Family<ResultLabel, Counter>,
    audit_failures: Counter,
    leader: Family<IdentityLabel, Gauge>,
    leader_transitions: Counter,
}

fn step_buckets() -> Histogram {
    // 5 ms … ~80 s: a store write to a verify that waits for CDS to accept a secret.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.005, 2.0, 15,
    ))
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("cds_rotator");
        let m = Metrics {
            clients: Arc::default(),
            step_duration: Family::new_with_constructor(step_buckets),
            cds_requests: Family::default(),
            notifications: Family::default(),
            tracked_notifiers: Mutex::default(),
            policy_reload_failed: Gauge::default(),
            policy_reloads: Family::default(),
            audit_failures: Counter::default(),
            leader: Family::default(),
            leader_transitions: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "step_duration_seconds",
            "How long each step of a pass took",
            m.step_duration.clone(),
        );
        registry.register_collector(Box::new(Arc::clone(&m.clients)));
        registry.register(
            "cds_requests",
            "Requests to CDS by method and HTTP status (error: no answer)",
            m.cds_requests.clone(),
        );
        registry.register(
            "notifications",
            "Notifications by notifier and result (ok, failed)",
            m.notifications.clone(),
        );
        registry.register(
            "policy_reload_failed",
            "1 while the last policy reload was refused and the previous policy runs",
            m.policy_reload_failed.clone(),
        );
        registry.register(
            "policy_reloads",
            "Policy reloads by result (ok, failed)",
            m.policy_reloads.clone(),
        );
        registry.register(
            "audit_log_failures",
            "Audit log entries that could not be appended",
            m.audit_failures.clone(),
        );
        registry.register(
            "leader",
            "1 while this process holds the coordination lease",
            m.leader.clone(),
        );
        registry.register(
            "leadership_transitions",
            "Times this process gained or lost the coordination lease",
            m.leader_transitions.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The whole registry in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The store's current secret of `client` expires at `unix` seconds.
    pub fn set_expiration(&self, client: &str, unix: i64) {
        self.clients.update(client, |c| c.expiration = Some(unix));
    }

    /// A pass over `client` ended without error at `unix` seconds.
    pub fn set_last_success(&self, client: &str, unix: i64) {
        self.clients.update(client, |c| c.last_success = Some(unix));
    }

    /// A rotation of `client` ended `ok` or `failed`.
    pub fn count_rotation(&self, client: &str, ok: bool) {
        self.clients.update(client, |c| {
            let n = if ok {
                &mut c.rotations_ok
            } else {
                &mut c.rotations_failed
            };
            *n = Some(n.unwrap_or(0).saturating_add(1));
        });
    }

    /// A step took `d`.
    pub fn observe_step(&self, step: &str, d: Duration) {
        self.step_duration
            .get_or_create(&StepLabel {
                step: step.to_owned(),
            })
            .observe(d.as_secs_f64());
    }

    /// `client` holds `managed` and `unmanaged` secrets.
    pub fn set_secrets(&self, client: &str, managed: usize, unmanaged: usize) {
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.clients.update(client, |c| {
            c.secrets = Some((count(managed), count(unmanaged)));
        });
    }

    /// Whether old secrets of `client` wait for a pickup confirmation.
    pub fn set_pickup_pending(&self, client: &str, pending: bool) {
        self.clients
            .update(client, |c| c.pickup_pending = Some(pending));
    }

    /// A request to CDS with `method` was answered `status` (`None`: no answer).
    pub fn count_cds_request(&self, method: &str, status: Option<u16>) {
        self.cds_requests
            .get_or_create(&MethodStatus {
                method: method.to_owned(),
                status: status.map_or_else(|| "error".to_owned(), |s| s.to_string()),
            })
            .inc();
    }

    /// A notification through `notifier` ended `ok` or `failed`.
    pub fn count_notification(&self, notifier: &str, ok: bool) {
        self.notifications
            .get_or_create(&NotifierResult {
                notifier: notifier.to_owned(),
                result: if ok { "ok" } else { "failed" }.to_owned(),
            })
            .inc();
    }

    /// A policy reload was applied (`ok`) or refused.
    pub fn policy_reloaded(&self, ok: bool) {
        self.policy_reload_failed.set(i64::from(!ok));
        self.policy_reloads
            .get_or_create(&ResultLabel {
                result: if ok { "ok" } else { "failed" }.to_owned(),
            })
            .inc();
    }

    /// An audit log entry could not be appended.
    pub fn count_audit_failure(&self) {
        self.audit_failures.inc();
    }

    /// Whether this process, as `identity`, holds the coordination lease.
    pub fn set_leader(&self, identity: &str, leader: bool) {
        let g = self.leader.get_or_create(&IdentityLabel {
            identity: identity.to_owned(),
        });
        if g.set(i64::from(leader)) != i64::from(leader) {
            self.leader_transitions.inc();
        }
    }

    /// The daemon serves `clients` and their `notifiers`: every labelled counter of
    /// theirs is exported from now on, at 0 until something is counted, so an alert on
    /// `increase()` sees the first failure (a series born at 1 shows no increase).
    /// Clients and notifiers tracked before and absent now lose their gauges and their
    /// zeros, as [`Metrics::forget_clients`] does; counted series stay.
    pub fn track(&self, clients: &[&str], notifiers: &[&str]) {
        let gone: Vec<String> = {
            let mut map = self.clients.lock();
            for name in clients {
                let c = map.entry((*name).into()).or_default();
                c.rotations_ok.get_or_insert(0);
                c.rotations_failed.get_or_insert(0);
            }
            map.keys()
                .filter(|k| !clients.contains(&&***k))
                .map(|k| k.to_string())
                .collect()
        };
        self.forget_clients(&gone);
        let mut tracked = self
            .tracked_notifiers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for name in notifiers {
            for result in ["ok", "failed"] {
                drop(self.notifications.get_or_create(&NotifierResult {
                    notifier: (*name).to_owned(),
                    result: result.to_owned(),
                }));
            }
            tracked.insert((*name).to_owned());
        }
        tracked.retain(|name| {
            if notifiers.contains(&name.as_str()) {
                return true;
            }
            for result in ["ok", "failed"] {
                let label = NotifierResult {
                    notifier: name.clone(),
                    result: result.to_owned(),
                };
                let zero = self.notifications.get(&label).is_some_and(|c| c.get() == 0);
                if zero {
                    self.notifications.remove(&label);
                }
            }
            false
        });
    }

    /// Forgets the per-client gauges of `clients` (removed from the policy), and their
    /// counters that counted nothing; counted ones stay, as counters do while the
    /// process lives.
    pub fn forget_clients(&self, clients: &[String]) {
        let mut map = self.clients.lock();
        for name in clients {
            let Some(c) = map.get_mut(name.as_str()) else {
                continue;
            };
            *c = ClientSeries {
                rotations_ok: c.rotations_ok.filter(|n| *n > 0),
                rotations_failed: c.rotations_failed.filter(|n| *n > 0),
                ..ClientSeries::default()
            };
            if c.rotations_ok.is_none() && c.rotations_failed.is_none() {
                map.remove(name.as_str());
            }
        }
    }
}

/// What the metrics say of one client: plain numbers, written out on each scrape. A
/// `Family` per metric held, per client and metric, a hash-table slot, a label string
/// and a shared atomic (about 1 KB a client in all); this is under 100 bytes beside the
/// name. `None`: that series is not exported (nothing was observed yet).
#[derive(Debug, Default, Clone, Copy)]
struct ClientSeries {
    expiration: Option<i64>,
    last_success: Option<i64>,
    rotations_ok: Option<u64>,
    rotations_failed: Option<u64>,
    /// Managed, unmanaged.
    secrets: Option<(i64, i64)>,
    pickup_pending: Option<bool>,
}

/// One sample of a per-client family: its second label (`result`, `managed`), if any,
/// and its value.
type Sample = (Option<(&'static str, &'static str)>, Value);

#[derive(Clone, Copy)]
enum Value {
    Gauge(i64),
    Counter(u64),
}

/// A per-client family: name, help, type and its samples for one client (at most two,
/// fixed size: a scrape asks every client twice and allocates nothing for it).
type PerClientFamily = (
    &'static str,
    &'static str,
    MetricType,
    fn(&ClientSeries) -> [Option<Sample>; 2],
);

const PER_CLIENT: [PerClientFamily; 5] = [
    (
        "secret_expiration_timestamp_seconds",
        "When the store's current secret of a client expires (Unix time)",
        MetricType::Gauge,
        |c| [c.expiration.map(|v| (None, Value::Gauge(v))), None],
    ),
    (
        "last_success_timestamp_seconds",
        "When a pass over a client last ended without error (Unix time)",
        MetricType::Gauge,
        |c| [c.last_success.map(|v| (None, Value::Gauge(v))), None],
    ),
    (
        "rotations",
        "Rotations by client and result (ok, failed)",
        MetricType::Counter,
        |c| {
            [
                c.rotations_ok
                    .map(|n| (Some(("result", "ok")), Value::Counter(n))),
                c.rotations_failed
                    .map(|n| (Some(("result", "failed")), Value::Counter(n))),
            ]
        },
    ),
    (
        "secrets",
        "Secrets a client holds in CDS, by whether the rotator manages them",
        MetricType::Gauge,
        |c| {
            [
                c.secrets
                    .map(|(m, _)| (Some(("managed", "true")), Value::Gauge(m))),
                c.secrets
                    .map(|(_, u)| (Some(("managed", "false")), Value::Gauge(u))),
            ]
        },
    ),
    (
        "pickup_pending",
        "1 while old secrets of a client wait for consumers to confirm the new one",
        MetricType::Gauge,
        |c| {
            [
                c.pickup_pending.map(|p| (None, Value::Gauge(i64::from(p)))),
                None,
            ]
        },
    ),
];

/// The per-client series, by client name.
#[derive(Debug, Default)]
struct PerClient(Mutex<BTreeMap<Box<str>, ClientSeries>>);

impl PerClient {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Box<str>, ClientSeries>> {
        // Plain numbers: what a panicking writer left is still readable.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, client: &str, f: impl FnOnce(&mut ClientSeries)) {
        let mut map = self.lock();
        match map.get_mut(client) {
            Some(c) => f(c),
            None => f(map.entry(client.into()).or_default()),
        }
    }
}

impl Collector for PerClient {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let map = self.lock();
        for (name, help, kind, samples) in PER_CLIENT {
            // A family without a series is left out, as prometheus-client does.
            if map.values().all(|c| samples(c).iter().all(Option::is_none)) {
                continue;
            }
            let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
            for (client, series) in map.iter() {
                for (second, value) in samples(series).into_iter().flatten() {
                    let labels: &[(&str, &str)] = match second {
                        Some(pair) => &[("client", client), pair],
                        None => &[("client", client)],
                    };
                    let family = metric.encode_family(&labels)?;
                    match value {
                        Value::Gauge(v) => ConstGauge::new(v).encode(family)?,
                        Value::Counter(v) => ConstCounter::new(v).encode(family)?,
                    }
                }
            }
        }
        Ok(())
    }
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The process's metrics.
pub fn get() -> &'static Metrics {
    METRICS.get_or_init(Metrics::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_named_with_the_prefix_and_parses_as_text() {
        let m = get();
        m.set_expiration("metrics-test", 1_800_000_000);
        m.count_rotation("metrics-test", true);
        m.observe_step("verify", Duration::from_millis(120));
        m.set_secrets("metrics-test", 2, 1);
        m.count_cds_request("PATCH", Some(299));
        m.count_notification("metrics-test-hook", false);
        m.policy_reloaded(true);
        let text = m.encode();
        for name in [
            "cds_rotator_secret_expiration_timestamp_seconds{client=\"metrics-test\"} 1800000000",
            "cds_rotator_rotations_total{client=\"metrics-test\",result=\"ok\"} 1",
            "cds_rotator_step_duration_seconds_bucket{le=",
            "cds_rotator_secrets{client=\"metrics-test\",managed=\"true\"} 2",
            "cds_rotator_cds_requests_total{method=\"PATCH\",status=\"299\"} 1",
            "cds_rotator_notifications_total{notifier=\"metrics-test-hook\",result=\"failed\"} 1",
            "cds_rotator_policy_reloads_total{result=\"ok\"} ",
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn per_client_series_appear_when_observed_and_gauges_go_with_the_client() {
        let m = Metrics::new();
        assert!(!m.encode().contains("client="), "{}", m.encode());
        m.set_secrets("b", 2, 1);
        m.count_rotation("b", false);
        m.count_rotation("b", false);
        m.set_expiration("a", 7);
        m.set_pickup_pending("a", false);
        let text = m.encode();
        for line in [
            "# TYPE cds_rotator_secret_expiration_timestamp_seconds gauge",
            "cds_rotator_secret_expiration_timestamp_seconds{client=\"a\"} 7",
            "# TYPE cds_rotator_rotations counter",
            "cds_rotator_rotations_total{client=\"b\",result=\"failed\"} 2",
            "cds_rotator_secrets{client=\"b\",managed=\"true\"} 2",
            "cds_rotator_secrets{client=\"b\",managed=\"false\"} 1",
            "cds_rotator_pickup_pending{client=\"a\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        // Nothing observed, nothing exported: no last success, no "ok" count.
        assert!(!text.contains("last_success"), "{text}");
        assert!(!text.contains("result=\"ok\""), "{text}");

        m.forget_clients(&["a".to_owned(), "b".to_owned()]);
        let text = m.encode();
        assert!(!text.contains("client=\"a\""), "{text}");
        assert!(!text.contains("cds_rotator_secrets{"), "{text}");
        assert!(
            text.contains("cds_rotator_rotations_total{client=\"b\",result=\"failed\"} 2"),
            "{text}"
        );
    }

    #[test]
    fn tracked_clients_and_notifiers_export_their_counters_at_zero_until_dropped() {
        let m = Metrics::new();
        m.track(&["a", "b"], &["hook"]);
        let text = m.encode();
        for line in [
            "cds_rotator_rotations_total{client=\"a\",result=\"ok\"} 0",
            "cds_rotator_rotations_total{client=\"a\",result=\"failed\"} 0",
            "cds_rotator_rotations_total{client=\"b\",result=\"failed\"} 0",
            "cds_rotator_notifications_total{notifier=\"hook\",result=\"ok\"} 0",
            "cds_rotator_notifications_total{notifier=\"hook\",result=\"failed\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        m.count_rotation("a", false);
        m.count_notification("hook", false);
        m.set_expiration("b", 7);
        // b and the hook leave the policy; a's count stays, the zeros go.
        m.track(&["a"], &[]);
        let text = m.encode();
        for line in [
            "cds_rotator_rotations_total{client=\"a\",result=\"failed\"} 1",
            "cds_rotator_rotations_total{client=\"a\",result=\"ok\"} 0",
            "cds_rotator_notifications_total{notifier=\"hook\",result=\"failed\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(!text.contains("client=\"b\""), "{text}");
        assert!(
            !text.contains("cds_rotator_notifications_total{notifier=\"hook\",result=\"ok\"}"),
            "{text}"
        );
        // Once a's counted failure is forgotten too, only what counted stays.
        m.track(&[], &[]);
        let text = m.encode();
        assert!(
            text.lines()
                .any(|l| l == "cds_rotator_rotations_total{client=\"a\",result=\"failed\"} 1"),
            "{text}"
        );
        assert!(!text.contains("result=\"ok\""), "{text}");
    }

    #[derive(serde::Deserialize)]
    struct RuleFile {
        groups: Vec<RuleGroup>,
    }

    #[derive(serde::Deserialize)]
    struct RuleGroup {
        rules: Vec<Rule>,
    }

    #[derive(serde::Deserialize)]
    struct Rule {
        alert: String,
        expr: String,
    }

    /// The names of the series in `text` (Prometheus text format).
    fn series_names(text: &str) -> std::collections::BTreeSet<&str> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect()
    }

    #[test]
    fn every_metric_the_alert_rules_name_is_exported() {
        // A fresh registry with one series in every family, so each name appears.
        let m = Metrics::new();
        m.set_expiration("a", 1);
        m.set_last_success("a", 1);
        m.count_rotation("a", false);
        m.observe_step("verify", Duration::from_millis(1));
        m.set_secrets("a", 1, 0);
        m.set_pickup_pending("a", true);
        m.count_cds_request("GET", Some(200));
        m.count_notification("hook", false);
        m.policy_reloaded(false);
        m.count_audit_failure();
        m.set_leader("pod", true);
        let text = m.encode();
        let exported = series_names(&text);

        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/alerts.yaml");
        let yaml = std::fs::read_to_string(path).unwrap();
        let rules: RuleFile = serde_saphyr::from_str(&yaml).unwrap();
        let mut checked = 0;
        for rule in rules.groups.iter().flat_map(|g| &g.rules) {
            let names: Vec<&str> = rule
                .expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("cds_rotator_"))
                .collect();
            assert!(
                !names.is_empty(),
                "{}: names no cds_rotator metric",
                rule.alert
            );
            for name in names {
                assert!(
                    exported.contains(name),
                    "{}: `{name}` is not exported; exported: {exported:?}",
                    rule.alert
                );
                checked += 1;
            }
        }
        assert!(checked >= 7, "only {checked} metric names in {path}");
    }
}
