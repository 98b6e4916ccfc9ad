//! The audit log: one JSON line per write the rotator makes, to CDS (a secret created or
//! deleted) or to a store (a value published), with who did it, to which client and
//! secret, in which step, and how it ended (with the CDS OperationId when CDS gave one).
//!
//! Lines are appended with `O_APPEND` (one `write` each, so concurrent passes and
//! processes never interleave) and flushed to disk with `fdatasync` before the pass goes
//! on. The file is 0600 and opened with `O_NOFOLLOW`. An entry holds ids, fingerprints and
//! error text — never a secret value.
//!
//! A write that cannot be audited is still made: the log is a record, not a gate. A
//! failure to append is logged as an error and counted. Not here: deciding what to write
//! (that is `rotation`).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::connect::SecretId;

/// What was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A secret was created in CDS.
    CreateSecret,
    /// A secret was deleted in CDS.
    DeleteSecret,
    /// A value and its record were written to a store.
    Publish,
}

/// How a write ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Done.
    Ok,
    /// Refused or failed: nothing changed.
    Failed,
    /// The answer was lost: it may or may not have happened.
    Unknown,
}

/// One line of the audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// When, RFC 3339 UTC.
    pub at: String,
    /// The rotator's own CDS client id.
    pub actor: String,
    /// The host the rotator runs on.
    pub host: String,
    /// The rotator process (also in its log lines).
    pub run_id: String,
    /// The CDS tenant.
    pub tenant_id: String,
    /// The client's name in the policy.
    pub client: String,
    /// The CDS client id.
    pub client_id: String,
    /// What was written.
    pub action: Action,
    /// The step of the pass that wrote it.
    pub step: String,
    /// The CDS secret concerned (unknown for a failed create).
    pub secret_id: Option<SecretId>,
    /// Why (the delete reason: orphan, expired, superseded, revoked, undo).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Where the value was published (`publish`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// The published value's fingerprint (`publish`, `create_secret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// How it ended.
    pub result: Outcome,
    /// The HTTP status of a refused CDS request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The CDS OperationId of a refused request, when CDS gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_id: Option<String>,
    /// The error, escaped and clipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Why the audit log cannot be used.
#[derive(Debug, thiserror::Error)]
#[error(
    "audit log {path}: {detail}; fix it or change daemon.audit_log in the policy (nothing was changed)"
)]
pub struct AuditError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub detail: String,
}

/// An open audit log.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
    actor: String,
    host: String,
    failures: AtomicU64,
}

impl AuditLog {
    /// Opens (creating, 0600) the log at `path` for the rotator acting as `actor`.
    /// Refused when it is a symlink, not a regular file, or owned by another user.
    pub fn open(path: &Path, actor: &str) -> Result<AuditLog, AuditError> {
        let fail = |detail: String| AuditError {
            path: path.to_owned(),
            detail,
        };
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc_flags())
            .open(path)
            .map_err(|e| {
                if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                    fail("is a symlink; the audit log must be a regular file".to_owned())
                } else {
                    fail(e.to_string())
                }
            })?;
        let meta = file.metadata().map_err(|e| fail(e.to_string()))?;
        if !meta.is_file() {
            return Err(fail("is not a regular file".to_owned()));
        }
        let euid = rustix::process::geteuid().as_raw();
        if meta.uid() != euid {
            return Err(fail(format!(
                "is owned by uid {}, not by this user (uid {euid})",
                meta.uid()
            )));
        }
        if meta.mode() & 0o077 != 0 {
            // Older files, or a umask that widened them: the log is the rotator's alone.
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(|e| fail(e.to_string()))?;
        }
        Ok(AuditLog {
            path: path.to_owned(),
            file: Mutex::new(file),
            actor: actor.to_owned(),
            host: host_name(),
            failures: AtomicU64::new(0),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// An entry by this actor on this host, now, to be filled in.
    pub fn entry(
        &self,
        run_id: &str,
        client: (&str, &str, &str),
        action: Action,
        step: &str,
    ) -> Entry {
        let (tenant_id, name, client_id) = client;
        Entry {
            at: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            actor: self.actor.clone(),
            host: self.host.clone(),
            run_id: run_id.to_owned(),
            tenant_id: tenant_id.to_owned(),
            client: name.to_owned(),
            client_id: client_id.to_owned(),
            action,
            step: step.to_owned(),
            secret_id: None,
            reason: None,
            store: None,
            fingerprint: None,
            result: Outcome::Ok,
            status: None,
            operation_id: None,
            error: None,
        }
    }

    /// Appends one entry and flushes it to disk. A failure is logged and counted.
    pub fn record(&self, entry: &Entry) {
        if let Err(e) = self.append(entry) {
            self.failures.fetch_add(1, Ordering::Relaxed);
            crate::metrics::get().count_audit_failure();
            tracing::error!(audit_log = %self.path.display(), error = %e, client = %entry.client, action = ?entry.action, "could not append to the audit log");
        }
    }

    fn append(&self, entry: &Entry) -> io::Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(io::Error::other)?;
        line.push(b'\n');
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        file.write_all(&line)?;
        file.sync_data()
    }

    /// How many entries could not be appended since the start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
}

