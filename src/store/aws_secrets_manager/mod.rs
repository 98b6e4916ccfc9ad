//! The `aws_secrets_manager` store: one Secrets Manager secret per stored secret.
//!
//! The secret's `SecretString` is one JSON object holding the value and its record
//! (`{client_id, client_secret, tenant_id, secret_id, expiration, fingerprint,
//! published_at}`), so a reader never sees a value with another value's record. A
//! publish is a `PutSecretValue` whose new version becomes `AWSCURRENT` (the one before
//! it `AWSPREVIOUS`); the secret is created on first use (with `kms_key_id` when given).
//! Its `ClientRequestToken` is derived from the rotation (client, CDS secret,
//! fingerprint), so a retried put is applied once. A put whose answer is lost is settled
//! by putting the same request again until AWS answers it (a read-back that shows the
//! old value proves nothing: the request may land later); what cannot be settled so is
//! [`StoreError::OutcomeUnknown`], and such a write can land only while its signature is
//! accepted (`late_write`).
//!
//! Not here: credentials (the SDK's default chain, see `store::aws`), deciding when to
//! publish (that is `rotation`).

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueOutput;
use secrecy::SecretString;
use tokio::sync::OnceCell;
use zeroize::Zeroizing;

use super::aws::{self, AwsTarget, Failure, Parsed, SdkSource};
pub mod spec;

use super::{LateWrite, SecretStore, StoreError};
use crate::domain::{Current, StoreRecord};

/// How many times a put whose answer was lost is put again (each one an SDK call with
/// its own attempts) before the publish is reported in doubt.
const SETTLE_ATTEMPTS: u32 = 4;

/// The wait before the n-th repeated put is n times this.
const SETTLE_BACKOFF: std::time::Duration = std::time::Duration::from_secs(1);

/// How long after a publish began a request of it can still land: the publish itself
/// (at most 2 + [`SETTLE_ATTEMPTS`] SDK calls of 60 s, and their waits: under 10 min),
/// then the 15 minutes AWS accepts a SigV4 signature after its time stamp, and 5 minutes
/// for the clocks of AWS and this host to differ. A request still in the network after
/// that is refused (`Signature expired`).
const LATE_WRITE: chrono::Duration = chrono::Duration::minutes(30);

/// A store that publishes to AWS Secrets Manager.
pub struct SecretsManagerStore {
    name: String,
    target: AwsTarget,
    kms_key_id: Option<String>,
    sdk: SdkSource,
    client: OnceCell<Client>,
}

impl std::fmt::Debug for SecretsManagerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsManagerStore")
            .field("name", &self.name)
            .field("target", &self.target)
            .field("kms_key_id", &self.kms_key_id)
            .finish_non_exhaustive()
    }
}

impl SecretsManagerStore {
    /// A store named `name` (as in the policy), with credentials from the default
    /// provider chain (loaded on first use); new secrets are encrypted with `kms_key_id`
    /// when given (AWS's managed key otherwise).
    pub fn new(name: impl Into<String>, target: AwsTarget, kms_key_id: Option<String>) -> Self {
        Self::with_source(name.into(), target, kms_key_id, SdkSource::default_chain())
    }

    /// Like [`SecretsManagerStore::new`], with the credentials of `config` (tests).
    pub fn with_sdk_config(
        name: impl Into<String>,
        target: AwsTarget,
        kms_key_id: Option<String>,
        config: SdkConfig,
    ) -> Self {
        Self::with_source(name.into(), target, kms_key_id, SdkSource::given(config))
    }

    fn with_source(
        name: String,
        target: AwsTarget,
        kms_key_id: Option<String>,
        sdk: SdkSource,
    ) -> Self {
        SecretsManagerStore {
            name,
            target,
            kms_key_id,
            sdk,
            client: OnceCell::new(),
        }
    }

    async fn client(&self) -> &Client {
        self.client
            .get_or_init(|| async {
                let config = aws_sdk_secretsmanager::config::Builder::from(
                    &self.sdk.config(&self.target).await,
                );
                Client::from_conf(config.interceptor(aws::FencedAttempts).build())
            })
            .await
    }

    fn failed(&self, operation: &'static str, key: &str, failure: &Failure) -> StoreError {
        let detail = failure.describe(|code| self.hint(code, key));
        aws::io_error(&self.name, operation, self.location(key), detail)
    }

