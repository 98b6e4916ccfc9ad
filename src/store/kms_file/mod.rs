//! The `kms_file` store: a file per secret, sealed with AWS KMS.
//!
//! `<dir>/<secret>` holds, base64-encoded, the KMS ciphertext (`Encrypt` under `key_id`)
//! of the same JSON object the Secrets Manager store holds (value + record), with the
//! encryption context `{client_id, tenant_id}`: a file copied to another client's name
//! does not decrypt. An application reads it with `aws kms decrypt` and the same
//! context (README). The file is replaced atomically under the file store's directory
//! and file rules (`FileStore`'s own helpers). A write whose outcome is unclear is
//! resolved by decrypting the file back and comparing fingerprints.
//!
//! Not here: credentials (the SDK's default chain, see `store::aws`), deciding when to
//! publish (that is `rotation`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_kms::Client;
use aws_sdk_kms::primitives::Blob;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use secrecy::SecretString;
use tokio::sync::OnceCell;
use zeroize::Zeroizing;

use super::aws::{self, AwsTarget, Failure, Parsed, SdkSource};
use super::file::FileStore;
pub mod spec;

use super::{SecretStore, StoreError};
use crate::domain::{Current, StoreRecord};

/// The encryption context of one stored secret: the client it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Context {
    client_id: String,
    tenant_id: String,
}

/// A store that writes KMS-sealed files into one directory.
pub struct KmsFileStore {
    name: String,
    files: FileStore,
    key_id: String,
    target: AwsTarget,
    sdk: SdkSource,
    client: OnceCell<Client>,
    contexts: BTreeMap<String, Context>,
}

