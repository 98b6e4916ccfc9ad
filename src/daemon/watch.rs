//! Watching the policy file, so that an edit reloads it (SIGHUP does too).
//!
//! The file's directory is watched, not the file: editors replace a file by a rename,
//! and a Kubernetes ConfigMap volume swaps a `..data` symlink, which a watch on the old
//! file would never see. Events are coalesced: a burst of them (an editor's write,
//! rename and chmod) wakes the daemon once. No polling loop runs.
//! Not here: what a reload does (that is `daemon`).

use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::Notify;

/// A running watch; it stops when dropped.
pub struct PolicyWatch {
    changed: Arc<Notify>,
    _watcher: notify::RecommendedWatcher,
}

impl PolicyWatch {
    /// Watches the directory of `policy` for changes to it.
    pub fn start(policy: &Path) -> notify::Result<PolicyWatch> {
        let changed = Arc::new(Notify::new());
        let name: OsString = policy.file_name().unwrap_or_default().to_owned();
        let dir = match policy.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => Path::new(".").to_owned(),
        };
        let wake = Arc::clone(&changed);
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let Ok(event) = event else {
                    // Lost events (an overflowing queue): reload to be sure.
                    wake.notify_one();
                    return;
                };
                if matches!(event.kind, EventKind::Access(_)) {
                    return;
                }
                let concerns_policy = event.paths.iter().any(|p| {
                    p.file_name().is_some_and(|f| {
                        f == name.as_os_str() || f.to_string_lossy().starts_with("..data")
                    })
                });
                if concerns_policy {
                    wake.notify_one();
                }
            })?;
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
        Ok(PolicyWatch {
            changed,
            _watcher: watcher,
        })
    }

    /// Resolves at the next change (at once if one came since the last call).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

/// How long a burst of events is let settle before one reload.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(300);

/// Sends a reload request down `reloads` whenever the policy at `path` changes, for the
/// life of the process. When the file's directory cannot be watched, says so: SIGHUP
/// still reloads.
pub fn forward_changes(path: &Path, reloads: tokio::sync::mpsc::UnboundedSender<String>) {
    let watch = match PolicyWatch::start(path) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(policy = %path.display(), error = %e, "cannot watch the policy file; send SIGHUP to reload it after a change");
            return;
        }
    };
    tokio::spawn(async move {
        loop {
            watch.changed().await;
            tokio::time::sleep(SETTLE).await;
            // Events during the settling belong to the same change.
            let _ = tokio::time::timeout(std::time::Duration::ZERO, watch.changed()).await;
            if reloads.send("the policy file changed".to_owned()).is_err() {
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn an_edit_or_a_replacing_rename_wakes_it_and_other_files_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("policy.yaml");
        std::fs::write(&policy, "a").unwrap();
        let watch = PolicyWatch::start(&policy).unwrap();

        std::fs::write(dir.path().join("other.txt"), "x").unwrap();
        let woke = tokio::time::timeout(Duration::from_millis(300), watch.changed()).await;
        assert!(woke.is_err(), "another file woke the watch");

        std::fs::write(&policy, "b").unwrap();
        tokio::time::timeout(Duration::from_secs(10), watch.changed())
            .await
            .expect("an edit wakes it");

        let tmp = dir.path().join(".policy.yaml.swp");
        std::fs::write(&tmp, "c").unwrap();
        std::fs::rename(&tmp, &policy).unwrap();
        tokio::time::timeout(Duration::from_secs(10), watch.changed())
            .await
            .expect("a rename over it wakes it");
    }
}
