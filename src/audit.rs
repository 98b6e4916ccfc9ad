//! The audit log: one JSON line per write the rotator makes, to CDS (a secret created or
//! deleted) or to a store (a value published), with who did it, to which client and
//! secret, in which step, and how it ended (with the CDS OperationId when CDS gave one).
//!
//! Lines are appended with `O_APPEND` (one `write` each, under the file's `flock`, so
//! concurrent passes and processes never interleave) and flushed to disk with
//! `fdatasync` before the pass goes on. The file is 0600, opened with `O_NOFOLLOW` and `O_NONBLOCK` (a FIFO planted there
//! must not hang a pass, `status` or a stop), and must be a regular file of this user in
//! a directory no one else can write (the rule of store and lock directories). An entry
//! holds ids, fingerprints and error text — never a secret value.
//!
//! A write that cannot be audited is still made: the log is a record, not a gate. A
//! failure to append is logged as an error and counted. A short or failed append (a full
//! disk) never leaves a torn line: the file is cut back to its last complete line at once
//! and before the next entry, or, when even that fails, the next entry starts on a new
//! line. Not
//! here: deciding what to write (that is `rotation`).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::SecretId;
use crate::lock::DirProblem;

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
    file: Mutex<Appender>,
    actor: String,
    host: String,
    failures: AtomicU64,
}

impl AuditLog {
    /// Opens (creating, 0600) the log at `path` for the rotator acting as `actor`.
    /// Refused when it is a symlink, not a regular file (a FIFO, a device), owned by
    /// another user, or in a directory another user could change.
    pub fn open(path: &Path, actor: &str) -> Result<AuditLog, AuditError> {
        let fail = |detail: String| AuditError {
            path: path.to_owned(),
            detail,
        };
        check_dir(path)?;
        // Read too: a torn line is found, and cut off, by reading the end of the file.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc_flags())
            .open(path)
            .map_err(|e| {
                // ELOOP (a symlink) or ENXIO (a FIFO without a reader): say what is there.
                match std::fs::symlink_metadata(path) {
                    Ok(meta) if !meta.is_file() => fail(not_regular(&meta)),
                    _ => fail(e.to_string()),
                }
            })?;
        let meta = file.metadata().map_err(|e| fail(e.to_string()))?;
        if !meta.is_file() {
            return Err(fail(not_regular(&meta)));
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
            file: Mutex::new(Appender { file }),
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
        self.file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .append(line)
    }

    /// How many entries could not be appended since the start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
}

/// The open file.
#[derive(Debug)]
struct Appender {
    file: File,
}

impl Appender {
    /// Writes `line` (ending in a newline) with one `write`, then `fdatasync`, holding
    /// the file's `flock` so that no other process appends or repairs meanwhile. A torn
    /// line at the end (a short or failed write, here or in a process that died) is cut
    /// off before the entry and at once after a failed write; when cutting fails, the
    /// entry starts with a newline so that it is never glued to the partial one.
    fn append(&mut self, line: Vec<u8>) -> io::Result<()> {
        self.file.lock()?;
        let result = self.append_locked(line);
        let _ = self.file.unlock();
        result
    }

    fn append_locked(&mut self, mut line: Vec<u8>) -> io::Result<()> {
        if !self.ends_with_newline() && !self.repair() {
            line.insert(0, b'\n');
        }
        match self.file.write(&line) {
            Ok(n) if n == line.len() => {}
            Ok(n) => {
                self.repair();
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    format!("only {n} of {} bytes could be written", line.len()),
                ));
            }
            Err(e) => {
                // Nothing should have been written, but check rather than assume.
                if !self.ends_with_newline() {
                    self.repair();
                }
                return Err(e);
            }
        }
        self.file.sync_data()
    }

    /// Whether the file is empty or ends with a complete line.
    fn ends_with_newline(&self) -> bool {
        let Ok(len) = self.file.metadata().map(|m| m.len()) else {
            return false;
        };
        if len == 0 {
            return true;
        }
        let mut last = [0u8; 1];
        matches!(self.file.read_at(&mut last, len - 1), Ok(1) if last[0] == b'\n')
    }

    /// Cuts the file back to its last complete line; `true` when it now ends with one.
    fn repair(&self) -> bool {
        const CHUNK: u64 = 64 * 1024;
        let Ok(len) = self.file.metadata().map(|m| m.len()) else {
            return false;
        };
        let mut end = len;
        let mut buf = vec![0u8; CHUNK as usize];
        while end > 0 {
            let start = end.saturating_sub(CHUNK);
            let want = (end - start) as usize;
            let Some(chunk) = buf.get_mut(..want) else {
                return false;
            };
            if self.file.read_exact_at(chunk, start).is_err() {
                return false;
            }
            if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
                let keep = start + i as u64 + 1;
                return keep == len || self.file.set_len(keep).is_ok();
            }
            end = start;
        }
        // No complete line at all: the whole file is the partial one.
        self.file.set_len(0).is_ok()
    }
}

