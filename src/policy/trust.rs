//! Who may change what the rotator trusts: the policy file, the credential files it
//! names, and the file stores' directories. Whoever can write the policy can add a
//! command notifier or point `connect.url` at their own listener and receive the admin
//! secret; whoever can write a credential file chooses the rotator's identity. So each
//! must be a file only this user or root can change, in a directory only they can
//! change — the rule of store and lock directories ([`DirProblem`]).
//!
//! One allowance for files the rotator only reads: their directory may be writable by
//! others with the sticky bit (`/tmp`, a Kubernetes secret or configMap volume, whose
//! files are root's symlinks into a root-owned directory), since there no one can
//! replace another user's entry. Store directories get no such allowance. A file that is missing is left to
//! the run (`check` says so). Not here: what the files hold (`policy`, `connect`).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::lock::DirProblem;

use super::{CoordinationKind, Policy, SecretSource, ValueSource};

/// What is wrong with who may change the file at `path` (it, its link, their
/// directories), as a phrase that ends in what to do; `None` when only this user or root
/// can, or when it is missing.
pub(super) fn problem(path: &Path) -> Option<String> {
    let euid = rustix::process::geteuid().as_raw();
    let shown = path.display();
    let link = std::fs::symlink_metadata(path).ok()?;
    if let Some(p) = dir_problem(path) {
        return Some(p);
    }
    if link.file_type().is_symlink() && link.uid() != euid && link.uid() != 0 {
        return Some(format!(
            "{shown} is a symlink owned by uid {}, not by this user (uid {euid}) or root, so its owner chooses what is read: replace it with a file or a link of this user's",
            link.uid()
        ));
    }
    let real = std::fs::canonicalize(path).ok()?;
    let meta = std::fs::metadata(&real).ok()?;
    if !meta.is_file() {
        return None;
    }
    let real_shown = real.display();
    if meta.uid() != euid && meta.uid() != 0 {
        return Some(format!(
            "{real_shown} is owned by uid {}, not by this user (uid {euid}) or root: run chown {euid} {real_shown} (or chown root)",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Some(format!(
            "{real_shown} is writable by group or others (mode {:04o}): run chmod go-w {real_shown}",
            meta.mode() & 0o7777
        ));
    }
    if real != path {
        return dir_problem(&real);
    }
    None
}

/// The rule of store and lock directories for the directory of a file that is only
/// read, with the sticky-bit allowance.
fn dir_problem(file: &Path) -> Option<String> {
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let meta = std::fs::metadata(dir).ok()?;
    let shown = dir.display();
    match DirProblem::of(&meta)? {
        // Sticky: no one may rename or remove another user's entry (/tmp, a volume).
        DirProblem::Writable { .. } if meta.mode() & 0o1000 != 0 => None,
        problem @ DirProblem::Writable { .. } => Some(format!(
            "is in {shown}, which {problem}, so others could replace it: run chmod go-w {shown}"
        )),
        problem @ DirProblem::ForeignOwner { euid, .. } => Some(format!(
            "is in {shown}, which {problem}, so its owner could replace it: run chown {euid} {shown} or move the file"
        )),
        DirProblem::Symlink | DirProblem::NotADirectory => None,
    }
    .map(|p| format!("{} {p}", file.display()))
}

/// Every credential file the policy names that exists and that others could change,
/// and every existing file store directory others could change, as messages.
pub(super) fn policy_files(policy: &Policy) -> Vec<String> {
    let mut files: Vec<(&str, &Path)> = Vec::new();
    if let SecretSource::File(p) = &policy.connect.secret
        && policy.resolved_at_run_time.is_empty()
    {
        files.push(("connect.credentials", p));
    }
    for spec in policy.stores.values() {
        files.extend(spec.backend().credential_files());
    }
    if let Some(c) = &policy.coordination {
        for source in [&c.username, &c.password].into_iter().flatten() {
            if let ValueSource::File(p) = source {
                files.push(("coordination", p));
            }
        }
        if let Some((cert, key)) = &c.client_cert {
            files.push(("coordination", cert));
            files.push(("coordination", key));
        }
        if let CoordinationKind::KubernetesLease {
            token_file: Some(p),
            ..
        } = &c.kind
        {
            files.push(("coordination", p));
        }
    }
    let mut out: Vec<String> = files
        .into_iter()
        .filter_map(|(key, p)| {
            problem(p).map(|why| format!("{key}: the credential file {why}; whoever can change it chooses what the rotator sends (nothing was loaded)"))
        })
        .collect();
    for (name, spec) in &policy.stores {
        let Some(dir) = spec.backend().dir() else {
            continue;
        };
        let Ok(meta) = std::fs::symlink_metadata(dir) else {
            continue;
        };
        // A link or a file there is the pass's to report (it says what to do with it).
        if let Some(problem @ (DirProblem::Writable { .. } | DirProblem::ForeignOwner { .. })) =
            DirProblem::of(&meta)
        {
            let fix = match problem {
                DirProblem::Writable { .. } => format!("run chmod go-w {}", dir.display()),
                _ => "point dir at a directory this user owns".to_owned(),
            };
            out.push(format!(
                "stores.{name}.dir {} {problem}, so others could change what consumers read: {fix}",
                dir.display()
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_file_only_this_user_can_change_is_trusted_even_in_a_sticky_shared_directory() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("d");
        std::fs::create_dir(&dir).unwrap();
        let file = dir.join("policy.yaml");
        std::fs::write(&file, "").unwrap();
        chmod(&file, 0o644);
        chmod(&dir, 0o755);
        assert_eq!(problem(&file), None);
        // A Kubernetes volume: a link in a sticky 1777 directory to a safe file.
        let volume = top.path().join("volume");
        std::fs::create_dir(&volume).unwrap();
        chmod(&volume, 0o1777);
        let link = volume.join("policy.yaml");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(problem(&link), None);
        assert_eq!(problem(&top.path().join("missing")), None);
    }

    #[test]
    fn a_file_or_directory_others_can_write_is_not_trusted_and_says_what_to_do() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("d");
        std::fs::create_dir(&dir).unwrap();
        let file = dir.join("policy.yaml");
        std::fs::write(&file, "").unwrap();
        chmod(&file, 0o664);
        let why = problem(&file).unwrap();
        assert!(why.contains("(mode 0664): run chmod go-w"), "{why}");
        chmod(&file, 0o644);
        chmod(&dir, 0o777);
        let why = problem(&file).unwrap();
        assert!(
            why.contains(&format!("run chmod go-w {}", dir.display())),
            "{why}"
        );
        // The target's directory counts too, behind a link.
        let link = top.path().join("link.yaml");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(problem(&link).is_some());
        chmod(&dir, 0o755);
    }
}
