//! The `webhook` notifier: the event as JSON, POSTed to a URL, signed with an HMAC key
//! when one is set (`X-CDS-Rotator-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(key,
//! "<t>.<body>")>`), so that a receiver can check where it came from and refuse replays.

use std::time::Duration;

use async_trait::async_trait;
use secrecy::SecretString;

use super::http::{Delivery, HttpSender, Target};
use super::{Event, Notifier, NotifyError};

/// POSTs events to a URL.
#[derive(Debug)]
pub struct WebhookNotifier {
    name: String,
    target: Target,
    key: Option<SecretString>,
    timeout: Duration,
    retries: u32,
    sender: HttpSender,
}

impl WebhookNotifier {
    /// A webhook named `name` posting to `target`, signing with `key` when set.
    pub fn new(
        name: impl Into<String>,
        target: Target,
        key: Option<SecretString>,
        (timeout, retries): (Duration, u32),
        sender: HttpSender,
    ) -> Self {
        WebhookNotifier {
            name: name.into(),
            target,
            key,
            timeout,
            retries,
            sender,
        }
    }
}

#[async_trait]
impl Notifier for WebhookNotifier {
    fn name(&self) -> &str {
        &self.name
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn notify(&self, event: &Event) -> Result<(), NotifyError> {
        self.sender
            .post(Delivery {
                notifier: &self.name,
                target: &self.target,
                body: event.to_json().to_string().into_bytes(),
                key: self.key.as_ref(),
                timeout: self.timeout,
                retries: self.retries,
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_neither_the_key_nor_the_url_beyond_its_host() {
        let n = WebhookNotifier::new(
            "hook",
            Target::plain(
                "hook",
                "https://hooks.example.com/cds/pathToken?sig=queryToken",
            )
            .unwrap(),
            Some(SecretString::from("hmac-key-value")),
            (Duration::from_secs(10), 3),
            HttpSender::new().unwrap(),
        );
        let shown = format!("{n:?}");
        for hidden in ["pathToken", "queryToken", "hmac-key-value"] {
            assert!(!shown.contains(hidden), "{shown}");
        }
        assert!(shown.contains("hooks.example.com"), "{shown}");
    }
}
