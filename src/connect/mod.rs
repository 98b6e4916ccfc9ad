//! CONNECT data services (CDS): the [`ConnectApi`] trait the reconciler talks to, the
//! wire types of the identity API (docs/cds-api.md), and [`ConnectError`].
//!
//! Not here: deciding what to do with secrets (that is `rotation`), and retry policy of
//! a whole rotation step (the HTTP client retries single requests only).

pub mod http;

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::domain::{ClientRef, SecretId};
use crate::writes::Writes;

/// CDS holds at most this many secrets per client.
pub const MAX_SECRETS_PER_CLIENT: usize = 10;

/// A secret as CDS lists it (never with its value).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientSecret {
    /// The secret's id.
    #[serde(rename = "Id", alias = "id")]
    pub id: SecretId,
    /// Free text; the rotator marks its own secrets here.
    #[serde(rename = "Description", alias = "description", default)]
    pub description: Option<String>,
    /// When the secret stops working, if it expires.
    #[serde(
        rename = "Expiration",
        alias = "expiration",
        default,
        deserialize_with = "lenient_time::option"
    )]
    pub expiration: Option<DateTime<Utc>>,
    /// Whether the expiration is enforced.
    #[serde(rename = "Expires", alias = "expires", default)]
    pub expires: Option<bool>,
}

impl ClientSecret {
    /// The instant the secret stops working, or `None` if it never expires.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        match self.expires {
            Some(false) => None,
            _ => self.expiration,
        }
    }

    /// Whether the secret has expired at `now`.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at().is_some_and(|at| at <= now)
    }
}

/// Date-times as CDS writes them: RFC 3339, or without an offset (taken as UTC).
pub mod lenient_time {
    use chrono::{DateTime, NaiveDateTime, Utc};
    use serde::{Deserialize, Deserializer};

    /// Parses one date-time.
    pub fn parse(text: &str) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(text)
            .map(|t| t.to_utc())
            .ok()
            .or_else(|| {
                NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
                    .ok()
                    .map(|n| n.and_utc())
            })
    }

    /// `deserialize_with` for an optional date-time.
    pub fn option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => parse(&s)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(format!("`{s}` is not a date-time"))),
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn accepts_offsets_fractions_and_no_offset() {
            for t in [
                "2027-01-01T00:00:00Z",
                "2027-01-01T00:00:00.0000000Z",
                "2027-01-01T01:00:00+01:00",
                "2027-01-01T00:00:00",
            ] {
                assert_eq!(
                    super::parse(t).unwrap().to_rfc3339(),
                    "2027-01-01T00:00:00+00:00",
                    "{t}"
                );
            }
        }
    }
}

/// What the rotator asks CDS to create. It always expires (invariant I6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewSecret {
    /// When the secret will stop working.
    pub expiration: DateTime<Utc>,
    /// The description that marks it as the rotator's (see `rotation::marker`).
    pub description: String,
}

/// A secret CDS has just created, with the value it shows once.
#[derive(Debug)]
pub struct CreatedSecret {
    /// The secret as it will be listed.
    pub secret: ClientSecret,
    /// The value; CDS never shows it again.
    pub value: SecretString,
}

/// The parts of a CDS `ErrorResponse` worth showing to a user.
///
/// Each field is text from outside: parsing escapes its control characters and clips
/// it (see [`crate::text::untrusted`]), so it cannot forge or wipe lines of the output.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// CDS's id for the failed operation: quote it to support.
    #[serde(
        rename = "OperationId",
        alias = "operationId",
        default,
        deserialize_with = "untrusted_text"
    )]
    pub operation_id: Option<String>,
    /// What went wrong.
    #[serde(
        rename = "Error",
        alias = "error",
        default,
        deserialize_with = "untrusted_text"
    )]
    pub error: Option<String>,
    /// Why.
    #[serde(
        rename = "Reason",
        alias = "reason",
        default,
        deserialize_with = "untrusted_text"
    )]
    pub reason: Option<String>,
    /// What to do about it.
    #[serde(
        rename = "Resolution",
        alias = "resolution",
        default,
        deserialize_with = "untrusted_text"
    )]
    pub resolution: Option<String>,
}

/// `deserialize_with` for text fields of an answer: escaped and clipped.
fn untrusted_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.map(|s| crate::text::untrusted(&s)))
}

impl fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        for (label, value) in [
            ("Error", &self.error),
            ("Reason", &self.reason),
            ("Resolution", &self.resolution),
            ("OperationId", &self.operation_id),
        ] {
            if let Some(v) = value {
                // Escaped again: a body built in code did not go through parsing.
                // Escaping is idempotent, so parsed fields show as they are.
                write!(f, "{sep}{label}: {}", crate::text::escape_control(v))?;
                sep = "; ";
            }
        }
        Ok(())
    }
}