    /// What to do about the usual mistakes, by AWS error code.
    fn hint(&self, code: &str, key: &str) -> Option<String> {
        let code = code.strip_suffix("Exception").unwrap_or(code);
        let region = &self.target.region;
        match code {
            "AccessDenied" => Some(format!(
                "allow the rotator's IAM identity (see `aws sts get-caller-identity`) secretsmanager:GetSecretValue, PutSecretValue, CreateSecret and DescribeSecret on arn:aws:secretsmanager:{region}:<account>:secret:{key}-* (secret ARNs end in a random 6-character suffix, so end the resource with -*){}",
                match &self.kms_key_id {
                    Some(k) => format!(", and kms:GenerateDataKey and kms:Decrypt on {k} (the key policy must allow it too)"),
                    None => String::new(),
                }
            )),
            "UnrecognizedClient" | "InvalidClientTokenId" | "InvalidSignature" | "ExpiredToken" => Some(
                "the AWS credentials were refused: the rotator takes them from the default chain (AWS_* environment, profile, web identity / IRSA, instance role); check which one applies and that it is current".to_owned(),
            ),
            "EncryptionFailure" | "DecryptionFailure" | "KMSAccessDenied" | "KMSDisabled" | "KMSInvalidState" | "KMSNotFound" => Some(format!(
                "check that kms_key_id {} exists and is enabled in {region}, and that its key policy allows the rotator kms:GenerateDataKey and kms:Decrypt",
                self.kms_key_id.as_deref().unwrap_or("(AWS managed key)")
            )),
            "InvalidRequest" => Some(format!(
                "if the secret is scheduled for deletion, restore it with `aws secretsmanager restore-secret --region {region} --secret-id {key}` or give the client another secret name"
            )),
            _ => None,
        }
    }

    async fn put(&self, key: &str, json: &str, token: &str) -> Result<(), Failure> {
        self.client()
            .await
            .put_secret_value()
            .secret_id(key)
            .secret_string(json)
            .client_request_token(token)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| Failure::of(&e))
    }

    async fn create(&self, key: &str, record: &StoreRecord) -> Result<(), StoreError> {
        let result = self
            .client()
            .await
            .create_secret()
            .name(key)
            .description(format!(
                "Client secret of CDS client {} (tenant {}), rotated by cds-rotator",
                record.client_id, record.tenant_id
            ))
            .set_kms_key_id(self.kms_key_id.clone())
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => {
                let failure = Failure::of(&e);
                // Created meanwhile (another attempt, a person): the put goes ahead.
                if aws::is_code(&failure, "ResourceExists") {
                    Ok(())
                } else {
                    Err(self.failed("create", key, &failure))
                }
            }
        }
    }

    /// A put got no answer (or an answer that proves nothing): it may land at any time
    /// while it is delayed in the network. A read-back that shows the old value proves
    /// nothing, so the same request (the same `ClientRequestToken`: AWS applies it at
    /// most once, and a copy that arrives after a version with that token exists
    /// changes nothing) is put again until AWS answers it. Answered → settled: the
    /// value is current, and no late copy can change that. Refused → the version is
    /// looked up by its id (the token); found current → settled. Otherwise, and when
    /// no answer comes within [`SETTLE_ATTEMPTS`], the publish is in doubt.
    async fn settle(
        &self,
        key: &str,
        json: &str,
        token: &str,
        value: &SecretString,
        record: &StoreRecord,
        first: Failure,
    ) -> Result<(), StoreError> {
        let mut last = first;
        for attempt in 1..=SETTLE_ATTEMPTS {
            tokio::time::sleep(SETTLE_BACKOFF * attempt).await;
            match self.put(key, json, token).await {
                Ok(()) => {
                    tracing::info!(
                        store = %self.name,
                        location = %self.location(key),
                        fingerprint = %record.fingerprint,
                        attempt,
                        "the answer to the publish was lost; putting the same request again (same request token) settled it: the new value is current"
                    );
                    return Ok(());
                }
                Err(failure) if failure.refused() => {
                    last = failure;
                    break;
                }
                Err(failure) => last = failure,
            }
        }
        let error = self.failed("write", key, &last);
        match self.version_is_current(key, token).await {
            Ok(true) => {
                tracing::info!(
                    store = %self.name,
                    location = %self.location(key),
                    fingerprint = %record.fingerprint,
                    "the answer to the publish was lost; its version (the request token) is current"
                );
                Ok(())
            }
            Ok(false) => Err(StoreError::OutcomeUnknown {
                store: self.name.clone(),
                location: self.location(key),
                detail: crate::secret::redacted(
                    format!(
                        "{error}; the request may still land, and putting it again with the same request token got no answer that settles it"
                    ),
                    value,
                ),
            }),
            Err(read) => Err(StoreError::OutcomeUnknown {
                store: self.name.clone(),
                location: self.location(key),
                detail: crate::secret::redacted(
                    format!("{error}; looking its version up failed too: {read}"),
                    value,
                ),
            }),
        }
    }

    /// Whether the version whose id is `token` exists and is `AWSCURRENT` (from the
    /// secret's metadata: `DescribeSecret` never returns a value).
    async fn version_is_current(&self, key: &str, token: &str) -> Result<bool, StoreError> {
        let result = self
            .client()
            .await
            .describe_secret()
            .secret_id(key)
            .send()
            .await;
        match result {
            Ok(out) => Ok(out
                .version_ids_to_stages()
                .and_then(|stages| stages.get(token))
                .is_some_and(|stages| stages.iter().any(|s| s == "AWSCURRENT"))),
            Err(e) => {
                let failure = Failure::of(&e);
                if aws::is_code(&failure, "ResourceNotFound") {
                    Ok(false)
                } else {
                    Err(self.failed("read", key, &failure))
                }
            }
        }
    }
}

