//! The last result of a pass over a client, kept beside its lock file so that `status`
//! can say "the last attempt failed at T because …".
//!
//! This is a report for people, never an input to a decision: the reconciler stays
//! stateless for correctness (a lost or stale file changes nothing it does). The file
//! holds a time, an outcome, a step and a message — never a secret value (messages of
//! the rotator's errors never contain one).

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How a pass ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Nothing failed (a rotation may or may not have happened).
    Ok,
    /// A step failed.
    Failed,
    /// The pass gave way to a stop (SIGTERM, SIGINT).
    Stopped,
}

/// The last result of a pass over one client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastResult {
    /// When the pass ended.
    pub at: DateTime<Utc>,
    /// How it ended.
    pub outcome: Outcome,
    /// The step that failed or stopped, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The error or stop message, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The secret it published, if it rotated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated: Option<crate::domain::SecretId>,
}

/// `<lock_dir>/<tenant>.<client>.last.json`.
pub fn path(lock_dir: &Path, tenant_id: &str, client_id: &str) -> PathBuf {
    lock_dir.join(format!("{tenant_id}.{client_id}.last.json"))
}

/// Writes `result` atomically (a temp file in the same directory, then a rename that
/// never follows a planted symlink). Best effort: a failure is only logged.
pub fn write(lock_dir: &Path, tenant_id: &str, client_id: &str, result: &LastResult) {
    let target = path(lock_dir, tenant_id, client_id);
    let written = (|| -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(result).map_err(std::io::Error::other)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".last-")
            .tempfile_in(lock_dir)?;
        tmp.write_all(&json)?;
        tmp.persist(&target).map_err(|e| e.error)?;
        Ok(())
    })();
    if let Err(e) = written {
        tracing::warn!(path = %target.display(), error = %e, "could not record the pass's result for `status`");
    }
}

/// Reads the last result, if there is a readable one.
pub fn read(lock_dir: &Path, tenant_id: &str, client_id: &str) -> Option<LastResult> {
    let text = std::fs::read(path(lock_dir, tenant_id, client_id)).ok()?;
    // A file that is not ours (or was cut) is ignored: it only informs people.
    if text.len() > 64 * 1024 {
        return None;
    }
    serde_json::from_slice(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_round_trips_and_garbage_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let result = LastResult {
            at: Utc::now(),
            outcome: Outcome::Failed,
            step: Some("verify".into()),
            message: Some("could not get a token".into()),
            rotated: None,
        };
        write(dir.path(), "t", "c", &result);
        assert_eq!(read(dir.path(), "t", "c"), Some(result));
        std::fs::write(path(dir.path(), "t", "c"), "{").unwrap();
        assert_eq!(read(dir.path(), "t", "c"), None);
        assert_eq!(read(dir.path(), "t", "other"), None);
    }
}
