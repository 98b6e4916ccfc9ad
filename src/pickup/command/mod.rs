//! `type: command`: runs a program (through [`crate::command::run`]: no shell, a
//! cleared environment, a run timeout) that exits 0 once the consumers switched. It
//! learns which secret from `CDS_ROTATOR_*` variables: ids, the fingerprint and the
//! store location — never the value, in its environment, arguments or input. What it
//! prints is never part of the pending reason (which is logged at info and shown by
//! `plan` and `status`): the runner scrubs it of every held value and of the current
//! value read from the store, and logs it at debug.

pub mod spec;

use async_trait::async_trait;
use chrono::Duration;

use self::spec::CommandSpec;
use super::{ClientInfo, Pickup, PickupCheck, Preflight};
use crate::domain::StoreRecord;
use crate::text::untrusted;

/// Runs the policy's program.
pub struct CommandCheck {
    spec: CommandSpec,
    client: ClientInfo,
}

impl CommandCheck {
    /// A check running `spec.program` for `client`.
    pub fn new(spec: CommandSpec, client: ClientInfo) -> Self {
        CommandCheck { spec, client }
    }

    /// Its program can be run.
    pub fn preflight_of(spec: &CommandSpec) -> Preflight {
        use std::os::unix::fs::PermissionsExt;
        let program = &spec.program.program;
        match std::fs::metadata(program) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => {
                Preflight::Ok(format!("{} can be run", program.display()))
            }
            Ok(_) => Preflight::Fail(format!(
                "{} is not an executable file; the pickup would never be confirmed",
                program.display()
            )),
            Err(e) => Preflight::Fail(format!(
                "{}: {e}; the pickup would never be confirmed",
                program.display()
            )),
        }
    }
}

#[async_trait]
impl PickupCheck for CommandCheck {
    fn preflight(&self) -> Option<Preflight> {
        Some(CommandCheck::preflight_of(&self.spec))
    }

    async fn check(&self, current: &StoreRecord) -> Pickup {
        let vars = [
            ("CDS_ROTATOR_CLIENT", self.client.name.clone()),
            ("CDS_ROTATOR_CLIENT_ID", current.client_id.clone()),
            ("CDS_ROTATOR_SECRET_ID", current.secret_id.to_string()),
            ("CDS_ROTATOR_FINGERPRINT", current.fingerprint.to_string()),
            ("CDS_ROTATOR_STORE", self.client.store_location.clone()),
        ];
        let program = self.spec.program.program.display().to_string();
        // The program may read the store: its output is scrubbed of the current value,
        // which this process may not hold (it published it before a restart).
        let current_value = if crate::command::holds(&current.fingerprint) {
            None
        } else {
            match self.client.store.read_value(&self.client.store_key).await {
                Ok(v) => v,
                Err(e) => {
                    tracing::debug!(step = "retire", error = %crate::text::escape_control(&e.to_string()), "cannot read the current value to scrub the pickup program's output; it is scrubbed of the values held");
                    None
                }
            }
        };
        let scrub: Vec<&secrecy::SecretString> = current_value.iter().collect();
        match crate::command::run(&self.spec.program, &vars, b"", &scrub).await {
            Ok(o) if o.success() => Pickup::Confirmed,
            // What it said is logged at debug by the runner, never in the reason.
            Ok(o) => Pickup::Pending(format!(
                "command {}: {}",
                untrusted(&program),
                o.describe(self.spec.program.timeout)
            )),
            Err(e) => Pickup::Pending(format!(
                "command {} could not be started ({e})",
                untrusted(&program)
            )),
        }
    }

    fn timeout(&self) -> Option<Duration> {
        Some(self.spec.timeout)
    }

    fn interval(&self) -> Option<Duration> {
        Some(self.spec.interval)
    }
}