/// `error` without `value` in its text (AWS answers are not ours to trust).
fn redact(error: StoreError, value: &SecretString) -> StoreError {
    match error {
        StoreError::Io {
            store,
            operation,
            location,
            detail,
        } => StoreError::Io {
            store,
            operation,
            location,
            detail: crate::secret::redacted(detail, value),
        },
        other => other,
    }
}

impl SecretsManagerStore {
    /// The AWSCURRENT version of secret `key`; `None` when there is no secret, or one
    /// without an AWSCURRENT version (created, never put).
    async fn get_current(&self, key: &str) -> Result<Option<GetSecretValueOutput>, StoreError> {
        let result = self
            .client()
            .await
            .get_secret_value()
            .secret_id(key)
            .send()
            .await;
        match result {
            Ok(out) => Ok(Some(out)),
            Err(e) => {
                let failure = Failure::of(&e);
                if aws::is_code(&failure, "ResourceNotFound") {
                    Ok(None)
                } else {
                    Err(self.failed("read", key, &failure))
                }
            }
        }
    }
}

#[async_trait]
impl SecretStore for SecretsManagerStore {
    fn location(&self, key: &str) -> String {
        format!("aws secretsmanager {}/{key}", self.target.region)
    }

    fn late_write(&self) -> LateWrite {
        LateWrite::Within(LATE_WRITE)
    }

    async fn read_value(&self, key: &str) -> Result<Option<SecretString>, StoreError> {
        let Some(mut out) = self.get_current(key).await? else {
            return Ok(None);
        };
        let text = Zeroizing::new(out.secret_string.take().unwrap_or_default());
        if text.is_empty() {
            return Ok(None);
        }
        aws::held_value(text.as_bytes())
            .map(Some)
            .ok_or_else(|| StoreError::Corrupt {
                store: self.name.clone(),
                location: self.location(key),
                detail: "it is not a JSON record with a client_secret (not written by cds-rotator)"
                    .to_owned(),
            })
    }

    async fn read_current(&self, key: &str) -> Result<Current, StoreError> {
        let Some(mut out) = self.get_current(key).await? else {
            return Ok(Current::Empty);
        };
        let text = Zeroizing::new(out.secret_string.take().unwrap_or_default());
        let binary = out
            .secret_binary
            .take()
            .is_some_and(|b| !b.as_ref().is_empty());
        if text.is_empty() {
            return Ok(if binary {
                Current::Unrecorded
            } else {
                Current::Empty
            });
        }
        match aws::parse_held(text.as_bytes()) {
            Parsed::Record(record) => Ok(Current::Published(record)),
            Parsed::Foreign => Ok(Current::Unrecorded),
            Parsed::Mismatch(record) => Err(StoreError::Corrupt {
                store: self.name.clone(),
                location: self.location(key),
                detail: format!(
                    "its client_secret does not match the recorded fingerprint {} (CDS secret {}): it was changed by hand; put back the published value, or remove the secret's record fields so the next pass treats it as unrecorded",
                    record.fingerprint, record.secret_id
                ),
            }),
        }
    }

    async fn probe(&self) -> Result<(), StoreError> {
        // No secret name here: a read-only call proves credentials, region and endpoint.
        self.client()
            .await
            .list_secrets()
            .max_results(1)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                let failure = Failure::of(&e);
                let detail = failure.describe(|code| {
                    (code.strip_suffix("Exception").unwrap_or(code) == "AccessDenied").then(|| {
                        "allow the rotator's IAM identity secretsmanager:ListSecrets on * (used by `check` only)".to_owned()
                    })
                    .or_else(|| self.hint(code, "<secret>"))
                });
                aws::io_error(
                    &self.name,
                    "probe",
                    format!("aws secretsmanager {}", self.target.region),
                    detail,
                )
            })
    }

    async fn publish(
        &self,
        key: &str,
        value: &SecretString,
        record: &StoreRecord,
    ) -> Result<(), StoreError> {
        let json = aws::held_json_for(&self.name, self.location(key), value, record)?;
        let token = aws::request_token(record);
        let mut failure = match self.put(key, &json, &token).await {
            Ok(()) => return Ok(()),
            Err(failure) => failure,
        };
        if aws::is_code(&failure, "ResourceNotFound") {
            self.create(key, record).await?;
            failure = match self.put(key, &json, &token).await {
                Ok(()) => return Ok(()),
                Err(failure) => failure,
            };
        }
        if failure.refused() {
            return Err(redact(self.failed("write", key, &failure), value));
        }
        self.settle(key, &json, &token, value, record, failure)
            .await
    }
}
