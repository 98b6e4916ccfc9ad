//! The `file` store: one directory, a file per secret.
//!
//! `<dir>/<key>` holds the value alone (mode 0600) and `<dir>/<key>.json` its
//! [`StoreRecord`]. Each file is replaced atomically (temp file in the same directory,
//! fsync, rename, fsync the directory). Because the value and the record are two files,
//! a publish first writes the new record to `<dir>/.<key>.pending.json`: if the process
//! dies (or the final record cannot be written) after the value landed, the next read
//! sees that the value's fingerprint matches the pending record and reports it as
//! current, so the reconciler never mistakes the published secret for an orphan. Once
//! the value is on disk, the pending record is renamed over the final one (no new bytes,
//! no fsync: if a crash undoes that rename, the pending record still stands in).
//!
//! The rule every step keeps: whatever crashes and failed writes came before, the store
//! can say which CDS secret its current value is. So a pending record that stands in for
//! a lost final record is first promoted to the final record before a new publish
//! overwrites it (and the publish fails, having changed nothing, when that promotion
//! fails); and a failed publish removes only its own pending record, and only when its
//! value did not land.
//!
//! Consumers read the directory, so it is trusted only when no other user can change
//! it: it is created 0700 when missing, and refused when it is a symlink, another user
//! (not root) owns it, or group or others may write it; files in it are opened with
//! `O_NOFOLLOW`. Not here: deciding when to publish (that is `rotation`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use rustix::fs::OFlags;
use rustix::io::Errno;
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

pub mod spec;

use super::{SecretStore, StoreError};
use crate::domain::{Current, Fingerprint, StoreRecord};
use crate::lock::DirProblem;

/// Who may read what a file store writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// The files' mode: 0o600 (the default) or 0o640 (the group may read).
    pub mode: u32,
    /// The files' and the directory's group (a gid), so consumers in it can read.
    pub group: Option<u32>,
}

impl Default for Access {
    fn default() -> Self {
        Access {
            mode: 0o600,
            group: None,
        }
    }
}

impl Access {
    /// The directory's mode: 0o700, or 0o750 when the group may read the files.
    fn dir_mode(self) -> u32 {
        if self.mode & 0o040 != 0 { 0o750 } else { 0o700 }
    }
}

/// A store that writes secrets as files in one directory.
#[derive(Clone, Debug)]
pub struct FileStore {
    name: String,
    dir: PathBuf,
    access: Access,
    /// Shares directory fsyncs between the publishes in flight (see [`DirSync`]).
    dir_sync: std::sync::Arc<DirSync>,
    /// Writes made to fail (tests only).
    #[cfg(test)]
    faults: std::sync::Arc<std::sync::Mutex<Faults>>,
}

/// Injected write failures and crashes (tests only).
#[cfg(test)]
#[derive(Debug, Default)]
struct Faults {
    /// How the write to a path fails.
    at: std::collections::HashMap<PathBuf, Fault>,
    /// A crash happened: no write or removal succeeds any more.
    crashed: bool,
}

/// How an injected write failure strikes (tests only).
#[cfg(test)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// The new file never replaces the old one (ENOSPC on write).
    NoSpace,
    /// The rename happened, then the directory fsync failed.
    SyncFails,
    /// The rename happened, then the process died: nothing after it runs.
    Crash,
}

/// Group commit of directory fsyncs. A directory fsync makes durable every rename in
/// that directory that finished before the fsync started, so the publishes in flight in
/// one directory can share one: a caller whose rename is done waits for the next fsync
/// to *start* (one running now may have started before its rename, so it does not
/// count), and whoever finds none running starts it. Each caller therefore returns only
/// after a directory fsync that began after its own rename has ended, which is all the
/// ordering in [`FileStore::publish_blocking`] relies on; a caller fails only when
/// every fsync that started after its rename and ended before it looked failed (then it
/// treats its write as a rename followed by a failed sync, as without sharing). At most one fsync per directory runs at a time, and
/// 64 publishes at once make a few fsyncs instead of 128 (the bench, README "Pass speed").
#[derive(Debug, Default)]
struct DirSync {
    state: std::sync::Mutex<DirSyncState>,
    done: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct DirSyncState {
    /// Fsyncs started so far; the n-th one started has id n.
    started: u64,
    /// The id of the last fsync that ended (they run one at a time, in id order).
    ended: u64,
    /// The id of the last fsync that succeeded (0: none yet).
    succeeded: u64,
    /// The last failure: the error's kind and text.
    failure: Option<(io::ErrorKind, String)>,
    /// Whether one is running.
    running: bool,
}

impl DirSync {
    fn lock(&self) -> std::sync::MutexGuard<'_, DirSyncState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Returns once a directory fsync that started after this call has ended.
    fn after_rename(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        // The next fsync to start is the first that surely covers our rename.
        let needed = state.started + 1;
        loop {
            // Any fsync from `needed` on started after our rename: one that succeeded
            // made it durable. When all of them failed, so does this write.
            if state.succeeded >= needed {
                return Ok(());
            }
            if state.ended >= needed {
                let (kind, text) = state
                    .failure
                    .clone()
                    .unwrap_or((io::ErrorKind::Other, "directory fsync failed".to_owned()));
                return Err(io::Error::new(kind, text));
            }
            if state.running {
                state = self.done.wait(state).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            state.running = true;
            state.started += 1;
            let id = state.started;
            drop(state);
            let result = File::open(dir).and_then(|d| d.sync_all());
            state = self.lock();
            state.running = false;
            state.ended = id;
            match result {
                Ok(()) => state.succeeded = id,
                Err(e) => state.failure = Some((e.kind(), e.to_string())),
            }
            self.done.notify_all();
        }
    }
}

/// What lies on disk under one key.
#[derive(Debug)]
struct OnDisk {
    record: Option<StoreRecord>,
    pending: Option<StoreRecord>,
    value: Option<Fingerprint>,
}

impl OnDisk {
    /// A pending record that is the only one naming the value: the final record was lost
    /// after the value landed.
    fn standing_in(&self) -> Option<&StoreRecord> {
        let value = self.value.as_ref()?;
        let pending = self.pending.as_ref().filter(|p| &p.fingerprint == value)?;
        match &self.record {
            Some(record) if &record.fingerprint == value => None,
            _ => Some(pending),
        }
    }
}

impl FileStore {
    /// A file store named `name` (as in the policy) writing into `dir`.
    pub fn new(name: impl Into<String>, dir: impl Into<PathBuf>) -> Self {
        FileStore {
            name: name.into(),
            dir: dir.into(),
            access: Access::default(),
            dir_sync: Default::default(),
            #[cfg(test)]
            faults: Default::default(),
        }
    }

