//! The `notifiers:` entries (`log`, `webhook`, `slack`, `teams`, `command`) and a
//! client's `notify_on`: their keys, and the checks that turn them into a
//! [`NotifierSpec`].
//!
//! Positions are lost inside `type:`-tagged entries, so a notifier's problems are
//! reported at its entry, naming the key. Webhook URLs and HMAC keys that are secrets
//! come from an environment variable or a file; those are read (and their URLs
//! checked) when the notifiers are built, not here. Not here: sending (`crate::notify`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use super::raw::{Key, Shape};
use super::{Validator, is_env_name, resolve};
use crate::command::Program;
use crate::domain::EventKind;
use crate::domain::service_url::ServiceUrl;

/// A notifier as the policy declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotifierSpec {
    /// Events go to the rotator's own log.
    Log,
    /// A signed JSON POST.
    Webhook(WebhookSpec),
    /// A Slack incoming webhook.
    Slack(ChatSpec),
    /// A Microsoft Teams incoming webhook.
    Teams(ChatSpec),
    /// A program, run directly with the event in its environment and on its stdin.
    Command(Program),
}

impl NotifierSpec {
    /// How long one notification may take, retries included (the log's is a bound that
    /// it never comes near).
    pub fn timeout(&self) -> Duration {
        match self {
            NotifierSpec::Log => HTTP_TIMEOUT,
            NotifierSpec::Webhook(w) => w.timeout,
            NotifierSpec::Slack(c) | NotifierSpec::Teams(c) => c.timeout,
            NotifierSpec::Command(p) => p.timeout,
        }
    }
}

/// Where a notifier's secret (a URL, an HMAC key) is read from when it is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValueSource {
    /// An environment variable's name.
    Env(String),
    /// A file holding the value alone (absolute).
    File(PathBuf),
}

impl ValueSource {
    /// How messages name it: the variable's name or the file's path, never the value.
    pub fn describe(&self) -> String {
        match self {
            ValueSource::Env(name) => format!("environment variable {name}"),
            ValueSource::File(path) => format!("file {}", path.display()),
        }
    }

    /// The value, trimmed; an error names notifier `notifier`'s key `key` and where.
    pub fn read(&self, notifier: &str, key: &str) -> Result<SecretString, String> {
        let raw = match self {
            ValueSource::Env(name) => std::env::var(name).map_err(|_| {
                format!("notifier `{notifier}`: {key}: environment variable {name} is not set")
            })?,
            ValueSource::File(path) => std::fs::read_to_string(path).map_err(|e| {
                format!(
                    "notifier `{notifier}`: {key}: cannot read {}: {e}",
                    path.display()
                )
            })?,
        };
        let raw = zeroize::Zeroizing::new(raw);
        let value = raw.trim();
        if value.is_empty() {
            return Err(format!(
                "notifier `{notifier}`: {key}: {} is empty",
                self.describe()
            ));
        }
        let value = SecretString::from(value.to_owned());
        // No program's output may show it in our log.
        crate::command::hold(&format!("notifier {notifier} {key}"), &value);
        Ok(value)
    }
}

/// Where a webhook's URL is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UrlSource {
    /// Written in the policy (checked at validation).
    Plain(String),
    /// In a variable or a file (checked when read).
    Secret(ValueSource),
}

/// A `webhook` notifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookSpec {
    /// Where to POST.
    pub url: UrlSource,
    /// The HMAC-SHA256 key that signs each request; unsigned when unset.
    pub hmac_key: Option<ValueSource>,
    /// How long one notification may take, retries included.
    pub timeout: Duration,
    /// Attempts after the first.
    pub retries: u32,
}

/// A `slack` or `teams` notifier: its incoming-webhook URL is a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatSpec {
    /// Where the URL is.
    pub url: ValueSource,
    /// How long one notification may take, retries included.
    pub timeout: Duration,
    /// Attempts after the first.
    pub retries: u32,
}

