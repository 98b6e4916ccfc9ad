//! Running a program the policy names (a `command` notifier or pickup check): directly,
//! never through a shell; with an environment cleared down to `PATH`, the variables the
//! policy lets through and the ones the caller sets; with a timeout after which the
//! program and everything it started are killed; with its output captured and capped.
//!
//! What children get and give is untrusted:
//! - No credential reaches a child's environment: a name in [`CLOUD_CREDENTIALS`] or in
//!   [`Program::withheld`] (the policy's own credential variables) is never passed,
//!   whatever `pass_env` says (validation refuses them too, with their place).
//! - A child's output is scrubbed of every value the rotator holds ([`hold`]: the new
//!   and the previous secret of each client, its own credentials), capped, escaped, and
//!   logged at debug only.
//!
//! A run ends when the program itself exits: a background child that still holds its
//! stdout does not keep it running (what is in the pipes is read for a short drain).
//! At the timeout, everything it started dies: its process group, every descendant
//! (found by parent in `/proc`, frozen first so none can fork away) and every process
//! that carries this run's tag in its environment (`CDS_ROTATOR_RUN_TAG`, so that a
//! grandchild that called `setsid` and lost its parent is found too). Only this run's
//! processes are hit: runs under way at the same time have tags of their own.
//!
//! Callers hand it ids, fingerprints and event JSON — never a secret value: whatever is
//! passed here can end up in the program's own logs.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use zeroize::{Zeroize, Zeroizing};

/// How much of each of stdout and stderr is kept (the rest is read and dropped).
pub const OUTPUT_CAP: usize = 4096;

/// Read past [`OUTPUT_CAP`] before scrubbing, so that a value that straddles the cap is
/// still found whole.
const SCRUB_MARGIN: usize = 1024;

/// How long the pipes are read after the program exited: what it wrote is in them
/// already; a background child that holds them open is not waited for.
const DRAIN: Duration = Duration::from_millis(250);

/// The variable that tags every process of one run (not a secret: a process id and a
/// counter).
pub const RUN_TAG: &str = "CDS_ROTATOR_RUN_TAG";

/// Variables the cloud SDKs and the usual clients read a credential from, never passed
/// to a program. Two kinds: those whose value is a credential or a bearer token, and
/// those naming a file an SDK would read a credential from by itself (a child's SDK
/// would act as the rotator without being handed anything else). Not here, on purpose:
/// ids, regions and endpoints (`AWS_ACCESS_KEY_ID`, `AWS_ROLE_ARN`, `AZURE_CLIENT_ID`,
/// `IDENTITY_ENDPOINT`, `AWS_CONTAINER_CREDENTIALS_FULL_URI`, `VAULT_ADDR`), which grant
/// nothing alone.
pub const CLOUD_CREDENTIALS: &[&str] = &[
    // AWS: the secret key, session tokens, the ECS/EKS credential endpoint's token (and
    // the relative URI, which is the only guard of the ECS task-role endpoint), the
    // files of web identity (IRSA) and shared credentials.
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    // Azure: client secret, certificate password and path, user password, workload
    // identity's token file, the App Service / Functions managed identity headers.
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PASSWORD",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_PASSWORD",
    "AZURE_FEDERATED_TOKEN_FILE",
    "IDENTITY_HEADER",
    "MSI_SECRET",
    // Google: the service-account key file.
    "GOOGLE_APPLICATION_CREDENTIALS",
    // Vault / OpenBao tokens; etcdctl's user (`name:password`) and password.
    "VAULT_TOKEN",
    "BAO_TOKEN",
    "ETCDCTL_USER",
    "ETCDCTL_PASSWORD",
];

/// Whether `name` is one of [`CLOUD_CREDENTIALS`].
pub fn is_cloud_credential(name: &str) -> bool {
    CLOUD_CREDENTIALS.contains(&name)
}

/// A program as the policy declares it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Program {
    /// An absolute path, run directly.
    pub program: PathBuf,
    /// Its arguments, as written in the policy.
    pub args: Vec<String>,
    /// Names of the rotator's environment variables it may see (besides `PATH`).
    pub pass_env: Vec<String>,
    /// Names it never gets, whatever `pass_env` says: the variables the policy reads a
    /// credential from (see `Policy::credential_variables`).
    pub withheld: Vec<String>,
    /// How long one run may take before it is killed.
    pub timeout: Duration,
}

