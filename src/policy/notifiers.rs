//! The rules across the `notifiers:` entries and a client's `notify_on`: no notifier
//! may take longer than a pass, no program gets a credential variable, and event kinds
//! are known ones.
//!
//! Each notifier type's keys and checks are in its folder (`notify::<type>::spec`),
//! listed in `notify::registry`. Not here: sending (`crate::notify`).

use std::collections::BTreeMap;

use serde_saphyr::Location;

use crate::schema::tree::Map;

use super::Validator;
use crate::domain::EventKind;
pub use crate::notify::registry::NotifierSpec;
use crate::notify::spec::ValueSource;

impl Validator {
    /// Refuses a notifier timeout longer than `budget`, the health budget of one pass
    /// ([`super::Policy::pass_budget`]): a pass may wait for a notifier (while the
    /// outbox is full), and `/healthz` allows a pass its budget plus that wait, so a
    /// longer timeout would let a stuck loop go unseen for longer than the budget.
    pub(super) fn notifier_timeouts(
        &mut self,
        notifiers: &BTreeMap<String, NotifierSpec>,
        at: &BTreeMap<String, Location>,
        budget: chrono::Duration,
    ) {
        for (name, spec) in notifiers {
            let timeout =
                chrono::Duration::from_std(spec.timeout()).unwrap_or(chrono::Duration::MAX);
            if timeout <= budget {
                continue;
            }
            self.problem(
                at.get(name).copied().unwrap_or(Location::UNKNOWN),
                format!(
                    "notifier `{name}`: timeout ({}) is longer than one pass may take ({}: 40 × connect.request_timeout + the longest verify_timeout + 10m), which /healthz allows a pass; lower the timeout (events are sent in the background: a slow hook holds no rotation), or raise connect.request_timeout",
                    super::duration::format(timeout),
                    super::duration::format(budget),
                ),
            );
        }
    }

    /// A command notifier must not be handed a credential through `env`: the rotator's
    /// own secret, the etcd password, a store's token, a notifier's URL or key, or the
    /// cloud SDKs' well-known secret variables. Each command notifier also carries the
    /// policy's credential variables as [`Program::withheld`], so that the runner never
    /// passes one whatever its `env` says; the list is kept for the `pickup:` checks.
    pub(super) fn command_env(
        &mut self,
        notifiers: &mut BTreeMap<String, NotifierSpec>,
        at: &BTreeMap<String, Location>,
        (connect, coordination): (
            Option<&super::ConnectSettings>,
            Option<&super::CoordinationSpec>,
        ),
        stores: &BTreeMap<String, super::StoreSpec>,
    ) {
        let policy = credential_variables(connect, coordination, stores, notifiers);
        let mut secret: BTreeMap<String, String> = crate::command::CLOUD_CREDENTIALS
            .iter()
            .map(|v| (v.to_string(), "a cloud credential".to_owned()))
            .collect();
        secret.extend(policy.iter().map(|(k, v)| (k.clone(), v.clone())));
        let withheld: Vec<String> = policy.keys().cloned().collect();
        for (name, spec) in notifiers.iter_mut() {
            let Some(p) = spec.backend_mut().program_mut() else {
                continue;
            };
            for var in &p.pass_env {
                if let Some(what) = secret.get(var) {
                    self.problem(
                        at.get(name).copied().unwrap_or(Location::UNKNOWN),
                        format!(
                            "notifier `{name}`: env lists {var}, which holds {what}; a notifier program never gets a credential: remove it"
                        ),
                    );
                }
            }
            p.withheld.clone_from(&withheld);
        }
        self.credential_variables = secret;
    }

    /// A `notify_on` (of `place`: a client, or `defaults`): event kinds, each known.
    pub(super) fn notify_on(&mut self, place: &str, section: Map<'_>) -> Option<Vec<EventKind>> {
        let raw = section.list("notify_on")?;
        let names: Vec<String> = EventKind::ALL.iter().map(ToString::to_string).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut kinds = Vec::new();
        for k in raw {
            let text = k.value.trim();
            match EventKind::from_name(text) {
                Some(kind) => kinds.push(kind),
                None => {
                    let shown = if super::is_safe_name(text) {
                        format!("`{text}` ")
                    } else {
                        String::new()
                    };
                    let hint = match super::shape::nearest(text, &names) {
                        Some(near) if !shown.is_empty() => format!("did you mean `{near}`?"),
                        _ => format!("use one of: {}", names.join(", ")),
                    };
                    self.problem(
                        k.referenced,
                        format!("{place}: notify_on: unknown event {shown}; {hint}")
                            .replace(" ;", ";"),
                    );
                }
            }
        }
        Some(kinds)
    }
}

