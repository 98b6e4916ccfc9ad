//! The `file` store: one directory, a file per secret.
//!
//! `<dir>/<key>` holds the value alone (mode 0600) and `<dir>/<key>.json` its
//! [`StoreRecord`]. Each file is replaced atomically (temp file in the same directory,
//! fsync, rename, fsync the directory). Because the value and the record are two files,
//! a publish first writes the new record to `<dir>/.<key>.pending.json`: if the process
//! dies after the value landed but before the record did, the next read sees that the
//! value's fingerprint matches the pending record and reports it as current, so the
//! reconciler never mistakes the published secret for an orphan.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use super::{Current, SecretStore, StoreError, StoreRecord};
use crate::secret::Fingerprint;

/// A store that writes secrets as files in one directory.
#[derive(Clone, Debug)]
pub struct FileStore {
    name: String,
    dir: PathBuf,
}

impl FileStore {
    /// A file store named `name` (as in the policy) writing into `dir`.
    pub fn new(name: impl Into<String>, dir: impl Into<PathBuf>) -> Self {
        FileStore {
            name: name.into(),
            dir: dir.into(),
        }
    }

    fn value_path(&self, key: &str) -> PathBuf {
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

    fn read_record(&self, path: &Path) -> Result<Option<StoreRecord>, StoreError> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io_error("read", path, e)),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                store: self.name.clone(),
                location: path.display().to_string(),
                detail: e.to_string(),
            })
    }

    fn value_fingerprint(&self, key: &str) -> Result<Option<Fingerprint>, StoreError> {
        let path = self.value_path(key);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(Fingerprint::of_bytes(&Zeroizing::new(bytes)))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io_error("read", &path, e)),
        }
    }

    fn read_current_blocking(&self, key: &str) -> Result<Current, StoreError> {
        let record = self.read_record(&self.record_path(key))?;
        let pending = self.read_record(&self.pending_path(key))?;
        let value = self.value_fingerprint(key)?;
        if record.is_none() && pending.is_none() {
            return Ok(match value {
                None => Current::Empty,
                Some(_) => Current::Unrecorded,
            });
        }
        // A pending record whose fingerprint matches the value: the publish got as far as
        // the value, so that is what readers hold.
        if let Some(pending) = pending
            && value.as_ref() == Some(&pending.fingerprint)
        {
            return Ok(Current::Published(pending));
        }
        match record {
            Some(record) if value.as_ref() == Some(&record.fingerprint) => {
                Ok(Current::Published(record))
            }
            Some(record) => Err(StoreError::Corrupt {
                store: self.name.clone(),
                location: self.value_path(key).display().to_string(),
                detail: format!(
                    "the value's fingerprint ({}) does not match the record's ({}); the file was changed outside cds-rotator",
                    value.map_or_else(|| "missing".to_owned(), |f| f.to_string()),
                    record.fingerprint
                ),
            }),
            // Only a pending record that never reached the value: nothing was published
            // (or a value is there without its record).
            None => Ok(match value {
                None => Current::Empty,
                Some(_) => Current::Unrecorded,
            }),
        }
    }

    fn publish_blocking(
        &self,
        key: &str,
        value: &SecretString,
        record: &StoreRecord,
    ) -> Result<(), StoreError> {
        self.ensure_dir()?;
        let json = serde_json::to_vec_pretty(record).map_err(|e| StoreError::Io {
            store: self.name.clone(),
            operation: "encode record for",
            location: key.to_owned(),
            detail: e.to_string(),
        })?;
        let pending = self.pending_path(key);
        self.replace(&pending, &json)?;
        if let Err(e) = self.replace(&self.value_path(key), value.expose_secret().as_bytes()) {
            // Did the rename happen before the failure (say, of the directory fsync)?
            if self.value_fingerprint(key).ok().flatten() != Some(record.fingerprint.clone()) {
                // No: readers still see the old value; the caller deletes the new secret
                // in CDS, so its pending record must go too.
                let _ = fs::remove_file(&pending);
                return Err(e);
            }
        }
        // From here on readers hold the new value: the publish has happened, whatever
        // fails next. The pending record stands in for the final one until it is written.
        if let Err(e) = self.replace(&self.record_path(key), &json) {
            tracing::warn!(error = %e, "the record was not replaced; the pending record stands in");
            return Ok(());
        }
        if let Err(e) = fs::remove_file(&pending) {
            tracing::warn!(error = %e, "could not remove the pending record");
        }
        if let Err(e) = self.sync_dir() {
            tracing::warn!(error = %e, "could not sync the store directory");
        }
        Ok(())
    }

    fn ensure_dir(&self) -> Result<(), StoreError> {
        match fs::metadata(&self.dir) {
            Ok(meta) if meta.is_dir() => Ok(()),
            Ok(_) => Err(self.io_error(
                "use directory",
                &self.dir,
                io::Error::other("exists but is not a directory"),
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)
                .and_then(|()| fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700)))
                .map_err(|e| self.io_error("create directory", &self.dir, e)),
            Err(e) => Err(self.io_error("use directory", &self.dir, e)),
        }
    }

    /// Replaces `path` with `bytes` atomically: temp file beside it, fsync, rename, fsync dir.
    fn replace(&self, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
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
            file.write_all(bytes)?;
            file.sync_all()?;
            fs::rename(&tmp, path)?;
            File::open(&self.dir)?.sync_all()
        })();
        result.map_err(|e| {
            let _ = fs::remove_file(&tmp);
            self.io_error("write", path, e)
        })
    }

    fn sync_dir(&self) -> Result<(), StoreError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.io_error("sync", &self.dir, e))
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
}
