//! `cds-rotator demo`: a whole rotation without a tenant. Starts the built-in CDS
//! emulator on a free loopback port, writes its seed, a policy and the rotator's own
//! credential into a directory, and runs two passes through the same code as
//! `--run-now`: the first rotates every client, the second shows that nothing is left
//! to do. It ends with the commands that go on from those files.
//!
//! Not here: the emulator (`cds_rotator::emulator`), the passes (`cli::run_now`).

use std::io::Write;
use std::path::{Path, PathBuf};

use cds_rotator::app::{self, Options, WireError};
use cds_rotator::emulator::{Emulator, Seed, write_private};
use cds_rotator::policy::{Policy, PolicyError};
use cds_rotator::rotation::PassOptions;

use super::run_now::run_once;
use super::{CliError, EXIT_CLIENT_FAILED, EXIT_OK};

/// Why the demo did not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// `--dir` cannot be read.
    #[error("{}: {error}", dir.display())]
    UnreadableDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// `--dir` holds files, without `--force`.
    #[error(
        "{} is not empty: the demo would overwrite policy.yaml, seed.yaml, admin-secret and secrets/ there (perhaps a running daemon's); choose a new or empty directory, or add --force to overwrite",
        dir.display()
    )]
    NotEmpty {
        /// The directory.
        dir: PathBuf,
    },
    /// The built-in seed has no administrator to rotate with.
    #[error("the demo seed has no administrator")]
    NoAdministrator,
    /// The directory could not be made.
    #[error("creating {}: {error}", dir.display())]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The directory's absolute path could not be found.
    #[error("{}: {error}", dir.display())]
    Resolve {
        /// The directory.
        dir: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// A file of the demo could not be written.
    #[error("writing {}: {error}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The emulator did not start.
    #[error("starting the emulator: {0}")]
    Emulator(std::io::Error),
    /// The policy the demo wrote is not valid.
    #[error(transparent)]
    Policy(PolicyError),
    /// The policy the demo wrote could not be wired.
    #[error(transparent)]
    Wire(WireError),
}

impl DemoError {
    /// Whether `--dir` was refused (a usage error) rather than the demo failing.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            DemoError::UnreadableDir { .. } | DemoError::NotEmpty { .. }
        )
    }
}

/// `cds-rotator demo [--dir DIR [--force]]`: runs the demo in `dir` (kept afterwards),
/// else in a temporary directory removed after, and prints what happened.
pub async fn run(dir: Option<PathBuf>, force: bool) -> Result<u8, CliError> {
    if let Some(d) = &dir {
        may_write_into(d, force)?;
    }
    let kept = dir.is_some();
    let tmp;
    let dir = match dir {
        Some(d) => d,
        None => {
            tmp = tempfile::Builder::new()
                .prefix("cds-rotator-demo-")
                .tempdir()
                .map_err(CliError::TempDir)?;
            tmp.path().to_owned()
        }
    };
    Ok(demo(&dir, kept, &mut std::io::stdout()).await?)
}

/// Refuses a `dir` that holds anything, unless `force`: the demo writes a policy, a
/// seed, an admin secret and a store there, and those could be a running daemon's.
pub fn may_write_into(dir: &Path, force: bool) -> Result<(), DemoError> {
    if force {
        return Ok(());
    }
    let mut entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => {
            return Err(DemoError::UnreadableDir {
                dir: dir.to_owned(),
                error,
            });
        }
    };
    if entries.next().is_none() {
        return Ok(());
    }
    Err(DemoError::NotEmpty {
        dir: dir.to_owned(),
    })
}

