//! Where a secret comes from when it is not written in the policy (an environment
//! variable, a file, or, for the rotator's own credential, a declared store), and the
//! one reader of the first two: read into zeroized buffers, trimmed, an empty value
//! refused ([`read_env`], [`read_file`], [`trimmed`], [`ValueSource::read`]).
//!
//! Not here: reading a store (its caller reads it through the store, then applies
//! [`trimmed`]), the texts callers show for a [`SourceError`] (each caller names its own
//! key), or checking what the policy wrote (`policy`).

use std::io::Read;
use std::path::{Path, PathBuf};

use secrecy::SecretString;
use zeroize::Zeroizing;

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

impl ValueSource {
    /// How messages name it: the variable's name or the file's path, never the value.
    pub fn describe(&self) -> String {
        match self {
            ValueSource::Env(name) => format!("environment variable {name}"),
            ValueSource::File(path) => format!("file {}", path.display()),
        }
    }

    /// The value as it is, untrimmed (a password may end in a space).
    pub fn read_raw(&self) -> Result<Zeroizing<String>, SourceError> {
        match self {
            ValueSource::Env(name) => read_env(name),
            ValueSource::File(path) => read_file(path),
        }
    }

    /// The value, trimmed; an empty one is refused.
    pub fn read(&self) -> Result<SecretString, SourceError> {
        trimmed(&self.read_raw()?)
    }
}

/// Why a source gave no value. Its texts name the variable or the file, never a value;
/// callers usually build their own text from the parts, naming their key.
#[derive(Debug)]
pub enum SourceError {
    /// The environment variable (by name) is not set, or not text.
    NotSet(String),
    /// The file could not be read (or is not text).
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The value is empty once trimmed.
    Empty,
}

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceError::NotSet(name) => write!(f, "environment variable {name} is not set"),
            SourceError::Unreadable { path, error } => {
                write!(f, "cannot read {}: {error}", path.display())
            }
            SourceError::Empty => f.write_str("the value is empty"),
        }
    }
}

impl std::error::Error for SourceError {}

/// The environment variable `name`, untrimmed.
pub fn read_env(name: &str) -> Result<Zeroizing<String>, SourceError> {
    std::env::var(name)
        .map(Zeroizing::new)
        .map_err(|_| SourceError::NotSet(name.to_owned()))
}

/// The file at `path`, untrimmed, read into a buffer sized for it (so that no grown copy
/// is left unzeroed) that is zeroized when dropped.
pub fn read_file(path: &Path) -> Result<Zeroizing<String>, SourceError> {
    let unreadable = |error| SourceError::Unreadable {
        path: path.to_owned(),
        error,
    };
    let mut file = std::fs::File::open(path).map_err(unreadable)?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut text = Zeroizing::new(String::new());
    // As `std::fs::read_to_string` does: a file too large to hold is an error, not an abort.
    text.try_reserve_exact(usize::try_from(len).unwrap_or(usize::MAX).saturating_add(1))
        .map_err(|_| unreadable(std::io::ErrorKind::OutOfMemory.into()))?;
    file.read_to_string(&mut text).map_err(unreadable)?;
    Ok(text)
}

/// `raw` without its leading and trailing whitespace (the newline a file ends with);
/// [`SourceError::Empty`] when nothing is left.
pub fn trimmed(raw: &str) -> Result<SecretString, SourceError> {
    let value = raw.trim();
    if value.is_empty() {
        return Err(SourceError::Empty);
    }
    Ok(SecretString::from(value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    const VALUE: &str = "s3cr3t-value";

    fn file_with(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn a_files_trailing_newline_and_whitespace_are_trimmed() {
        let (_dir, path) = file_with(&format!("  {VALUE} \n\n"));
        let value = ValueSource::File(path).read().unwrap();
        assert_eq!(value.expose_secret(), VALUE);
    }

    #[test]
    fn read_raw_keeps_the_value_as_written() {
        let (_dir, path) = file_with(&format!("{VALUE} \n"));
        let raw = ValueSource::File(path).read_raw().unwrap();
        assert_eq!(raw.as_str(), format!("{VALUE} \n"));
    }

    #[test]
    fn an_empty_or_blank_value_is_refused() {
        for text in ["", "\n", "  \t\n"] {
            let (_dir, path) = file_with(text);
            let err = ValueSource::File(path).read().unwrap_err();
            assert!(matches!(err, SourceError::Empty), "{text:?}: {err:?}");
            assert_eq!(err.to_string(), "the value is empty");
        }
        assert!(matches!(trimmed(" \n"), Err(SourceError::Empty)));
    }

    #[test]
    fn a_missing_file_is_named_with_the_os_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent");
        let err = ValueSource::File(path.clone()).read().unwrap_err();
        let SourceError::Unreadable { path: named, error } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(named, &path);
        assert_eq!(error.kind(), std::io::ErrorKind::NotFound);
        assert_eq!(
            err.to_string(),
            format!("cannot read {}: {error}", path.display())
        );
    }

    #[test]
    fn a_missing_variable_is_named() {
        let name = "CDS_ROTATOR_TEST_SOURCE_SURELY_UNSET";
        let err = ValueSource::Env(name.to_owned()).read().unwrap_err();
        assert!(matches!(&err, SourceError::NotSet(n) if n == name));
        assert_eq!(
            err.to_string(),
            format!("environment variable {name} is not set")
        );
    }

    #[test]
    fn a_set_variable_is_read() {
        // PATH is set wherever the tests run; nothing here sets a variable.
        let raw = read_env("PATH").unwrap();
        assert_eq!(raw.as_str(), std::env::var("PATH").unwrap());
    }

    #[test]
    fn the_value_is_never_in_debug_or_error_texts() {
        let (_dir, path) = file_with(VALUE);
        let value = ValueSource::File(path.clone()).read().unwrap();
        assert!(!format!("{value:?}").contains(VALUE));
        // A file that is not text: the error names the file, not what it holds.
        let (_dir2, binary) = file_with("");
        std::fs::write(&binary, [VALUE.as_bytes(), &[0xff, 0xfe]].concat()).unwrap();
        let err = ValueSource::File(binary).read().unwrap_err();
        assert!(matches!(err, SourceError::Unreadable { .. }), "{err:?}");
        assert!(!err.to_string().contains(VALUE), "{err}");
        assert!(!format!("{err:?}").contains(VALUE), "{err:?}");
        assert!(!SourceError::Empty.to_string().contains(VALUE));
    }
}
