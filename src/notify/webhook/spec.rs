//! The `webhook` notifier in the policy: its keys, how its entry is checked (the URL,
//! the HMAC key), and how it is built.
//!
//! Not here: the body (`notify::webhook`), sending (`notify::http`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::domain::service_url::ServiceUrl;
use crate::notify::Notifier;
use crate::notify::http::{HttpNotifier, HttpSender, Target};
use crate::notify::registry::Backend;
use crate::notify::spec::{
    HTTP_TIMEOUT, RETRIES_KEY, TIMEOUT_KEY, ValueSource, read_secret, retries, source, timeout,
};
use crate::schema::{Declared, Entry, Key, Shape};

/// Where a webhook's URL is. It may carry a token: `Debug` shows at most its host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UrlSource {
    /// Written in the policy (parsed and checked at validation).
    Plain(ServiceUrl),
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

impl Declared for WebhookSpec {
    const KEYS: &'static [Key] = &[
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

    fn parse(entry: &mut Entry<'_>) -> WebhookSpec {
        let (name, f) = (entry.name, entry.fields);
        let url = match (f.text("url"), f.has("url_env") || f.has("url_file")) {
            (Some(url), false) => match ServiceUrl::parse(url.value.trim()) {
                Ok(parsed) => Some(UrlSource::Plain(parsed)),
                Err(p) => {
                    entry.problem_at(url.referenced, format!("notifier `{name}`: url {p}"));
                    None
                }
            },
            (None, _) => source(entry, "url_env", "url_file", true).map(UrlSource::Secret),
            (Some(_), true) => {
                entry.problem(format!(
                    "notifier `{name}`: set one of url, url_env and url_file"
                ));
                None
            }
        };
        let hmac_key = source(entry, "hmac_secret_env", "hmac_secret_file", false);
        WebhookSpec {
            // A stand-in when refused (the policy is refused then): no variable, so no
            // rule over the credential variables sees it.
            url: url.unwrap_or(UrlSource::Secret(ValueSource::File(PathBuf::new()))),
            hmac_key,
            timeout: timeout(entry, HTTP_TIMEOUT, 300),
            retries: retries(entry),
        }
    }
}

impl Backend for WebhookSpec {
    fn timeout(&self) -> Duration {
        self.timeout
    }

    fn credential_sources(&self) -> Vec<&ValueSource> {
        let url = match &self.url {
            UrlSource::Secret(s) => Some(s),
            UrlSource::Plain(_) => None,
        };
        [url, self.hmac_key.as_ref()]
            .into_iter()
            .flatten()
            .collect()
    }
}

/// The webhook notifier `name`, reading its URL and key now.
pub fn build(
    spec: &WebhookSpec,
    name: &str,
    sender: &HttpSender,
) -> Result<Arc<dyn Notifier>, String> {
    let target = match &spec.url {
        UrlSource::Plain(url) => Target::plain(url),
        UrlSource::Secret(source) => Target::read(name, "url", source)?,
    };
    let key = match &spec.hmac_key {
        Some(source) => Some(read_secret(source, name, "hmac_secret")?),
        None => {
            tracing::warn!(
                notifier = name,
                "webhook requests are not signed: receivers cannot tell them from forged ones; set hmac_secret_env or hmac_secret_file"
            );
            None
        }
    };
    Ok(Arc::new(HttpNotifier::new(
        name,
        target,
        key,
        (spec.timeout, spec.retries),
        sender.clone(),
        super::body,
    )))
}
