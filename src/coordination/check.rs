//! Checking the `coordination:` section the policy wrote: its raw keys as read from the
//! YAML, and the rules that turn them into a [`CoordinationSpec`] (each type's own keys,
//! the etcd endpoints and key prefix, the Lease's object names, the lease TTL against
//! the request timeout, the etcd credentials and client certificate).
//!
//! Not here: reading the policy file or the other sections (`policy`), the validated
//! section itself (`spec`), or talking to the service (`etcd`, `kubernetes`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_saphyr::{Location, Spanned};

use super::spec::{CoordinationKind, CoordinationSpec};
use crate::domain::ValueSource;
use crate::domain::service_url::{ServiceUrl, UrlProblem};
use crate::schema::tree::{Map, Node};
use crate::schema::{Diagnostic, Key, Shape, duration, is_env_name, placeholder, resolve};

/// The shortest lease_ttl when the policy sets none (at least 3 × request_timeout).
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(15);

/// The keys of `coordination:` (checked by [`check`]).
pub const COORDINATION: &[Key] = &[
    Key::required("type", Shape::Value, "etcd or kubernetes_lease"),
    Key::optional(
        "endpoints",
        Shape::Values,
        "a list of etcd URLs, like [https://etcd-0:2379, https://etcd-1:2379]",
    ),
    Key::optional(
        "key_prefix",
        Shape::Value,
        "the etcd key prefix of this rotator's leader key, like /cds-rotator/prod",
    ),
    Key::optional("lease_ttl", Shape::Value, "a duration like 15s"),
    Key::optional(
        "namespace",
        Shape::Value,
        "the namespace of the Lease (default: the pod's)",
    ),
    Key::optional(
        "name",
        Shape::Value,
        "the name of the Lease, like cds-rotator",
    ),
    Key::optional("lease_duration", Shape::Value, "a duration like 15s"),
    Key::optional(
        "api_url",
        Shape::Value,
        "the Kubernetes API URL (default: the in-cluster service)",
    ),
    Key::optional(
        "token_file",
        Shape::Value,
        "a bearer token file (default: the pod's service account token)",
    ),
    Key::optional(
        "username_env",
        Shape::Value,
        "the NAME of an environment variable holding the etcd user name",
    ),
    Key::optional(
        "password_env",
        Shape::Value,
        "the NAME of an environment variable holding the etcd password",
    ),
    Key::optional(
        "username_file",
        Shape::Value,
        "a file holding the etcd user name",
    ),
    Key::optional(
        "password_file",
        Shape::Value,
        "a file holding the etcd password",
    ),
    Key::optional(
        "tls",
        Shape::Section(COORDINATION_TLS),
        "a mapping with ca_file, cert_file and key_file",
    ),
];

/// The keys of `coordination.tls:`.
pub const COORDINATION_TLS: &[Key] = &[
    Key::optional(
        "ca_file",
        Shape::Value,
        "a PEM file of the CA that signed etcd's certificate",
    ),
    Key::optional(
        "cert_file",
        Shape::Value,
        "a PEM client certificate for etcd",
    ),
    Key::optional("key_file", Shape::Value, "the PEM private key of cert_file"),
];

/// Checks the section `raw`, reporting into `problems`; `request_timeout` is
/// `connect.request_timeout` when `connect:` was valid. `None` when anything is wrong.
pub fn check(
    raw: Map<'_>,
    base: &Path,
    request_timeout: Option<Duration>,
    problems: &mut Vec<Diagnostic>,
) -> Option<CoordinationSpec> {
    let mut c = Checker {
        at: raw.at,
        base,
        problems,
        ok: true,
    };
    let kind = raw.text("type")?;
    let kube = c.kind(&kind)?;
    let (ttl_key, ttl) = if kube {
        ("coordination.lease_duration", raw.text("lease_duration"))
    } else {
        ("coordination.lease_ttl", raw.text("lease_ttl"))
    };
    c.foreign_keys(raw, kind.value.trim(), kube);
    let (kind, endpoints, key_prefix) = if kube {
        (c.kubernetes_lease(raw), Vec::new(), String::new())
    } else {
        let endpoints = c.endpoints(&raw.texts("endpoints"));
        let key_prefix = c.key_prefix(&raw.text("key_prefix"));
        (CoordinationKind::Etcd, endpoints, key_prefix)
    };
    let lease_ttl = c.lease_ttl(&ttl, ttl_key, request_timeout)?;
    let username = c.source(raw, "username");
    let password = c.source(raw, "password");
    if username.is_some() != password.is_some() {
        c.problem(
            c.at,
            "coordination: set both a username and a password for etcd, or neither",
        );
    }
    let (ca_file, client_cert) = raw.map("tls").map(|t| c.tls(t)).unwrap_or_default();
    c.ok.then_some(CoordinationSpec {
        kind,
        endpoints,
        key_prefix,
        lease_ttl,
        username,
        password,
        ca_file,
        client_cert,
    })
}

