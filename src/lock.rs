//! One actor per client on a host (invariant I9).
//!
//! Before acting on a client, a pass takes an exclusive `flock`-style lock on
//! `<lock_dir>/<tenant>.<client>.lock`. The kernel releases it when the process dies, so
//! a crash never leaves a stale lock. Locks across hosts (Kubernetes Lease, etcd) will
//! sit behind the same `acquire` call.
//!
//! The default lock directory sits under the world-writable `/run/lock`, and the rotator
//! often runs as root, so the directory is trusted only when no other user can have put
//! anything in it: it is created 0700 when missing, and refused when it is a symlink,
//! another user owns it or group or others may write it. The lock file is opened
//! relative to the checked directory with `O_NOFOLLOW`, and written only once it is
//! known to be a regular file and the lock is held. Not here: what a held lock allows
//! (that is `rotation`).

use std::fmt;
use std::fs::{self, File, Metadata, TryLockError};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

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
    /// The lock directory is a symlink.
    #[error(
        "lock directory {dir} is a symlink, so whoever made the link chooses where the locks go: \
         remove it or set lock_dir in the policy to a real directory only cds-rotator can write"
    )]
    SymlinkedDir {
        /// The lock directory.
        dir: PathBuf,
    },
    /// Something other than a directory is where the lock directory should be.
    #[error(
        "lock directory {dir} is not a directory: remove it or set lock_dir in the policy to a \
         directory only cds-rotator can write"
    )]
    NotADirectory {
        /// The lock directory.
        dir: PathBuf,
    },
    /// Another user owns the lock directory.
    #[error(
        "lock directory {dir} is owned by uid {owner}, not by this user (uid {euid}) or root: \
         remove it or set lock_dir in the policy to a directory only cds-rotator can write"
    )]
    ForeignDir {
        /// The lock directory.
        dir: PathBuf,
        /// Its owner.
        owner: u32,
        /// This process's effective user.
        euid: u32,
    },
    /// Group or others may write the lock directory.
    #[error(
        "lock directory {dir} is writable by group or others (mode {mode:04o}): run chmod go-w \
         {dir} or set lock_dir in the policy to a directory only cds-rotator can write"
    )]
    WritableDir {
        /// The lock directory.
        dir: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The lock file is a symlink or not a regular file: someone planted it.
    #[error(
        "lock file {path} is {what}, so its directory is not safe (cds-rotator never creates \
         one): remove {path}, and make sure only cds-rotator can write the lock directory or \
         set lock_dir in the policy to one it alone can write"
    )]
    PlantedFile {
        /// The lock file.
        path: PathBuf,
        /// What it is instead of a regular file.
        what: &'static str,
    },
    /// The process has no file descriptor left (EMFILE) or the host none (ENFILE): the
    /// lock directory is not the problem.
    #[error(
        "cannot open lock path {path}: {source}; the process is out of file descriptors, not \
         the lock directory: raise the limit on open files (LimitNOFILE= in the unit, \
         ulimit -n) or find what holds them (ls /proc/<pid>/fd)"
    )]
    OutOfFiles {
        /// The lock directory or file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The lock directory or file could not be made or opened.
    #[error(
        "cannot use lock path {path}: {source}; set lock_dir in the policy to a writable directory"
    )]
    Io {
        /// The lock directory or file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// Why a directory the rotator relies on cannot be trusted: someone other than this
/// user or root could add, replace or link files in it. The file store uses it too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DirProblem {
    /// It is a symlink.
    Symlink,
    /// Something other than a directory is there.
    NotADirectory,
    /// Another user owns it.
    ForeignOwner {
        /// Its owner.
        owner: u32,
        /// This process's effective user.
        euid: u32,
    },
    /// Group or others may write it.
    Writable {
        /// Its permission bits.
        mode: u32,
    },
}

impl DirProblem {
    /// What is wrong with the directory `meta` describes (from `lstat` or `fstat`), if
    /// anything. Group and other *read* is fine: consumers may share a group.
    pub(crate) fn of(meta: &Metadata) -> Option<DirProblem> {
        let euid = rustix::process::geteuid().as_raw();
        if meta.file_type().is_symlink() {
            Some(DirProblem::Symlink)
        } else if !meta.is_dir() {
            Some(DirProblem::NotADirectory)
        } else if meta.uid() != euid && meta.uid() != 0 {
            Some(DirProblem::ForeignOwner {
                owner: meta.uid(),
                euid,
            })
        } else if meta.mode() & 0o022 != 0 {
            Some(DirProblem::Writable {
                mode: meta.mode() & 0o7777,
            })
        } else {
            None
        }
    }
}

