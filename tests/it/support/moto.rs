//! A `moto_server` (AWS Secrets Manager and KMS) on a free loopback port, for the AWS
//! store tests: started by the test, killed when it is dropped. The binary comes from
//! `$CDS_ROTATOR_TEST_BIN` (scripts/test-deps.sh installs it; scripts/test.sh sets it);
//! without it the test fails and says so.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_secretsmanager::config::{Credentials, SharedCredentialsProvider};
use cds_rotator::store::aws::AwsTarget;

/// The region every test uses.
pub const REGION: &str = "eu-west-1";

/// A running moto server.
pub struct Moto {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Moto {
    /// Starts moto on a free loopback port and waits until it answers.
    pub async fn start() -> Moto {
        let exe = super::test_bin("moto_server");
        let port = super::free_port();
        let child = Command::new(exe)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let moto = Moto {
            child: Some(child),
            url: format!("http://127.0.0.1:{port}"),
        };
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let up = http
                .get(format!("{}/moto-api/", moto.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if up {
                return moto;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "moto_server did not answer on {} within 60 s",
                moto.url
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the server (a test of an unreachable endpoint).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Where the stores send requests: this server, in [`REGION`].
    pub fn target(&self) -> AwsTarget {
        AwsTarget {
            region: REGION.to_owned(),
            endpoint_url: Some(self.url.clone()),
        }
    }

    /// An SDK configuration with moto's test credentials, aimed at this server.
    pub fn sdk_config(&self) -> SdkConfig {
        SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&self.url)
            .http_client(cds_rotator::store::aws::http_client())
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "testing", "testing", None, None, "test",
            )))
            .build()
    }

    /// A Secrets Manager client for the test's own checks.
    pub fn secrets_manager(&self) -> aws_sdk_secretsmanager::Client {
        aws_sdk_secretsmanager::Client::new(&self.sdk_config())
    }

    /// A KMS client for the test's own checks.
    pub fn kms(&self) -> aws_sdk_kms::Client {
        aws_sdk_kms::Client::new(&self.sdk_config())
    }

    /// Creates a symmetric key with `alias` (`alias/NAME`); returns the key id.
    pub async fn create_key(&self, alias: &str) -> String {
        let kms = self.kms();
        let key = kms.create_key().send().await.expect("create a KMS key");
        let id = key
            .key_metadata()
            .map(|m| m.key_id().to_owned())
            .expect("key id");
        kms.create_alias()
            .alias_name(alias)
            .target_key_id(&id)
            .send()
            .await
            .expect("create the alias");
        id
    }

    /// The `client_secret` in the JSON of `stage` of the Secrets Manager secret `name`.
    pub async fn secrets_manager_value(&self, name: &str, stage: &str) -> Option<String> {
        let out = self
            .secrets_manager()
            .get_secret_value()
            .secret_id(name)
            .version_stage(stage)
            .send()
            .await
            .ok()?;
        client_secret(out.secret_string()?.as_bytes())
    }

    /// The `client_secret` sealed in the kms_file at `path`, read as an application
    /// does: base64, then KMS Decrypt with the client's encryption context.
    pub async fn kms_file_value(
        &self,
        path: &std::path::Path,
        client_id: &str,
        tenant_id: &str,
    ) -> Option<String> {
        use base64::Engine as _;
        let text = std::fs::read_to_string(path).ok()?;
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .ok()?;
        let out = self
            .kms()
            .decrypt()
            .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(sealed))
            .encryption_context("client_id", client_id)
            .encryption_context("tenant_id", tenant_id)
            .send()
            .await
            .ok()?;
        client_secret(out.plaintext()?.as_ref())
    }
}

fn client_secret(json: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(json).ok()?;
    value.get("client_secret")?.as_str().map(str::to_owned)
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}
