//! `type: ack_file`: the application writes the fingerprint of the secret it loaded
//! into a file (the Kubernetes sidecar pattern: rotator and app share an `emptyDir`).
//! The rotator only reads it — opened without following a symlink, a regular file,
//! size-capped — and never writes it.
//!
//! A write wakes the daemon at once: the file's directory is watched with the `notify`
//! crate (a directory, because an app may replace the file by a rename, and the file
//! may not exist yet). No polling loop runs.

pub mod spec;

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::Duration;
use notify::{RecursiveMode, Watcher};
use tokio::sync::Notify;
use tracing::{info, warn};

use self::spec::AckFileSpec;
use super::{Pickup, PickupCheck, Preflight, confirms, mismatch};
use crate::domain::StoreRecord;

/// The most of the file that is read (a fingerprint is 16 characters).
pub const SIZE_CAP: u64 = 4096;

/// How often the file is read when it cannot be watched (its directory is missing).
const UNWATCHED_INTERVAL: i64 = 60;

/// Reads the ack file; wakes the daemon when it changes.
pub struct AckFile {
    spec: AckFileSpec,
    watch: Mutex<Watch>,
}

enum Watch {
    NotStarted,
    /// Watching; the watcher stops when dropped.
    Running {
        wake: Arc<Notify>,
        _watcher: Box<notify::RecommendedWatcher>,
    },
    Failed,
}

impl AckFile {
    /// A check of `spec.path`.
    pub fn new(spec: AckFileSpec) -> Self {
        AckFile {
            spec,
            watch: Mutex::new(Watch::NotStarted),
        }
    }

    /// Its directory can be watched, else the file is read every minute.
    pub fn preflight_of(spec: &AckFileSpec) -> Preflight {
        let dir = spec.path.parent().unwrap_or(std::path::Path::new("/"));
        if dir.is_dir() {
            Preflight::Ok(format!("{} is watched for the ack file", dir.display()))
        } else {
            Preflight::Warn(format!(
                "{} does not exist: the ack file would be read every minute instead of watched; create the directory before cds-rotator starts",
                dir.display()
            ))
        }
    }

    fn read(&self) -> Result<String, String> {
        let path = &self.spec.path;
        let shown = crate::text::untrusted(&path.display().to_string());
        let file = OpenOptions::new()
            .read(true)
            // No symlink swapped in, and no FIFO that would block the read.
            .custom_flags(
                (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32,
            )
            .open(path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => format!("ack file {shown} does not exist yet"),
                _ => format!("ack file {shown} cannot be read ({e})"),
            })?;
        let meta = file
            .metadata()
            .map_err(|e| format!("ack file {shown} cannot be read ({e})"))?;
        if !meta.is_file() {
            return Err(format!("ack file {shown} is not a regular file"));
        }
        let mut text = String::new();
        file.take(SIZE_CAP + 1)
            .read_to_string(&mut text)
            .map_err(|_| format!("ack file {shown} is not text"))?;
        if text.len() as u64 > SIZE_CAP {
            return Err(format!("ack file {shown} is larger than {SIZE_CAP} bytes"));
        }
        Ok(text)
    }

    fn start_watch(&self) -> Result<(Arc<Notify>, notify::RecommendedWatcher), String> {
        let path = self.spec.path.clone();
        let dir = path.parent().unwrap_or(Path::new("/")).to_owned();
        let name = path.file_name().map(ToOwned::to_owned);
        let wake = Arc::new(Notify::new());
        let waker = Arc::clone(&wake);
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let Ok(event) = event else { return };
                // Only the ack file: the store's own files may share the directory.
                let ours = event
                    .paths
                    .iter()
                    .any(|p| p.file_name().map(ToOwned::to_owned) == name);
                if ours && !event.kind.is_access() {
                    waker.notify_one();
                }
            })
            .map_err(|e| e.to_string())?;
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|e| e.to_string())?;
        Ok((wake, watcher))
    }
}

#[async_trait]
impl PickupCheck for AckFile {
    fn preflight(&self) -> Option<Preflight> {
        Some(AckFile::preflight_of(&self.spec))
    }

    async fn check(&self, current: &StoreRecord) -> Pickup {
        match self.read() {
            Ok(text) if confirms(&text, current) => Pickup::Confirmed,
            Ok(text) => {
                let shown = crate::text::untrusted(&self.spec.path.display().to_string());
                Pickup::Pending(mismatch(&format!("ack file {shown}"), &text, current))
            }
            Err(why) => Pickup::Pending(why),
        }
    }

    fn timeout(&self) -> Option<Duration> {
        Some(self.spec.timeout)
    }