    /// The same store, writing files with `access` (mode, group).
    pub fn with_access(mut self, access: Access) -> Self {
        self.access = access;
        self
    }

    pub(crate) fn value_path(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    fn record_path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    fn pending_path(&self, key: &str) -> PathBuf {
        self.dir.join(format!(".{key}.pending.json"))
    }

    fn io_error(&self, operation: &'static str, path: &Path, err: io::Error) -> StoreError {
        StoreError::Io {
            store: self.name.clone(),
            operation,
            location: path.display().to_string(),
            detail: err.to_string(),
        }
    }

    fn refused(&self, operation: &'static str, path: &Path, detail: String) -> StoreError {
        StoreError::Io {
            store: self.name.clone(),
            operation,
            location: path.display().to_string(),
            detail,
        }
    }

    /// Refuses a directory another user could change; `Ok(false)` when it is missing.
    pub(crate) fn check_dir(&self) -> Result<bool, StoreError> {
        let meta = match fs::symlink_metadata(&self.dir) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(self.io_error("use directory", &self.dir, e)),
        };
        let Some(problem) = DirProblem::of(&meta) else {
            return Ok(true);
        };
        let dir = self.dir.display();
        let fix = match &problem {
            DirProblem::Symlink => {
                "point dir in the policy at the real directory instead of a link".to_owned()
            }
            DirProblem::NotADirectory => {
                "remove it or point dir in the policy at a directory".to_owned()
            }
            DirProblem::ForeignOwner { euid, .. } => format!(
                "run chown {euid} {dir} or point dir in the policy at a directory this user owns"
            ),
            DirProblem::Writable { .. } => {
                format!("run chmod go-w {dir} (group or other read is fine)")
            }
        };
        Err(self.refused(
            "use directory",
            &self.dir,
            format!("it {problem}, so others could change what consumers read: {fix}"),
        ))
    }

    /// Reads the existing file `path` without following a symlink; `None` when missing.
    pub(crate) fn read_file(&self, path: &Path) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        // O_NONBLOCK: a FIFO planted here must not hang the read; no effect on files.
        let flags = OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
        let mut file = match OpenOptions::new()
            .read(true)
            .custom_flags(flags.bits() as i32)
            .open(path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(Errno::LOOP.raw_os_error()) => {
                return Err(self.refused(
                    "read",
                    path,
                    "is a symlink, and cds-rotator does not follow links in its store: remove \
                     it (the next publish writes a real file)"
                        .to_owned(),
                ));
            }
            Err(e) => return Err(self.io_error("read", path, e)),
        };
        let meta = file
            .metadata()
            .map_err(|e| self.io_error("read", path, e))?;
        if !meta.is_file() {
            return Err(self.refused(
                "read",
                path,
                "is not a regular file: remove it (the next publish writes a real file)".to_owned(),
            ));
        }
        // Sized up front so that a value is not copied around while the buffer grows.
        let mut bytes = Zeroizing::new(Vec::with_capacity(
            usize::try_from(meta.len()).unwrap_or(0).saturating_add(1),
        ));
        file.read_to_end(&mut bytes)
            .map_err(|e| self.io_error("read", path, e))?;
        Ok(Some(bytes))
    }

