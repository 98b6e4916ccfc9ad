//! The `azure_key_vault` store: one Key Vault secret per stored secret.
//!
//! A publish sets a new version whose value is the client secret alone, with content
//! type `text/plain`, the `exp` attribute at the CDS expiration and the record in its
//! tags (`client_id`, `tenant_id`, `secret_id`, `fingerprint`, `published_at`); the new
//! version becomes the current one at once, so a reader sees the old value or the new
//! one. The record is read back from the current version's tags. A set whose answer is
//! lost is published if reading the current version back shows its fingerprint, and in
//! doubt otherwise ([`StoreError::OutcomeUnknown`]): Key Vault has no idempotency token
//! and no conditional write, so nothing proves the set will not land later.
//!
//! Credentials come only from `azure_identity` (workload identity, a client secret in
//! `AZURE_*` variables, managed identity, the Azure CLI / azd), never from the policy.
//! HTTPS is reqwest on rustls with ring, as in the rest of the crate. Not here:
//! deciding when to publish (that is `rotation`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use azure_core::error::ErrorKind;
use azure_core::http::{
    ClientOptions, ExponentialRetryOptions, RequestContent, RetryOptions, Transport,
};
use azure_security_keyvault_secrets::models::{
    Secret, SecretAttributes, SecretClientGetSecretOptions,
    SecretClientListSecretPropertiesOptions, SetSecretParameters,
};
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

pub mod spec;

use super::{LateWrite, SecretStore, StoreError};
use crate::domain::{Current, Fingerprint, StoreRecord};
use crate::text::untrusted;

/// The RBAC mistake behind most 403s, and what to do about it.
const RBAC_HINT: &str = "give the rotator's identity the role \"Key Vault Secrets Officer\" on the vault (`az role assignment create --role \"Key Vault Secrets Officer\" --assignee <rotator's object id> --scope <vault's resource id>`); a vault with access policies instead of RBAC needs secret permissions get, list and set";

/// The credential hint: where `azure_identity` looks.
const CREDENTIAL_HINT: &str = "the rotator takes Azure credentials only from azure_identity: workload identity (AZURE_FEDERATED_TOKEN_FILE + AZURE_CLIENT_ID + AZURE_TENANT_ID), a client secret (AZURE_CLIENT_ID + AZURE_TENANT_ID + AZURE_CLIENT_SECRET), a managed identity, or `az login` / `azd auth login`: give its service one of these";

/// A store that publishes to Azure Key Vault.
pub struct AzureKeyVaultStore {
    name: String,
    vault_url: String,
    client: Result<SecretClient, String>,
}

impl std::fmt::Debug for AzureKeyVaultStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureKeyVaultStore")
            .field("name", &self.name)
            .field("vault_url", &self.vault_url)
            .finish_non_exhaustive()
    }
}

/// The HTTPS client the SDK uses: reqwest on rustls with ring, trusting `roots`.
pub fn http_client(roots: rustls::RootCertStore) -> Result<reqwest013::Client, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest013::Client::builder()
        .use_preconfigured_tls(tls)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(20))
        .build()
        .map_err(|e| e.to_string())
}

/// The system's trusted roots (as reqwest's native-roots feature reads them).
fn native_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(found.certs);
    roots
}

/// Attempts per request (the first + retries) on throttling, 5xx and cut connections;
/// a retried set writes the same value and tags again, so it is harmless.
const MAX_ATTEMPTS: u32 = 3;

/// Asks the write handle of the publish running on this task
/// ([`crate::writes::may_send_now`]) before every try the pipeline makes, its retries
/// and token requests included; outside a publish it lets everything through.
#[derive(Debug)]
struct FencedTries;

#[async_trait]
impl azure_core::http::policies::Policy for FencedTries {
    async fn send(
        &self,
        ctx: &azure_core::http::Context,
        request: &mut azure_core::http::Request,
        next: &[Arc<dyn azure_core::http::policies::Policy>],
    ) -> azure_core::http::policies::PolicyResult {
        if crate::writes::may_send_now().is_err() {
            return Err(azure_core::Error::with_message(
                ErrorKind::Other,
                "not sent: lost the coordination lease",
            ));
        }
        match next.split_first() {
            Some((first, rest)) => first.send(ctx, request, rest).await,
            None => Err(azure_core::Error::with_message(
                ErrorKind::Other,
                "no transport after the lease check",
            )),
        }
    }
}

