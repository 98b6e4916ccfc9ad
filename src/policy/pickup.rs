//! The `pickup:` key of a client or of `defaults:`: how the rotator learns that the
//! consumers switched to a newly published secret before it retires the old one.
//!
//! A client's `pickup:` replaces the one in `defaults:` as a whole; without either it is
//! `{ type: grace }` (the grace period alone). Not here: running the checks (that is
//! `crate::pickup`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration as StdDuration;

use chrono::Duration;
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use super::raw::{Key, Shape};
use super::{
    ConnectSettings, FileSlot, SecretSource, Validator, duration, is_env_name, physical, resolve,
};
use crate::command::Program;

/// A `pickup:` mapping as written. Plain fields, not `Spanned`: positions are lost inside
/// `type:`-tagged entries; problems are reported at the `pickup:` mapping.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum RawPickup {
    Grace {},
    HttpProbe {
        #[serde(default)]
        url: Option<String>,
        #[serde(default)]
        urls: Option<Vec<String>>,
        #[serde(default)]
        json_pointer: Option<String>,
        #[serde(default)]
        interval: Option<String>,
        #[serde(default)]
        timeout: Option<String>,
    },
    AckFile {
        path: PathBuf,
        #[serde(default)]
        timeout: Option<String>,
    },
    Command {
        program: PathBuf,
        #[serde(default)]
        args: Vec<String>,
        #[serde(default)]
        env: Vec<String>,
        #[serde(default)]
        run_timeout: Option<String>,
        #[serde(default)]
        interval: Option<String>,
        #[serde(default)]
        timeout: Option<String>,
    },
}

const TIMEOUT: Key = Key::optional(
    "timeout",
    Shape::Value,
    "how long after grace the check may stay unconfirmed before pickup_timeout, like 24h",
);

/// Every pickup type with its keys besides `type` (a test checks they match serde's).
pub(super) const TYPES: &[(&str, &[Key])] = &[
    ("grace", &[]),
    (
        "http_probe",
        &[
            Key::optional(
                "url",
                Shape::Value,
                "the URL that answers with the fingerprint the app loaded, like http://app:8080/cds-secret",
            ),
            Key::optional(
                "urls",
                Shape::Values,
                "a list of URLs, one per replica: every one must confirm",
            ),
            Key::optional(
                "json_pointer",
                Shape::Value,
                "where the fingerprint is in a JSON answer, like /fingerprint",
            ),
            Key::optional("interval", Shape::Value, "a duration like 30s"),
            TIMEOUT,
        ],
    ),
    (
        "ack_file",
        &[
            Key::required(
                "path",
                Shape::Value,
                "the file the app writes the fingerprint it loaded to, like /shared/cds-secret.ack",
            ),
            TIMEOUT,
        ],
    ),
    (
        "command",
        &[
            Key::required(
                "program",
                Shape::Value,
                "an absolute path, like /usr/local/bin/all-pods-switched",
            ),
            Key::optional("args", Shape::Values, "a list of arguments"),
            Key::optional(
                "env",
                Shape::Values,
                "a list of NAMES of variables the program may see",
            ),
            Key::optional("run_timeout", Shape::Value, "a duration like 30s"),
            Key::optional("interval", Shape::Value, "a duration like 1m"),
            TIMEOUT,
        ],
    ),
];

/// How a client's pickup is confirmed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum PickupSpec {
    /// The grace period alone.
    #[default]
    Grace,
    /// GET each URL; each must answer with the current fingerprint.
    HttpProbe(HttpProbeSpec),
    /// The app writes the fingerprint it loaded into a file.
    AckFile(AckFileSpec),
    /// A program that exits 0 once the consumers switched.
    Command(CommandSpec),
}

impl PickupSpec {
    /// The longest one check may take (a pass waits for it): a command's run timeout, an
    /// HTTP probe's request timeout (its URLs are asked at once); nothing for the others.
    pub fn check_wait(&self) -> std::time::Duration {
        match self {
            PickupSpec::Grace | PickupSpec::AckFile(_) => std::time::Duration::ZERO,
            PickupSpec::HttpProbe(_) => HttpProbeSpec::REQUEST_TIMEOUT,
            PickupSpec::Command(c) => c.program.timeout,
        }
    }