/// A failed call to CDS. Messages never contain a secret value or a token.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// CDS answered with an error status.
    #[error("{operation}: CDS answered HTTP {status}{}{}", fmt_body(body), hint(*status))]
    Api {
        /// What was being done, e.g. "list secrets of client <id>".
        operation: String,
        /// The HTTP status.
        status: u16,
        /// The parsed `ErrorResponse`, when there was one.
        body: Box<ErrorBody>,
    },
    /// A write went to a regional URL; CDS only takes identity writes on the primary one.
    #[error(
        "{operation}: CDS answered HTTP 405: identity writes are only accepted on the primary-region URL (https://uswe.datahub.connect.aveva.com); set connect.url to it{}",
        fmt_body(body)
    )]
    RegionalWrite {
        /// What was being done.
        operation: String,
        /// The parsed `ErrorResponse`, when there was one.
        body: Box<ErrorBody>,
    },
    /// The token endpoint refused a client id and secret.
    #[error(
        "getting a token for client {client_id}: CDS refused the credentials (HTTP {status}: {detail})"
    )]
    Unauthenticated {
        /// The client whose credentials were refused.
        client_id: String,
        /// The HTTP status.
        status: u16,
        /// The OAuth error code, e.g. `invalid_client`.
        detail: String,
    },
    /// The token endpoint refused the rotator's own client id and secret: the secret in
    /// its credential source no longer works.
    #[error(
        "getting a token for the rotator's own client {client_id}: CDS refused the secret in {credential} (HTTP {status}: {detail}); the secret may have expired or been deleted in the CDS portal: put a working secret of client {client_id} in {credential}"
    )]
    OwnCredentialRefused {
        /// The rotator's own client id.
        client_id: String,
        /// Where the secret was read: a file path or an environment variable, named only
        /// when that name cannot be a pasted secret.
        credential: String,
        /// The HTTP status.
        status: u16,
        /// The OAuth error code, e.g. `invalid_client`.
        detail: String,
    },
    /// CDS will give the client no token with any secret: it is disabled or does not
    /// exist. Waiting does not help, so it is not retried.
    #[error(
        "getting a token for client {client_id}: the client {why} in CDS (CDS said: {reason}); {}",
        why.advice()
    )]
    ClientUnusable {
        /// The client.
        client_id: String,
        /// Disabled or not found.
        why: Unusable,
        /// CDS's own words (`error_description`), escaped and clipped.
        reason: String,
    },
    /// The token endpoint itself answered 404: `connect.url` is not a CDS base URL.
    #[error(
        "{operation}: the token endpoint {url} was not found (HTTP 404): connect.url must be the base URL, like https://uswe.datahub.connect.aveva.com"
    )]
    TokenEndpointNotFound {
        /// What was being done.
        operation: String,
        /// The token endpoint tried, without query or user info.
        url: String,
    },
    /// The request may or may not have been carried out (a write whose answer was lost).
    #[error("{operation}: the outcome is unknown ({detail})")]
    OutcomeUnknown {
        /// What was being done.
        operation: String,
        /// What happened to the answer.
        detail: String,
    },
    /// No answer could be had (connection refused, timeouts) after the bounded retries.
    #[error("{operation}: no answer from CDS ({detail})")]
    Transport {
        /// What was being done.
        operation: String,
        /// The transport error, without URLs' query strings or bodies.
        detail: String,
    },
    /// CDS answered something that does not follow the API contract.
    #[error("{operation}: unexpected answer from CDS: {detail}")]
    BadResponse {
        /// What was being done.
        operation: String,
        /// What was wrong with it.
        detail: String,
    },
    /// An attempt of a write was not sent: this process no longer surely holds the
    /// coordination lease for as long as it may take.
    #[error(
        "{operation}: not sent: lost the coordination lease; nothing more is written until this process leads again"
    )]
    LeaseLost {
        /// What was being done.
        operation: String,
    },
    /// A retry was not waited for because the process is stopping (SIGTERM, SIGINT).
    #[error("{operation}: not retried: cds-rotator is stopping")]
    Stopped {
        /// What was being done.
        operation: String,
    },
    /// The rotator's own credential could not be read.
    #[error("reading the rotator's own client secret: {0}")]
    Credential(String),
}

impl ConnectError {
    /// The HTTP status and the CDS OperationId of a refused request, where known.
    pub fn status_and_operation_id(&self) -> (Option<u16>, Option<&str>) {
        match self {
            ConnectError::Api { status, body, .. } => (Some(*status), body.operation_id.as_deref()),
            ConnectError::RegionalWrite { body, .. } => (Some(405), body.operation_id.as_deref()),
            ConnectError::Unauthenticated { status, .. }
            | ConnectError::OwnCredentialRefused { status, .. } => (Some(*status), None),
            ConnectError::TokenEndpointNotFound { .. } => (Some(404), None),
            _ => (None, None),
        }
    }

