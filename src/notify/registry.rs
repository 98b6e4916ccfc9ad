//! The one list of notifier types: for each `type:` name, its spec, its keys, how its
//! entry is checked, its rules and how it is built.
//!
//! Adding a notifier is a folder `notify/<name>/` (the notifier in `mod.rs`, its spec
//! and `build` in `spec.rs`) and one line in [`notifiers!`] below.
//! Not here: the notifiers' behaviour (each folder), or the rules across notifiers
//! (`policy`).

use std::sync::Arc;
use std::time::Duration;

use super::Notifier;
use super::command::spec as command;
use super::http::HttpSender;
use super::log::spec::{self as log, LogSpec};
use super::slack::spec as slack;
use super::spec::{ChatSpec, ValueSource};
use super::teams::spec as teams;
use super::webhook::spec::{self as webhook, WebhookSpec};
use crate::command::Program;
use crate::schema::{Declared, Entry, Key};

/// The rules of one notifier type, asked by the policy's checks.
pub trait Backend {
    /// How long one notification may take, retries included.
    fn timeout(&self) -> Duration;

    /// Where it reads its secrets (URLs, keys) from: no program the rotator runs may get
    /// one of those variables.
    fn credential_sources(&self) -> Vec<&ValueSource> {
        Vec::new()
    }

    /// The program it runs, if it runs one (its environment is the policy's to limit).
    fn program_mut(&mut self) -> Option<&mut Program> {
        None
    }
}

/// Declares [`NotifierSpec`] from the one list of notifier types.
macro_rules! notifiers {
    ($($variant:ident($spec:ty) = $name:literal => $build:path,)*) => {
        /// A notifier as the policy declares it.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum NotifierSpec {
            $(
                #[doc = concat!("`type: ", $name, "`.")]
                $variant($spec),
            )*
        }

        impl NotifierSpec {
            /// Its rules.
            pub fn backend(&self) -> &dyn Backend {
                match self {
                    $(NotifierSpec::$variant(spec) => spec,)*
                }
            }

            /// Its rules, to change what the policy may change.
            pub fn backend_mut(&mut self) -> &mut dyn Backend {
                match self {
                    $(NotifierSpec::$variant(spec) => spec,)*
                }
            }

            /// The notifier `name`, reading the URLs and keys it takes from variables or
            /// files now (a missing one is an error at start, naming where). `sender` is
            /// the one HTTP client of every HTTP notifier.
            pub fn build(&self, name: &str, sender: &HttpSender) -> Result<Arc<dyn Notifier>, String> {
                match self {
                    $(NotifierSpec::$variant(spec) => $build(spec, name, sender),)*
                }
            }
        }

        impl NotifierSpec {
            /// Every notifier type with its keys besides `type`.
            pub const TYPES: &[(&str, &[Key])] = &[$(($name, <$spec as Declared>::KEYS),)*];

            /// Checks the entry of type `type_name` (see [`Declared::parse`]); `None` for
            /// a type not listed (the shape check refused it).
            pub fn parse(type_name: &str, entry: &mut Entry<'_>) -> Option<NotifierSpec> {
                match type_name {
                    $($name => Some(NotifierSpec::$variant(<$spec>::parse(entry))),)*
                    _ => None,
                }
            }
        }
    };
}

notifiers! {
    Log(LogSpec) = "log" => log::build,
    Webhook(WebhookSpec) = "webhook" => webhook::build,
    Slack(ChatSpec) = "slack" => slack::build,
    Teams(ChatSpec) = "teams" => teams::build,
    Command(Program) = "command" => command::build,
}

impl NotifierSpec {
    /// How long one notification may take, retries included (the log's is a bound that
    /// it never comes near).
    pub fn timeout(&self) -> Duration {
        self.backend().timeout()
    }
}
