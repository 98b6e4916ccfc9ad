//! Running a program the policy names (a `command` notifier or pickup check): directly,
//! never through a shell; with an environment cleared down to `PATH`, the variables the
//! policy lets through and the ones the caller sets; with a timeout after which the
//! program and everything it started are killed; with its output captured and capped.
//!
//! Callers hand it ids, fingerprints and event JSON — never a secret value: whatever is
//! passed here can end up in the program's own logs.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

/// How much of each of stdout and stderr is kept (the rest is read and dropped).
pub const OUTPUT_CAP: usize = 4096;

/// A program as the policy declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    /// An absolute path, run directly.
    pub program: PathBuf,
    /// Its arguments, as written in the policy.
    pub args: Vec<String>,
    /// Names of the rotator's environment variables it may see (besides `PATH`).
    pub pass_env: Vec<String>,
    /// How long one run may take before it is killed.
    pub timeout: Duration,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The exit code; `None` when it was killed by a signal or by the timeout.
    pub code: Option<i32>,
    /// Whether the timeout killed it.
    pub timed_out: bool,
    /// The start of its stdout, lossy UTF-8, control characters escaped.
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

/// Runs `program` once with `vars` added to its environment and `stdin` as its input.
/// An error means it could not be started at all.
pub async fn run(
    program: &Program,
    vars: &[(&str, String)],
    stdin: &[u8],
) -> std::io::Result<Outcome> {
    let mut cmd = Command::new(&program.program);
    cmd.args(&program.args)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so the timeout kills what it started too.
        .process_group(0)
        .kill_on_drop(true);
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    cmd.env("PATH", path);
    for name in &program.pass_env {
        if let Some(v) = std::env::var_os(name) {
            cmd.env(name, v);
        }
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn()?;
    let pid = child.id();
    let input = child.stdin.take();
    let data = stdin.to_vec();
    let feed = async move {
        if let Some(mut w) = input {
            // A program that does not read its input is not an error.
            let _ = w.write_all(&data).await;
            let _ = w.shutdown().await;
        }
    };
    let out = capped(child.stdout.take());
    let err = capped(child.stderr.take());
    let wait = async {
        let ((), stdout, stderr, status) = tokio::join!(feed, out, err, child.wait());
        (stdout, stderr, status)
    };
    match tokio::time::timeout(program.timeout, wait).await {
        Ok((stdout, stderr, status)) => Ok(Outcome {
            code: status?.code(),
            timed_out: false,
            stdout,
            stderr,
        }),
        Err(_) => {
            kill_group(pid);
            let _ = child.kill().await;
            Ok(Outcome {
                code: None,
                timed_out: true,
                stdout: String::new(),
                stderr: String::new(),
            })
        }
    }
}

fn kill_group(pid: Option<u32>) {
    let Some(pid) = pid
        .and_then(|p| i32::try_from(p).ok())
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
}

/// Reads a pipe to its end, keeping the first [`OUTPUT_CAP`] bytes.
async fn capped(pipe: Option<impl AsyncRead + Unpin>) -> String {
    let Some(mut pipe) = pipe else {
        return String::new();
    };
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = OUTPUT_CAP.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    crate::text::escape_control(String::from_utf8_lossy(&kept).trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, timeout: Duration) -> Program {
        Program {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            pass_env: vec![],
            timeout,
        }
    }

    #[tokio::test]
    async fn the_environment_is_cleared_but_for_path_and_what_is_passed() {
        assert!(
            std::env::var_os("HOME").is_some(),
            "the test needs HOME set"
        );
        let mut p = sh("env; cat", Duration::from_secs(10));
        let o = run(&p, &[("CDS_ROTATOR_EVENT", "rotated".into())], b"{\"a\":1}")
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
        let o = run(&p, &[], b"").await.unwrap();
        assert!(o.stdout.contains("HOME="), "{}", o.stdout);
    }

    #[tokio::test]
    async fn a_hanging_program_and_its_children_are_killed_at_the_timeout() {
        let p = sh("sleep 30 & sleep 30", Duration::from_millis(300));
        let o = run(&p, &[], b"").await.unwrap();
        assert!(o.timed_out && !o.success(), "{o:?}");
        assert!(o.describe(p.timeout).contains("timeout"));
    }

    #[tokio::test]
    async fn output_is_capped_and_escaped() {
        let p = sh(
            "printf 'a\\033[2J\\n'; head -c 100000 /dev/zero | tr '\\0' x; exit 3",
            Duration::from_secs(10),
        );
        let o = run(&p, &[], b"").await.unwrap();
        assert_eq!(o.code, Some(3));
        assert!(o.stdout.len() <= OUTPUT_CAP + 64, "{}", o.stdout.len());
        assert!(!o.stdout.contains('\u{1b}'), "{}", o.stdout);
    }

    #[tokio::test]
    async fn a_missing_program_is_an_error() {
        let p = Program {
            program: "/nonexistent/prog".into(),
            args: vec![],
            pass_env: vec![],
            timeout: Duration::from_secs(1),
        };
        assert!(run(&p, &[], b"").await.is_err());
    }
}