impl std::fmt::Debug for KmsFileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsFileStore")
            .field("name", &self.name)
            .field("files", &self.files)
            .field("key_id", &self.key_id)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl KmsFileStore {
    /// A store named `name` (as in the policy) writing into `dir`, sealing with `key_id`
    /// in `target`, with credentials from the default provider chain (loaded on first
    /// use). Each secret's client is declared with [`KmsFileStore::for_secret`].
    pub fn new(
        name: impl Into<String>,
        dir: impl Into<PathBuf>,
        key_id: impl Into<String>,
        target: AwsTarget,
    ) -> Self {
        let name = name.into();
        KmsFileStore {
            files: FileStore::new(name.clone(), dir),
            name,
            key_id: key_id.into(),
            target,
            sdk: SdkSource::default_chain(),
            client: OnceCell::new(),
            contexts: BTreeMap::new(),
        }
    }

    /// The same store with the credentials of `config` (tests).
    pub fn with_sdk_config(mut self, config: SdkConfig) -> Self {
        self.sdk = SdkSource::given(config);
        self
    }

    /// Declares that `key` holds the secret of `client_id` in `tenant_id`: its
    /// encryption context.
    pub fn for_secret(
        mut self,
        key: impl Into<String>,
        client_id: impl Into<String>,
        tenant_id: impl Into<String>,
    ) -> Self {
        self.contexts.insert(
            key.into(),
            Context {
                client_id: client_id.into(),
                tenant_id: tenant_id.into(),
            },
        );
        self
    }

    async fn client(&self) -> &Client {
        self.client
            .get_or_init(|| async { Client::new(&self.sdk.config(&self.target).await) })
            .await
    }

    fn context(&self, key: &str) -> Result<&Context, StoreError> {
        self.contexts.get(key).ok_or_else(|| {
            aws::io_error(
                &self.name,
                "use",
                self.location(key),
                "no client is declared for this secret, so its encryption context is unknown (a wiring bug: report it)".to_owned(),
            )
        })
    }

    fn failed(&self, operation: &'static str, key: &str, failure: &Failure) -> StoreError {
        let detail = failure.describe(|code| self.hint(code));
        aws::io_error(&self.name, operation, self.location(key), detail)
    }

    /// What to do about the usual mistakes, by AWS error code.
    fn hint(&self, code: &str) -> Option<String> {
        let code = code.strip_suffix("Exception").unwrap_or(code);
        let (key, region) = (&self.key_id, &self.target.region);
        match code {
            "AccessDenied" => Some(format!(
                "allow the rotator's IAM identity (see `aws sts get-caller-identity`) kms:Encrypt, kms:Decrypt and kms:DescribeKey on key {key} in {region}, in its IAM policy and in the key policy; an alias in an IAM policy must be given as the key's ARN"
            )),
            "NotFound" => Some(format!(
                "KMS key {key} does not exist in {region}: check key_id and region (an alias is alias/NAME; a key of another account needs its full ARN)"
            )),
            "Disabled" | "KMSInvalidState" => Some(format!(
                "KMS key {key} is disabled or pending deletion: enable it (`aws kms enable-key`) or cancel its deletion"
            )),
            "IncorrectKey" | "InvalidCiphertext" => Some(
                "the file was sealed under another key or for another client: move it away (the next publish writes a new one), or point key_id at the key it was sealed with".to_owned(),
            ),
            "UnrecognizedClient" | "InvalidClientTokenId" | "InvalidSignature" | "ExpiredToken" => Some(
                "the AWS credentials were refused: the rotator takes them from the default chain (AWS_* environment, profile, web identity / IRSA, instance role); check which one applies and that it is current".to_owned(),
            ),
            _ => None,
        }
    }

    /// The file's bytes, off the async threads (directory checks, `O_NOFOLLOW`).
    async fn read_sealed(&self, key: &str) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let files = self.files.clone();
        let path = self.files.value_path(key);
        tokio::task::spawn_blocking(move || {
            if !files.check_dir()? {
                return Ok(None);
            }
            files.read_file(&path)
        })
        .await
        .map_err(|e| aws::io_error(&self.name, "read", self.location(key), e.to_string()))?
    }

    async fn write_sealed(&self, key: &str, text: String) -> Result<(), StoreError> {
        let files = self.files.clone();
        let path = self.files.value_path(key);
        tokio::task::spawn_blocking(move || {
            files.ensure_dir()?;
            files.replace(&path, text.as_bytes())
        })
        .await
        .map_err(|e| aws::io_error(&self.name, "write", self.location(key), e.to_string()))?
    }

    /// The decrypted plaintext of `key`'s file; `None` when there is none.
    async fn open(&self, key: &str) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let Some(bytes) = self.read_sealed(key).await? else {
            return Ok(None);
        };
        let corrupt = |detail: String| StoreError::Corrupt {
            store: self.name.clone(),
            location: self.location(key),
            detail,
        };
        let text = String::from_utf8_lossy(&bytes);
        let Ok(sealed) = BASE64.decode(text.trim()) else {
            return Err(corrupt(
                "it is not base64 (not written by the kms_file store): move it away, the next publish writes a new one".to_owned(),
            ));
        };
        let context = self.context(key)?;
        let result = self
            .client()
            .await
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(Blob::new(sealed))
            .encryption_context("client_id", &context.client_id)
            .encryption_context("tenant_id", &context.tenant_id)
            .send()
            .await;
        let mut out = match result {
            Ok(out) => out,
            Err(e) => {
                let failure = Failure::of(&e);
                if aws::is_code(&failure, "InvalidCiphertext")
                    || aws::is_code(&failure, "IncorrectKey")
                {
                    return Err(corrupt(format!(
                        "it does not decrypt with key {} for client {} (tenant {}): {}",
                        self.key_id,
                        context.client_id,
                        context.tenant_id,
                        failure.describe(|code| self.hint(code))
                    )));
                }
                return Err(self.failed("decrypt", key, &failure));
            }
        };
        let plaintext = Zeroizing::new(
            out.plaintext
                .take()
                .map(|b| b.into_inner())
                .unwrap_or_default(),
        );
        Ok(Some(plaintext))
    }

    async fn seal(&self, key: &str, plaintext: &[u8]) -> Result<String, StoreError> {
        let context = self.context(key)?;
        let out = self
            .client()
            .await
            .encrypt()
            .key_id(&self.key_id)
            .plaintext(Blob::new(plaintext))
            .encryption_context("client_id", &context.client_id)
            .encryption_context("tenant_id", &context.tenant_id)
            .send()
            .await
            .map_err(|e| self.failed("encrypt", key, &Failure::of(&e)))?;
        let blob = out.ciphertext_blob().ok_or_else(|| {
            aws::io_error(
                &self.name,
                "encrypt",
                self.location(key),
                format!("KMS answered without a ciphertext for key {}", self.key_id),
            )
        })?;
        Ok(BASE64.encode(blob.as_ref()))
    }
}

