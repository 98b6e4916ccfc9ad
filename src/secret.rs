//! Secret values: keeping them out of text built from what a service answered.
//!
//! A value is held as a [`SecretString`] (zeroized on drop, redacted in `Debug`). The
//! only thing derived from it that may leave memory, other than the value written into a
//! store, is its fingerprint. Not here: the fingerprint itself (`domain::Fingerprint`).

use secrecy::{ExposeSecret, SecretString};

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