impl Program {
    /// Whether the variable `name` may reach the program.
    fn may_see(&self, name: &str) -> bool {
        !is_cloud_credential(name) && !self.withheld.iter().any(|w| w == name)
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The exit code; `None` when it was killed by a signal or by the timeout.
    pub code: Option<i32>,
    /// Whether the timeout killed it.
    pub timed_out: bool,
    /// The start of its stdout: scrubbed of held values, lossy UTF-8, control
    /// characters escaped.
    pub stdout: String,
    /// The start of its stderr, likewise.
    pub stderr: String,
}

impl Outcome {
    /// Exit code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// `exit code 3`, `killed after 30s (timeout)`, `killed by a signal`.
    pub fn describe(&self, timeout: Duration) -> String {
        match (self.code, self.timed_out) {
            (_, true) => format!("killed after {}s (timeout)", timeout.as_secs_f32()),
            (Some(c), false) => format!("exit code {c}"),
            (None, false) => "killed by a signal".to_owned(),
        }
    }
}

/// The values a child's output is scrubbed of, by what holds them ("connect
/// credential", "client <tenant>/<id>"): the two newest of each.
static HELD: Mutex<Vec<(String, SecretString)>> = Mutex::new(Vec::new());

/// How many values of one holder are kept: the new one and the one before.
const HELD_PER_HOLDER: usize = 2;

/// Remembers `value` (of `holder`) so that no child's output shows it. Values shorter
/// than 4 characters are not worth it (they would mangle ordinary text).
pub fn hold(holder: &str, value: &SecretString) {
    let exposed = value.expose_secret();
    if exposed.len() < 4 {
        return;
    }
    let mut held = HELD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if held
        .iter()
        .any(|(h, v)| h == holder && v.expose_secret() == exposed)
    {
        return;
    }
    held.push((holder.to_owned(), SecretString::from(exposed.to_owned())));
    let of_holder = held.iter().filter(|(h, _)| h == holder).count();
    if of_holder > HELD_PER_HOLDER
        && let Some(oldest) = held.iter().position(|(h, _)| h == holder)
    {
        held.remove(oldest);
    }
}

/// Whether a value with this fingerprint is held.
pub fn holds(fingerprint: &crate::domain::Fingerprint) -> bool {
    let held = HELD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    held.iter()
        .any(|(_, v)| crate::domain::Fingerprint::of(v) == *fingerprint)
}

/// `raw` with every held value and every value in `also` replaced by `[redacted]`, and
/// a held value's start at its very end cut off (the rest may have been capped away).
fn scrub(raw: &[u8], also: &[&SecretString]) -> Zeroizing<Vec<u8>> {
    let held = HELD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let values: Vec<&[u8]> = held
        .iter()
        .map(|(_, v)| v)
        .chain(also.iter().copied())
        .map(|v| v.expose_secret().as_bytes())
        .filter(|v| v.len() >= 4)
        .collect();
    // Every copy is wiped when dropped: until scrubbed, it holds what the child printed.
    let mut out = Zeroizing::new(raw.to_vec());
    for v in &values {
        out = Zeroizing::new(replace_all(&out, v, b"[redacted]"));
    }
    for v in &values {
        if let Some(k) = (4..v.len()).rev().find(|&k| out.ends_with(&v[..k])) {
            let keep = out.len() - k;
            out.truncate(keep);
            out.extend_from_slice(b"[redacted]");
        }
    }
    out
}

fn replace_all(hay: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

/// Kept output made fit for a log line: scrubbed, cut to [`OUTPUT_CAP`], lossy UTF-8,
/// trimmed, escaped.
fn shown(raw: &[u8], also: &[&SecretString]) -> String {
    let mut clean = scrub(raw, also);
    clean.truncate(OUTPUT_CAP);
    crate::text::escape_control(String::from_utf8_lossy(&clean).trim_end())
}

/// A tag no other run of any process on this host carries at the same time.
fn run_tag() -> String {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}.{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs `program` once with `vars` added to its environment and `stdin` as its input.
/// Its output is scrubbed of every [`hold`]-ed value and of `scrub_also`, and logged at
/// debug. An error means it could not be started at all.
pub async fn run(
    program: &Program,
    vars: &[(&str, String)],
    stdin: &[u8],
    scrub_also: &[&SecretString],
) -> std::io::Result<Outcome> {
    let tag = run_tag();
    let mut cmd = Command::new(&program.program);
    cmd.args(&program.args)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so the timeout kills what it started too.
        .process_group(0)
        .kill_on_drop(true);
    cmd.envs(environment(program, vars, &tag, |name| {
        std::env::var_os(name)
    }));
    let mut child = cmd.spawn()?;
    let pid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .and_then(rustix::process::Pid::from_raw);
    let mut processes = RunProcesses {
        pid,
        tag: tag.clone(),
        armed: true,
    };
    let input = child.stdin.take();
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let data = stdin.to_vec();
    let work = async {
        let feed = async move {
            if let Some(mut w) = input {
                // A program that does not read its input is not an error.
                let _ = w.write_all(&data).await;
                let _ = w.shutdown().await;
            }
        };
        // Room for all that is kept from the start, so no reallocation leaves an unwiped
        // copy of what the child printed behind.
        let kept = || Zeroizing::new(Vec::with_capacity(OUTPUT_CAP + SCRUB_MARGIN));
        let (mut out, mut err) = (kept(), kept());
        let status = {
            let mut feed = std::pin::pin!(feed);
            let mut read_out = std::pin::pin!(capped(stdout, &mut out));
            let mut read_err = std::pin::pin!(capped(stderr, &mut err));
            let (mut fed, mut out_done, mut err_done) = (false, false, false);
            let status = loop {
                tokio::select! {
                    status = child.wait() => break status,
                    () = &mut feed, if !fed => fed = true,
                    () = &mut read_out, if !out_done => out_done = true,
                    () = &mut read_err, if !err_done => err_done = true,
                }
            };
            // It exited: what it wrote is in the pipes; a background child that holds
            // them open is not waited for.
            let rest_out = async {
                if !out_done {
                    (&mut read_out).await;
                }
            };
            let rest_err = async {
                if !err_done {
                    (&mut read_err).await;
                }
            };
            let _ = tokio::time::timeout(DRAIN, futures::future::join(rest_out, rest_err)).await;
            status
        };
        (status, out, err)
    };
    let finished = tokio::time::timeout(program.timeout, work).await;
    // From here on the run is not abandoned: it ended, or it is killed below.
    processes.armed = false;
    let outcome = match finished {
        Ok((status, out, err)) => Outcome {
            code: status?.code(),
            timed_out: false,
            stdout: shown(&out, scrub_also),
            stderr: shown(&err, scrub_also),
        },
        Err(_) => {
            if let Some(pid) = pid {
                kill_run(pid, &tag).await;
            }
            let _ = child.kill().await;
            Outcome {
                code: None,
                timed_out: true,
                stdout: String::new(),
                stderr: String::new(),
            }
        }
    };
    if !outcome.stdout.is_empty() || !outcome.stderr.is_empty() {
        tracing::debug!(
            program = %crate::text::untrusted(&program.program.display().to_string()),
            stdout = %crate::text::clip(&outcome.stdout, 500),
            stderr = %crate::text::clip(&outcome.stderr, 500),
            "program output (scrubbed of held values)"
        );
    }
    Ok(outcome)
}

/// The whole environment of a run: `PATH`, the variables of `pass_env` that `lookup`
/// finds, then `vars`, then the run's tag; never a name the program may not see.
fn environment(
    program: &Program,
    vars: &[(&str, String)],
    tag: &str,
    lookup: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    let path = lookup("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let mut env = vec![("PATH".into(), path)];
    for name in &program.pass_env {
        if program.may_see(name)
            && let Some(v) = lookup(name)
        {
            env.push((name.into(), v));
        }
    }
    for (k, v) in vars {
        if program.may_see(k) {
            env.push(((*k).into(), v.into()));
        }
    }
    env.push((RUN_TAG.into(), tag.into()));
    env
}

/// Reads a pipe to its end into `kept`, keeping the first [`OUTPUT_CAP`] (plus
/// [`SCRUB_MARGIN`]) bytes.
async fn capped(pipe: Option<impl AsyncRead + Unpin>, kept: &mut Vec<u8>) {
    let Some(mut pipe) = pipe else {
        return;
    };
    let mut buf = [0u8; 4096];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = (OUTPUT_CAP + SCRUB_MARGIN).saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    buf.zeroize();
}

/// The processes of one run, killed when this is dropped while armed: a run that is
/// abandoned (a stop, an outer timeout) leaves nothing behind either.
struct RunProcesses {
    /// The program's pid (the leader of its process group).
    pid: Option<rustix::process::Pid>,
    /// The run's tag.
    tag: String,
    /// Whether dropping kills them (until the program exited on its own).
    armed: bool,
}

impl Drop for RunProcesses {
    fn drop(&mut self) {
        if self.armed
            && let Some(pid) = self.pid
        {
            kill_tree(pid, &self.tag);
        }
    }
}

/// Kills every process of the run whose program is `pid` (its group leader) and whose
/// tag is `tag`, and waits (briefly) for them to be gone: see [`kill_tree`].
async fn kill_run(pid: rustix::process::Pid, tag: &str) {
    let found = kill_tree(pid, tag);
    // SIGKILL is delivered at once, but a process is gone only once the kernel tore it
    // down: wait a little, so that "killed" means dead to whoever looks next.
    for _ in 0..100 {
        if found
            .iter()
            .all(|&p| p == pid.as_raw_nonzero().get() || gone(p))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Kills the run's process group, every descendant of `pid` by parent and every
/// process carrying the tag. Each is stopped first, so none forks away while the others
/// are looked for; then all are killed. Returns the pids found.
fn kill_tree(pid: rustix::process::Pid, tag: &str) -> BTreeSet<i32> {
    use rustix::process::{Pid, Signal, kill_process, kill_process_group};
    let _ = kill_process_group(pid, Signal::STOP);
    let mut found: BTreeSet<i32> = BTreeSet::from([pid.as_raw_nonzero().get()]);
    // Bounded: each round either finds more or ends.
    for _ in 0..64 {
        let mut grew = false;
        for (p, parent) in processes() {
            if found.contains(&p) || !(found.contains(&parent) || carries_tag(p, tag)) {
                continue;
            }
            if let Some(p) = Pid::from_raw(p) {
                let _ = kill_process(p, Signal::STOP);
            }
            found.insert(p);
            grew = true;
        }
        if !grew {
            break;
        }
    }
    for p in found.iter().copied().filter_map(Pid::from_raw) {
        let _ = kill_process(p, Signal::KILL);
    }
    let _ = kill_process_group(pid, Signal::KILL);
    found
}

/// Every process's (pid, parent pid), from `/proc/<pid>/stat`.
fn processes() -> Vec<(i32, i32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|p| Some((p, parent_and_state(p)?.0)))
        .collect()
}

/// A process's parent and state letter. The name (in parentheses) may hold anything,
/// so fields are counted from its last `)`.
fn parent_and_state(pid: i32) -> Option<(i32, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let parent = fields.next()?.parse().ok()?;
    Some((parent, state))
}

/// Whether the process is gone (or a zombie: dead, waiting for its parent to reap it).
fn gone(pid: i32) -> bool {
    parent_and_state(pid).is_none_or(|(_, state)| matches!(state, 'Z' | 'X'))
}

/// Whether the process's environment carries `RUN_TAG=tag` (unreadable: no).
fn carries_tag(pid: i32, tag: &str) -> bool {
    let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let wanted = format!("{RUN_TAG}={tag}");
    environ.split(|&b| b == 0).any(|v| v == wanted.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, timeout: Duration) -> Program {
        Program {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            timeout,
            ..Program::default()
        }
    }

    #[tokio::test]
    async fn the_environment_is_cleared_but_for_path_and_what_is_passed() {
        assert!(
            std::env::var_os("HOME").is_some(),
            "the test needs HOME set"
        );
        let mut p = sh("env; cat", Duration::from_secs(10));
        let o = run(
            &p,
            &[("CDS_ROTATOR_EVENT", "rotated".into())],
            b"{\"a\":1}",
            &[],
        )
        .await
        .unwrap();
        assert!(o.success(), "{o:?}");
        assert!(
            o.stdout.contains("CDS_ROTATOR_EVENT=rotated"),
            "{}",
            o.stdout
        );
        assert!(o.stdout.contains("PATH="), "{}", o.stdout);
        assert!(o.stdout.ends_with("{\"a\":1}"), "{}", o.stdout);
        assert!(!o.stdout.contains("HOME="), "{}", o.stdout);
        p.pass_env = vec!["HOME".into()];
        let o = run(&p, &[], b"", &[]).await.unwrap();
        assert!(o.stdout.contains("HOME="), "{}", o.stdout);
    }

    #[test]
    fn a_credential_variable_never_reaches_a_program_whatever_pass_env_says() {
        let mut p = sh("true", Duration::from_secs(1));
        p.pass_env = [
            "HOME",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_CONTAINER_AUTHORIZATION_TOKEN",
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            "IDENTITY_HEADER",
            "MSI_SECRET",
            "VAULT_TOKEN",
            "CDS_SECRET",
            "ETCD_PASSWORD",
        ]
        .map(String::from)
        .to_vec();
        p.withheld = vec!["CDS_SECRET".into(), "ETCD_PASSWORD".into()];
        let env = environment(
            &p,
            &[
                ("AZURE_CLIENT_SECRET", "x".into()),
                ("CDS_ROTATOR_EVENT", "rotated".into()),
            ],
            "1.2",
            |_| Some("set".into()),
        );
        let names: Vec<_> = env
            .iter()
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["PATH", "HOME", "CDS_ROTATOR_EVENT", RUN_TAG],
            "{names:?}"
        );
    }

    #[tokio::test]
    async fn a_hanging_program_and_its_children_are_killed_at_the_timeout() {
        let p = sh("sleep 30 & sleep 30", Duration::from_millis(300));
        let o = run(&p, &[], b"", &[]).await.unwrap();
        assert!(o.timed_out && !o.success(), "{o:?}");
        assert!(o.describe(p.timeout).contains("timeout"));
    }

    #[tokio::test]
    async fn a_program_that_exits_is_done_though_a_background_child_holds_its_stdout() {
        let p = sh("sleep 120 & echo $!; echo done", Duration::from_secs(20));
        let o = run(&p, &[], b"", &[]).await.unwrap();
        let left: Option<i32> = o.stdout.lines().next().and_then(|l| l.trim().parse().ok());
        if let Some(pid) = left.and_then(rustix::process::Pid::from_raw) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
        assert!(o.success() && !o.timed_out, "{o:?}");
        assert!(o.stdout.ends_with("done"), "{o:?}");
    }

    /// Waits (bounded) for a pid file that a program's descendant writes, then for the
    /// process to be gone after the run.
    async fn pid_in(file: &std::path::Path) -> i32 {
        for _ in 0..500 {
            if let Ok(text) = std::fs::read_to_string(file)
                && let Ok(pid) = text.trim().parse()
            {
                return pid;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no pid in {}", file.display());
    }

    async fn assert_dead(pid: i32) {
        for _ in 0..500 {
            if gone(pid) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(p) = rustix::process::Pid::from_raw(pid) {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
        }
        panic!("process {pid} survived the timeout");
    }

    /// A script whose descendant, in a session of its own, writes its pid to `file`;
    /// the script waits for that, then hangs.
    fn escaping(escape: &str, file: &std::path::Path) -> String {
        let f = file.display();
        format!(
            "{escape} sh -c 'echo $$ > {f}.tmp; mv {f}.tmp {f}; exec sleep 300'\nwhile [ ! -s {f} ]; do sleep 0.05; done\nsleep 300"
        )
    }

    #[tokio::test]
    async fn a_setsid_grandchild_whose_parent_exited_dies_at_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pid");
        // The subshell starts it and exits: the grandchild has no parent in the run.
        let script = escaping("(setsid", &file).replacen("sleep 300'", "sleep 300' &)", 1);
        let o = run(&sh(&script, Duration::from_secs(5)), &[], b"", &[])
            .await
            .unwrap();
        assert!(o.timed_out, "{o:?}");
        assert_dead(pid_in(&file).await).await;
    }

    #[tokio::test]
    async fn a_setsid_grandchild_with_a_cleared_environment_dies_at_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pid");
        let script =
            escaping("env -i /usr/bin/setsid", &file).replacen("sleep 300'", "sleep 300' &", 1);
        let o = run(&sh(&script, Duration::from_secs(5)), &[], b"", &[])
            .await
            .unwrap();
        assert!(o.timed_out, "{o:?}");
        assert_dead(pid_in(&file).await).await;
    }

    #[tokio::test]
    async fn an_abandoned_run_kills_what_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pid");
        let script = escaping("(setsid", &file).replacen("sleep 300'", "sleep 300' &)", 1);
        let program = sh(&script, Duration::from_secs(600));
        // The run is dropped (as a stop drops it) once the grandchild is there.
        let pid = tokio::select! {
            o = run(&program, &[], b"", &[]) => panic!("{o:?}"),
            pid = pid_in(&file) => pid,
        };
        assert_dead(pid).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_timeout_kills_only_the_run_that_timed_out() {
        let dir = tempfile::tempdir().unwrap();
        let go = dir.path().join("go");
        let other = sh(
            &format!(
                "setsid sh -c 'while [ ! -e {g} ]; do sleep 0.05; done; echo alive'; echo done",
                g = go.display()
            ),
            Duration::from_secs(120),
        );
        let other = tokio::spawn(async move { run(&other, &[], b"", &[]).await.unwrap() });
        let o = run(&sh("sleep 300", Duration::from_millis(500)), &[], b"", &[])
            .await
            .unwrap();
        assert!(o.timed_out, "{o:?}");
        std::fs::write(&go, "").unwrap();
        let o = other.await.unwrap();
        assert!(
            o.success() && o.stdout == "alive\ndone".replace('\n', "\\n"),
            "{o:?}"
        );
    }

    #[tokio::test]
    async fn output_is_capped_and_escaped() {
        let p = sh(
            "printf 'a\\033[2J\\n'; head -c 100000 /dev/zero | tr '\\0' x; exit 3",
            Duration::from_secs(10),
        );
        let o = run(&p, &[], b"", &[]).await.unwrap();
        assert_eq!(o.code, Some(3));
        assert!(o.stdout.len() <= OUTPUT_CAP + 64, "{}", o.stdout.len());
        assert!(!o.stdout.contains('\u{1b}'), "{}", o.stdout);
    }

    #[tokio::test]
    async fn output_is_scrubbed_of_held_values_even_across_the_cap() {
        let held = "Held-Value-7c1e0b5d";
        let passed = SecretString::from("Passed-Value-93a2f1");
        hold("test output_is_scrubbed", &SecretString::from(held));
        let p = sh(
            &format!(
                "echo 'x={held} y=Passed-Value-93a2f1' >&2; head -c 4090 /dev/zero | tr '\\0' x; echo {held}; exit 1"
            ),
            Duration::from_secs(10),
        );
        let o = run(&p, &[], b"", &[&passed]).await.unwrap();
        assert_eq!(o.stderr, "x=[redacted] y=[redacted]", "{o:?}");
        assert!(!o.stdout.contains("Held-V"), "{}", &o.stdout[4000..]);
        assert!(o.stdout.len() <= OUTPUT_CAP, "{}", o.stdout.len());
    }

    #[test]
    fn a_holder_keeps_its_two_newest_values() {
        let holder = "test a_holder_keeps";
        for v in ["First-0a1b2c", "Second-3d4e5f", "Third-6a7b8c"] {
            hold(holder, &SecretString::from(v));
        }
        let out = scrub(b"First-0a1b2c Second-3d4e5f Third-6a7b8c Thir", &[]);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "First-0a1b2c [redacted] [redacted] [redacted]"
        );
    }

    #[tokio::test]
    async fn a_missing_program_is_an_error() {
        let p = Program {
            program: "/nonexistent/prog".into(),
            timeout: Duration::from_secs(1),
            ..Program::default()
        };
        assert!(run(&p, &[], b"", &[]).await.is_err());
    }
}