/// The defaults and bounds of the keys above.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
const RETRIES: u32 = 3;
const MAX_RETRIES: u32 = 10;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhook {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    url_env: Option<String>,
    #[serde(default)]
    url_file: Option<PathBuf>,
    #[serde(default)]
    hmac_secret_env: Option<String>,
    #[serde(default)]
    hmac_secret_file: Option<PathBuf>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    retries: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawChat {
    #[serde(default)]
    webhook_url_env: Option<String>,
    #[serde(default)]
    webhook_url_file: Option<PathBuf>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    retries: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCommand {
    program: PathBuf,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    env: Vec<String>,
}

const TIMEOUT_KEY: Key = Key::optional(
    "timeout",
    Shape::Value,
    "a duration from 1s to 5m (10s by default; 30s for a command, up to 1h)",
);
const RETRIES_KEY: Key = Key::optional(
    "retries",
    Shape::Count,
    "attempts after the first, 0 to 10 (3 by default)",
);

/// The keys of a `type: webhook` notifier.
pub(super) const WEBHOOK_KEYS: &[Key] = &[
    Key::optional(
        "url",
        Shape::Value,
        "the URL to POST to, https (http only to loopback), like https://hooks.example.com/cds",
    ),
    Key::optional(
        "url_env",
        Shape::Value,
        "the NAME of a variable holding the webhook URL",
    ),
    Key::optional("url_file", Shape::Value, "a file holding the webhook URL"),
    Key::optional(
        "hmac_secret_env",
        Shape::Value,
        "the NAME of a variable holding the key that signs requests",
    ),
    Key::optional(
        "hmac_secret_file",
        Shape::Value,
        "a file holding the key that signs requests",
    ),
    TIMEOUT_KEY,
    RETRIES_KEY,
];

/// The keys of a `type: slack` or `type: teams` notifier.
pub(super) const CHAT_KEYS: &[Key] = &[
    Key::optional(
        "webhook_url_env",
        Shape::Value,
        "the NAME of a variable holding the incoming-webhook URL",
    ),
    Key::optional(
        "webhook_url_file",
        Shape::Value,
        "a file holding the incoming-webhook URL",
    ),
    TIMEOUT_KEY,
    RETRIES_KEY,
];

/// The keys of a `type: command` notifier.
pub(super) const COMMAND_KEYS: &[Key] = &[
    Key::required(
        "program",
        Shape::Value,
        "the absolute path of a program, like /usr/local/bin/on-cds-rotate",
    ),
    Key::optional(
        "args",
        Shape::Values,
        "the program's arguments, like [\"--reload\"]",
    ),
    TIMEOUT_KEY,
    Key::optional(
        "env",
        Shape::Values,
        "NAMES of the rotator's environment variables the program may see, like [HOME]",
    ),
];

impl Validator {
    /// Checks one `notifiers:` entry, reporting problems at `at`.
    pub(super) fn notifier(
        &mut self,
        at: Location,
        name: &str,
        base: &Path,
        raw: super::raw::RawNotifier,
    ) -> NotifierSpec {
        use super::raw::RawNotifier as R;
        match raw {
            R::Log {} => NotifierSpec::Log,
            R::Webhook(w) => {
                let url = match (w.url, w.url_env, w.url_file) {
                    (Some(url), None, None) => {
                        if let Err(p) = ServiceUrl::parse(url.trim()) {
                            self.problem(at, format!("notifier `{name}`: url {p}"));
                        }
                        Some(UrlSource::Plain(url.trim().to_owned()))
                    }
                    (None, env, file) => self
                        .source(at, name, ("url_env", env), ("url_file", file), base, true)
                        .map(UrlSource::Secret),
                    _ => {
                        self.problem(
                            at,
                            format!("notifier `{name}`: set one of url, url_env and url_file"),
                        );
                        None
                    }
                };
                let hmac_key = self.source(
                    at,
                    name,
                    ("hmac_secret_env", w.hmac_secret_env),
                    ("hmac_secret_file", w.hmac_secret_file),
                    base,
                    false,
                );
                NotifierSpec::Webhook(WebhookSpec {
                    url: url.unwrap_or(UrlSource::Plain(String::new())),
                    hmac_key,
                    timeout: self.notifier_timeout(at, name, w.timeout, HTTP_TIMEOUT, 300),
                    retries: self.retries(at, name, w.retries),
                })
            }
            R::Slack(c) => NotifierSpec::Slack(self.chat(at, name, base, c)),
            R::Teams(c) => NotifierSpec::Teams(self.chat(at, name, base, c)),
            R::Command(c) => {
                if !c.program.is_absolute() {
                    self.problem(
                        at,
                        format!(
                            "notifier `{name}`: program `{}` must be an absolute path (it is run directly, without a shell or PATH lookup)",
                            c.program.display()
                        ),
                    );
                }
                for var in &c.env {
                    if !is_env_name(var) {
                        self.problem(
                            at,
                            format!(
                                "notifier `{name}`: env lists NAMES of environment variables (letters, digits, `_`); an entry is not one (not shown, in case it is a value)"
                            ),
                        );
                    }
                }
                NotifierSpec::Command(Program {
                    program: c.program,
                    args: c.args,
                    pass_env: c.env,
                    withheld: Vec::new(),
                    timeout: self.notifier_timeout(at, name, c.timeout, COMMAND_TIMEOUT, 3600),
                })
            }
        }
    }

    fn chat(&mut self, at: Location, name: &str, base: &Path, c: RawChat) -> ChatSpec {
        let url = self.source(
            at,
            name,
            ("webhook_url_env", c.webhook_url_env),
            ("webhook_url_file", c.webhook_url_file),
            base,
            true,
        );
        ChatSpec {
            url: url.unwrap_or(ValueSource::Env(String::new())),
            timeout: self.notifier_timeout(at, name, c.timeout, HTTP_TIMEOUT, 300),
            retries: self.retries(at, name, c.retries),
        }
    }

    /// One of an `_env` and a `_file` key; both unset is a problem when `required`.
    fn source(
        &mut self,
        at: Location,
        name: &str,
        (env_key, env): (&str, Option<String>),
        (file_key, file): (&str, Option<PathBuf>),
        base: &Path,
        required: bool,
    ) -> Option<ValueSource> {
        match (env, file) {
            (Some(var), None) if is_env_name(var.trim()) => {
                Some(ValueSource::Env(var.trim().to_owned()))
            }
            (Some(_), None) => {
                self.problem(
                    at,
                    format!(
                        "notifier `{name}`: {env_key} must be the NAME of an environment variable (letters, digits, `_`, not starting with a digit); the value given is not shown, in case it is the secret itself"
                    ),
                );
                None
            }
            (None, Some(path)) => Some(ValueSource::File(resolve(base, &path))),
            (None, None) if required => {
                self.problem(
                    at,
                    format!("notifier `{name}`: set {env_key} or {file_key}"),
                );
                None
            }
            (None, None) => None,
            (Some(_), Some(_)) => {
                self.problem(
                    at,
                    format!("notifier `{name}`: set one of {env_key} and {file_key}, not both"),
                );
                None
            }
        }
    }

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

    fn notifier_timeout(
        &mut self,
        at: Location,
        name: &str,
        raw: Option<String>,
        default: Duration,
        max_secs: u64,
    ) -> Duration {
        let Some(text) = raw else {
            return default;
        };
        match super::duration::parse(&text) {
            Ok(d) if d.num_seconds() >= 1 && d.num_seconds() as u64 <= max_secs => {
                d.to_std().unwrap_or(default)
            }
            Ok(_) => {
                self.problem(
                    at,
                    format!(
                        "notifier `{name}`: timeout ({}) must be from 1s to {}",
                        text.trim(),
                        if max_secs == 3600 { "1h" } else { "5m" }
                    ),
                );
                default
            }
            Err(e) => {
                self.problem(at, format!("notifier `{name}`: timeout: {e}"));
                default
            }
        }
    }

    fn retries(&mut self, at: Location, name: &str, raw: Option<u64>) -> u32 {
        match raw {
            None => RETRIES,
            Some(n) if n <= u64::from(MAX_RETRIES) => n as u32,
            Some(n) => {
                self.problem(
                    at,
                    format!("notifier `{name}`: retries ({n}) must be from 0 to {MAX_RETRIES}"),
                );
                RETRIES
            }
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
            let NotifierSpec::Command(p) = spec else {
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
    pub(super) fn notify_on(
        &mut self,
        place: &str,
        raw: Option<&Vec<Spanned<String>>>,
    ) -> Option<Vec<EventKind>> {
        let raw = raw?;
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
                    let hint = match super::raw::nearest(text, &names) {
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
        let sources = match spec {
            NotifierSpec::Webhook(w) => {
                let url = match &w.url {
                    UrlSource::Secret(s) => Some(s),
                    UrlSource::Plain(_) => None,
                };
                vec![url, w.hmac_key.as_ref()]
            }
            NotifierSpec::Slack(c) | NotifierSpec::Teams(c) => vec![Some(&c.url)],
            NotifierSpec::Log | NotifierSpec::Command(_) => vec![],
        };
        for source in sources.into_iter().flatten() {
            if let ValueSource::Env(var) = source {
                secret.insert(var.clone(), format!("notifier `{name}`'s URL or key"));
            }
        }
    }
    secret
}

#[cfg(test)]
mod tests {
    use super::super::Policy;
    use super::*;

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
                url: UrlSource::Plain("https://hooks.example.com/cds".into()),
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
    fn a_plain_http_webhook_url_is_refused_at_its_entry_unless_loopback() {
        let err = parse(&policy(
            "  hook: { type: webhook, url: \"http://example.com/cds\" }",
            "",
        ))
        .unwrap_err();
        assert!(
            err.starts_with("/etc/cds-rotator/policy.yaml:11:9: notifier `hook`: url uses plain http to example.com"),
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
                err.contains("policy.yaml:11:6: ") && err.contains(expect),
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
            let line = format!(
                "policy.yaml:23:13: client `app`: pickup.env lists {var}, which holds {what}; a pickup program never gets a credential: remove it"
            );
            assert!(err.contains(&line), "{line}\n{err}");
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