fn client_options(http: &reqwest013::Client) -> ClientOptions {
    ClientOptions {
        transport: Some(Transport::new(Arc::new(http.clone()))),
        per_try_policies: vec![Arc::new(FencedTries)],
        retry: RetryOptions::exponential(ExponentialRetryOptions {
            initial_delay: azure_core::time::Duration::milliseconds(200),
            max_retries: MAX_ATTEMPTS - 1,
            max_total_elapsed: azure_core::time::Duration::seconds(60),
            max_delay: azure_core::time::Duration::seconds(10),
        }),
        ..Default::default()
    }
}

/// The first credential of `azure_identity` that this host's environment offers:
/// workload identity, a client secret in the environment, a managed identity, then the
/// developer tools (Azure CLI, azd).
fn default_credential(http: &reqwest013::Client) -> Result<Arc<dyn TokenCredential>, String> {
    use azure_identity::*;
    let set = |n: &str| std::env::var_os(n).is_some_and(|v| !v.is_empty());
    if set("AZURE_FEDERATED_TOKEN_FILE") {
        let mut options = WorkloadIdentityCredentialOptions::default();
        options.credential_options.client_options = client_options(http);
        return WorkloadIdentityCredential::new(Some(options))
            .map(|c| c as Arc<dyn TokenCredential>)
            .map_err(|e| untrusted(&e.to_string()));
    }
    if set("AZURE_CLIENT_SECRET") && set("AZURE_CLIENT_ID") && set("AZURE_TENANT_ID") {
        let var = |n: &str| std::env::var(n).unwrap_or_default();
        let options = ClientSecretCredentialOptions {
            client_options: client_options(http),
        };
        return ClientSecretCredential::new(
            &var("AZURE_TENANT_ID"),
            var("AZURE_CLIENT_ID"),
            var("AZURE_CLIENT_SECRET").into(),
            Some(options),
        )
        .map(|c| c as Arc<dyn TokenCredential>)
        .map_err(|e| untrusted(&e.to_string()));
    }
    let managed = ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
        client_options: client_options(http),
        ..Default::default()
    }))
    .map_err(|e| untrusted(&e.to_string()))?;
    let tools = DeveloperToolsCredential::new(None).map_err(|e| untrusted(&e.to_string()))?;
    Ok(Arc::new(FirstOf(vec![managed, tools])))
}

/// Tries credentials in order; the first token wins.
#[derive(Debug)]
struct FirstOf(Vec<Arc<dyn TokenCredential>>);

#[async_trait]
impl TokenCredential for FirstOf {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let mut failures = Vec::new();
        for credential in &self.0 {
            match credential.get_token(scopes, options.clone()).await {
                Ok(token) => return Ok(token),
                Err(e) => failures.push(e.to_string()),
            }
        }
        Err(azure_core::Error::with_message(
            ErrorKind::Credential,
            format!("no Azure credential: {}", failures.join("; ")),
        ))
    }
}

impl AzureKeyVaultStore {
    /// A store named `name` (as in the policy) for the vault at `vault_url`, with
    /// credentials from `azure_identity` and the system's trusted roots.
    pub fn new(name: impl Into<String>, vault_url: impl Into<String>) -> Self {
        let vault_url = vault_url.into();
        let client = http_client(native_roots()).and_then(|http| {
            let credential = default_credential(&http)?;
            Self::secret_client(&vault_url, credential, &http, true)
        });
        AzureKeyVaultStore {
            name: name.into(),
            vault_url,
            client,
        }
    }

