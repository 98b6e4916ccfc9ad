//! What the two AWS stores share: how their SDK clients are configured, the JSON record
//! they hold (value + [`StoreRecord`]), and how an SDK failure becomes a [`StoreError`]
//! that names the store, the secret and AWS's error code with what to do.
//!
//! Credentials come only from the SDK's default provider chain (environment, profile,
//! web identity / IRSA, IMDS), never from the policy. Throttling and transient failures
//! are retried by the SDK's standard retry strategy; nothing here retries again. Not
//! here: the stores themselves (`aws_secrets_manager`, `kms_file`).

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_secretsmanager::config::http::HttpResponse;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;
use zeroize::Zeroizing;

use super::StoreError;
use crate::domain::{Fingerprint, SecretId, StoreRecord};
use crate::text::untrusted;

pub mod spec;

/// Where an AWS store sends its requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsTarget {
    /// The AWS region (`eu-west-1`).
    pub region: String,
    /// Another endpoint than AWS's own for the region (a VPC endpoint, a test server).
    pub endpoint_url: Option<String>,
}

/// Attempts per request (the first + retries) of the SDK's standard retry strategy,
/// which also backs off on throttling.
const MAX_ATTEMPTS: u32 = 3;

/// The SDK configuration of an AWS store: given (tests), or loaded from the default
/// provider chain on first use (loading is async, wiring is not).
pub(crate) struct SdkSource {
    given: Option<SdkConfig>,
    loaded: OnceCell<SdkConfig>,
}

impl SdkSource {
    /// Credentials from the default provider chain, loaded on first use.
    pub(crate) fn default_chain() -> Self {
        SdkSource {
            given: None,
            loaded: OnceCell::new(),
        }
    }

    /// This configuration (its credentials; region and endpoint come from the target).
    pub(crate) fn given(config: SdkConfig) -> Self {
        SdkSource {
            given: Some(config),
            loaded: OnceCell::new(),
        }
    }

    /// The configuration, with this target's region and endpoint, the HTTPS client
    /// (rustls + ring), the standard retry strategy and timeouts.
    pub(crate) async fn config(&self, target: &AwsTarget) -> SdkConfig {
        let base = match &self.given {
            Some(config) => config.clone(),
            None => self
                .loaded
                .get_or_init(|| async {
                    aws_config::defaults(BehaviorVersion::latest())
                        .region(Region::new(target.region.clone()))
                        .http_client(http_client())
                        .load()
                        .await
                })
                .await
                .clone(),
        };
        let mut builder = base
            .into_builder()
            .region(Region::new(target.region.clone()))
            .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(20))
                    .operation_timeout(Duration::from_secs(60))
                    .build(),
            )
            .http_client(http_client());
        builder.set_endpoint_url(target.endpoint_url.clone());
        builder.build()
    }
}

/// Asks the write handle of the publish running on this task
/// ([`crate::writes::may_send_now`]) before every attempt the SDK makes, its retries
/// included: an attempt the coordination lease does not surely outlast is not sent.
/// Outside a publish it lets everything through.
#[derive(Debug)]
pub(crate) struct FencedAttempts;

impl aws_sdk_secretsmanager::config::Intercept for FencedAttempts {
    fn name(&self) -> &'static str {
        "FencedAttempts"
    }

    fn read_before_attempt(
        &self,
        _context: &aws_sdk_secretsmanager::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &aws_sdk_secretsmanager::config::RuntimeComponents,
        _cfg: &mut aws_sdk_secretsmanager::config::ConfigBag,
    ) -> Result<(), aws_sdk_secretsmanager::error::BoxError> {
        crate::writes::may_send_now().map_err(Into::into)
    }
}

/// The SDK's HTTPS client on rustls with ring, the crypto provider the rest of the
/// crate already uses (the SDK's default would add aws-lc).
pub fn http_client() -> aws_sdk_secretsmanager::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// What an AWS store holds for a secret: the value and its record, as one JSON object
/// (`{client_id, client_secret, tenant_id, secret_id, expiration, fingerprint,
/// published_at}`), so that a reader never sees a value with another value's record.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Held {
    client_id: String,
    client_secret: SecretString,
    tenant_id: String,
    secret_id: SecretId,
    expiration: DateTime<Utc>,
    fingerprint: Fingerprint,
    published_at: DateTime<Utc>,
}

/// [`Held`] for writing: `SecretString` deliberately has no `Serialize`.
#[derive(Serialize)]
struct HeldRef<'a> {
    client_id: &'a str,
    client_secret: &'a str,
    tenant_id: &'a str,
    secret_id: SecretId,
    expiration: DateTime<Utc>,
    fingerprint: &'a Fingerprint,
    published_at: DateTime<Utc>,
}

