//! The `command` notifier in the policy: its keys, how its entry is checked (an
//! absolute program, variable names), and how it is built.
//!
//! Not here: running it (`notify::command`, `crate::command`), or which variables it
//! may never get (`policy`).

use std::sync::Arc;
use std::time::Duration;

use super::CommandNotifier;
use crate::command::Program;
use crate::notify::Notifier;
use crate::notify::http::HttpSender;
use crate::notify::registry::Backend;
use crate::notify::spec::{TIMEOUT_KEY, timeout};
use crate::schema::{Declared, Entry, Key, Shape, is_env_name};

/// A command's timeout when the policy sets none.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// A program, run directly with the event in its environment and on its stdin.
impl Declared for Program {
    const KEYS: &'static [Key] = &[
        Key::required(
            "program",
            Shape::Value,
            "the absolute path of a program, like /usr/local/bin/on-cds-rotate",
        ),
        Key::optional(
            "args",
            Shape::Values,
            "the program's arguments, like [\"--reload\"]",
        ),
        TIMEOUT_KEY,
        Key::optional(
            "env",
            Shape::Values,
            "NAMES of the rotator's environment variables the program may see, like [HOME]",
        ),
    ];

    fn parse(entry: &mut Entry<'_>) -> Program {
        let (name, f) = (entry.name, entry.fields);
        let program = f.path("program");
        if let Some(p) = program.as_ref().filter(|p| !p.value.is_absolute()) {
            entry.problem_at(p.referenced, format!(
                "notifier `{name}`: program `{}` must be an absolute path (it is run directly, without a shell or PATH lookup)",
                p.value.display()
            ));
        }
        let env = f.texts("env");
        for var in &env {
            if !is_env_name(&var.value) {
                entry.problem_at(var.referenced, format!(
                    "notifier `{name}`: env lists NAMES of environment variables (letters, digits, `_`); an entry is not one (not shown, in case it is a value)"
                ));
            }
        }
        Program {
            program: program.map(|p| p.value).unwrap_or_default(),
            args: f.texts("args").into_iter().map(|a| a.value).collect(),
            pass_env: env.into_iter().map(|e| e.value).collect(),
            withheld: Vec::new(),
            timeout: timeout(entry, COMMAND_TIMEOUT, 3600),
        }
    }
}

impl Backend for Program {
    fn timeout(&self) -> Duration {
        self.timeout
    }

    fn program_mut(&mut self) -> Option<&mut Program> {
        Some(self)
    }
}

/// The command notifier `name`: its program must be there.
pub fn build(
    spec: &Program,
    name: &str,
    _sender: &HttpSender,
) -> Result<Arc<dyn Notifier>, String> {
    if !spec.program.is_file() {
        return Err(format!(
            "notifier `{name}`: program {} does not exist (or is not a file); install it or fix the path",
            spec.program.display()
        ));
    }
    Ok(Arc::new(CommandNotifier::new(name, spec.clone())))
}