    /// How long after grace the check may stay unconfirmed before `pickup_timeout`
    /// (`None` for `grace`, which is confirmed when grace ends).
    pub fn timeout(&self) -> Option<Duration> {
        match self {
            PickupSpec::Grace => None,
            PickupSpec::HttpProbe(p) => Some(p.timeout),
            PickupSpec::AckFile(a) => Some(a.timeout),
            PickupSpec::Command(c) => Some(c.timeout),
        }
    }
}

/// `type: http_probe`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpProbeSpec {
    /// Every URL (http or https, no user info).
    pub urls: Vec<String>,
    /// Where the fingerprint is in a JSON answer; `None`: the whole body, trimmed.
    pub json_pointer: Option<String>,
    /// How long between two probes while not confirmed.
    pub interval: Duration,
    /// See [`PickupSpec::timeout`].
    pub timeout: Duration,
}

impl HttpProbeSpec {
    /// How long one probe request may take (a pass waits for it).
    pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
}

/// `type: ack_file`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckFileSpec {
    /// The file, resolved against the policy's directory.
    pub path: PathBuf,
    /// See [`PickupSpec::timeout`].
    pub timeout: Duration,
}

/// `type: command`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandSpec {
    /// The program, its arguments, the variables it may see, its run timeout.
    pub program: Program,
    /// How long between two runs while not confirmed.
    pub interval: Duration,
    /// See [`PickupSpec::timeout`].
    pub timeout: Duration,
}

/// At most this many probe URLs per client.
const MAX_URLS: usize = 32;

impl Validator {
    /// Checks a `pickup:` mapping; `owner` names where it is ("client `app`", "defaults").
    pub(super) fn pickup(
        &mut self,
        raw: &Spanned<RawPickup>,
        owner: &str,
        base: &Path,
    ) -> Option<PickupSpec> {
        let at = raw.referenced;
        let before = self.problems.len();
        let problem = |v: &mut Self, message: String| {
            v.problem(at, format!("{owner}: pickup.{message}"));
        };
        let span = |v: &mut Self, raw: &Option<String>, key: &str, default, min, max| {
            let Some(text) = raw else {
                return default;
            };
            match duration::parse(text) {
                Ok(d) if d >= min && d <= max => d,
                Ok(_) => {
                    problem(
                        v,
                        format!(
                            "{key} ({}) must be from {} to {}",
                            text.trim(),
                            duration::format(min),
                            duration::format(max)
                        ),
                    );
                    default
                }
                Err(e) => {
                    problem(v, format!("{key}: {e}"));
                    default
                }
            }
        };
        let timeout = |v: &mut Self, raw: &Option<String>| {
            span(
                v,
                raw,
                "timeout",
                Duration::hours(24),
                Duration::seconds(1),
                Duration::days(365),
            )
        };
        let spec = match &raw.value {
            RawPickup::Grace {} => PickupSpec::Grace,
            RawPickup::HttpProbe {
                url,
                urls,
                json_pointer,
                interval,
                timeout: t,
            } => {
                let all: Vec<String> = url.iter().chain(urls.iter().flatten()).cloned().collect();
                if all.is_empty() || all.len() > MAX_URLS {
                    self.problem(
                        at,
                        format!("{owner}: pickup: set url, or urls with 1 to {MAX_URLS} URLs"),
                    );
                }
                for u in &all {
                    if let Err(why) = probe_url(u) {
                        self.problem(at, format!("{owner}: pickup.url{why}"));
                    }
                }
                if let Some(p) = json_pointer
                    && !(p.is_empty() || p.starts_with('/'))
                {
                    self.problem(
                        at,
                        format!(
                            "{owner}: pickup.json_pointer must start with `/`, like /fingerprint"
                        ),
                    );
                }
                PickupSpec::HttpProbe(HttpProbeSpec {
                    urls: all,
                    json_pointer: json_pointer.clone().filter(|p| !p.is_empty()),
                    interval: span(
                        self,
                        interval,
                        "interval",
                        Duration::seconds(30),
                        Duration::seconds(1),
                        Duration::days(1),
                    ),
                    timeout: timeout(self, t),
                })
            }
            RawPickup::AckFile { path, timeout: t } => {
                let text = path.to_string_lossy();
                if text.trim().is_empty() || text.chars().any(char::is_control) {
                    self.problem(
                        at,
                        format!(
                            "{owner}: pickup.path must name a file, like /shared/cds-secret.ack"
                        ),
                    );
                } else {
                    self.placeholder(
                        at,
                        &text,
                        &format!("{owner}: pickup.path"),
                        "the file the app writes the fingerprint it loaded to",
                    );
                }
                PickupSpec::AckFile(AckFileSpec {
                    path: resolve(base, path),
                    timeout: timeout(self, t),
                })
            }
            RawPickup::Command {
                program,
                args,
                env,
                run_timeout,
                interval,
                timeout: t,
            } => {
                if !program.is_absolute() {
                    self.problem(
                        at,
                        format!(
                            "{owner}: pickup.program must be an absolute path (it is run directly, without a shell or PATH lookup), like /usr/local/bin/all-pods-switched"
                        ),
                    );
                }
                for name in env {
                    if !is_env_name(name) {
                        self.problem(
                            at,
                            format!(
                                "{owner}: pickup.env lists `{}`, which is not a variable NAME (letters, digits, `_`)",
                                crate::text::untrusted(name)
                            ),
                        );
                    } else if let Some(what) = self.credential_variables.get(name) {
                        let message = format!(
                            "{owner}: pickup.env lists {name}, which holds {what}; a pickup program never gets a credential: remove it"
                        );
                        self.problem(at, message);
                    }
                }
                // The runner never passes these, whatever `env` says.
                let withheld = self
                    .credential_variables
                    .keys()
                    .filter(|k| !crate::command::is_cloud_credential(k))
                    .cloned()
                    .collect();
                let run = span(
                    self,
                    run_timeout,
                    "run_timeout",
                    Duration::seconds(30),
                    Duration::seconds(1),
                    Duration::minutes(10),
                );
                PickupSpec::Command(CommandSpec {
                    program: Program {
                        program: program.clone(),
                        args: args.clone(),
                        pass_env: env.clone(),
                        withheld,
                        timeout: run.to_std().unwrap_or(StdDuration::from_secs(30)),
                    },
                    interval: span(
                        self,
                        interval,
                        "interval",
                        Duration::minutes(1),
                        Duration::seconds(1),
                        Duration::days(1),
                    ),
                    timeout: timeout(self, t),
                })
            }
        };
        (self.problems.len() == before).then_some(spec)
    }
}