impl super::Policy {
    /// Every environment variable this policy reads a credential from, with what it
    /// holds: no program the rotator runs ever gets one (see [`Program::withheld`]).
    pub fn credential_variables(&self) -> BTreeMap<String, String> {
        credential_variables(
            Some(&self.connect),
            self.coordination.as_ref(),
            &self.stores,
            &self.notifiers,
        )
    }
}

/// The variables a policy reads a credential from: the rotator's own secret
/// (`client_secret_env`), the etcd password, the stores' tokens, notifiers' URLs and keys.
fn credential_variables(
    connect: Option<&super::ConnectSettings>,
    coordination: Option<&super::CoordinationSpec>,
    stores: &BTreeMap<String, super::StoreSpec>,
    notifiers: &BTreeMap<String, NotifierSpec>,
) -> BTreeMap<String, String> {
    let mut secret = BTreeMap::new();
    if let Some(super::ConnectSettings {
        secret: super::SecretSource::Env(v),
        ..
    }) = connect
    {
        secret.insert(
            v.clone(),
            "the rotator's own secret (connect.credentials.client_secret_env)".into(),
        );
    }
    if let Some(super::CoordinationSpec {
        password: Some(super::ValueSource::Env(v)),
        ..
    }) = coordination
    {
        secret.insert(
            v.clone(),
            "the etcd password (coordination.password_env)".into(),
        );
    }
    for (name, spec) in stores {
        for (var, what) in spec.backend().credential_variables() {
            secret.insert(var.to_owned(), format!("store `{name}`'s {what}"));
        }
    }
    for (name, spec) in notifiers {
        let sources = spec.backend().credential_sources();
        for source in sources {
            if let ValueSource::Env(var) = source {
                secret.insert(var.clone(), format!("notifier `{name}`'s URL or key"));
            }
        }
    }
    secret
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::super::Policy;
    use super::*;
    use crate::command::Program;
    use crate::notify::command::spec::COMMAND_TIMEOUT;
    use crate::notify::spec::{HTTP_TIMEOUT, RETRIES};
    use crate::notify::webhook::spec::{UrlSource, WebhookSpec};

    /// A valid policy with these notifier entries and this client line added.
    fn policy(notifiers: &str, client_extra: &str) -> String {
        format!(
            r#"connect:
  url: https://uswe.datahub.connect.aveva.com
  tenant_id: 8c6f1f3e-1d2c-4b5a-9e8f-7a6b5c4d3e2f
  credentials:
    client_id: 2b1f0e9d-8c7b-4a6f-9e5d-4c3b2a1f0e9d
    client_secret_file: /etc/cds-rotator/secret
stores:
  local: {{ type: file, dir: /var/lib/cds-rotator/secrets }}
notifiers:
  ops: {{ type: log }}
{notifiers}
clients:
  - name: app
    client_id: 0b0c1d2e-3f40-4152-6374-8596a7b8c9d0
    store: {{ name: local }}
    notify: [ops]
{client_extra}
"#
        )
    }

    fn parse(text: &str) -> Result<Policy, String> {
        Policy::parse(Path::new("/etc/cds-rotator/policy.yaml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn every_notifier_type_parses_with_its_defaults() {
        let p = parse(&policy(
            "  hook: { type: webhook, url: \"https://hooks.example.com/cds\", hmac_secret_env: HOOK_KEY }
  local: { type: webhook, url: \"http://127.0.0.1:9/h\", url_file: hook-url, timeout: 5s, retries: 0 }
  slack: { type: slack, webhook_url_env: SLACK_WEBHOOK_URL }
  teams: { type: teams, webhook_url_file: teams-url, retries: 1 }
  script: { type: command, program: /usr/local/bin/on-cds-rotate, args: [\"--reload\"], env: [HOME] }",
            "",
        )
        .replace("url: \"http://127.0.0.1:9/h\", ", ""))
        .unwrap();
        assert_eq!(
            p.notifiers["hook"],
            NotifierSpec::Webhook(WebhookSpec {
                url: UrlSource::Plain(
                    crate::domain::service_url::ServiceUrl::parse("https://hooks.example.com/cds")
                        .unwrap(),
                ),
                hmac_key: Some(ValueSource::Env("HOOK_KEY".into())),
                timeout: HTTP_TIMEOUT,
                retries: RETRIES,
            })
        );
        assert_eq!(
            p.notifiers["local"],
            NotifierSpec::Webhook(WebhookSpec {
                url: UrlSource::Secret(ValueSource::File("/etc/cds-rotator/hook-url".into())),
                hmac_key: None,
                timeout: Duration::from_secs(5),
                retries: 0,
            })
        );
        assert!(
            matches!(&p.notifiers["slack"], NotifierSpec::Slack(c) if c.url == ValueSource::Env("SLACK_WEBHOOK_URL".into()))
        );
        assert!(matches!(&p.notifiers["teams"], NotifierSpec::Teams(c) if c.retries == 1));
        assert_eq!(
            p.notifiers["script"],
            NotifierSpec::Command(Program {
                program: "/usr/local/bin/on-cds-rotate".into(),
                args: vec!["--reload".into()],
                pass_env: vec!["HOME".into()],
                // The variables this policy reads credentials from.
                withheld: vec!["HOOK_KEY".into(), "SLACK_WEBHOOK_URL".into()],
                timeout: COMMAND_TIMEOUT,
            })
        );
        assert_eq!(p.clients[0].notify_on, None);
    }

    #[test]
    fn a_plain_http_webhook_url_is_refused_at_its_value_unless_loopback() {
        let err = parse(&policy(
            "  hook: { type: webhook, url: \"http://example.com/cds\" }",
            "",
        ))
        .unwrap_err();
        assert!(
            err.starts_with("/etc/cds-rotator/policy.yaml:11:31: notifier `hook`: url uses plain http to example.com"),
            "{err}"
        );
        assert!(!err.contains("/cds\""), "{err}");
        parse(&policy(
            "  hook: { type: webhook, url: \"http://127.0.0.1:8080/cds\" }",
            "",
        ))
        .unwrap();
    }

    #[test]
    fn bad_notifier_keys_are_reported_naming_the_notifier() {
        for (entry, expect) in [
            ("{ type: webhook }", "notifier `n`: set url_env or url_file"),
            (
                "{ type: webhook, url: \"https://h.example.com/\", url_env: X }",
                "set one of url, url_env and url_file",
            ),
            (
                "{ type: slack, webhook_url_env: \"https://hooks.slack.com/services/T/B/sEcReT\" }",
                "webhook_url_env must be the NAME of an environment variable",
            ),
            (
                "{ type: teams, webhook_url_env: A, webhook_url_file: b }",
                "set one of webhook_url_env and webhook_url_file, not both",
            ),
            (
                "{ type: command, program: bin/hook }",
                "program `bin/hook` must be an absolute path",
            ),
            (
                "{ type: command, program: /bin/true, timeout: 2h }",
                "timeout (2h) must be from 1s to 1h",
            ),
            (
                "{ type: slack, webhook_url_env: S, retries: 11 }",
                "retries (11) must be from 0 to 10",
            ),
            (
                "{ type: command, program: /bin/true, env: [\"a=b\"] }",
                "env lists NAMES",
            ),
        ] {
            let err = parse(&policy(&format!("  n: {entry}"), "")).unwrap_err();
            assert!(
                err.contains("policy.yaml:11:") && err.contains(expect),
                "{entry}: {err}"
            );
            assert!(!err.contains("sEcReT"), "{err}");
        }
    }

    #[test]
    fn a_notifier_timeout_longer_than_a_pass_may_take_is_refused_at_its_entry() {
        // The default budget: 40 × 30s + verify_timeout 2m + 10m.
        let err = parse(&policy(
            "  slow: { type: command, program: /bin/true, timeout: 1h }",
            "",
        ))
        .unwrap_err();
        assert_eq!(
            err,
            "/etc/cds-rotator/policy.yaml:11:9: notifier `slow`: timeout (1h) is longer than one pass may take (32m: 40 × connect.request_timeout + the longest verify_timeout + 10m), which /healthz allows a pass; lower the timeout (events are sent in the background: a slow hook holds no rotation), or raise connect.request_timeout"
        );
        parse(&policy(
            "  slow: { type: command, program: /bin/true, timeout: 30m }",
            "",
        ))
        .unwrap();
        // A longer request timeout makes a longer budget.
        let longer = policy(
            "  slow: { type: command, program: /bin/true, timeout: 1h }",
            "",
        )
        .replace(
            "    client_secret_file: /etc/cds-rotator/secret\n",
            "    client_secret_file: /etc/cds-rotator/secret\n  request_timeout: 2m\n",
        );
        let p = parse(&longer).unwrap();
        assert_eq!(p.notifiers["slow"].timeout(), Duration::from_secs(3600));
        assert!(crate::app::pass_limit(&p) > chrono::Duration::hours(2));
    }

    #[test]
    fn notify_on_in_defaults_is_taken_by_clients_that_set_none() {
        let text = policy("", "").replace(
            "clients:\n",
            "defaults:\n  notify_on: [rotation_failed]\nclients:\n",
        );
        let p = parse(&text).unwrap();
        assert_eq!(
            p.clients[0].notify_on,
            Some(vec![EventKind::RotationFailed])
        );
        let p = parse(&text.replace(
            "    notify: [ops]\n",
            "    notify: [ops]\n    notify_on: [retired]\n",
        ))
        .unwrap();
        assert_eq!(p.clients[0].notify_on, Some(vec![EventKind::Retired]));
        let err = parse(&text.replace("[rotation_failed]", "[rotated, retierd]")).unwrap_err();
        assert!(
            err.contains("policy.yaml:13:24: defaults: notify_on: unknown event `retierd`; did you mean `retired`?"),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_notifier_type_is_refused_listing_the_types() {
        let err = parse(&policy(
            "  hook: { type: webhok, url: \"https://h.example.com/\" }",
            "",
        ))
        .unwrap_err();
        assert!(
            err.contains("policy.yaml:11:17: notifiers.hook.type: `webhok` is not a notifier type; use log or webhook or slack or teams or command"),
            "{err}"
        );
    }

    #[test]
    fn a_command_is_never_handed_a_credential_through_env() {
        let text = policy(
            "  hook: { type: webhook, url_env: HOOK_URL, hmac_secret_env: HOOK_KEY }
  script: { type: command, program: /bin/true, env: [HOME, HOOK_KEY, AWS_SECRET_ACCESS_KEY, CDS_SECRET] }",
            "",
        )
        .replace(
            "client_secret_file: /etc/cds-rotator/secret",
            "client_secret_env: CDS_SECRET",
        );
        let err = parse(&text).unwrap_err();
        for line in [
            "policy.yaml:12:11: notifier `script`: env lists HOOK_KEY, which holds notifier `hook`'s URL or key",
            "policy.yaml:12:11: notifier `script`: env lists AWS_SECRET_ACCESS_KEY, which holds a cloud credential",
            "policy.yaml:12:11: notifier `script`: env lists CDS_SECRET, which holds the rotator's own secret (connect.credentials.client_secret_env)",
        ] {
            assert!(err.contains(line), "{line}\n{err}");
        }
        assert_eq!(err.lines().count(), 3, "{err}");
    }

    /// [`policy`] with an etcd `coordination:` whose password is in `ETCD_PASSWORD`.
    fn with_etcd(text: String) -> String {
        text.replace(
            "stores:",
            "coordination:\n  type: etcd\n  endpoints: [http://127.0.0.1:2379]\n  key_prefix: /cds\n  username_env: ETCD_USER\n  password_env: ETCD_PASSWORD\nstores:",
        )
    }

    #[test]
    fn a_command_is_never_handed_the_etcd_password_or_a_managed_identity_token() {
        let text = with_etcd(policy(
            "  script: { type: command, program: /bin/true, env: [HOME, ETCD_USER, ETCD_PASSWORD, AWS_CONTAINER_AUTHORIZATION_TOKEN, AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE, IDENTITY_HEADER, MSI_SECRET] }",
            "",
        ));
        let err = parse(&text).unwrap_err();
        for line in [
            "policy.yaml:17:11: notifier `script`: env lists ETCD_PASSWORD, which holds the etcd password (coordination.password_env); a notifier program never gets a credential: remove it",
            "policy.yaml:17:11: notifier `script`: env lists AWS_CONTAINER_AUTHORIZATION_TOKEN, which holds a cloud credential; a notifier program never gets a credential: remove it",
            "policy.yaml:17:11: notifier `script`: env lists AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE, which holds a cloud credential",
            "policy.yaml:17:11: notifier `script`: env lists IDENTITY_HEADER, which holds a cloud credential",
            "policy.yaml:17:11: notifier `script`: env lists MSI_SECRET, which holds a cloud credential",
        ] {
            assert!(err.contains(line), "{line}\n{err}");
        }
        assert_eq!(err.lines().count(), 5, "{err}");
    }

    #[test]
    fn a_pickup_command_is_never_handed_a_credential_through_env() {
        let text = with_etcd(policy(
            "  hook: { type: webhook, url_env: HOOK_URL }",
            "    pickup: { type: command, program: /bin/true, env: [HOME, CDS_SECRET, ETCD_PASSWORD, HOOK_URL, AZURE_CLIENT_SECRET] }",
        ))
        .replace(
            "client_secret_file: /etc/cds-rotator/secret",
            "client_secret_env: CDS_SECRET",
        );
        let err = parse(&text).unwrap_err();
        for (var, what) in [
            (
                "CDS_SECRET",
                "the rotator's own secret (connect.credentials.client_secret_env)",
            ),
            (
                "ETCD_PASSWORD",
                "the etcd password (coordination.password_env)",
            ),
            ("HOOK_URL", "notifier `hook`'s URL or key"),
            ("AZURE_CLIENT_SECRET", "a cloud credential"),
        ] {
            // At the variable's own place in the list.
            let line = format!(
                "client `app`: pickup.env lists {var}, which holds {what}; a pickup program never gets a credential: remove it"
            );
            assert!(
                err.lines()
                    .any(|l| l.contains("policy.yaml:23:") && l.ends_with(&line)),
                "{line}\n{err}"
            );
        }
        assert_eq!(err.lines().count(), 4, "{err}");
    }

    #[test]
    fn every_program_carries_the_policys_credential_variables_as_withheld() {
        let text = with_etcd(policy(
            "  hook: { type: webhook, url_env: HOOK_URL }
  script: { type: command, program: /bin/true }",
            "    pickup: { type: command, program: /bin/true }",
        ));
        let p = parse(&text).unwrap();
        let names: Vec<String> = p.credential_variables().into_keys().collect();
        assert_eq!(names, ["ETCD_PASSWORD", "HOOK_URL"]);
        let NotifierSpec::Command(script) = &p.notifiers["script"] else {
            panic!("{:?}", p.notifiers["script"]);
        };
        assert_eq!(script.withheld, names);
        let crate::policy::PickupSpec::Command(pickup) = &p.clients[0].pickup else {
            panic!("{:?}", p.clients[0].pickup);
        };
        assert_eq!(pickup.program.withheld, names);
    }

    #[test]
    fn an_unknown_notifier_key_gets_a_did_you_mean() {
        let err = parse(&policy(
            "  hook: { type: webhook, url: \"https://h.example.com/\", hmac_secret_evn: K }",
            "",
        ))
        .unwrap_err();
        assert!(err.contains("policy.yaml:11:"), "{err}");
        assert!(err.contains("did you mean `hmac_secret_env`?"), "{err}");
    }

    #[test]
    fn notify_on_takes_event_kinds_and_refuses_others_at_their_place() {
        let p = parse(&policy("", "    notify_on: [rotated, rotation_failed]")).unwrap();
        assert_eq!(
            p.clients[0].notify_on,
            Some(vec![EventKind::Rotated, EventKind::RotationFailed])
        );
        let err = parse(&policy("", "    notify_on: [rotated, rotaton_failed]")).unwrap_err();
        assert!(
            err.contains("policy.yaml:17:26: client `app`: notify_on: unknown event `rotaton_failed`; did you mean `rotation_failed`?"),
            "{err}"
        );
    }
}