    fn interval(&self) -> Option<Duration> {
        // Watched: the write itself wakes the daemon.
        match *self.watch.lock().unwrap_or_else(|e| e.into_inner()) {
            Watch::Failed => Some(Duration::seconds(UNWATCHED_INTERVAL)),
            _ => None,
        }
    }

    fn watch(&self) -> Option<Arc<Notify>> {
        let mut watch = self.watch.lock().unwrap_or_else(|e| e.into_inner());
        match &*watch {
            Watch::Running { wake, .. } => return Some(Arc::clone(wake)),
            Watch::Failed => return None,
            Watch::NotStarted => {}
        }
        match self.start_watch() {
            Ok((wake, watcher)) => {
                info!(path = %self.spec.path.display(), "watching the ack file");
                *watch = Watch::Running {
                    wake: Arc::clone(&wake),
                    _watcher: Box::new(watcher),
                };
                Some(wake)
            }
            Err(e) => {
                warn!(path = %self.spec.path.display(), error = %e, "cannot watch the ack file's directory; reading it every minute instead");
                *watch = Watch::Failed;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::domain::Fingerprint;

    fn record() -> StoreRecord {
        StoreRecord {
            client_id: "c".into(),
            tenant_id: "t".into(),
            secret_id: 2,
            expiration: Utc::now(),
            published_at: Utc::now(),
            fingerprint: Fingerprint::of_bytes(b"the value"),
        }
    }

    fn check_of(path: &Path) -> AckFile {
        AckFile::new(AckFileSpec {
            path: path.to_owned(),
            timeout: Duration::hours(1),
        })
    }

    fn pending(p: Pickup) -> String {
        match p {
            Pickup::Pending(why) => why,
            Pickup::Confirmed => panic!("confirmed"),
        }
    }

    #[test]
    fn the_preflight_warns_when_the_ack_files_directory_cannot_be_watched() {
        let dir = tempfile::tempdir().unwrap();
        let watched = check_of(&dir.path().join("app.ack")).preflight();
        assert!(
            matches!(&watched, Some(Preflight::Ok(d)) if d.contains("is watched")),
            "{watched:?}"
        );
        let missing = check_of(&dir.path().join("gone/app.ack")).preflight();
        assert!(
            matches!(&missing, Some(Preflight::Warn(d)) if d.contains("read every minute")),
            "{missing:?}"
        );
    }

    #[tokio::test]
    async fn only_the_current_fingerprint_in_a_regular_file_confirms() {
        let dir = tempfile::tempdir().unwrap();
        let ack = dir.path().join("app.ack");
        let check = check_of(&ack);
        let r = record();
        assert!(pending(check.check(&r).await).contains("does not exist yet"));
        std::fs::write(&ack, format!("  {}\n", r.fingerprint)).unwrap();
        assert_eq!(check.check(&r).await, Pickup::Confirmed);
        std::fs::write(&ack, "0123456789abcdef").unwrap();
        let why = pending(check.check(&r).await);
        assert!(
            why.contains("reports fingerprint 0123456789abcdef"),
            "{why}"
        );
        // Whatever else is in it is never shown: it could be a secret value.
        std::fs::write(&ack, "the value").unwrap();
        let why = pending(check.check(&r).await);
        assert!(
            why.contains("not a fingerprint") && !why.contains("the value"),
            "{why}"
        );
        std::fs::write(&ack, "a".repeat(SIZE_CAP as usize + 1)).unwrap();
        assert!(pending(check.check(&r).await).contains("larger than"));
    }

    #[tokio::test]
    async fn a_symlink_or_a_fifo_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let r = record();
        let target = dir.path().join("target");
        std::fs::write(&target, r.fingerprint.as_str()).unwrap();
        let link = dir.path().join("link.ack");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(pending(check_of(&link).check(&r).await).contains("cannot be read"));
        let fifo = dir.path().join("fifo.ack");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        assert!(pending(check_of(&fifo).check(&r).await).contains("not a regular file"));
    }

    #[tokio::test]
    async fn a_write_to_the_ack_file_wakes_its_watch_and_a_missing_directory_falls_back_to_reading()
    {
        let dir = tempfile::tempdir().unwrap();
        let ack = dir.path().join("app.ack");
        let check = check_of(&ack);
        let wake = check.watch().expect("watching");
        assert_eq!(check.interval(), None, "watched: no polling interval");
        std::fs::write(dir.path().join("app"), "store file").unwrap();
        std::fs::write(&ack, "x").unwrap();
        // A permit is kept: the write before this await is not lost.
        wake.notified().await;
        let missing = check_of(&dir.path().join("missing/app.ack"));
        assert!(missing.watch().is_none());
        assert_eq!(
            missing.interval(),
            Some(Duration::seconds(UNWATCHED_INTERVAL))
        );
    }
}