    /// Like [`AzureKeyVaultStore::new`] with a given credential and HTTPS client
    /// (tests). `verify_challenge_resource: false` lets the vault be on a host that is
    /// not under the challenge's resource (a test server on loopback).
    pub fn with_credential(
        name: impl Into<String>,
        vault_url: impl Into<String>,
        credential: Arc<dyn TokenCredential>,
        http: reqwest013::Client,
        verify_challenge_resource: bool,
    ) -> Self {
        let vault_url = vault_url.into();
        let client = Self::secret_client(&vault_url, credential, &http, verify_challenge_resource);
        AzureKeyVaultStore {
            name: name.into(),
            vault_url,
            client,
        }
    }

    fn secret_client(
        vault_url: &str,
        credential: Arc<dyn TokenCredential>,
        http: &reqwest013::Client,
        verify_challenge_resource: bool,
    ) -> Result<SecretClient, String> {
        let options = SecretClientOptions {
            client_options: client_options(http),
            verify_challenge_resource: Some(verify_challenge_resource),
            ..Default::default()
        };
        SecretClient::new(vault_url, credential, Some(options))
            .map_err(|e| untrusted(&e.to_string()))
    }

    fn client(&self, operation: &'static str, key: &str) -> Result<&SecretClient, StoreError> {
        self.client.as_ref().map_err(|e| {
            self.io(
                operation,
                self.location(key),
                format!("{e}; {CREDENTIAL_HINT}"),
            )
        })
    }