impl fmt::Display for DirProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DirProblem::Symlink => f.write_str("is a symlink"),
            DirProblem::NotADirectory => f.write_str("is not a directory"),
            DirProblem::ForeignOwner { owner, euid } => write!(
                f,
                "is owned by uid {owner}, not by this user (uid {euid}) or root"
            ),
            DirProblem::Writable { mode } => {
                write!(f, "is writable by group or others (mode {mode:04o})")
            }
        }
    }
}

impl LockError {
    fn unsafe_dir(dir: &Path, problem: DirProblem) -> LockError {
        let dir = dir.to_owned();
        match problem {
            DirProblem::Symlink => LockError::SymlinkedDir { dir },
            DirProblem::NotADirectory => LockError::NotADirectory { dir },
            DirProblem::ForeignOwner { owner, euid } => LockError::ForeignDir { dir, owner, euid },
            DirProblem::Writable { mode } => LockError::WritableDir { dir, mode },
        }
    }
}

impl LockError {
    /// An I/O error on `path`, named for what it is: the descriptor limits are no fault
    /// of the lock directory.
    fn io(path: &Path, source: io::Error) -> LockError {
        let errno = source.raw_os_error().map(Errno::from_raw_os_error);
        let path = path.to_owned();
        if matches!(errno, Some(Errno::MFILE | Errno::NFILE)) {
            LockError::OutOfFiles { path, source }
        } else {
            LockError::Io { path, source }
        }
    }
}

impl ClientLock {
    /// Takes the lock of `client_id` in `tenant_id`, waiting up to `wait` for another
    /// holder to finish. `dir` is created (mode 0700) when missing and refused when
    /// another user could write it.
    pub async fn acquire(
        dir: &Path,
        tenant_id: &str,
        client_id: &str,
        wait: Duration,
    ) -> Result<ClientLock, LockError> {
        let name = format!("{tenant_id}.{client_id}.lock");
        let path = dir.join(&name);
        // On the blocking pool, not on an async worker: the first open creates the file,
        // and allocating an inode took 0.25 ms of kernel time and more on the busy ext4
        // of the bench (scripts/bench-pass.sh), stalling every pass on that worker.
        let mut file = {
            let (dir, path) = (dir.to_owned(), path.clone());
            tokio::task::spawn_blocking(move || {
                let dir_file = open_lock_dir(&dir)?;
                open_lock_file(&dir_file, &name, &path)
            })
        }
        .await
        .map_err(|e| LockError::io(&path, io::Error::other(e)))??;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match take(file, &path)? {
                Ok(lock) => return Ok(lock),
                Err(busy) if tokio::time::Instant::now() < deadline => {
                    file = busy;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(busy) => return Err(held_by(&busy, path)),
            }
        }
    }

    /// Takes the lock of `client_id` in `tenant_id` now or not at all, on the calling
    /// thread: for a caller that is not async (a reload holding the locks of a lock
    /// directory the policy moved to, until a restart applies it).
    pub fn try_acquire_now(
        dir: &Path,
        tenant_id: &str,
        client_id: &str,
    ) -> Result<ClientLock, LockError> {
        let name = format!("{tenant_id}.{client_id}.lock");
        let path = dir.join(&name);
        let dir_file = open_lock_dir(dir)?;
        let file = open_lock_file(&dir_file, &name, &path)?;
        take(file, &path)?.map_err(|busy| held_by(&busy, path))
    }
}

/// Tries the lock on `file` once: the lock, or the file back when another holds it.
fn take(file: File, path: &Path) -> Result<Result<ClientLock, File>, LockError> {
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Ok(Err(file)),
        Err(TryLockError::Error(source)) => return Err(LockError::io(path, source)),
    }
    // Say who holds it, for the Busy message of the next one; best effort. Only now,
    // with the lock held and the file known to be a regular file of our own.
    let _ = file
        .set_len(0)
        .and_then(|()| file.write_all_at(format!("pid {}", std::process::id()).as_bytes(), 0));
    Ok(Ok(ClientLock { _file: file }))
}

/// The lock at `path` is taken: by whom, as its file says.
fn held_by(file: &File, path: PathBuf) -> LockError {
    let holder = holder(file).map(|h| format!(" by {h}")).unwrap_or_default();
    LockError::Busy { path, holder }
}