fn libc_flags() -> i32 {
    (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC).bits() as i32
}

fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// How much of the end of the log [`last_entries`] reads.
const TAIL_BYTES: u64 = 1 << 20;

/// The last `n` entries about CDS client `client_id`, oldest first, from the end of the
/// log at `path` (read-only; an absent log has none).
pub fn last_entries(path: &Path, client_id: &str, n: usize) -> io::Result<Vec<Entry>> {
    let mut file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_flags())
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let start = len.saturating_sub(TAIL_BYTES);
    file.seek(SeekFrom::Start(start))?;
    let mut text = Vec::new();
    file.take(TAIL_BYTES).read_to_end(&mut text)?;
    let text = String::from_utf8_lossy(&text);
    let mut lines = text.lines();
    if start > 0 {
        lines.next(); // cut in the middle
    }
    let mut found: Vec<Entry> = lines
        .filter_map(|l| serde_json::from_str::<Entry>(l).ok())
        .filter(|e| e.client_id == client_id)
        .collect();
    let keep = found.len().saturating_sub(n);
    Ok(found.split_off(keep))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(log: &AuditLog, client_id: &str, id: SecretId) -> Entry {
        let mut e = log.entry(
            "run1",
            ("t", "app", client_id),
            Action::DeleteSecret,
            "retire",
        );
        e.secret_id = Some(id);
        e
    }

    #[test]
    fn entries_are_appended_as_json_lines_in_a_0600_file_and_read_back_per_client() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path, "admin").unwrap();
        for i in 0..5 {
            log.record(&entry(&log, if i % 2 == 0 { "a" } else { "b" }, i));
        }
        drop(log);
        // A second process appends after the first.
        let log = AuditLog::open(&path, "admin").unwrap();
        log.record(&entry(&log, "a", 9));
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 6);
        let a = last_entries(&path, "a", 2).unwrap();
        assert_eq!(
            a.iter().map(|e| e.secret_id).collect::<Vec<_>>(),
            vec![Some(4), Some(9)]
        );
        assert_eq!(a[0].actor, "admin");
        assert!(!a[0].host.is_empty());
        assert!(
            last_entries(&dir.path().join("none"), "a", 2)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_symlink_or_a_wide_file_is_handled() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "").unwrap();
        let link = dir.path().join("audit.jsonl");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = AuditLog::open(&link, "admin").unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");

        let wide = dir.path().join("wide.jsonl");
        std::fs::write(&wide, "").unwrap();
        std::fs::set_permissions(&wide, std::fs::Permissions::from_mode(0o644)).unwrap();
        AuditLog::open(&wide, "admin").unwrap();
        assert_eq!(std::fs::metadata(&wide).unwrap().mode() & 0o777, 0o600);
    }
}