    /// The current version of secret `key`, or `None` when the vault has none.
    async fn get(&self, key: &str) -> Result<Option<Secret>, StoreError> {
        let client = self.client("read", key)?;
        match client
            .get_secret(key, None::<SecretClientGetSecretOptions<'_>>)
            .await
        {
            Ok(response) => response.into_model().map(Some).map_err(|e| {
                self.io(
                    "read",
                    self.location(key),
                    format!(
                        "the answer is not a Key Vault secret: {}",
                        untrusted(&e.to_string())
                    ),
                )
            }),
            Err(e) if e.http_status().is_some_and(|s| u16::from(s) == 404) => Ok(None),
            Err(e) => Err(self.failed("read", key, &e)),
        }
    }

    fn io(&self, operation: &'static str, location: String, detail: String) -> StoreError {
        StoreError::Io {
            store: self.name.clone(),
            operation,
            location,
            detail,
        }
    }

    fn failed(&self, operation: &'static str, key: &str, error: &azure_core::Error) -> StoreError {
        self.io(operation, self.location(key), describe(error))
    }

    async fn set(
        &self,
        key: &str,
        value: &SecretString,
        record: &StoreRecord,
    ) -> Result<(), StoreError> {
        let client = self.client("write", key)?;
        let expires =
            azure_core::time::OffsetDateTime::from_unix_timestamp(record.expiration.timestamp())
                .map_err(|e| self.io("write", self.location(key), format!("expiration: {e}")))?;
        let tags = HashMap::from([
            ("client_id".to_owned(), record.client_id.clone()),
            ("tenant_id".to_owned(), record.tenant_id.clone()),
            ("secret_id".to_owned(), record.secret_id.to_string()),
            ("fingerprint".to_owned(), record.fingerprint.to_string()),
            ("published_at".to_owned(), record.published_at.to_rfc3339()),
        ]);
        let parameters = SetSecretParameters {
            value: Some(value.expose_secret().to_owned()),
            content_type: Some("text/plain".to_owned()),
            secret_attributes: Some(SecretAttributes {
                enabled: Some(true),
                expires: Some(expires),
                ..Default::default()
            }),
            tags: Some(tags),
        };
        let body: RequestContent<SetSecretParameters> = parameters.try_into().map_err(|_| {
            self.io(
                "encode",
                self.location(key),
                "the request could not be encoded; report this as a bug".to_owned(),
            )
        })?;
        match client.set_secret(key, body, None).await {
            Ok(_) => Ok(()),
            Err(error) => self.resolve(key, value, record, &error).await,
        }
    }

    /// A set failed: refused → the error; no answer → read back: the new value is
    /// there → published; otherwise in doubt, never failed.
    async fn resolve(
        &self,
        key: &str,
        value: &SecretString,
        record: &StoreRecord,
        error: &azure_core::Error,
    ) -> Result<(), StoreError> {
        let detail = crate::secret::redacted(describe(error), value);
        let refused = match error.kind() {
            // Throttled or timed out: says nothing of an earlier attempt in the network.
            ErrorKind::HttpResponse { status, .. } => {
                let status = u16::from(*status);
                (400..500).contains(&status) && status != 408 && status != 429
            }
            ErrorKind::Credential => true,
            _ => false,
        };
        if refused {
            return Err(self.io("write", self.location(key), detail));
        }
        match self.read_current(key).await {
            Ok(Current::Published(r)) if r.fingerprint == record.fingerprint => {
                tracing::info!(
                    store = %self.name,
                    location = %self.location(key),
                    fingerprint = %record.fingerprint,
                    "the answer to the publish was lost; reading back shows the new value landed"
                );
                Ok(())
            }
            // Proves nothing: the set may be delayed in the network and land later, and
            // Key Vault has no idempotency token or conditional write to settle it.
            Ok(_) => Err(StoreError::OutcomeUnknown {
                store: self.name.clone(),
                location: self.location(key),
                detail: format!(
                    "{detail}; reading it back does not show the new value yet, but the set may still land (Key Vault cannot tell)"
                ),
            }),
            Err(read) => Err(StoreError::OutcomeUnknown {
                store: self.name.clone(),
                location: self.location(key),
                detail: crate::secret::redacted(
                    format!("{detail}; reading it back failed too: {read}"),
                    value,
                ),
            }),
        }
    }
}

/// One line for an SDK error: the HTTP status and the service's error code, with the
/// RBAC hint on 403 and the credential hint when no token could be had.
fn describe(error: &azure_core::Error) -> String {
    match error.kind() {
        ErrorKind::HttpResponse {
            status, error_code, ..
        } => {
            let status = u16::from(*status);
            let code = untrusted(error_code.as_deref().unwrap_or("(no error code)"));
            let mut text = format!("{code} (HTTP {status})");
            if status == 403 || code == "Forbidden" {
                text.push_str("; ");
                text.push_str(RBAC_HINT);
            } else if status == 401 {
                text.push_str("; ");
                text.push_str(CREDENTIAL_HINT);
            } else if status == 409 {
                // Soft delete keeps a deleted secret's name taken.
                text.push_str("; if the secret was deleted, the vault keeps it soft-deleted: recover it (`az keyvault secret recover`) or purge it, or give the client another secret name");
            }
            text
        }
        ErrorKind::Credential => format!("{}; {CREDENTIAL_HINT}", causes(error)),
        _ => format!(
            "{}; check that the vault_url is reachable from this host (DNS, proxy, firewall, private endpoint)",
            causes(error)
        ),
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

/// The record in a version's tags, when all of it is there and well-formed.
fn record_from_tags(
    tags: &HashMap<String, String>,
    value: &str,
) -> Option<Result<StoreRecord, StoreRecord>> {
    let fingerprint = tags.get("fingerprint")?;
    if fingerprint.len() != 16 || !fingerprint.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let fingerprint: Fingerprint =
        serde_json::from_value(serde_json::Value::String(fingerprint.to_ascii_lowercase())).ok()?;
    let record = StoreRecord {
        client_id: tags.get("client_id")?.clone(),
        tenant_id: tags.get("tenant_id")?.clone(),
        secret_id: tags.get("secret_id")?.parse().ok()?,
        expiration: DateTime::<Utc>::UNIX_EPOCH,
        published_at: DateTime::parse_from_rfc3339(tags.get("published_at")?)
            .ok()?
            .with_timezone(&Utc),
        fingerprint,
    };
    Some(
        if Fingerprint::of_bytes(value.as_bytes()) == record.fingerprint {
            Ok(record)
        } else {
            Err(record)
        },
    )
}

#[async_trait]
impl SecretStore for AzureKeyVaultStore {
    fn location(&self, key: &str) -> String {
        format!("{}/secrets/{key}", self.vault_url)
    }

    fn late_write(&self) -> LateWrite {
        LateWrite::Unbounded
    }

    async fn read_value(&self, key: &str) -> Result<Option<SecretString>, StoreError> {
        let Some(secret) = self.get(key).await? else {
            return Ok(None);
        };
        let value = Zeroizing::new(secret.value.unwrap_or_default());
        if value.is_empty() {
            return Ok(None);
        }
        Ok(Some(SecretString::from(value.as_str())))
    }

    async fn read_current(&self, key: &str) -> Result<Current, StoreError> {
        let Some(secret) = self.get(key).await? else {
            return Ok(Current::Empty);
        };
        let value = Zeroizing::new(secret.value.unwrap_or_default());
        let tags = secret.tags.unwrap_or_default();
        let Some(found) = record_from_tags(&tags, &value) else {
            return Ok(if value.is_empty() {
                Current::Empty
            } else {
                Current::Unrecorded
            });
        };
        let expiration = secret
            .attributes
            .and_then(|a| a.expires)
            .and_then(|t| DateTime::<Utc>::from_timestamp(t.unix_timestamp(), 0));
        match (found, expiration) {
            (Ok(mut record), Some(expiration)) => {
                record.expiration = expiration;
                Ok(Current::Published(record))
            }
            (Ok(record), None) => Err(StoreError::Corrupt {
                store: self.name.clone(),
                location: self.location(key),
                detail: format!(
                    "its current version (CDS secret {}) has no expiry date (exp): it was changed by hand; set it back to the CDS expiration, or remove the version's tags so the next pass treats it as unrecorded",
                    record.secret_id
                ),
            }),
            (Err(record), _) => Err(StoreError::Corrupt {
                store: self.name.clone(),
                location: self.location(key),
                detail: format!(
                    "its value does not match the fingerprint tag {} (CDS secret {}): it was changed by hand; put back the published value, or remove the version's tags so the next pass treats it as unrecorded",
                    record.fingerprint, record.secret_id
                ),
            }),
        }
    }

    async fn probe(&self) -> Result<(), StoreError> {
        // A read of one page of names proves the credential, the URL and the list right.
        let client = self.client("probe", "")?;
        let options = SecretClientListSecretPropertiesOptions {
            maxresults: Some(1),
            ..Default::default()
        };
        let pager = client
            .list_secret_properties(Some(options))
            .map_err(|e| self.io("probe", self.vault_url.clone(), describe(&e)))?;
        pager
            .into_pages()
            .try_next()
            .await
            .map(|_| ())
            .map_err(|e| self.io("probe", self.vault_url.clone(), describe(&e)))
    }

    async fn publish(
        &self,
        key: &str,
        value: &SecretString,
        record: &StoreRecord,
    ) -> Result<(), StoreError> {
        self.set(key, value, record).await
    }
}

#[cfg(test)]
mod tests {
    use azure_core::http::StatusCode;

    use super::*;

    fn http_error(status: StatusCode, code: &str) -> azure_core::Error {
        azure_core::Error::with_message(
            ErrorKind::HttpResponse {
                status,
                error_code: Some(code.to_owned()),
                raw_response: None,
            },
            "refused",
        )
    }

    #[test]
    fn a_403_names_the_role_the_rotator_needs() {
        let text = describe(&http_error(StatusCode::Forbidden, "Forbidden"));
        assert!(text.starts_with("Forbidden (HTTP 403); "), "{text}");
        assert!(text.contains("Key Vault Secrets Officer"), "{text}");
    }

    #[test]
    fn a_409_says_how_to_free_a_soft_deleted_name() {
        let text = describe(&http_error(StatusCode::Conflict, "Conflict"));
        assert!(text.contains("soft-deleted"), "{text}");
    }

    #[test]
    fn an_error_code_from_the_service_is_escaped() {
        let text = describe(&http_error(StatusCode::BadRequest, "Bad\u{1b}[31mCode"));
        assert!(!text.contains('\u{1b}'), "{text}");
    }

    #[test]
    fn tags_without_a_fingerprint_are_no_record() {
        let tags = HashMap::from([("client_id".to_owned(), "c".to_owned())]);
        assert!(record_from_tags(&tags, "v4lue").is_none());
    }
}