/// Where the section's problems go, and whether there was one.
struct Checker<'a> {
    /// Where the section is: problems of a missing key are reported here.
    at: Location,
    /// The policy file's directory, which relative paths resolve against.
    base: &'a Path,
    problems: &'a mut Vec<Diagnostic>,
    /// No problem so far.
    ok: bool,
}

impl Checker<'_> {
    fn problem(&mut self, at: Location, message: impl Into<String>) {
        self.problems.push(Diagnostic {
            line: at.line(),
            column: at.column(),
            message: message.into(),
        });
        self.ok = false;
    }

    /// `type:`: true for a Kubernetes Lease, false for etcd; `None` for anything else.
    fn kind(&mut self, kind: &Spanned<String>) -> Option<bool> {
        match kind.value.trim() {
            "etcd" => Some(false),
            "kubernetes_lease" => Some(true),
            other => {
                self.problem(
                    kind.referenced,
                    format!(
                        "coordination.type `{}` is not supported; use etcd or kubernetes_lease",
                        crate::text::untrusted(other)
                    ),
                );
                None
            }
        }
    }

    /// Each type takes its own keys only: the other type's keys are refused.
    fn foreign_keys(&mut self, c: Map<'_>, kind: &str, kube: bool) {
        let theirs: &[(&str, &str)] = if kube {
            &[
                ("key_prefix", "key_prefix"),
                ("lease_ttl", "lease_ttl (write lease_duration)"),
                ("username_env", "username_env"),
                ("password_env", "password_env"),
                ("endpoints", "endpoints"),
                ("username_file", "username_file"),
                ("password_file", "password_file"),
            ]
        } else {
            &[
                ("namespace", "namespace"),
                ("name", "name"),
                ("lease_duration", "lease_duration (write lease_ttl)"),
                ("api_url", "api_url"),
                ("token_file", "token_file"),
            ]
        };
        for (key, shown) in theirs {
            let Some(value) = c.get(key) else { continue };
            // An empty list is as if unset.
            let at = match &value.value {
                Node::List(items) => match items.first() {
                    Some(first) => first.referenced,
                    None => continue,
                },
                _ => value.referenced,
            };
            self.problem(
                at,
                format!("coordination.{shown} does not apply to type {kind}"),
            );
        }
    }

    /// A Kubernetes Lease: its API server, name and namespace, and token file.
    fn kubernetes_lease(&mut self, c: Map<'_>) -> CoordinationKind {
        let api_url = c
            .text("api_url")
            .and_then(|u| self.endpoint_url(&u, "coordination.api_url"));
        let (name_raw, namespace_raw) = (c.text("name"), c.text("namespace"));
        let name = name_raw.as_ref().map_or("cds-rotator", |n| n.value.trim());
        let namespace = namespace_raw.as_ref().map(|n| n.value.trim().to_owned());
        for (value, at, what) in [
            (Some(name), name_raw.as_ref().map(|n| n.referenced), "name"),
            (
                namespace.as_deref(),
                namespace_raw.as_ref().map(|n| n.referenced),
                "namespace",
            ),
        ] {
            if !value.is_none_or(is_object_name) {
                self.problem(
                    at.unwrap_or(self.at),
                    format!("coordination.{what} must be a Kubernetes object name (lowercase letters, digits, `-`, `.`)"),
                );
            }
        }
        CoordinationKind::KubernetesLease {
            namespace,
            name: name.to_owned(),
            api_url,
            token_file: c.path("token_file").map(|f| resolve(self.base, &f.value)),
        }
    }

    /// etcd's endpoints: at least one, each a service URL.
    fn endpoints(&mut self, endpoints: &[Spanned<String>]) -> Vec<ServiceUrl> {
        if endpoints.is_empty() {
            self.problem(
                self.at,
                "coordination.endpoints is missing; list the etcd URLs, like [https://etcd-0:2379]",
            );
        }
        endpoints
            .iter()
            .filter_map(|e| self.endpoint_url(e, "coordination.endpoints"))
            .collect()
    }

    /// etcd's key prefix: an absolute key path, without its trailing `/`.
    fn key_prefix(&mut self, key_prefix: &Option<Spanned<String>>) -> String {
        let Some(k) = key_prefix else {
            self.problem(
                self.at,
                "coordination.key_prefix is missing; set one like /cds-rotator/prod",
            );
            return String::new();
        };
        let prefix = k.value.trim();
        if !prefix.starts_with('/') || prefix.trim_end_matches('/').is_empty() {
            self.problem(
                k.referenced,
                "coordination.key_prefix must be an absolute key path like /cds-rotator/prod",
            );
        }
        prefix.trim_end_matches('/').to_owned()
    }

    /// The lease TTL (`ttl_key`): at least 2s, and 3 × the request timeout; `None` when
    /// it is not a duration (the section is not checked further).
    fn lease_ttl(
        &mut self,
        ttl: &Option<Spanned<String>>,
        ttl_key: &str,
        request_timeout: Option<Duration>,
    ) -> Option<Duration> {
        let lease_ttl = match ttl {
            // Long enough for a whole request after each renewal (see below).
            None => request_timeout.map_or(DEFAULT_LEASE_TTL, |t| DEFAULT_LEASE_TTL.max(t * 3)),
            Some(s) => match duration::parse(&s.value) {
                Ok(d) => d.to_std().unwrap_or_default(),
                Err(e) => {
                    self.problem(s.referenced, format!("{ttl_key}: {e}"));
                    return None;
                }
            },
        };
        let at = ttl.as_ref().map_or(self.at, |t| t.referenced);
        if lease_ttl < Duration::from_secs(2) {
            self.problem(at, format!("{ttl_key} must be at least 2s; use e.g. 15s"));
        } else if let Some(timeout) = request_timeout
            && lease_ttl < timeout * 3
        {
            // The leader renews at a third of the TTL and writes only with a whole
            // request timeout of lease to spare: two thirds must cover one request.
            self.problem(
                at,
                format!(
                    "{ttl_key} ({}) must be at least 3 × connect.request_timeout ({}s), so that the leader always has a whole request's time of lease left; raise it or lower request_timeout (e.g. 5s for a 15s lease)",
                    duration::format(chrono::Duration::from_std(lease_ttl).unwrap_or_default()),
                    timeout.as_secs()
                ),
            );
        }
        Some(lease_ttl)
    }

    /// Where etcd's user name or password (`what`) comes from: a variable or a file.
    fn source(&mut self, c: Map<'_>, what: &str) -> Option<ValueSource> {
        match (
            c.text(&format!("{what}_env")),
            c.path(&format!("{what}_file")),
        ) {
            (Some(e), Some(_)) => {
                self.problem(
                    e.referenced,
                    format!("coordination: set {what}_env or {what}_file, not both"),
                );
                None
            }
            (Some(e), None) if is_env_name(e.value.trim()) => {
                Some(ValueSource::Env(e.value.trim().to_owned()))
            }
            (Some(e), None) => {
                self.problem(
                    e.referenced,
                    format!("coordination.{what}_env must be the NAME of an environment variable (letters, digits, `_`, not starting with a digit); the value given is not shown, in case it is the secret itself"),
                );
                None
            }
            (None, Some(f)) => Some(ValueSource::File(resolve(self.base, &f.value))),
            (None, None) => None,
        }
    }

    /// `tls:`: the CA file, and the client certificate with its key.
    fn tls(&mut self, t: Map<'_>) -> (Option<PathBuf>, Option<(PathBuf, PathBuf)>) {
        let ca_file = t.path("ca_file").map(|f| resolve(self.base, &f.value));
        let client_cert = match (t.path("cert_file"), t.path("key_file")) {
            (Some(cert), Some(key)) => Some((
                resolve(self.base, &cert.value),
                resolve(self.base, &key.value),
            )),
            (None, None) => None,
            _ => {
                self.problem(
                    t.at,
                    "coordination.tls: set cert_file and key_file together (a client certificate needs its key)",
                );
                None
            }
        };
        (ca_file, client_cert)
    }

    /// A service URL: https, or http to loopback only; without a trailing `/`.
    fn endpoint_url(&mut self, raw: &Spanned<String>, key: &str) -> Option<ServiceUrl> {
        let at = raw.referenced;
        let text = raw.value.trim().trim_end_matches('/');
        if let Some(shown) = placeholder(text) {
            self.problem(
                at,
                format!(
                    "{key}: replace the placeholder `{shown}` with a URL like https://etcd-0:2379"
                ),
            );
            return None;
        }
        let message = match ServiceUrl::parse(text) {
            Ok(url) => return Some(url),
            Err(UrlProblem::NotAUrl | UrlProblem::NoHost) => format!(
                "{key}: `{}` is not a URL; write one like https://etcd-0:2379",
                crate::text::untrusted(text)
            ),
            Err(UrlProblem::PlainHttp { .. }) => {
                format!("{key}: `{text}` uses plain http to a non-loopback host; use https")
            }
            Err(UrlProblem::Scheme(other)) => {
                format!("{key}: scheme `{other}` is not supported; use https")
            }
        };
        self.problem(at, message);
        None
    }
}

/// A Kubernetes object name: lowercase letters, digits, `-` and `.`, at most 253 bytes.
fn is_object_name(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 253
        && v.chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-' || ch == '.')
}