    fn read_record(&self, path: &Path) -> Result<Option<StoreRecord>, StoreError> {
        let Some(bytes) = self.read_file(path)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                store: self.name.clone(),
                location: path.display().to_string(),
                detail: e.to_string(),
            })
    }

    fn value_fingerprint(&self, key: &str) -> Result<Option<Fingerprint>, StoreError> {
        Ok(self
            .read_file(&self.value_path(key))?
            .map(|bytes| Fingerprint::of_bytes(&bytes)))
    }

    fn on_disk(&self, key: &str) -> Result<OnDisk, StoreError> {
        Ok(OnDisk {
            record: self.read_record(&self.record_path(key))?,
            pending: self.read_record(&self.pending_path(key))?,
            value: self.value_fingerprint(key)?,
        })
    }

    fn read_current_blocking(&self, key: &str) -> Result<Current, StoreError> {
        if !self.check_dir()? {
            return Ok(Current::Empty);
        }
        let OnDisk {
            record,
            pending,
            value,
        } = self.on_disk(key)?;
        let Some(value) = value else {
            return match record {
                // A pending record alone never reached the value: nothing was published.
                None => Ok(Current::Empty),
                Some(record) => Err(self.mismatch(key, None, &record)),
            };
        };
        // A pending record whose fingerprint matches the value: the publish got as far as
        // the value, so that is what readers hold.
        if let Some(pending) = pending
            && pending.fingerprint == value
        {
            return Ok(Current::Published(pending));
        }
        match record {
            Some(record) if record.fingerprint == value => Ok(Current::Published(record)),
            Some(record) => Err(self.mismatch(key, Some(value), &record)),
            // A value whose record is gone (a pending record, if any, is another one's).
            None => Ok(Current::Unrecorded),
        }
    }

    fn mismatch(&self, key: &str, value: Option<Fingerprint>, record: &StoreRecord) -> StoreError {
        StoreError::Corrupt {
            store: self.name.clone(),
            location: self.value_path(key).display().to_string(),
            detail: format!(
                "the value's fingerprint ({}) does not match the record's ({}); the file was changed outside cds-rotator",
                value.map_or_else(|| "missing".to_owned(), |f| f.to_string()),
                record.fingerprint
            ),
        }
    }

    fn encode(&self, key: &str, record: &StoreRecord) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec_pretty(record).map_err(|e| StoreError::Io {
            store: self.name.clone(),
            operation: "encode record for",
            location: key.to_owned(),
            detail: e.to_string(),
        })
    }

    fn publish_blocking(
        &self,
        key: &str,
        value: &SecretString,
        record: &StoreRecord,
    ) -> Result<(), StoreError> {
        self.ensure_dir()?;
        let json = self.encode(key, record)?;
        // The pending record is about to be overwritten: when it is the only one naming
        // the value, make it the final record first. If that fails nothing has changed,
        // and the caller deletes its new secret.
        if let Some(standing) = self.on_disk(key)?.standing_in() {
            let promoted = self.encode(key, standing)?;
            self.replace(&self.record_path(key), &promoted)?;
        }
        // Four fsyncs in all. The pending record (file, then directory) is on disk before
        // the value's rename can be: a crash never keeps a new value that no record names.
        if let Err(e) = self.replace(&self.pending_path(key), &json) {
            self.discard_own_pending(key, &record.fingerprint);
            return Err(e);
        }
        // The value (file, then directory): on disk before the pending record is moved
        // over the final one, so a crash never keeps the new record with the old value.
        if let Err(e) = self.replace(&self.value_path(key), value.expose_secret().as_bytes()) {
            match self.value_fingerprint(key) {
                // The rename happened before the failure (say, of the directory fsync):
                // readers hold the new value, so the publish has happened.
                Ok(Some(held)) if held == record.fingerprint => {}
                // Readers still see the old value; the caller deletes the new secret in
                // CDS, so its pending record goes too.
                Ok(_) => {
                    self.discard_own_pending(key, &record.fingerprint);
                    return Err(e);
                }
                // Cannot tell which value is held: keep the pending record, which names
                // the new value should it have landed, and say so: the caller must not
                // delete a secret readers may hold.
                Err(read) => {
                    return Err(StoreError::OutcomeUnknown {
                        store: self.name.clone(),
                        location: self.value_path(key).display().to_string(),
                        detail: format!("{e}; reading it back: {read}"),
                    });
                }
            }
        }
        // From here on readers hold the new value: the publish has happened, whatever
        // fails next. The pending record stands in for the final one until it is moved
        // over it.
        if let Err(e) = self.promote_pending(key) {
            tracing::warn!(error = %e, "the record was not replaced; the pending record stands in");
        }
        Ok(())
    }

    /// Moves the pending record over the final one: one rename makes the final record
    /// and removes the pending one, so no state lies between the two. Its bytes were
    /// synced when the pending record was written, so no file fsync; and no directory
    /// fsync either: should a crash undo the rename, the pending record, which names the
    /// value readers hold, stands in as after a failed record write (the next publish
    /// promotes it first). The value's rename was synced before this one, so a crash can
    /// never keep this rename and lose that one.
    fn promote_pending(&self, key: &str) -> Result<(), StoreError> {
        let path = self.record_path(key);
        let result = (|| -> io::Result<()> {
            #[cfg(test)]
            self.inject(&path, false)?;
            fs::rename(self.pending_path(key), &path)?;
            #[cfg(test)]
            self.inject(&path, true)?;
            Ok(())
        })();
        result.map_err(|e| self.io_error("write", &path, e))
    }

    /// After a publish failed: removes the pending record when it is this publish's own
    /// (`fingerprint`) and the value did not land. Such a record names nothing a reader
    /// holds, so removing it never changes what the store says; any record it replaced
    /// was promoted first. Best effort.
    fn discard_own_pending(&self, key: &str, fingerprint: &Fingerprint) {
        let Ok(on_disk) = self.on_disk(key) else {
            return;
        };
        let own = on_disk
            .pending
            .as_ref()
            .is_some_and(|p| &p.fingerprint == fingerprint);
        if own
            && on_disk.value.as_ref() != Some(fingerprint)
            && let Err(e) = self.remove(&self.pending_path(key))
        {
            tracing::warn!(error = %e, "could not remove the pending record");
        }
    }

    pub(crate) fn ensure_dir(&self) -> Result<(), StoreError> {
        let created = !self.check_dir()?;
        if created {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)
                .map_err(|e| self.io_error("create directory", &self.dir, e))?;
            // Someone may have made it first.
            self.check_dir()?;
        }
        if created || self.access.group.is_some() {
            self.follow_access(created)?;
        }
        Ok(())
    }

    /// Gives the directory the group and mode that `access` asks for: a directory it
    /// created gets exactly 0700, or 0750 so the group can reach the files; an existing
    /// one only gains the group and its read/search bits. The directory was checked
    /// first: not a link, owned by this user or root, not writable by others.
    fn follow_access(&self, created: bool) -> Result<(), StoreError> {
        let dir =
            fs::File::open(&self.dir).map_err(|e| self.io_error("use directory", &self.dir, e))?;
        let meta = dir
            .metadata()
            .map_err(|e| self.io_error("use directory", &self.dir, e))?;
        if let Some(gid) = self.access.group
            && std::os::unix::fs::MetadataExt::gid(&meta) != gid
        {
            rustix::fs::fchown(&dir, None, Some(rustix::fs::Gid::from_raw(gid)))
                .map_err(|e| self.io_error("set the group of", &self.dir, e.into()))?;
        }
        let have = meta.permissions().mode() & 0o777;
        let want = if created {
            self.access.dir_mode()
        } else {
            have | (self.access.dir_mode() & 0o050)
        };
        if have != want {
            dir.set_permissions(fs::Permissions::from_mode(want))
                .map_err(|e| self.io_error("set the mode of", &self.dir, e))?;
        }
        Ok(())
    }

    /// Replaces `path` with `bytes` atomically: temp file beside it, fsync, rename, fsync dir.
    /// The file fsync puts the bytes on disk before the name points at them (a crash never
    /// leaves an empty or partial file under `path`); the directory fsync makes the rename
    /// itself durable before the caller's next write, which is what orders a publish's
    /// steps (pending record, then value, then record) across a crash. That fsync may be
    /// shared with other writes in the directory, but always starts after this rename
    /// ([`DirSync`]).
    pub(crate) fn replace(&self, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = self.dir.join(format!(
            ".{file_name}.tmp-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let result = (|| -> io::Result<()> {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            // The group first, then the mode: the file is never group-readable while it
            // belongs to the creator's group. fchmod is not narrowed by the umask.
            if let Some(gid) = self.access.group {
                rustix::fs::fchown(&file, None, Some(rustix::fs::Gid::from_raw(gid)))?;
            }
            if self.access.mode != 0o600 {
                file.set_permissions(fs::Permissions::from_mode(self.access.mode))?;
            }
            file.write_all(bytes)?;
            file.sync_all()?;
            #[cfg(test)]
            self.inject(path, false)?;
            fs::rename(&tmp, path)?;
            #[cfg(test)]
            self.inject(path, true)?;
            self.dir_sync.after_rename(&self.dir)
        })();
        result.map_err(|e| {
            let _ = fs::remove_file(&tmp);
            self.io_error("write", path, e)
        })
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        #[cfg(test)]
        if self.faults.lock().is_ok_and(|f| f.crashed) {
            return Err(io::Error::other("crashed (injected)"));
        }
        fs::remove_file(path)
    }

    /// Fails a write to `path`, before or after its rename, when a test asked for it.
    #[cfg(test)]
    fn inject(&self, path: &Path, after_rename: bool) -> io::Result<()> {
        let Ok(mut faults) = self.faults.lock() else {
            return Ok(());
        };
        let crash = || io::Error::other("crashed (injected)");
        if faults.crashed {
            return Err(crash());
        }
        match (faults.at.get(path), after_rename) {
            (Some(Fault::NoSpace), false) | (Some(Fault::SyncFails), true) => Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "no space left on device (injected)",
            )),
            (Some(Fault::Crash), true) => {
                faults.crashed = true;
                Err(crash())
            }
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl SecretStore for FileStore {
    fn location(&self, key: &str) -> String {
        self.value_path(key).display().to_string()
    }

    async fn read_current(&self, key: &str) -> Result<Current, StoreError> {
        let store = self.clone();
        let key = key.to_owned();
        tokio::task::spawn_blocking(move || store.read_current_blocking(&key))
            .await
            .map_err(|e| StoreError::Io {
                store: self.name.clone(),
                operation: "read",
                location: self.dir.display().to_string(),
                detail: e.to_string(),
            })?
    }

    async fn read_value(&self, key: &str) -> Result<Option<SecretString>, StoreError> {
        let store = self.clone();
        let path = self.value_path(key);
        let bytes = tokio::task::spawn_blocking(move || {
            if !store.check_dir()? {
                return Ok(None);
            }
            store.read_file(&path)
        })
        .await
        .map_err(|e| StoreError::Io {
            store: self.name.clone(),
            operation: "read",
            location: self.dir.display().to_string(),
            detail: e.to_string(),
        })??;
        let Some(bytes) = bytes else {
            return Ok(None);
        };
        let Ok(text) = std::str::from_utf8(&bytes) else {
            return Err(StoreError::Corrupt {
                store: self.name.clone(),
                location: self.location(key),
                detail: "the value is not UTF-8 text".to_owned(),
            });
        };
        if text.is_empty() {
            return Ok(None);
        }
        Ok(Some(SecretString::from(text)))
    }

    async fn probe(&self) -> Result<(), StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            store.ensure_dir()?;
            let path = store
                .dir
                .join(format!(".probe-{}", uuid::Uuid::new_v4().simple()));
            store.replace(&path, b"probe")?;
            fs::remove_file(&path).map_err(|e| store.io_error("remove", &path, e))
        })
        .await
        .map_err(|e| StoreError::Io {
            store: self.name.clone(),
            operation: "probe",
            location: self.dir.display().to_string(),
            detail: e.to_string(),
        })?
    }

    async fn publish(
        &self,
        key: &str,
        value: &SecretString,
        record: &StoreRecord,
    ) -> Result<(), StoreError> {
        let store = self.clone();
        let key = key.to_owned();
        let value = value.clone();
        let record = record.clone();
        tokio::task::spawn_blocking(move || store.publish_blocking(&key, &value, &record))
            .await
            .map_err(|e| StoreError::Io {
                store: self.name.clone(),
                operation: "write",
                location: self.dir.display().to_string(),
                detail: e.to_string(),
            })?
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::{TimeZone, Utc};

    use super::*;

    fn record(id: i32, value: &str) -> StoreRecord {
        StoreRecord {
            client_id: "c".into(),
            tenant_id: "t".into(),
            secret_id: id,
            expiration: Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap(),
            published_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            fingerprint: Fingerprint::of(&SecretString::from(value)),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn publishes_in_flight_in_one_directory_all_land_with_shared_directory_fsyncs() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::new("local", tmp.path().join("secrets"));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..32 {
            let store = store.clone();
            tasks.spawn(async move {
                let value = format!("value-{i}");
                let published = record(i, &value);
                store
                    .publish(&format!("app{i}"), &SecretString::from(value), &published)
                    .await
                    .map(|()| (i, published))
            });
        }
        while let Some(done) = tasks.join_next().await {
            let (i, published) = done.unwrap().unwrap();
            assert_eq!(
                store.read_current(&format!("app{i}")).await.unwrap(),
                Current::Published(published)
            );
        }
        let state = store.dir_sync.state.lock().unwrap();
        assert!(!state.running && state.failure.is_none());
        // 32 publishes rename 96 times and wait for 64 directory fsyncs (pending
        // record, value); shared ones are fewer, never more.
        assert!((1..=64).contains(&state.started), "{}", state.started);
    }

    #[test]
    fn a_failed_directory_fsync_fails_the_callers_it_covers_and_not_later_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let sync = DirSync::default();
        let missing = tmp.path().join("missing");
        assert!(sync.after_rename(&missing).is_err());
        assert!(sync.after_rename(tmp.path()).is_ok());
        let state = sync.state.lock().unwrap();
        assert_eq!((state.started, state.ended, state.succeeded), (2, 2, 2));
    }

    #[tokio::test]
    async fn publish_writes_value_alone_with_mode_0600_in_a_0700_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("secrets");
        let store = FileStore::new("local", &dir);
        let value = SecretString::from("s3cr3t");
        store
            .publish("app", &value, &record(1, "s3cr3t"))
            .await
            .unwrap();
        assert_eq!(fs::read_to_string(dir.join("app")).unwrap(), "s3cr3t");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join("app")), 0o600);
        assert_eq!(mode(&dir), 0o700);
        let json = fs::read_to_string(dir.join("app.json")).unwrap();
        assert!(!json.contains("s3cr3t"));
        assert_eq!(
            store.read_current("app").await.unwrap(),
            Current::Published(record(1, "s3cr3t"))
        );
        let leftovers: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[tokio::test]
    async fn missing_store_reads_as_no_record() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::new("local", tmp.path().join("nope"));
        assert_eq!(store.read_current("app").await.unwrap(), Current::Empty);
        assert!(!tmp.path().join("nope").exists());
    }

    #[tokio::test]
    async fn publish_cut_after_the_value_landed_reads_as_the_new_record() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::new("local", tmp.path());
        store
            .publish("app", &SecretString::from("old"), &record(1, "old"))
            .await
            .unwrap();
        // Simulate a crash between writing the value and the record.
        let new = record(2, "new");
        store
            .replace(
                &store.pending_path("app"),
                &serde_json::to_vec(&new).unwrap(),
            )
            .unwrap();
        store.replace(&store.value_path("app"), b"new").unwrap();
        assert_eq!(
            store.read_current("app").await.unwrap(),
            Current::Published(new)
        );
    }

    #[tokio::test]
    async fn publish_cut_before_the_value_landed_reads_as_the_old_record() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::new("local", tmp.path());
        store
            .publish("app", &SecretString::from("old"), &record(1, "old"))
            .await
            .unwrap();
        store
            .replace(
                &store.pending_path("app"),
                &serde_json::to_vec(&record(2, "new")).unwrap(),
            )
            .unwrap();
        assert_eq!(
            store.read_current("app").await.unwrap(),
            Current::Published(record(1, "old"))
        );
    }

    #[tokio::test]
    async fn a_publish_moves_its_pending_record_over_the_final_one() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::new("local", tmp.path());
        for (id, value) in [(1, "a"), (2, "b")] {
            store
                .publish("app", &SecretString::from(value), &record(id, value))
                .await
                .unwrap();
        }
        let mut names: Vec<String> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|f| f.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["app", "app.json"]);
        assert_eq!(
            store.read_record(&store.record_path("app")).unwrap(),
            Some(record(2, "b"))
        );
    }

    #[tokio::test]
    async fn a_value_changed_by_hand_is_reported_not_trusted() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::new("local", tmp.path());
        store
            .publish("app", &SecretString::from("old"), &record(1, "old"))
            .await
            .unwrap();
        fs::write(tmp.path().join("app"), "edited").unwrap();
        let err = store.read_current("app").await.unwrap_err().to_string();
        assert!(err.contains("does not match"), "{err}");
        assert!(!err.contains("edited"));
    }

    fn publish_now(store: &FileStore, id: i32, value: &str) -> Result<(), StoreError> {
        store.publish_blocking("app", &SecretString::from(value), &record(id, value))
    }

    fn fail(store: &FileStore, path: PathBuf, at: Fault) {
        store.faults.lock().unwrap().at.insert(path, at);
    }

    /// Clears the faults; returns whether the process "crashed".
    fn heal(store: &FileStore) -> bool {
        let mut faults = store.faults.lock().unwrap();
        faults.at.clear();
        std::mem::take(&mut faults.crashed)
    }

    /// The rule: read_current names the secret whose value is in the file.
    fn assert_names_the_held_value(store: &FileStore, ids: &BTreeMap<String, i32>, step: &str) {
        let current = store.read_current_blocking("app");
        match fs::read_to_string(store.value_path("app")) {
            Err(_) => assert_eq!(current.unwrap(), Current::Empty, "{step}"),
            Ok(held) => assert_eq!(
                current.unwrap_or_else(|e| panic!("{step}: {e}")),
                Current::Published(record(ids[&held], &held)),
                "{step}"
            ),
        }
    }

    #[test]
    fn a_failed_publish_keeps_the_pending_record_that_stands_in_for_a_lost_one() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::new("local", tmp.path());
        publish_now(&store, 1, "a").unwrap();
        // B's value lands, its final record does not: the pending record stands in.
        fail(&store, store.record_path("app"), Fault::NoSpace);
        publish_now(&store, 2, "b").unwrap();
        heal(&store);
        assert_eq!(
            store.read_current_blocking("app").unwrap(),
            Current::Published(record(2, "b"))
        );
        // C's value cannot be written: the store must still name B.
        fail(&store, store.value_path("app"), Fault::NoSpace);
        assert!(publish_now(&store, 3, "c").is_err());
        assert_eq!(fs::read_to_string(store.value_path("app")).unwrap(), "b");
        assert_eq!(
            store.read_current_blocking("app").unwrap(),
            Current::Published(record(2, "b"))
        );
        assert_eq!(
            store.read_record(&store.record_path("app")).unwrap(),
            Some(record(2, "b"))
        );
    }

    #[test]
    fn a_publish_that_cannot_promote_the_standing_pending_record_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::new("local", tmp.path());
        publish_now(&store, 1, "a").unwrap();
        fail(&store, store.record_path("app"), Fault::NoSpace);
        publish_now(&store, 2, "b").unwrap();
        let before: Vec<_> = ["app", "app.json", ".app.pending.json"]
            .iter()
            .map(|f| fs::read(tmp.path().join(f)).unwrap())
            .collect();
        // The record still cannot be written, so B's pending record cannot be promoted.
        let err = publish_now(&store, 3, "c").unwrap_err().to_string();
        assert!(err.contains("app.json"), "{err}");
        let after: Vec<_> = ["app", "app.json", ".app.pending.json"]
            .iter()
            .map(|f| fs::read(tmp.path().join(f)).unwrap())
            .collect();
        assert_eq!(before, after);
    }

    /// How a store's record and pending record relate to its value.
    fn shape(store: &FileStore) -> String {
        let on_disk = store.on_disk("app").unwrap();
        let names = |r: &Option<StoreRecord>| match r {
            None => "none",
            Some(r) if Some(&r.fingerprint) == on_disk.value.as_ref() => "the value",
            Some(_) => "another",
        };
        format!(
            "value {}, record {}, pending {}{}",
            if on_disk.value.is_some() { "yes" } else { "no" },
            names(&on_disk.record),
            names(&on_disk.pending),
            if on_disk.record.is_some() && on_disk.record == on_disk.pending {
                " (the same)"
            } else {
                ""
            }
        )
    }

    fn copy_dir(from: &Path, to: &Path) {
        fs::DirBuilder::new().mode(0o700).create(to).unwrap();
        for file in fs::read_dir(from).unwrap() {
            let file = file.unwrap();
            fs::copy(file.path(), to.join(file.file_name())).unwrap();
        }
    }

    /// From every shape of store reachable from an empty one, tries a publish with each
    /// failed write and each crash, until no new shape turns up.
    #[test]
    fn every_sequence_of_crashes_and_failed_writes_leaves_a_store_that_names_its_value() {
        let tmp = tempfile::tempdir().unwrap();
        let empty = tmp.path().join("0");
        fs::DirBuilder::new().mode(0o700).create(&empty).unwrap();
        let mut seen = std::collections::BTreeSet::from([shape(&FileStore::new("local", &empty))]);
        let mut frontier = vec![(empty, Vec::<String>::new())];
        let mut ids = BTreeMap::new();
        let mut next = 0;
        while let Some((state, history)) = frontier.pop() {
            for path in [None, Some("pending"), Some("value"), Some("record")] {
                for at in [Fault::NoSpace, Fault::SyncFails, Fault::Crash] {
                    if path.is_none() && at != Fault::NoSpace {
                        continue;
                    }
                    next += 1;
                    let dir = tmp.path().join(next.to_string());
                    copy_dir(&state, &dir);
                    let store = FileStore::new("local", &dir);
                    let value = format!("v{next}");
                    ids.insert(value.clone(), next);
                    let mut history = history.clone();
                    history.push(match path {
                        None => format!("publish {value}"),
                        Some(p) => format!("publish {value} ({p}: {at:?})"),
                    });
                    let step = history.join(", ");
                    match path {
                        Some("pending") => fail(&store, store.pending_path("app"), at),
                        Some("value") => fail(&store, store.value_path("app"), at),
                        Some(_) => fail(&store, store.record_path("app"), at),
                        None => {}
                    }
                    let held_before = fs::read_to_string(store.value_path("app")).ok();
                    let result = publish_now(&store, next, &value);
                    let crashed = heal(&store);
                    let held = fs::read_to_string(store.value_path("app")).ok();
                    // Ok means readers hold the new value; an error means they do not (the
                    // caller deletes the new secret). A crash tells nobody.
                    match result {
                        _ if crashed => {}
                        Ok(()) => assert_eq!(held.as_deref(), Some(value.as_str()), "{step}"),
                        Err(_) => assert_eq!(held, held_before, "{step}"),
                    }
                    assert_names_the_held_value(&store, &ids, &step);
                    if seen.insert(shape(&store)) {
                        frontier.push((dir, history));
                    }
                }
            }
        }
        // The shape of the bug this guards against was reached (and left safely).
        assert!(
            seen.contains("value yes, record another, pending the value"),
            "{seen:#?}"
        );
    }

    #[tokio::test]
    async fn a_value_without_any_record_is_unrecorded() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::new("local", tmp.path());
        fs::write(tmp.path().join("app"), "by hand").unwrap();
        assert_eq!(
            store.read_current("app").await.unwrap(),
            Current::Unrecorded
        );
    }

    #[tokio::test]
    async fn a_record_removed_by_hand_after_a_publish_leaves_the_value_unrecorded() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::new("local", tmp.path());
        store
            .publish("app", &SecretString::from("old"), &record(1, "old"))
            .await
            .unwrap();
        fs::remove_file(tmp.path().join("app.json")).unwrap();
        assert_eq!(
            store.read_current("app").await.unwrap(),
            Current::Unrecorded
        );
    }

    #[tokio::test]
    async fn a_value_whose_only_record_is_another_pending_one_is_unrecorded() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::new("local", tmp.path());
        fs::write(tmp.path().join("app"), "by hand").unwrap();
        store
            .replace(
                &store.pending_path("app"),
                &serde_json::to_vec(&record(2, "new")).unwrap(),
            )
            .unwrap();
        assert_eq!(
            store.read_current("app").await.unwrap(),
            Current::Unrecorded
        );
    }

    #[tokio::test]
    async fn a_group_writable_store_dir_is_refused_on_read_and_publish() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::new("local", tmp.path());
        store
            .publish("app", &SecretString::from("old"), &record(1, "old"))
            .await
            .unwrap();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o770)).unwrap();
        let err = store.read_current("app").await.unwrap_err().to_string();
        assert!(err.contains("writable by group or others"), "{err}");
        assert!(
            err.contains(&format!("chmod go-w {}", tmp.path().display())),
            "{err}"
        );
        let err = store
            .publish("app", &SecretString::from("new"), &record(2, "new"))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("chmod go-w"), "{err}");
        assert_eq!(fs::read_to_string(tmp.path().join("app")).unwrap(), "old");
    }

    #[tokio::test]
    async fn a_store_dir_others_may_read_is_used() {
        let tmp = tempfile::tempdir().unwrap();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let store = FileStore::new("local", tmp.path());
        store
            .publish("app", &SecretString::from("s"), &record(1, "s"))
            .await
            .unwrap();
        assert_eq!(
            store.read_current("app").await.unwrap(),
            Current::Published(record(1, "s"))
        );
    }

    #[tokio::test]
    async fn a_symlinked_store_dir_is_refused_and_nothing_is_written_behind_it() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        fs::create_dir(&real).unwrap();
        fs::set_permissions(&real, fs::Permissions::from_mode(0o700)).unwrap();
        let link = tmp.path().join("secrets");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let store = FileStore::new("local", &link);
        let err = store.read_current("app").await.unwrap_err().to_string();
        assert!(err.contains("is a symlink"), "{err}");
        let err = store
            .publish("app", &SecretString::from("s"), &record(1, "s"))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("point dir in the policy at the real directory"),
            "{err}"
        );
        assert_eq!(fs::read_dir(&real).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn a_store_dir_owned_by_another_user_is_refused() {
        if rustix::process::geteuid().as_raw() != 0 {
            // Only root can give a directory away; the check itself is the same.
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("secrets");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&dir, Some(12345), Some(12345)).unwrap();
        let store = FileStore::new("local", &dir);
        let err = store.read_current("app").await.unwrap_err().to_string();
        assert!(err.contains("owned by uid 12345"), "{err}");
        assert!(err.contains(&format!("chown 0 {}", dir.display())), "{err}");
        let err = store
            .publish("app", &SecretString::from("s"), &record(1, "s"))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("owned by uid 12345"), "{err}");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn a_symlinked_value_is_refused_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::new("local", tmp.path());
        store
            .publish("app", &SecretString::from("old"), &record(1, "old"))
            .await
            .unwrap();
        // A link to a copy of the value: following it would find a matching fingerprint.
        let elsewhere = tempfile::tempdir().unwrap();
        fs::write(elsewhere.path().join("copy"), "old").unwrap();
        fs::remove_file(tmp.path().join("app")).unwrap();
        std::os::unix::fs::symlink(elsewhere.path().join("copy"), tmp.path().join("app")).unwrap();
        let err = store.read_current("app").await.unwrap_err().to_string();
        assert!(err.contains("is a symlink"), "{err}");
        assert!(err.contains("remove it"), "{err}");
    }

    #[tokio::test]
    async fn a_symlinked_record_is_refused_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::new("local", tmp.path());
        store
            .publish("app", &SecretString::from("old"), &record(1, "old"))
            .await
            .unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        fs::copy(tmp.path().join("app.json"), elsewhere.path().join("r.json")).unwrap();
        fs::remove_file(tmp.path().join("app.json")).unwrap();
        std::os::unix::fs::symlink(elsewhere.path().join("r.json"), tmp.path().join("app.json"))
            .unwrap();
        let err = store.read_current("app").await.unwrap_err().to_string();
        assert!(err.contains("is a symlink"), "{err}");
    }

    #[tokio::test]
    async fn a_fifo_planted_as_the_pending_record_is_refused_without_hanging() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::new("local", tmp.path());
        rustix::fs::mknodat(
            rustix::fs::CWD,
            store.pending_path("app"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
            0,
        )
        .unwrap();
        let err = store.read_current("app").await.unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }
}