/// Writes `bytes` to the file `name` in the lock directory `dir` (checked and made as for
/// a lock), replacing what it held: for the small notes a daemon leaves beside its locks
/// (where it listens). A symlink or anything but a regular file there is refused.
pub fn write_small_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), LockError> {
    let path = dir.join(name);
    let dir_file = open_lock_dir(dir)?;
    let flags = OFlags::WRONLY
        | OFlags::CREATE
        | OFlags::TRUNC
        | OFlags::NOFOLLOW
        | OFlags::NONBLOCK
        | OFlags::CLOEXEC;
    let file = match rustix::fs::openat(&dir_file, name, flags, Mode::RUSR | Mode::WUSR) {
        Ok(fd) => File::from(fd),
        Err(Errno::LOOP) => {
            return Err(LockError::PlantedFile {
                path,
                what: "a symlink",
            });
        }
        Err(errno) => return Err(LockError::io(&path, errno.into())),
    };
    match file.metadata() {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => {
            return Err(LockError::PlantedFile {
                path,
                what: "not a regular file",
            });
        }
        Err(source) => return Err(LockError::io(&path, source)),
    }
    file.write_all_at(bytes, 0)
        .map_err(|source| LockError::io(&path, source))
}

/// Opens `dir` (creating it 0700 when missing) without following a final symlink, and
/// checks the opened directory itself, so a swap after the check cannot redirect the
/// lock file.
fn open_lock_dir(dir: &Path) -> Result<File, LockError> {
    let io_err = |source| LockError::io(dir, source);
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let opened = match rustix::fs::open(dir, flags, Mode::empty()) {
        Err(Errno::NOENT) => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err)?;
            rustix::fs::open(dir, flags, Mode::empty())
        }
        other => other,
    };
    let dir_file = match opened {
        Ok(fd) => File::from(fd),
        // ELOOP or ENOTDIR: say which, from what is there.
        Err(errno) => {
            return Err(
                match fs::symlink_metadata(dir)
                    .ok()
                    .as_ref()
                    .and_then(DirProblem::of)
                {
                    Some(problem @ (DirProblem::Symlink | DirProblem::NotADirectory)) => {
                        LockError::unsafe_dir(dir, problem)
                    }
                    _ => io_err(errno.into()),
                },
            );
        }
    };
    let meta = dir_file.metadata().map_err(io_err)?;
    match DirProblem::of(&meta) {
        Some(problem) => Err(LockError::unsafe_dir(dir, problem)),
        None => Ok(dir_file),
    }
}

/// Opens (creating when missing) the lock file `name` in the checked directory, refusing
/// a symlink or anything but a regular file. Never truncates.
fn open_lock_file(dir_file: &File, name: &str, path: &Path) -> Result<File, LockError> {
    let flags = OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let file = match rustix::fs::openat(dir_file, name, flags, Mode::RUSR | Mode::WUSR) {
        Ok(fd) => File::from(fd),
        Err(Errno::LOOP) => {
            return Err(LockError::PlantedFile {
                path: path.to_owned(),
                what: "a symlink",
            });
        }
        Err(errno) => {
            return Err(LockError::io(path, errno.into()));
        }
    };
    let meta = file
        .metadata()
        .map_err(|source| LockError::io(path, source))?;
    if !meta.is_file() {
        return Err(LockError::PlantedFile {
            path: path.to_owned(),
            what: "not a regular file",
        });
    }
    Ok(file)
}

