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

/// The most a secret file may hold: far more than any secret, URL, token or key the
/// rotator reads (a service-account JWT is about 1 KB), far less than could hurt.
pub const MAX_FILE_BYTES: u64 = 64 * 1024;

/// The file at `path`, untrimmed, read into a buffer sized for it (so that no grown copy
/// is left unzeroed) that is zeroized when dropped. Only a regular file of at most
/// [`MAX_FILE_BYTES`] is read: a FIFO or a device named by mistake (or planted) must not
/// hang or flood the rotator, so it is opened without blocking and refused.
pub fn read_file(path: &Path) -> Result<Zeroizing<String>, SourceError> {
    use std::os::unix::fs::OpenOptionsExt;
    let unreadable = |error| SourceError::Unreadable {
        path: path.to_owned(),
        error,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(unreadable)?;
    let meta = file.metadata().map_err(unreadable)?;
    if !meta.is_file() {
        return Err(unreadable(std::io::Error::other(
            "not a regular file (a FIFO, device or directory is never read)",
        )));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(unreadable(std::io::Error::other(format!(
            "larger than {} KiB, more than any secret",
            MAX_FILE_BYTES / 1024
        ))));
    }
    let mut text = Zeroizing::new(String::new());
    // Sized for what it holds now, plus one byte to see that it ended.
    text.try_reserve_exact(meta.len() as usize + 1)
        .map_err(|_| unreadable(std::io::ErrorKind::OutOfMemory.into()))?;
    // A file that grew since is cut at the cap, and then refused.
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(unreadable)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(unreadable(std::io::Error::other(format!(
            "larger than {} KiB, more than any secret",
            MAX_FILE_BYTES / 1024
        ))));
    }
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
    fn a_fifo_or_an_oversized_file_is_refused_without_hanging_or_reading_it_all() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success());
        let err = read_file(&fifo).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        let (_dir, big) = file_with(&"x".repeat(MAX_FILE_BYTES as usize + 1));
        let err = read_file(&big).unwrap_err().to_string();
        assert!(err.contains("larger than 64 KiB"), "{err}");
        let (_dir, ok) = file_with(&"x".repeat(MAX_FILE_BYTES as usize));
        assert_eq!(read_file(&ok).unwrap().len(), MAX_FILE_BYTES as usize);
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