#[cfg(test)]
mod access_tests {
    use std::os::unix::fs::MetadataExt;

    use chrono::{TimeZone, Utc};

    use super::*;

    fn record(value: &str) -> StoreRecord {
        StoreRecord {
            client_id: "c".into(),
            tenant_id: "t".into(),
            secret_id: 1,
            expiration: Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap(),
            published_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            fingerprint: Fingerprint::of(&SecretString::from(value)),
        }
    }

    #[tokio::test]
    async fn mode_0640_and_a_group_let_consumers_in_that_group_read() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("secrets");
        let store = FileStore::new("local", &dir).with_access(Access {
            mode: 0o640,
            group: Some(4242),
        });
        store
            .publish("app", &SecretString::from("v"), &record("v"))
            .await
            .unwrap();
        let meta = |p: &Path| fs::metadata(p).unwrap();
        for file in [dir.join("app"), dir.join("app.json")] {
            assert_eq!(meta(&file).permissions().mode() & 0o777, 0o640, "{file:?}");
            assert_eq!(meta(&file).gid(), 4242);
        }
        assert_eq!(meta(&dir).permissions().mode() & 0o777, 0o750);
        assert_eq!(meta(&dir).gid(), 4242);
        assert_eq!(
            store.read_current("app").await.unwrap(),
            Current::Published(record("v"))
        );
    }

    #[tokio::test]
    async fn the_default_stays_0600_in_0700_whatever_the_umask_allows() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("secrets");
        let store = FileStore::new("local", &dir);
        store
            .publish("app", &SecretString::from("v"), &record("v"))
            .await
            .unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join("app")), 0o600);
        assert_eq!(mode(&dir), 0o700);
    }
}
