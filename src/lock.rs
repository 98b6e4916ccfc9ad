//! One actor per client on a host (invariant I9).
//!
//! Before acting on a client, a pass takes an exclusive `flock`-style lock on
//! `<lock_dir>/<tenant>.<client>.lock`. The kernel releases it when the process dies, so
//! a crash never leaves a stale lock. Locks across hosts (Kubernetes Lease, etcd) will
//! sit behind the same `acquire` call.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A held lock; dropping it releases the lock.
#[derive(Debug)]
pub struct ClientLock {
    _file: File,
}

/// Why a lock could not be had.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error(
        "another cds-rotator is acting on this client (lock {path} held{holder}); try again later"
    )]
    Busy {
        /// The lock file.
        path: PathBuf,
        /// Who holds it, as written in the file.
        holder: String,
    },
    /// The lock file could not be made.
    #[error(
        "cannot use lock file {path}: {source}; set lock_dir in the policy to a writable directory"
    )]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl ClientLock {
    /// Takes the lock of `client_id` in `tenant_id`, waiting up to `wait` for another
    /// holder to finish.
    pub async fn acquire(
        dir: &Path,
        tenant_id: &str,
        client_id: &str,
        wait: Duration,
    ) -> Result<ClientLock, LockError> {
        let path = dir.join(format!("{tenant_id}.{client_id}.lock"));
        let io_err = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        if !dir.is_dir() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io_err)?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(TryLockError::WouldBlock) => {
                    let holder = fs::read_to_string(&path)
                        .map(|h| format!(" by {}", h.trim()))
                        .unwrap_or_default();
                    return Err(LockError::Busy { path, holder });
                }
                Err(TryLockError::Error(e)) => return Err(io_err(e)),
            }
        }
        // Say who holds it, for the Busy message of the next one; best effort.
        let _ = file.set_len(0).and_then(|()| {
            write!(file, "pid {}", std::process::id())?;
            file.flush()
        });
        Ok(ClientLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_holder_waits_then_gets_busy() {
        let dir = tempfile::tempdir().unwrap();
        let first = ClientLock::acquire(dir.path(), "t", "c", Duration::ZERO)
            .await
            .unwrap();
        let err = ClientLock::acquire(dir.path(), "t", "c", Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("another cds-rotator"), "{err}");
        // Another client is independent.
        ClientLock::acquire(dir.path(), "t", "other", Duration::ZERO)
            .await
            .unwrap();
        drop(first);
        ClientLock::acquire(dir.path(), "t", "c", Duration::ZERO)
            .await
            .unwrap();
    }
}