/// The directory of the log must be one no other user can change (the rule of store and
/// lock directories): whoever can replace the file could rewrite the record.
fn check_dir(path: &Path) -> Result<(), AuditError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let fail = |detail: String| AuditError {
        path: path.to_owned(),
        detail,
    };
    let meta =
        std::fs::metadata(dir).map_err(|e| fail(format!("directory {}: {e}", dir.display())))?;
    let Some(problem) = DirProblem::of(&meta) else {
        return Ok(());
    };
    let fix = match problem {
        DirProblem::Writable { .. } => format!("run chmod go-w {}", dir.display()),
        DirProblem::ForeignOwner { .. } => {
            "point daemon.audit_log at a directory this user owns".to_owned()
        }
        DirProblem::Symlink | DirProblem::NotADirectory => {
            "point daemon.audit_log at a file in a directory".to_owned()
        }
    };
    Err(fail(format!(
        "its directory {} {problem}, so another user could replace the log: {fix}",
        dir.display()
    )))
}

/// Why something that is not a regular file cannot be the log.
fn not_regular(meta: &std::fs::Metadata) -> String {
    let t = meta.file_type();
    let what = if t.is_symlink() {
        "a symlink"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else {
        "not a regular file"
    };
    format!("is {what}, not a regular file: remove it")
}

/// What `check` and `validate` say about the log at `path`, without creating or opening
/// it: `Ok` with what was found, or why a pass would refuse it. `with_dir` also applies
/// the directory rule (which depends on the user that runs).
pub fn inspect(path: &Path, with_dir: bool) -> Result<&'static str, AuditError> {
    let fail = |detail: String| AuditError {
        path: path.to_owned(),
        detail,
    };
    let state = match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.is_file() => return Err(fail(not_regular(&meta))),
        Ok(meta) => {
            let euid = rustix::process::geteuid().as_raw();
            if with_dir && meta.uid() != euid {
                return Err(fail(format!(
                    "is owned by uid {}, not by this user (uid {euid})",
                    meta.uid()
                )));
            }
            "is appended to"
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            "would be created (0600) by the first write"
        }
        // Another user's private directory (`validate` by hand): the run will tell.
        Err(_) if !with_dir => "cannot be looked at by this user",
        Err(e) => return Err(fail(e.to_string())),
    };
    if with_dir {
        check_dir(path)?;
    }
    Ok(state)
}

fn libc_flags() -> i32 {
    (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC | rustix::fs::OFlags::NONBLOCK)
        .bits() as i32
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
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other(not_regular(&meta)));
    }
    let len = meta.len();
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
    fn a_torn_last_line_left_by_another_process_is_cut_off_before_the_next_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path, "admin").unwrap();
        log.record(&entry(&log, "a", 1));
        drop(log);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(r#"{"at":"2026-"#);
        std::fs::write(&path, text).unwrap();
        let log = AuditLog::open(&path, "admin").unwrap();
        log.record(&entry(&log, "a", 2));
        let text = std::fs::read_to_string(&path).unwrap();
        let ids: Vec<_> = text
            .lines()
            .map(|l| serde_json::from_str::<Entry>(l).unwrap().secret_id)
            .collect();
        assert_eq!(ids, vec![Some(1), Some(2)]);
        assert_eq!(log.failures(), 0);
    }

    #[test]
    fn a_fifo_is_refused_without_blocking_and_inspect_says_what_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        assert_eq!(
            inspect(&path, true).unwrap(),
            "would be created (0600) by the first write"
        );
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &path,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let err = AuditLog::open(&path, "admin").unwrap_err().to_string();
        assert!(
            err.contains("is a FIFO (named pipe), not a regular file"),
            "{err}"
        );
        assert!(inspect(&path, false).is_err());
        assert!(last_entries(&path, "a", 1).is_err());
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
