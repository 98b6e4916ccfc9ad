//! `type: command`: runs a program (through [`crate::command::run`]: no shell, a
//! cleared environment, a run timeout) that exits 0 once the consumers switched. It
//! learns which secret from `CDS_ROTATOR_*` variables: ids, the fingerprint and the
//! store location — never the value, in its environment, arguments or input.

use async_trait::async_trait;
use chrono::Duration;

use super::{ClientInfo, Pickup, PickupCheck};
use crate::policy::CommandSpec;
use crate::store::StoreRecord;
use crate::text::{clip, untrusted};

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
}

#[async_trait]
impl PickupCheck for CommandCheck {
    async fn check(&self, current: &StoreRecord) -> Pickup {
        let vars = [
            ("CDS_ROTATOR_CLIENT", self.client.name.clone()),
            ("CDS_ROTATOR_CLIENT_ID", current.client_id.clone()),
            ("CDS_ROTATOR_SECRET_ID", current.secret_id.to_string()),
            ("CDS_ROTATOR_FINGERPRINT", current.fingerprint.to_string()),
            ("CDS_ROTATOR_STORE", self.client.store_location.clone()),
        ];
        let program = self.spec.program.program.display().to_string();
        match crate::command::run(&self.spec.program, &vars, b"").await {
            Ok(o) if o.success() => Pickup::Confirmed,
            Ok(o) => {
                let said = if o.stderr.is_empty() {
                    &o.stdout
                } else {
                    &o.stderr
                };
                let said = if said.is_empty() {
                    String::new()
                } else {
                    format!(": {}", clip(said, 200))
                };
                Pickup::Pending(format!(
                    "command {}: {}{said}",
                    untrusted(&program),
                    o.describe(self.spec.program.timeout)
                ))
            }
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
