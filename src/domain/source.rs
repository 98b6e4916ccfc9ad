//! Where a secret comes from when it is not written in the policy: an environment
//! variable, a file, or (the rotator's own credential) a declared store.
//!
//! Not here: reading them (the modules that use a source read it), or checking what
//! the policy wrote (`policy`).

use std::path::PathBuf;

/// Where the rotator reads its own client secret from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// A file holding the value alone (systemd credentials, a Kubernetes secret volume);
    /// always absolute, `.` and `..` removed (relative paths resolve against the policy
    /// file's directory). `client_secret_credential: NAME` is the file
    /// `$CREDENTIALS_DIRECTORY/NAME`.
    File(PathBuf),
    /// The name of an environment variable (`[A-Za-z_][A-Za-z0-9_]*`).
    Env(String),
    /// A secret in a declared store (`client_secret_store`; only for the rotator's own
    /// credential): the value the store's readers get.
    Store {
        /// The store's name in `stores:`.
        store: String,
        /// The secret's name in that store (checked by that store's rule).
        secret: String,
    },
}

/// Where a value that is not written in the policy comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValueSource {
    /// An environment variable, by name.
    Env(String),
    /// A file (its content, trimmed).
    File(PathBuf),
}
