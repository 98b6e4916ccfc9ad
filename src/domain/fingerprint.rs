//! [`Fingerprint`]: the first 16 hex digits of the SHA-256 of a secret value, the only
//! thing derived from a value that may leave memory (safe to log, and to compare with what
//! an application reports it has loaded).
//!
//! Not here: holding or redacting secret values (that is `secret`).

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
