//! The `webhook` notifier: the event as JSON, POSTed to a URL, signed with an HMAC key
//! when one is set (`X-CDS-Rotator-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(key,
//! "<t>.<body>")>`), so that a receiver can check where it came from and refuse replays.

pub mod spec;

use crate::domain::Event;

/// The body: the event as JSON (the schema in README.md).
pub fn body(event: &Event) -> Vec<u8> {
    event.to_json().to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use secrecy::SecretString;

    use super::*;
    use crate::notify::http::{HttpNotifier, HttpSender, Target};

    #[test]
    fn debug_shows_neither_the_key_nor_the_url_beyond_its_host() {
        let n = HttpNotifier::new(
            "hook",
            Target::plain(
                &crate::domain::service_url::ServiceUrl::parse(
                    "https://hooks.example.com/cds/pathToken?sig=queryToken",
                )
                .unwrap(),
            ),
            Some(SecretString::from("hmac-key-value")),
            (Duration::from_secs(10), 3),
            HttpSender::new(),
            body,
        );
        let shown = format!("{n:?}");
        for hidden in ["pathToken", "queryToken", "hmac-key-value"] {
            assert!(!shown.contains(hidden), "{shown}");
        }
        assert!(shown.contains("hooks.example.com"), "{shown}");
    }
}
