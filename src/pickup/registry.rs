//! The one list of pickup checks: for each `type:` name, its spec, its keys, how its
//! `pickup:` mapping is checked, its rules, its preflight and how it is built.
//!
//! Adding a check is a folder `pickup/<name>/` (the check in `mod.rs`, its spec in
//! `spec.rs`) and one line in [`pickups!`] below.
//! Not here: the checks' behaviour (each folder), or the rules across clients
//! (`policy`).

use std::path::Path;
use std::sync::Arc;

use chrono::Duration;

use super::ack_file::spec::AckFileSpec;
use super::command::spec::CommandSpec;
use super::http_probe::spec::HttpProbeSpec;
use super::{ClientInfo, GraceOnly, PickupCheck, Preflight};
use crate::schema::{Declared, Entry, Key};

/// The rules of one pickup check, asked by the policy's checks, `check` and the wiring.
pub trait Backend {
    /// The longest one check may take (a pass waits for it).
    fn check_wait(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    /// How long after grace the check may stay unconfirmed before `pickup_timeout`
    /// (`None`: confirmed when grace ends).
    fn timeout(&self) -> Option<Duration>;

    /// The file the app writes for the check, if any: the rotator must never write it.
    fn app_file(&self) -> Option<&Path> {
        None
    }

    /// What `check` can tell of it offline ([`PickupCheck::preflight`]).
    fn preflight(&self) -> Option<Preflight>;

    /// The check for `client`.
    fn build(&self, client: ClientInfo) -> Arc<dyn PickupCheck>;
}

/// `type: grace`: the grace period alone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GraceSpec;

impl Declared for GraceSpec {
    const KEYS: &'static [Key] = &[];

    fn parse(_entry: &mut Entry<'_>) -> GraceSpec {
        GraceSpec
    }
}

impl Backend for GraceSpec {
    fn timeout(&self) -> Option<Duration> {
        None
    }

    fn preflight(&self) -> Option<Preflight> {
        None
    }

    fn build(&self, _client: ClientInfo) -> Arc<dyn PickupCheck> {
        Arc::new(GraceOnly)
    }
}

/// Declares [`PickupSpec`] from the one list of checks.
macro_rules! pickups {
    ($($variant:ident($spec:ty) = $name:literal,)*) => {
        /// How a client's pickup is confirmed.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum PickupSpec {
            $(
                #[doc = concat!("`type: ", $name, "`.")]
                $variant($spec),
            )*
        }

        impl PickupSpec {
            /// Its rules.
            pub fn backend(&self) -> &dyn Backend {
                match self {
                    $(PickupSpec::$variant(spec) => spec,)*
                }
            }
        }

        impl PickupSpec {
            /// Every pickup type with its keys besides `type`.
            pub const TYPES: &[(&str, &[Key])] = &[$(($name, <$spec as Declared>::KEYS),)*];

            /// Checks the mapping of type `type_name` (see [`Declared::parse`]); the
            /// entry's name is its owner ("client `app`", "defaults"). `None` for a type
            /// not listed (the shape check refused it).
            pub fn parse(type_name: &str, entry: &mut Entry<'_>) -> Option<PickupSpec> {
                match type_name {
                    $($name => Some(PickupSpec::$variant(<$spec>::parse(entry))),)*
                    _ => None,
                }
            }
        }
    };
}

pickups! {
    Grace(GraceSpec) = "grace",
    HttpProbe(HttpProbeSpec) = "http_probe",
    AckFile(AckFileSpec) = "ack_file",
    Command(CommandSpec) = "command",
}

impl Default for PickupSpec {
    /// The grace period alone.
    fn default() -> Self {
        PickupSpec::Grace(GraceSpec)
    }
}

impl PickupSpec {
    /// The longest one check may take (a pass waits for it): a command's run timeout, an
    /// HTTP probe's request timeout (its URLs are asked at once); nothing for the others.
    pub fn check_wait(&self) -> std::time::Duration {
        self.backend().check_wait()
    }

    /// How long after grace the check may stay unconfirmed before `pickup_timeout`
    /// (`None` for `grace`, which is confirmed when grace ends).
    pub fn timeout(&self) -> Option<Duration> {
        self.backend().timeout()
    }
}
