//! The `log` notifier in the policy: no keys; built as a [`LogNotifier`].
//!
//! Not here: writing the events (`notify::log`).

use std::sync::Arc;
use std::time::Duration;

use super::LogNotifier;
use crate::notify::Notifier;
use crate::notify::http::HttpSender;
use crate::notify::registry::Backend;
use crate::notify::spec::HTTP_TIMEOUT;
use crate::schema::{Declared, Entry, Key};

/// Events go to the rotator's own log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogSpec;

impl Declared for LogSpec {
    const KEYS: &'static [Key] = &[];

    fn parse(_entry: &mut Entry<'_>) -> LogSpec {
        LogSpec
    }
}

impl Backend for LogSpec {
    /// A bound the log never comes near.
    fn timeout(&self) -> Duration {
        HTTP_TIMEOUT
    }
}

/// The log notifier `name`.
pub fn build(
    _spec: &LogSpec,
    name: &str,
    _sender: &HttpSender,
) -> Result<Arc<dyn Notifier>, String> {
    Ok(Arc::new(LogNotifier::new(name)))
}