impl Validator {
    /// An ack file is the app's to write: never a file the rotator writes (a store's
    /// value or record) nor its own credential, where the check would read a secret.
    pub(super) fn ack_files(
        &mut self,
        acks: &[(Location, String, PathBuf)],
        written: &BTreeMap<PathBuf, FileSlot>,
        connect: Option<&ConnectSettings>,
    ) {
        let credential = match connect.map(|c| &c.secret) {
            Some(SecretSource::File(p)) => Some(physical(p)),
            _ => None,
        };
        for (at, client, path) in acks {
            let ack = physical(path);
            let what = if let Some(slot) = written.get(&ack) {
                format!(
                    "a file the rotator writes (store `{}` secret `{}`)",
                    slot.store, slot.secret
                )
            } else if credential.as_ref() == Some(&ack) {
                "the rotator's own credential file".to_owned()
            } else {
                continue;
            };
            self.problem(
                *at,
                format!(
                    "client `{client}`: pickup.path {} is {what}; the app writes the ack file: give it a path of its own, like /shared/ack/{client}.ack",
                    ack.display()
                ),
            );
        }
    }
}

/// Whether `u` is a URL a probe may GET: http or https, a host, no user info (it would
/// end up in logs). The error is appended to `pickup.url`; it shows no part of the URL.
fn probe_url(u: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(u.trim())
        .map_err(|e| format!(": not a URL ({e}); write one like http://app:8080/cds-secret"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(" must be http or https".to_owned());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(" needs a host, like http://app:8080/cds-secret".to_owned());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            " must not carry a user or password (it would be logged); the probe sends no credentials"
                .to_owned(),
        );
    }
    Ok(())
}
