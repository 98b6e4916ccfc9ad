//! The `teams` notifier in the policy: a [`ChatSpec`] (its keys are the chat
//! notifiers'), built as an HTTP notifier with Teams' body.
//!
//! Not here: the message (`notify::teams`), the keys (`notify::spec`).

use std::sync::Arc;

use crate::notify::Notifier;
use crate::notify::http::{HttpNotifier, HttpSender, Target};
use crate::notify::spec::ChatSpec;

/// The Teams notifier `name`, reading its URL now.
pub fn build(
    spec: &ChatSpec,
    name: &str,
    sender: &HttpSender,
) -> Result<Arc<dyn Notifier>, String> {
    Ok(Arc::new(HttpNotifier::new(
        name,
        Target::read(name, "webhook_url", &spec.url)?,
        None,
        (spec.timeout, spec.retries),
        sender.clone(),
        super::body,
    )))
}