/// The JSON document holding `value` and `record` (zeroized on drop).
pub(crate) fn held_json(
    value: &SecretString,
    record: &StoreRecord,
) -> Result<Zeroizing<String>, serde_json::Error> {
    let held = HeldRef {
        client_id: &record.client_id,
        client_secret: value.expose_secret(),
        tenant_id: &record.tenant_id,
        secret_id: record.secret_id,
        expiration: record.expiration,
        fingerprint: &record.fingerprint,
        published_at: record.published_at,
    };
    serde_json::to_string(&held).map(Zeroizing::new)
}

/// What a stored JSON document turned out to be.
#[derive(Debug)]
pub(crate) enum Parsed {
    /// The rotator's record, its fingerprint matching its value.
    Record(StoreRecord),
    /// The rotator's record, but its value was changed by hand.
    Mismatch(StoreRecord),
    /// Something else (a value stored by hand, another tool's JSON).
    Foreign,
}

/// Parses what a store holds. Never echoes the text (it may be a value).
/// The `client_secret` of a held JSON document; `None` when it is not one or the value
/// is empty. Parse errors are dropped: they could quote the value.
pub(crate) fn held_value(text: &[u8]) -> Option<SecretString> {
    #[derive(Deserialize)]
    struct ValueOnly {
        client_secret: SecretString,
    }
    serde_json::from_slice::<ValueOnly>(text)
        .ok()
        .map(|v| v.client_secret)
        .filter(|v| !v.expose_secret().is_empty())
}

pub(crate) fn parse_held(text: &[u8]) -> Parsed {
    let Ok(held) = serde_json::from_slice::<Held>(text) else {
        return Parsed::Foreign;
    };
    let matches = Fingerprint::of(&held.client_secret) == held.fingerprint;
    let record = StoreRecord {
        client_id: held.client_id,
        tenant_id: held.tenant_id,
        secret_id: held.secret_id,
        expiration: held.expiration,
        published_at: held.published_at,
        fingerprint: held.fingerprint,
    };
    if matches {
        Parsed::Record(record)
    } else {
        Parsed::Mismatch(record)
    }
}

/// A token that names one publish (client, CDS secret, value): a retried write of the
/// same rotation carries the same token, so AWS applies it once.
pub(crate) fn request_token(record: &StoreRecord) -> String {
    let digest = Sha256::new()
        .chain_update(record.client_id.as_bytes())
        .chain_update(b"\n")
        .chain_update(record.secret_id.to_string().as_bytes())
        .chain_update(b"\n")
        .chain_update(record.fingerprint.as_str().as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .to_string()
}

/// How an AWS request failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// AWS answered with an error (the request was refused; a 5xx may have been applied).
    Service {
        /// AWS's error code (`AccessDeniedException`).
        code: String,
        /// AWS's message, escaped.
        message: String,
        /// The HTTP status.
        status: u16,
    },
    /// No credentials could be found: nothing was sent.
    NoCredentials {
        /// What the credential chain said.
        detail: String,
    },
    /// No answer (timeout, connection refused or cut, an unreadable answer).
    NoAnswer {
        /// What happened, with its causes.
        detail: String,
    },
}

