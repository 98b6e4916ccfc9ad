//! `cds-rotator demo`: a whole rotation without a tenant. Starts the built-in CDS
//! emulator on a free loopback port, writes its seed, a policy and the rotator's own
//! credential into a directory, and runs two passes through the same code as
//! `--run-now`: the first rotates every client, the second shows that nothing is left
//! to do. It ends with the commands that go on from those files.

use std::io::Write;
use std::path::Path;

use crate::app::{self, EXIT_CLIENT_FAILED, EXIT_OK};
use crate::emulator::{Emulator, Seed, write_private};
use crate::policy::Policy;
use crate::rotation::PassOptions;

/// Refuses a `dir` that holds anything, unless `force`: the demo writes a policy, a
/// seed, an admin secret and a store there, and those could be a running daemon's.
pub fn may_write_into(dir: &Path, force: bool) -> Result<(), String> {
    if force {
        return Ok(());
    }
    let mut entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    if entries.next().is_none() {
        return Ok(());
    }
    Err(format!(
        "{} is not empty: the demo would overwrite policy.yaml, seed.yaml, admin-secret and secrets/ there (perhaps a running daemon's); choose a new or empty directory, or add --force to overwrite",
        dir.display()
    ))
}

/// Runs the demo in `dir` (kept afterwards) and prints what happened to `out`.
pub async fn run(dir: &Path, kept: bool, out: &mut dyn Write) -> Result<u8, String> {
    let seed = Seed::demo();
    let (admin_id, admin_secret) = seed
        .admin_credentials()
        .ok_or("the demo seed has no administrator")?;
    let tenant_id = seed.tenant_id.clone();
    let clients: Vec<(String, String, String)> = seed
        .clients
        .iter()
        .filter(|c| c.id != admin_id)
        .map(|c| (c.name.clone(), c.id.clone(), c.kind_name().to_owned()))
        .collect();
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    // Absolute: the policy's paths resolve against its own directory, and the printed
    // commands work from anywhere.
    let dir = &std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // The seed holds every secret value: a restarted emulator needs them.
    let seed_path = dir.join("seed.yaml");
    write_private(&seed_path, seed.to_yaml().as_bytes())
        .map_err(|e| format!("writing {}: {e}", seed_path.display()))?;
    let emulator = Emulator::start(([127, 0, 0, 1], 0).into(), seed)
        .await
        .map_err(|e| format!("starting the emulator: {e}"))?;

    let credential = dir.join("admin-secret");
    write_private(&credential, admin_secret.as_bytes())
        .map_err(|e| format!("writing {}: {e}", credential.display()))?;
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
    std::fs::write(&policy_path, &policy)
        .map_err(|e| format!("writing {}: {e}", policy_path.display()))?;
    let policy = Policy::load(&policy_path).map_err(|e| e.to_string())?;
    let stop = crate::stop::Stop::new();
    let connect = app::connect_from(&policy, &stop).map_err(|e| e.to_string())?;
    let wired = app::wire(&policy, connect, &[], stop)?;

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
    let first = app::run_once(&wired, PassOptions::default(), out).await;
    let _ = writeln!(out, "\nsecond pass (right after: nothing is due):");
    let second = app::run_once(&wired, PassOptions::default(), out).await;
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
