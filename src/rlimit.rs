//! The process's file-descriptor limit: raised once at start, read by whoever sizes a
//! pool of descriptors (the health server's connection cap).
//!
//! The default soft `RLIMIT_NOFILE` is 1,024 while the hard limit is usually far higher;
//! every lock, store file, audit append and HTTPS connection of a pass needs a
//! descriptor, so the soft limit is raised to the hard one before any work. Not here: who
//! uses the descriptors (each user keeps its own share bounded).

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// What a limit of "unlimited" counts as when sizing something from it.
const UNLIMITED: u64 = 1 << 20;

/// Raises the soft limit on open files to the hard limit and returns the soft limit now
/// in effect (best effort: when the raise is refused, the limit as it was).
pub fn raise_nofile() -> u64 {
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::debug!(error = %e, "cannot raise the soft limit on open files");
        }
    }
    nofile()
}

/// The soft limit on open files now in effect.
pub fn nofile() -> u64 {
    getrlimit(Resource::Nofile).current.unwrap_or(UNLIMITED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_limit() {
        let before = getrlimit(Resource::Nofile);
        let lowered = Rlimit {
            current: Some(before.maximum.unwrap_or(UNLIMITED).min(512)),
            maximum: before.maximum,
        };
        setrlimit(Resource::Nofile, lowered).expect("lowering the soft limit");
        let now = raise_nofile();
        assert_eq!(Some(now), before.maximum.or(Some(UNLIMITED)));
        assert_eq!(getrlimit(Resource::Nofile).current, before.maximum);
    }
}