impl Failure {
    /// Classifies an SDK error. Reads only the error's metadata and causes, never the
    /// request (which may hold the value).
    pub(crate) fn of<E>(err: &SdkError<E, HttpResponse>) -> Failure
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        match err {
            SdkError::ServiceError(service) => Failure::Service {
                code: untrusted(service.err().code().unwrap_or("Unknown")),
                message: untrusted(service.err().message().unwrap_or("")),
                status: service.raw().status().as_u16(),
            },
            SdkError::ConstructionFailure(_) => Failure::NoAnswer {
                detail: format!("the request could not be built: {}", causes(err)),
            },
            SdkError::TimeoutError(_) => Failure::NoAnswer {
                detail: "no answer in time (timed out)".to_owned(),
            },
            _ => {
                let detail = causes(err);
                // Signing comes before sending: without credentials nothing left the host.
                if detail.contains("provided credentials") || detail.contains("credential provider")
                {
                    Failure::NoCredentials { detail }
                } else {
                    Failure::NoAnswer { detail }
                }
            }
        }
    }

    /// AWS's error code, when AWS answered.
    pub(crate) fn code(&self) -> Option<&str> {
        match self {
            Failure::Service { code, .. } => Some(code),
            Failure::NoCredentials { .. } | Failure::NoAnswer { .. } => None,
        }
    }

    /// Whether the request certainly changed nothing: AWS refused it (a 4xx answer; a
    /// retried publish carries the same token, so had an earlier attempt landed, this
    /// one would have succeeded). Throttling is no refusal: it says nothing of an
    /// earlier attempt still in the network.
    pub(crate) fn refused(&self) -> bool {
        match self {
            Failure::Service { status, code, .. } => {
                (400..500).contains(status) && *status != 429 && !is_throttling(code)
            }
            Failure::NoCredentials { .. } => true,
            Failure::NoAnswer { .. } => false,
        }
    }

    /// One line: the code and message, or what happened, plus `hint` when AWS answered
    /// with a code the hint is for.
    pub(crate) fn describe(&self, hint: impl Fn(&str) -> Option<String>) -> String {
        match self {
            Failure::Service {
                code,
                message,
                status,
            } => {
                let mut text = if message.is_empty() {
                    format!("{code} (HTTP {status})")
                } else {
                    format!("{code} (HTTP {status}): {message}")
                };
                if let Some(hint) = hint(code) {
                    text.push_str("; ");
                    text.push_str(&hint);
                }
                text
            }
            Failure::NoCredentials { detail } => format!(
                "{detail}; the rotator takes AWS credentials only from the default chain: AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY, AWS_PROFILE (~/.aws/config), web identity / IRSA (AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN), an ECS task role or the EC2 instance role: give its service one of these"
            ),
            Failure::NoAnswer { detail } => format!(
                "{detail}; check the endpoint (region, endpoint_url, proxy, VPC endpoint) is reachable from this host"
            ),
        }
    }
}

/// The error and its causes, escaped: transport errors carry no request body.
fn causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    untrusted(&text)
}

/// The JSON document for a publish, or an error naming the store (never the value).
pub(crate) fn held_json_for(
    store: &str,
    location: String,
    value: &SecretString,
    record: &StoreRecord,
) -> Result<Zeroizing<String>, StoreError> {
    held_json(value, record).map_err(|e| {
        io_error(
            store,
            "encode",
            location,
            format!(
                "the record could not be encoded as JSON ({}); report this as a bug",
                e.classify() as u8
            ),
        )
    })
}

/// A failed operation as a [`StoreError`].
pub(crate) fn io_error(
    store: &str,
    operation: &'static str,
    location: String,
    detail: String,
) -> StoreError {
    StoreError::Io {
        store: store.to_owned(),
        operation,
        location,
        detail,
    }
}

/// Whether AWS's error `code` says the request was throttled (answered 400 by the JSON
/// protocols, so the status alone does not tell).
fn is_throttling(code: &str) -> bool {
    let code = code.strip_suffix("Exception").unwrap_or(code);
    matches!(
        code,
        "Throttling"
            | "ThrottlingException"
            | "ThrottledException"
            | "TooManyRequests"
            | "RequestLimitExceeded"
            | "RequestThrottled"
            | "SlowDown"
            | "PriorRequestNotComplete"
            | "RequestTimeout"
    )
}

/// Whether `text` is `code` (AWS codes come with and without the `Exception` suffix).
pub(crate) fn is_code(failure: &Failure, code: &str) -> bool {
    failure
        .code()
        .is_some_and(|c| c == code || c.strip_suffix("Exception") == Some(code))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn record(value: &str) -> StoreRecord {
        StoreRecord {
            client_id: "c".into(),
            tenant_id: "t".into(),
            secret_id: 7,
            expiration: Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap(),
            published_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            fingerprint: Fingerprint::of(&SecretString::from(value.to_owned())),
        }
    }

    #[test]
    fn the_held_json_reads_back_as_its_record() {
        let json = held_json(&SecretString::from("v4lue"), &record("v4lue")).unwrap();
        match parse_held(json.as_bytes()) {
            Parsed::Record(r) => assert_eq!(r, record("v4lue")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_value_changed_by_hand_under_its_record_is_a_mismatch() {
        let json = held_json(&SecretString::from("v4lue"), &record("v4lue")).unwrap();
        let changed = json.replace("v4lue", "other");
        assert!(matches!(
            parse_held(changed.as_bytes()),
            Parsed::Mismatch(_)
        ));
    }

    #[test]
    fn text_that_is_not_the_record_is_foreign() {
        assert!(matches!(parse_held(b"hunter2"), Parsed::Foreign));
        assert!(matches!(
            parse_held(br#"{"password":"x"}"#),
            Parsed::Foreign
        ));
    }

    #[test]
    fn the_request_token_is_the_same_for_a_retry_and_differs_per_value() {
        let a = request_token(&record("a"));
        assert_eq!(a, request_token(&record("a")));
        assert_ne!(a, request_token(&record("b")));
        assert_eq!(a.len(), 36);
    }
}
