//! The process's metrics, in Prometheus text format (served on `/metrics` by the daemon
//! when `daemon.listen` is set).
//!
//! One registry per process, shared by the reconciler, the CDS client and the notifiers
//! and kept across policy reloads, so counters never reset while the process lives.
//! Labels hold client names, steps, methods, statuses and notifier names — never a
//! secret value, a token or a URL. Not here: serving them (that is `daemon::server`).

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientLabel {
    client: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientResult {
    client: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientManaged {
    client: String,
    managed: String,
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
    expiration: Family<ClientLabel, Gauge>,
    last_success: Family<ClientLabel, Gauge>,
    rotations: Family<ClientResult, Counter>,
    step_duration: StepHistogram,
    secrets: Family<ClientManaged, Gauge>,
    pickup_pending: Family<ClientLabel, Gauge>,
    cds_requests: Family<MethodStatus, Counter>,
    notifications: Family<NotifierResult, Counter>,
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
            expiration: Family::default(),
            last_success: Family::default(),
            rotations: Family::default(),
            step_duration: Family::new_with_constructor(step_buckets),
            secrets: Family::default(),
            pickup_pending: Family::default(),
            cds_requests: Family::default(),
            notifications: Family::default(),
            policy_reload_failed: Gauge::default(),
            policy_reloads: Family::default(),
            audit_failures: Counter::default(),
            leader: Family::default(),
            leader_transitions: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "secret_expiration_timestamp_seconds",
            "When the store's current secret of a client expires (Unix time)",
            m.expiration.clone(),
        );
        registry.register(
            "last_success_timestamp_seconds",
            "When a pass over a client last ended without error (Unix time)",
            m.last_success.clone(),
        );
        registry.register(
            "rotations",
            "Rotations by client and result (ok, failed)",
            m.rotations.clone(),
        );
        registry.register(
            "step_duration_seconds",
            "How long each step of a pass took",
            m.step_duration.clone(),
        );
        registry.register(
            "secrets",
            "Secrets a client holds in CDS, by whether the rotator manages them",
            m.secrets.clone(),
        );
        registry.register(
            "pickup_pending",
            "1 while old secrets of a client wait for consumers to confirm the new one",
            m.pickup_pending.clone(),
        );
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
        self.expiration
            .get_or_create(&client_label(client))
            .set(unix);
    }

    /// A pass over `client` ended without error at `unix` seconds.
    pub fn set_last_success(&self, client: &str, unix: i64) {
        self.last_success
            .get_or_create(&client_label(client))
            .set(unix);
    }

    /// A rotation of `client` ended `ok` or `failed`.
    pub fn count_rotation(&self, client: &str, ok: bool) {
        self.rotations
            .get_or_create(&ClientResult {
                client: client.to_owned(),
                result: if ok { "ok" } else { "failed" }.to_owned(),
            })
            .inc();
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
        for (label, n) in [("true", managed), ("false", unmanaged)] {
            self.secrets
                .get_or_create(&ClientManaged {
                    client: client.to_owned(),
                    managed: label.to_owned(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Whether old secrets of `client` wait for a pickup confirmation.
    pub fn set_pickup_pending(&self, client: &str, pending: bool) {
        self.pickup_pending
            .get_or_create(&client_label(client))
            .set(i64::from(pending));
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

    /// Forgets the per-client series of `clients` (removed from the policy).
    pub fn forget_clients(&self, clients: &[String]) {
        for c in clients {
            let l = client_label(c);
            self.expiration.remove(&l);
            self.last_success.remove(&l);
            self.pickup_pending.remove(&l);
            for managed in ["true", "false"] {
                self.secrets.remove(&ClientManaged {
                    client: c.clone(),
                    managed: managed.to_owned(),
                });
            }
        }
    }
}

fn client_label(client: &str) -> ClientLabel {
    ClientLabel {
        client: client.to_owned(),
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
