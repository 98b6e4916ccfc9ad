//! What a failure means, decided apart from the steps that fail (as kube-rs's
//! `Controller` takes an `error_policy` beside its reconciler): whether a failed pass
//! gave way to a stop or failed the client (and when it is tried again), what becomes
//! of a new secret whose publish the store refused, and which failures count as a
//! failed rotation. Pure, like [`super::decide`].
//!
//! Not here: undoing a new secret that nobody holds (the typestate in
//! [`super::new_secret`] says which can be undone; the reconciler does it), and the
//! wording of errors (`StepError`).

use chrono::Duration;

use super::{Step, StepError};
use crate::connect::ConnectError;
use crate::policy::Timing;
use crate::store::StoreError;

/// What a failed pass over one client means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnError {
    /// The pass gave way to a stop (SIGTERM, SIGINT) with nothing left to clean up: it
    /// is reported as stopped, not as a failure, and nobody is paged for a restart.
    GaveWay,
    /// The client's pass failed: it is logged, announced (`rotation_failed`), recorded,
    /// and the client is looked at again after `retry_after`.
    Failed {
        /// The policy's `retry_interval`.
        retry_after: Duration,
    },
}

/// The error policy: what `error` at the end of a pass means, `stopping` or not.
pub fn error_policy(error: &StepError, stopping: bool, timing: &Timing) -> OnError {
    if stopping && gave_way(error) {
        OnError::GaveWay
    } else {
        OnError::Failed {
            retry_after: timing.retry_interval,
        }
    }
}

/// Whether `error` is the pass giving way to a stop, with nothing left to clean up. It
/// stays a failure when undoing an unpublished secret failed too.
fn gave_way(error: &StepError) -> bool {
    match error {
        StepError::Interrupted => true,
        StepError::Stopped { cleanup, .. } => cleanup.is_empty(),
        // A request cut short or abandoned because of the stop: nothing was changed
        // that the next pass does not finish (a create in doubt is found by its
        // marker and cleaned up as an orphan).
        StepError::Connect(
            ConnectError::Stopped { .. }
            | ConnectError::Transport { .. }
            | ConnectError::OutcomeUnknown { .. },
        ) => true,
        _ => false,
    }
}

/// What becomes of a verified new secret whose publish the store refused with nothing
/// written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The lease was lost (refused by it, or no longer surely held): no delete may be
    /// sent either; the leader deletes it as an orphan.
    LeaveToLeader,
    /// Delete it again: nobody holds it, and the store is as it was.
    Undo,
}

/// The rule for a refused publish: `source` as the store said, `fenced` whether a
/// write may still be sent.
pub fn refused_publish(source: &StoreError, fenced: bool) -> Refused {
    if matches!(source, StoreError::LeaseLost { .. }) || !fenced {
        Refused::LeaveToLeader
    } else {
        Refused::Undo
    }
}

/// Whether a failure at `step` is a failed rotation (the rotations metric): one that
/// was due and did not happen, as opposed to a pass that could not look or clean up.
pub fn is_rotation_failure(step: Step) -> bool {
    matches!(
        step,
        Step::MakeRoom | Step::Create | Step::Verify | Step::Publish | Step::SelfCheck
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_that_left_nothing_to_clean_up_is_not_a_failure() {
        let timing = Timing::default();
        assert_eq!(
            error_policy(&StepError::Interrupted, true, &timing),
            OnError::GaveWay
        );
        let undone = StepError::Stopped {
            secret_id: 3,
            cleanup: String::new(),
        };
        assert_eq!(error_policy(&undone, true, &timing), OnError::GaveWay);
        let failed = OnError::Failed {
            retry_after: timing.retry_interval,
        };
        assert_eq!(error_policy(&undone, false, &timing), failed);
        let left = StepError::Stopped {
            secret_id: 3,
            cleanup: " (deleting it failed)".into(),
        };
        assert_eq!(error_policy(&left, true, &timing), failed);
        assert_eq!(error_policy(&StepError::LeaseLost, true, &timing), failed);
    }

    #[test]
    fn a_refused_publish_is_undone_unless_the_lease_is_lost() {
        let lost = StoreError::LeaseLost {
            location: "file".into(),
        };
        assert_eq!(refused_publish(&lost, true), Refused::LeaveToLeader);
        let io = StoreError::Io {
            store: "files".into(),
            operation: "write",
            location: "file".into(),
            detail: "disk full".into(),
        };
        assert_eq!(refused_publish(&io, true), Refused::Undo);
        assert_eq!(refused_publish(&io, false), Refused::LeaveToLeader);
        assert!(!is_rotation_failure(Step::Observe));
        assert!(is_rotation_failure(Step::MakeRoom));
    }
}
