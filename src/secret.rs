//! Secret values and their fingerprints.
//!
//! A value is held as a [`SecretString`] (zeroized on drop, redacted in `Debug`). The
//! only thing derived from it that may leave memory, other than the value written into a
//! store, is its [`Fingerprint`]: the first 16 hex digits of its SHA-256, safe to log and
//! to compare with what an application reports it has loaded.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The first 16 hex digits of the SHA-256 of a secret value.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// Fingerprints a secret value.
    pub fn of(value: &SecretString) -> Self {
        Self::of_bytes(value.expose_secret().as_bytes())
    }

    /// Fingerprints raw bytes (a value read back from a store).
    pub fn of_bytes(bytes: &[u8]) -> Self {
        let digest = Sha256::digest(bytes);
        Fingerprint(hex::encode(&digest[..8]))
    }

    /// The fingerprint as 16 lowercase hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `text` without `value` in it, however it got there (a service echoing what it was
/// sent): for error messages built from a store's answer.
pub fn redacted(text: String, value: &SecretString) -> String {
    let v = value.expose_secret();
    if v.len() >= 4 && text.contains(v) {
        text.replace(v, "[redacted]")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_sixteen_hex_digits_of_sha256() {
        let fp = Fingerprint::of(&SecretString::from("hello"));
        // sha256("hello") = 2cf24dba5fb0a30e26e83b2ac5b9e29e...
        assert_eq!(fp.as_str(), "2cf24dba5fb0a30e");
    }
}
