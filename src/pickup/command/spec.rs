//! The `command` pickup check in the policy: its keys, how its mapping is checked (an
//! absolute program, variable names that hold no credential), its preflight and how it
//! is built.
//!
//! Not here: running it (`pickup::command`, `crate::command`).

use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::Duration;

use super::CommandCheck;
use crate::command::Program;
use crate::pickup::registry::Backend;
use crate::pickup::spec::{TIMEOUT, problem_at, span, timeout};
use crate::pickup::{ClientInfo, PickupCheck, Preflight};
use crate::schema::{Declared, Entry, Key, Shape, is_env_name};

/// `type: command`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandSpec {
    /// The program, its arguments, the variables it may see, its run timeout.
    pub program: Program,
    /// How long between two runs while not confirmed.
    pub interval: Duration,
    /// See [`crate::pickup::registry::PickupSpec::timeout`].
    pub timeout: Duration,
}

/// A `type: command` mapping as written.
impl Declared for CommandSpec {
    const KEYS: &'static [Key] = &[
        Key::required(
            "program",
            Shape::Value,
            "an absolute path, like /usr/local/bin/all-pods-switched",
        ),
        Key::optional("args", Shape::Values, "a list of arguments"),
        Key::optional(
            "env",
            Shape::Values,
            "a list of NAMES of variables the program may see",
        ),
        Key::optional("run_timeout", Shape::Value, "a duration like 30s"),
        Key::optional("interval", Shape::Value, "a duration like 1m"),
        TIMEOUT,
    ];

    /// No variable the policy reads a credential from may be passed, and the runner never
    /// passes one whatever `env` says.
    fn parse(entry: &mut Entry<'_>) -> CommandSpec {
        let f = entry.fields;
        let program = f.path("program");
        if let Some(p) = program.as_ref().filter(|p| !p.value.is_absolute()) {
            problem_at(
                entry,
                p.referenced,
                "program must be an absolute path (it is run directly, without a shell or PATH lookup), like /usr/local/bin/all-pods-switched".to_owned(),
            );
        }
        let owner = entry.name;
        let env = f.texts("env");
        for var in &env {
            let name = &var.value;
            if !is_env_name(name) {
                problem_at(
                    entry,
                    var.referenced,
                    format!(
                        "env lists `{}`, which is not a variable NAME (letters, digits, `_`)",
                        crate::text::untrusted(name)
                    ),
                );
            } else if let Some((_, what)) = entry.credential_variables().find(|(k, _)| *k == name) {
                entry.problem_at(var.referenced, format!(
                    "{owner}: pickup.env lists {name}, which holds {what}; a pickup program never gets a credential: remove it"
                ));
            }
        }
        let withheld = entry
            .credential_variables()
            .map(|(k, _)| k)
            .filter(|k| !crate::command::is_cloud_credential(k))
            .cloned()
            .collect();
        let run = span(
            entry,
            "run_timeout",
            Duration::seconds(30),
            (Duration::seconds(1), Duration::minutes(10)),
        );
        CommandSpec {
            program: Program {
                program: program.map(|p| p.value).unwrap_or_default(),
                args: f.texts("args").into_iter().map(|a| a.value).collect(),
                pass_env: env.into_iter().map(|e| e.value).collect(),
                withheld,
                timeout: run.to_std().unwrap_or(StdDuration::from_secs(30)),
            },
            interval: span(
                entry,
                "interval",
                Duration::minutes(1),
                (Duration::seconds(1), Duration::days(1)),
            ),
            timeout: timeout(entry),
        }
    }
}

impl Backend for CommandSpec {
    fn check_wait(&self) -> StdDuration {
        self.program.timeout
    }

    fn timeout(&self) -> Option<Duration> {
        Some(self.timeout)
    }

    fn preflight(&self) -> Option<Preflight> {
        Some(CommandCheck::preflight_of(self))
    }

    fn build(&self, client: ClientInfo) -> Arc<dyn PickupCheck> {
        Arc::new(CommandCheck::new(self.clone(), client))
    }
}