    /// Whether a write that failed this way may have been carried out anyway.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            ConnectError::OutcomeUnknown { .. } | ConnectError::Stopped { .. }
        )
    }
}

/// Why CDS will not give a client any token ([`ConnectError::ClientUnusable`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unusable {
    /// The client exists but is disabled.
    Disabled,
    /// No such client in the tenant.
    NotFound,
}

impl Unusable {
    /// What to do about it.
    fn advice(self) -> &'static str {
        match self {
            Unusable::Disabled => {
                "enable the client in the CDS portal, or take it out of the policy"
            }
            Unusable::NotFound => {
                "check the client_id in the policy (connect.credentials.client_id for the rotator's own client): CDS has no such client"
            }
        }
    }
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unusable::Disabled => "is disabled",
            Unusable::NotFound => "was not found",
        })
    }
}

/// What an operator usually has to do about a status, when CDS did not say.
fn hint(status: u16) -> &'static str {
    match status {
        403 => {
            "; the rotator's own client needs the Tenant Administrator role (or, for its own client-credentials client only, the Self role)"
        }
        404 => {
            "; check tenant_id, the client's client_id and its kind (client_credentials or hybrid)"
        }
        429 => "; CDS kept throttling after the retries; lower max_concurrency",
        _ => "",
    }
}

fn fmt_body(body: &ErrorBody) -> String {
    let s = body.to_string();
    if s.is_empty() { s } else { format!(" ({s})") }
}

/// The CDS identity API as the reconciler needs it.
///
/// Implementations retry single idempotent requests (GET, DELETE) on throttling and
/// transient failures; a create whose answer is lost is reported as
/// [`ConnectError::OutcomeUnknown`] and never re-posted here.
#[async_trait]
pub trait ConnectApi: Send + Sync {
    /// Every secret of the client (all pages).
    async fn list_secrets(&self, client: &ClientRef) -> Result<Vec<ClientSecret>, ConnectError>;

    /// Creates a secret; the answer carries its value. Each attempt (and the token
    /// renewal before it) is sent only when `writes` allows it.
    async fn create_secret(
        &self,
        writes: &Writes,
        client: &ClientRef,
        new: &NewSecret,
    ) -> Result<CreatedSecret, ConnectError>;

    /// Deletes a secret. A secret that is already gone counts as deleted. Each attempt
    /// (and the token renewal before it) is sent only when `writes` allows it.
    async fn delete_secret(
        &self,
        writes: &Writes,
        client: &ClientRef,
        id: SecretId,
    ) -> Result<(), ConnectError>;

    /// Proves a client id and secret work by getting a token with them.
    async fn verify_secret(
        &self,
        client_id: &str,
        secret: &SecretString,
    ) -> Result<(), ConnectError>;

    /// Drops any cached token of the rotator's own credential, so the next call reads
    /// the credential again (used after the rotator rotated its own secret).
    fn reload_credential(&self) {}

    /// Gets a fresh token with the rotator's own credential (the preflight `check`).
    async fn check_credential(&self) -> Result<(), ConnectError>;

    /// Makes sure the rotator's own credential has a token (the cached one while it
    /// lasts): asked once before a batch of passes, so that a refused credential is one
    /// failure, not one per client.
    async fn token_ready(&self) -> Result<(), ConnectError> {
        Ok(())
    }

    /// Whether `client` exists in the collection of its kind (the preflight `check`).
    async fn client_exists(&self, client: &ClientRef) -> Result<bool, ConnectError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_text_is_escaped_and_clipped_when_parsed() {
        let body: ErrorBody = serde_json::from_str(&format!(
            r#"{{"OperationId":"op-1\r","Error":"boom\n\u001b[2Jclient other: rotated: FORGED","Reason":"{}","Resolution":"\u202ex"}}"#,
            "r".repeat(1000)
        ))
        .unwrap();
        assert_eq!(body.operation_id.as_deref(), Some(r"op-1\u{d}"));
        assert_eq!(
            body.error.as_deref(),
            Some(r"boom\n\u{1b}[2Jclient other: rotated: FORGED")
        );
        let reason = body.reason.as_deref().unwrap();
        assert_eq!(reason.chars().count(), crate::text::UNTRUSTED_MAX_CHARS);
        assert!(reason.ends_with('…'));
        assert_eq!(body.resolution.as_deref(), Some(r"\u{202e}x"));
    }

    #[test]
    fn error_body_display_escapes_text_set_in_code_too() {
        let body = ErrorBody {
            operation_id: Some("op-1".into()),
            error: Some("a\nb".into()),
            ..ErrorBody::default()
        };
        assert_eq!(body.to_string(), r"Error: a\nb; OperationId: op-1");
    }
}
