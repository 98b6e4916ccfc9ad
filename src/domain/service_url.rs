//! The URL of a service the rotator sends secrets or credentials to (CDS, a store, the
//! coordination service, a notifier): https, or plain http to a loopback host only.
//!
//! The rule is held here once. A loopback host is `localhost` by name, or an IP address
//! in 127.0.0.0/8 or `::1`; nothing is resolved (a name that resolves to loopback today
//! may not tomorrow). Parsing keeps the text it was given: callers trim what they trim.
//!
//! Not here: the messages (each caller words its own, naming its key), and any rule a
//! caller adds on top (no path, no query, not a regional CDS host).

use std::fmt;
use std::net::IpAddr;

/// A URL checked against the https-or-loopback rule; the text it was parsed from is
/// kept as given. `Debug` shows only the scheme and host (a notifier URL is a secret).
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceUrl {
    text: String,
    url: reqwest::Url,
}

/// Why a text is not a [`ServiceUrl`]. No variant quotes the text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UrlProblem {
    /// It does not parse as a URL.
    NotAUrl,
    /// An http(s) URL without a host.
    NoHost,
    /// Plain http to `host` (lowercase), which is not loopback.
    PlainHttp {
        /// The host, as in the URL (IPv6 in brackets).
        host: String,
    },
    /// Neither https nor http.
    Scheme(String),
}

impl fmt::Display for UrlProblem {
    /// What is wrong, to follow the key that names the URL (`url has no host`); it
    /// shows at most the host.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlProblem::NotAUrl => f.write_str("is not a URL"),
            UrlProblem::NoHost => f.write_str("has no host"),
            UrlProblem::PlainHttp { host } => write!(
                f,
                "uses plain http to {host}, which is not a loopback host; use https"
            ),
            UrlProblem::Scheme(other) => write!(f, "has scheme `{other}`; use https"),
        }
    }
}

impl ServiceUrl {
    /// Parses `text` as is (no trimming) and checks the rule.
    pub fn parse(text: &str) -> Result<ServiceUrl, UrlProblem> {
        let url = reqwest::Url::parse(text).map_err(|_| UrlProblem::NotAUrl)?;
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        match url.scheme() {
            "https" | "http" if host.is_empty() => Err(UrlProblem::NoHost),
            "https" => Ok(()),
            "http" if is_loopback_host(&host) => Ok(()),
            "http" => Err(UrlProblem::PlainHttp { host }),
            other => Err(UrlProblem::Scheme(other.to_owned())),
        }?;
        Ok(ServiceUrl {
            text: text.to_owned(),
            url,
        })
    }

    /// The text it was parsed from.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The parsed URL.
    pub fn url(&self) -> &reqwest::Url {
        &self.url
    }

    /// The host, lowercase (IPv6 in brackets).
    pub fn host(&self) -> &str {
        self.url.host_str().unwrap_or_default()
    }

    /// Whether it is plain http (so, by the rule, to a loopback host): such a client
    /// needs no TLS roots and must not insist on https.
    pub fn is_loopback_http(&self) -> bool {
        self.url.scheme() == "http"
    }
}

/// Compares the text (tests and callers that hold the text they wrote).
impl PartialEq<&str> for ServiceUrl {
    fn eq(&self, other: &&str) -> bool {
        self.text == *other
    }
}

impl fmt::Debug for ServiceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServiceUrl({}://{})", self.url.scheme(), self.host())
    }
}

/// Whether `host` (as in a URL, IPv6 in brackets) is loopback: `localhost` (any case),
/// 127.0.0.0/8 or `::1`.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_anywhere_and_http_only_to_loopback() {
        for ok in [
            "https://hooks.example.com/x?token=1",
            "https://uswe.datahub.connect.aveva.com",
            "http://127.0.0.1:8080/h",
            "http://127.1.2.3/h",
            "http://[::1]:9/h",
            "http://localhost/h",
            "http://LOCALHOST:8200",
        ] {
            assert!(ServiceUrl::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            ServiceUrl::parse("http://Example.com/secret-path"),
            Err(UrlProblem::PlainHttp {
                host: "example.com".into()
            })
        );
        // Not resolved, and not loopback by look-alike.
        for no in [
            "http://localhost.example.com/",
            "http://127.0.0.1.nip.io/",
            "http://[::2]/",
            "http://0.0.0.0/",
        ] {
            assert!(
                matches!(ServiceUrl::parse(no), Err(UrlProblem::PlainHttp { .. })),
                "{no}"
            );
        }
        assert_eq!(
            ServiceUrl::parse("ftp://example.com/"),
            Err(UrlProblem::Scheme("ftp".into()))
        );
        assert_eq!(ServiceUrl::parse("not a url"), Err(UrlProblem::NotAUrl));
    }

    #[test]
    fn it_keeps_its_text_and_shows_only_scheme_and_host() {
        let u = ServiceUrl::parse("https://hooks.example.com/T0/s3cr3t").unwrap();
        assert_eq!(u.as_str(), "https://hooks.example.com/T0/s3cr3t");
        assert_eq!(u.host(), "hooks.example.com");
        assert!(!u.is_loopback_http());
        assert_eq!(format!("{u:?}"), "ServiceUrl(https://hooks.example.com)");
        assert!(
            ServiceUrl::parse("http://127.0.0.1:1")
                .unwrap()
                .is_loopback_http()
        );
    }
}