/// What the holder wrote in the lock file (`pid N`), read from the open file, short and
/// printable.
fn holder(file: &File) -> Option<String> {
    let mut buf = [0u8; 64];
    let n = file.read_at(&mut buf, 0).ok()?;
    let text: String = String::from_utf8_lossy(&buf[..n])
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    async fn acquire(dir: &Path) -> Result<ClientLock, LockError> {
        ClientLock::acquire(dir, "t", "c", Duration::ZERO).await
    }

    #[test]
    fn running_out_of_descriptors_names_the_limit_not_the_lock_dir() {
        for errno in [Errno::MFILE, Errno::NFILE] {
            let err = LockError::io(Path::new("/run/lock/x"), errno.into()).to_string();
            assert!(err.contains("out of file descriptors"), "{err}");
            assert!(err.contains("LimitNOFILE="), "{err}");
            assert!(!err.contains("set lock_dir"), "{err}");
        }
        let err = LockError::io(Path::new("/run/lock/x"), Errno::ACCESS.into()).to_string();
        assert!(err.contains("set lock_dir"), "{err}");
    }

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

    #[tokio::test]
    async fn a_busy_lock_names_its_holder_and_a_failed_attempt_leaves_the_file_alone() {
        let dir = tempfile::tempdir().unwrap();
        let _first = acquire(dir.path()).await.unwrap();
        let written = fs::read_to_string(dir.path().join("t.c.lock")).unwrap();
        assert_eq!(written, format!("pid {}", std::process::id()));
        let err = acquire(dir.path()).await.unwrap_err().to_string();
        assert!(err.contains(&format!("held by {written}")), "{err}");
        assert_eq!(
            fs::read_to_string(dir.path().join("t.c.lock")).unwrap(),
            written
        );
    }

    #[tokio::test]
    async fn a_symlinked_lock_file_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious");
        fs::write(&target, "keep me").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("t.c.lock")).unwrap();
        let err = acquire(dir.path()).await.unwrap_err().to_string();
        assert!(err.contains("is a symlink"), "{err}");
        assert!(err.contains("not safe"), "{err}");
        assert!(err.contains("set lock_dir"), "{err}");
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep me");
    }

    #[tokio::test]
    async fn a_dangling_symlinked_lock_file_is_refused_and_nothing_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("made-by-root");
        std::os::unix::fs::symlink(&target, dir.path().join("t.c.lock")).unwrap();
        let err = acquire(dir.path()).await.unwrap_err().to_string();
        assert!(err.contains("is a symlink"), "{err}");
        assert!(!target.exists());
    }

    #[tokio::test]
    async fn a_lock_file_that_is_not_a_regular_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.path().join("t.c.lock"),
            rustix::fs::FileType::Fifo,
            Mode::RUSR | Mode::WUSR,
            0,
        )
        .unwrap();
        let err = acquire(dir.path()).await.unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }

    #[tokio::test]
    async fn a_missing_lock_dir_is_created_0700_with_its_parents() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a").join("locks");
        let _lock = acquire(&dir).await.unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert!(dir.join("t.c.lock").is_file());
    }

    #[tokio::test]
    async fn a_lock_dir_others_may_read_but_not_write_is_used() {
        let tmp = tempfile::tempdir().unwrap();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
        acquire(tmp.path()).await.unwrap();
    }

    #[tokio::test]
    async fn a_group_writable_lock_dir_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o770)).unwrap();
        let err = acquire(tmp.path()).await.unwrap_err().to_string();
        assert!(
            err.contains("writable by group or others (mode 0770)"),
            "{err}"
        );
        assert!(err.contains("chmod go-w"), "{err}");
        assert!(!tmp.path().join("t.c.lock").exists());
    }

    #[tokio::test]
    async fn a_world_writable_lock_dir_is_refused_even_when_sticky() {
        let tmp = tempfile::tempdir().unwrap();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o1777)).unwrap();
        let err = acquire(tmp.path()).await.unwrap_err().to_string();
        assert!(err.contains("(mode 1777)"), "{err}");
    }

    #[tokio::test]
    async fn a_symlinked_lock_dir_is_refused_and_nothing_is_created_behind_it() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        fs::create_dir(&real).unwrap();
        fs::set_permissions(&real, fs::Permissions::from_mode(0o700)).unwrap();
        let link = tmp.path().join("locks");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = acquire(&link).await.unwrap_err().to_string();
        assert!(err.contains("is a symlink"), "{err}");
        assert!(err.contains("set lock_dir"), "{err}");
        assert_eq!(fs::read_dir(&real).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn a_file_where_the_lock_dir_should_be_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("locks");
        fs::write(&path, "").unwrap();
        let err = acquire(&path).await.unwrap_err().to_string();
        assert!(err.contains("is not a directory"), "{err}");
    }

    #[tokio::test]
    async fn a_lock_dir_owned_by_another_user_is_refused() {
        if rustix::process::geteuid().as_raw() != 0 {
            // Only root can give a directory away; the check itself is the same.
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("locks");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&dir, Some(12345), Some(12345)).unwrap();
        let err = acquire(&dir).await.unwrap_err().to_string();
        assert!(
            err.contains("is owned by uid 12345, not by this user (uid 0) or root"),
            "{err}"
        );
        assert!(!dir.join("t.c.lock").exists());
    }
}
