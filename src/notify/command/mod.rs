//! The `command` notifier: runs a program (through [`crate::command::run`]: no shell,
//! cleared environment, timeout) with the event's fields in `CDS_ROTATOR_*` variables
//! and the event JSON on its stdin. A non-zero exit or the timeout is a failure, whose
//! error carries what the program said on stderr and stdout; otherwise its output is
//! logged at debug only. Either way it is scrubbed of every value the rotator holds,
//! capped and escaped first (by the runner).

pub mod spec;

use std::time::Duration;

use async_trait::async_trait;
use chrono::SecondsFormat;

use super::{Notifier, NotifyError};
use crate::command::{Program, run};
use crate::domain::Event;

/// Runs a program per event.
#[derive(Debug)]
pub struct CommandNotifier {
    name: String,
    program: Program,
}

impl CommandNotifier {
    /// A command notifier named `name` running `program`.
    pub fn new(name: impl Into<String>, program: Program) -> Self {
        CommandNotifier {
            name: name.into(),
            program,
        }
    }
}

/// The `CDS_ROTATOR_*` variables of an event (empty when the event has no such fact).
pub fn variables(event: &Event) -> Vec<(&'static str, String)> {
    let ids: Vec<String> = event.secret_ids.iter().map(ToString::to_string).collect();
    vec![
        ("CDS_ROTATOR_EVENT", event.kind.to_string()),
        ("CDS_ROTATOR_TENANT_ID", event.tenant_id.clone()),
        ("CDS_ROTATOR_CLIENT", event.client.clone()),
        ("CDS_ROTATOR_CLIENT_ID", event.client_id.clone()),
        ("CDS_ROTATOR_SECRET_ID", ids.join(" ")),
        (
            "CDS_ROTATOR_FINGERPRINT",
            event
                .fingerprint
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
        ),
        (
            "CDS_ROTATOR_STORE",
            event.store_location.clone().unwrap_or_default(),
        ),
        (
            "CDS_ROTATOR_EXPIRATION",
            event
                .expiration
                .map(|e| e.to_rfc3339_opts(SecondsFormat::Secs, true))
                .unwrap_or_default(),
        ),
        ("CDS_ROTATOR_RUN_ID", event.run_id.clone()),
    ]
}

#[async_trait]
impl Notifier for CommandNotifier {
    fn name(&self) -> &str {
        &self.name
    }

    fn timeout(&self) -> Duration {
        self.program.timeout
    }

    async fn notify(&self, event: &Event) -> Result<(), NotifyError> {
        let stdin = event.to_json().to_string();
        let outcome = run(&self.program, &variables(event), stdin.as_bytes(), &[])
            .await
            .map_err(|e| NotifyError {
                notifier: self.name.clone(),
                detail: format!("cannot start {}: {e}", self.program.program.display()),
            })?;
        // Already scrubbed, escaped, capped (and logged at debug) by `command::run`;
        // clipped again for one error line.
        let clip = |s: &str| crate::text::clip(s, 500);
        if outcome.success() {
            return Ok(());
        }
        let mut detail = format!(
            "{} {}",
            self.program.program.display(),
            outcome.describe(self.program.timeout)
        );
        if !outcome.stderr.is_empty() {
            detail.push_str(&format!("; stderr: {}", clip(&outcome.stderr)));
        }
        if !outcome.stdout.is_empty() {
            detail.push_str(&format!("; stdout: {}", clip(&outcome.stdout)));
        }
        Err(NotifyError {
            notifier: self.name.clone(),
            detail,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::tests::rotated;

    #[test]
    fn the_variables_carry_the_facts_with_ids_space_separated() {
        let mut event = rotated();
        event.secret_ids = vec![3, 4];
        let vars = variables(&event);
        let get = |k: &str| vars.iter().find(|(n, _)| *n == k).unwrap().1.clone();
        assert_eq!(get("CDS_ROTATOR_EVENT"), "rotated");
        assert_eq!(get("CDS_ROTATOR_SECRET_ID"), "3 4");
        assert_eq!(get("CDS_ROTATOR_FINGERPRINT"), "0123456789abcdef");
        assert_eq!(get("CDS_ROTATOR_EXPIRATION"), "2027-02-21T03:00:00Z");
    }

    #[tokio::test]
    async fn a_failing_program_is_an_error_with_its_output() {
        let n = CommandNotifier::new(
            "script",
            Program {
                program: "/bin/sh".into(),
                args: vec![
                    "-c".into(),
                    "echo \"bad $CDS_ROTATOR_CLIENT\" >&2; exit 4".into(),
                ],
                timeout: Duration::from_secs(10),
                ..Program::default()
            },
        );
        let e = n.notify(&rotated()).await.unwrap_err().to_string();
        assert!(e.contains("exit code 4") && e.contains("bad app"), "{e}");
    }
}