/// Runs the demo in `dir` (kept afterwards) and prints what happened to `out`.
async fn demo(dir: &Path, kept: bool, out: &mut dyn Write) -> Result<u8, DemoError> {
    let seed = Seed::demo();
    let (admin_id, admin_secret) = seed.admin_credentials().ok_or(DemoError::NoAdministrator)?;
    let tenant_id = seed.tenant_id.clone();
    let clients: Vec<(String, String, String)> = seed
        .clients
        .iter()
        .filter(|c| c.id != admin_id)
        .map(|c| (c.name.clone(), c.id.clone(), c.kind_name().to_owned()))
        .collect();
    std::fs::create_dir_all(dir).map_err(|error| DemoError::CreateDir {
        dir: dir.to_owned(),
        error,
    })?;
    // Absolute: the policy's paths resolve against its own directory, and the printed
    // commands work from anywhere.
    let dir = &std::fs::canonicalize(dir).map_err(|error| DemoError::Resolve {
        dir: dir.to_owned(),
        error,
    })?;
    // The seed holds every secret value: a restarted emulator needs them.
    let seed_path = dir.join("seed.yaml");
    write_private(&seed_path, seed.to_yaml().as_bytes()).map_err(writing(&seed_path))?;
    let emulator = Emulator::start(([127, 0, 0, 1], 0).into(), seed)
        .await
        .map_err(DemoError::Emulator)?;

    let credential = dir.join("admin-secret");
    write_private(&credential, admin_secret.as_bytes()).map_err(writing(&credential))?;
    drop(admin_secret);

    let mut policy = format!(
        "# Written by `cds-rotator demo`.\n\
         connect:\n  url: {url}\n  tenant_id: {tenant_id}\n  credentials:\n    client_id: {admin_id}\n    client_secret_file: {cred}\n  max_concurrency: 4\n\
         lock_dir: {locks}\n\
         stores:\n  local: {{ type: file, dir: {secrets} }}\n\
         notifiers:\n  ops: {{ type: log }}\n\
         defaults:\n  schedule: \"0 0 3 * * *\"\n  lifetime: 90d\n  rotate_before: 30d\n  grace: 24h\n  orphan_grace: 10m\n  verify_timeout: 30s\n\
         clients:\n",
        url = emulator.url(),
        cred = credential.display(),
        locks = dir.join("locks").display(),
        secrets = dir.join("secrets").display(),
    );
    for (name, id, kind) in &clients {
        policy.push_str(&format!(
            "  - name: {name}\n    client_id: {id}\n    kind: {kind}\n    store: {{ name: local, secret: {name} }}\n    notify: [ops]\n"
        ));
    }
    let policy_path = dir.join("policy.yaml");
    std::fs::write(&policy_path, &policy).map_err(writing(&policy_path))?;
    let policy = Policy::load(&policy_path).map_err(DemoError::Policy)?;
    let wired = app::wire(&policy, Options::default()).map_err(DemoError::Wire)?;

    let _ = writeln!(
        out,
        "cds-rotator demo: CDS emulator at {}, tenant {tenant_id}, {} clients\npolicy: {}\n",
        emulator.url(),
        clients.len(),
        policy_path.display()
    );
    let _ = writeln!(
        out,
        "first pass (every client is due: no secret published yet):"
    );
    let first = run_once(&wired, PassOptions::default(), out).await;
    let _ = writeln!(out, "\nsecond pass (right after: nothing is due):");
    let second = run_once(&wired, PassOptions::default(), out).await;
    let _ = writeln!(out, "\nsecrets in CDS now:");
    for (name, id, _) in &clients {
        let ids: Vec<String> = emulator
            .secrets(&tenant_id, id)
            .iter()
            .map(|s| s.id.to_string())
            .collect();
        let _ = writeln!(out, "  {name}: secrets {}", ids.join(", "));
    }
    let _ = writeln!(
        out,
        "\nThe old secrets were made in the portal (unmanaged): the rotator never retires them (set retire_unmanaged: true, or delete them in the portal once every consumer uses the new one). Secrets it makes itself are retired by the daemon after the 24h grace period.\nValues are in {} (mode 0600); this output holds only ids and fingerprints.",
        dir.join("secrets").display()
    );
    if kept {
        let _ = writeln!(
            out,
            "\n{}",
            go_on(
                dir,
                &seed_path,
                &policy_path,
                &credential,
                emulator.local_addr().port()
            )
        );
    } else {
        let _ = writeln!(
            out,
            "\nThese files are removed now; run `cds-rotator demo --dir DIR` to keep them and go on from them (a seed, a policy and the commands to restart the emulator and run a pass)."
        );
    }
    emulator.shutdown();
    Ok(if first == EXIT_OK && second == EXIT_OK {
        EXIT_OK
    } else {
        EXIT_CLIENT_FAILED
    })
}

/// The error of writing the file at `path`.
fn writing(path: &Path) -> impl FnOnce(std::io::Error) -> DemoError + '_ {
    move |error| DemoError::Write {
        path: path.to_owned(),
        error,
    }
}

/// What is left in `dir` and the commands that go on from it.
fn go_on(dir: &Path, seed: &Path, policy: &Path, credential: &Path, port: u16) -> String {
    format!(
        "Files in {dir}:\n\
         \x20 {seed}  the emulator's seed: tenant, clients and their secret values (mode 0600)\n\
         \x20 {policy}  the policy of the passes above\n\
         \x20 {credential}  the rotator's own client secret (mode 0600)\n\
         \x20 {secrets}  the store: the rotated secrets (mode 0600)\n\
         To go on, start the emulator again on the seed, then run a pass against it:\n\
         \x20 cds-rotator emulator --listen 127.0.0.1:{port} --seed {seed_arg}\n\
         \x20 cds-rotator --config {policy_arg} --run-now\n\
         A restarted emulator starts from the seed: it does not know the secrets created above, so that pass finds the store's secrets missing in CDS and rotates every client at once.",
        dir = dir.display(),
        seed = seed.display(),
        policy = policy.display(),
        credential = credential.display(),
        secrets = dir.join("secrets").display(),
        seed_arg = shell_word(seed),
        policy_arg = shell_word(policy),
    )
}

/// A path as one shell word: as it is when it needs no quoting, else single-quoted.
fn shell_word(path: &Path) -> String {
    let s = path.display().to_string();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c))
    {
        s
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_in_printed_commands_are_single_shell_words() {
        assert_eq!(
            shell_word(Path::new("/tmp/d/seed.yaml")),
            "/tmp/d/seed.yaml"
        );
        assert_eq!(shell_word(Path::new("/tmp/my dir/x")), "'/tmp/my dir/x'");
        assert_eq!(shell_word(Path::new("/tmp/it's")), r"'/tmp/it'\''s'");
    }
}