#[async_trait]
impl SecretStore for KmsFileStore {
    fn location(&self, key: &str) -> String {
        self.files.location(key)
    }

    async fn read_value(&self, key: &str) -> Result<Option<SecretString>, StoreError> {
        let Some(plaintext) = self.open(key).await? else {
            return Ok(None);
        };
        aws::held_value(&plaintext)
            .map(Some)
            .ok_or_else(|| StoreError::Corrupt {
                store: self.name.clone(),
                location: self.location(key),
                detail: "it does not hold a JSON record with a client_secret (not written by cds-rotator)"
                    .to_owned(),
            })
    }

    async fn read_current(&self, key: &str) -> Result<Current, StoreError> {
        let Some(plaintext) = self.open(key).await? else {
            return Ok(Current::Empty);
        };
        let corrupt = |detail: String| StoreError::Corrupt {
            store: self.name.clone(),
            location: self.location(key),
            detail,
        };
        match aws::parse_held(&plaintext) {
            Parsed::Record(record) => Ok(Current::Published(record)),
            Parsed::Foreign => Ok(Current::Unrecorded),
            Parsed::Mismatch(record) => Err(corrupt(format!(
                "its client_secret does not match the recorded fingerprint {} (CDS secret {}): it was changed by hand",
                record.fingerprint, record.secret_id
            ))),
        }
    }

    async fn probe(&self) -> Result<(), StoreError> {
        let location = format!("kms key {} in {}", self.key_id, self.target.region);
        let failed = |operation, failure: Failure| {
            aws::io_error(
                &self.name,
                operation,
                location.clone(),
                failure.describe(|code| self.hint(code)),
            )
        };
        let described = self
            .client()
            .await
            .describe_key()
            .key_id(&self.key_id)
            .send()
            .await
            .map_err(|e| failed("describe", Failure::of(&e)))?;
        if let Some(meta) = described.key_metadata()
            && !meta.enabled()
        {
            return Err(aws::io_error(
                &self.name,
                "describe",
                location.clone(),
                format!(
                    "the key is not enabled (state {}): enable it (`aws kms enable-key`) or point key_id at another key",
                    meta.key_state()
                        .map(|s| crate::text::untrusted(s.as_str()))
                        .unwrap_or_default()
                ),
            ));
        }
        self.client()
            .await
            .encrypt()
            .key_id(&self.key_id)
            .plaintext(Blob::new(&b"cds-rotator probe"[..]))
            .encryption_context("purpose", "cds-rotator probe")
            .send()
            .await
            .map_err(|e| failed("encrypt", Failure::of(&e)))?;
        self.files.probe().await
    }

    async fn publish(
        &self,
        key: &str,
        value: &SecretString,
        record: &StoreRecord,
    ) -> Result<(), StoreError> {
        // Nothing is written until KMS has sealed the value: a failure here changed nothing.
        let json = aws::held_json_for(&self.name, self.location(key), value, record)?;
        let sealed = self.seal(key, json.as_bytes()).await?;
        let Err(error) = self.write_sealed(key, sealed).await else {
            return Ok(());
        };
        // A write that failed after its rename (the directory fsync) may have landed.
        match self.read_current(key).await {
            Ok(Current::Published(r)) if r.fingerprint == record.fingerprint => Ok(()),
            Ok(_) => Err(error),
            Err(read) => Err(StoreError::OutcomeUnknown {
                store: self.name.clone(),
                location: self.location(key),
                detail: format!("{error}; reading it back failed too: {read}"),
            }),
        }
    }
}
