//! The decision of one pass: a pure function from what was observed and the clock to a
//! [`Plan`]. No I/O here, so every rule can be tested directly.

use std::fmt;

use chrono::{DateTime, Utc};

use super::marker::Marker;
use crate::connect::{ClientSecret, MAX_SECRETS_PER_CLIENT, SecretId};
use crate::policy::Timing;
use crate::store::StoreRecord;

/// Why a secret is to be deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteReason {
    /// A managed secret newer than the published one, left by a pass that died.
    Orphan,
    /// A managed secret that has expired: it no longer works anyway.
    Expired,
    /// An older secret, superseded and past the grace period.
    Superseded,
}

impl fmt::Display for DeleteReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeleteReason::Orphan => "orphan",
            DeleteReason::Expired => "expired",
            DeleteReason::Superseded => "superseded",
        })
    }
}

/// Why a rotation is due.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RotateReason {
    /// `--force`.
    Forced,
    /// The store has no record yet.
    NoRecord,
    /// The store's secret no longer exists in CDS: consumers are broken.
    CurrentMissing(SecretId),
    /// The store's secret has expired in CDS: consumers are broken.
    CurrentExpired(SecretId),
    /// The store's secret was changed to never expire; the rotator only keeps expiring ones.
    CurrentNeverExpires(SecretId),
    /// The store's secret expires within `rotate_before`.
    ExpiresSoon(DateTime<Utc>),
    /// The store's secret was published longer ago than `max_age`.
    TooOld(DateTime<Utc>),
}

impl RotateReason {
    /// Whether the store's current secret is unusable (consumers are broken now).
    pub fn current_invalid(&self) -> bool {
        matches!(
            self,
            RotateReason::CurrentMissing(_) | RotateReason::CurrentExpired(_)
        )
    }
}

impl fmt::Display for RotateReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RotateReason::Forced => write!(f, "forced"),
            RotateReason::NoRecord => write!(f, "the store has no secret yet"),
            RotateReason::CurrentMissing(id) => {
                write!(f, "the store's secret {id} no longer exists in CDS")
            }
            RotateReason::CurrentExpired(id) => write!(f, "the store's secret {id} has expired"),
            RotateReason::CurrentNeverExpires(id) => {
                write!(f, "the store's secret {id} was set to never expire")
            }
            RotateReason::ExpiresSoon(at) => write!(f, "the current secret expires at {at}"),
            RotateReason::TooOld(at) => write!(f, "the current secret was published at {at}"),
        }
    }
}

/// What one pass over one client will do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Orphans and expired managed secrets: deleted first, whatever else happens.
    pub clean_up: Vec<(SecretId, DeleteReason)>,
    /// Superseded secrets past the grace period: deleted once the pickup check confirms.
    pub retire: Vec<SecretId>,
    /// Whether, and why, to rotate.
    pub rotate: Option<RotateReason>,
    /// A rotation is due but the client would still hold the maximum after clean-up.
    pub full: bool,
    /// When a later pass has something to do (a grace period ends, an orphan ripens,
    /// the rotation falls due); `None` when only the schedule matters.
    pub next_check: Option<DateTime<Utc>>,
}

impl Plan {
    /// Whether the plan changes nothing.
    pub fn is_noop(&self) -> bool {
        self.clean_up.is_empty() && self.retire.is_empty() && self.rotate.is_none()
    }
}

/// Decides one pass: `secrets` as CDS lists them, `record` as the store holds it.
pub fn decide(
    secrets: &[ClientSecret],
    record: Option<&StoreRecord>,
    timing: &Timing,
    retire_unmanaged: bool,
    force: bool,
    now: DateTime<Utc>,
) -> Plan {
    let current_id = record.map(|r| r.secret_id);
    let current = current_id.and_then(|id| secrets.iter().find(|s| s.id == id));
    let mut next_check: Option<DateTime<Utc>> = None;
    let mut later = |at: DateTime<Utc>| {
        if at > now {
            next_check = Some(next_check.map_or(at, |n| n.min(at)));
        }
    };

    let mut clean_up = Vec::new();
    let mut retire = Vec::new();
    for s in secrets {
        if Some(s.id) == current_id {
            continue; // I3: the current secret is never deleted.
        }
        let marker = Marker::parse(s.description.as_deref());
        let newer = current_id.is_none_or(|c| s.id > c);
        match &marker {
            Some(_) if s.is_expired(now) => clean_up.push((s.id, DeleteReason::Expired)),
            Some(m) if newer => {
                // Nobody holds the value of a managed secret newer than the published one;
                // wait out orphan_grace in case its create is still in flight.
                let ripe = m.created + timing.orphan_grace;
                if ripe <= now {
                    clean_up.push((s.id, DeleteReason::Orphan));
                } else {
                    later(ripe);
                }
            }
            _ if newer => {} // unmanaged and newer: someone made it by hand after us.
            Some(_) | None => {
                if marker.is_none() && !retire_unmanaged {
                    continue;
                }
                // Older than the current one: superseded; retire after the grace period,
                // and only while the current one works.
                if let (Some(r), Some(c)) = (record, current)
                    && !c.is_expired(now)
                {
                    let grace_end = r.published_at + timing.grace;
                    if grace_end <= now {
                        retire.push(s.id);
                    } else {
                        later(grace_end);
                    }
                }
            }
        }
    }

    let rotate = if force {
        Some(RotateReason::Forced)
    } else {
        match (record, current) {
            (None, _) => Some(RotateReason::NoRecord),
            (Some(r), None) => Some(RotateReason::CurrentMissing(r.secret_id)),
            (Some(r), Some(c)) => match c.expires_at() {
                None => Some(RotateReason::CurrentNeverExpires(c.id)),
                Some(at) if at <= now => Some(RotateReason::CurrentExpired(c.id)),
                Some(at) if at - timing.rotate_before <= now => Some(RotateReason::ExpiresSoon(at)),
                Some(at) => {
                    later(at - timing.rotate_before);
                    match timing.max_age.map(|age| r.published_at + age) {
                        Some(due) if due <= now => Some(RotateReason::TooOld(r.published_at)),
                        Some(due) => {
                            later(due);
                            None
                        }
                        None => None,
                    }
                }
            },
        }
    };

    let remaining = secrets.len() - clean_up.len() - retire.len();
    let full = rotate.is_some() && remaining >= MAX_SECRETS_PER_CLIENT;
    Plan {
        clean_up,
        retire,
        rotate,
        full,
        next_check,
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};

    use super::*;
    use crate::secret::Fingerprint;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 1, 3, 0, 0).unwrap()
    }

    /// 90d lifetime, rotate 30d before expiry, 24h grace, 10m orphan grace.
    fn timing() -> Timing {
        Timing::default()
    }

    fn managed(id: SecretId, created: DateTime<Utc>, expires: DateTime<Utc>) -> ClientSecret {
        ClientSecret {
            id,
            description: Some(
                Marker {
                    created,
                    run: format!("r.{id}"),
                }
                .description(),
            ),
            expiration: Some(expires),
            expires: Some(true),
        }
    }

    fn unmanaged(id: SecretId, expires: DateTime<Utc>) -> ClientSecret {
        ClientSecret {
            id,
            description: Some("by hand".into()),
            expiration: Some(expires),
            expires: Some(true),
        }
    }

    fn record(id: SecretId, published: DateTime<Utc>) -> StoreRecord {
        StoreRecord {
            client_id: "c".into(),
            tenant_id: "t".into(),
            secret_id: id,
            expiration: now() + Duration::days(60),
            published_at: published,
            fingerprint: Fingerprint::of_bytes(b"x"),
        }
    }

    #[test]
    fn rotation_is_skipped_when_not_due() {
        let s = [managed(
            1,
            now() - Duration::days(30),
            now() + Duration::days(60),
        )];
        let plan = decide(
            &s,
            Some(&record(1, now() - Duration::days(30))),
            &timing(),
            false,
            false,
            now(),
        );
        assert!(plan.is_noop(), "{plan:?}");
        assert_eq!(plan.next_check, Some(now() + Duration::days(30)));
    }

    #[test]
    fn rotation_is_due_without_a_record_and_when_expiring_soon() {
        let s = [unmanaged(1, now() + Duration::days(20))];
        let plan = decide(&s, None, &timing(), false, false, now());
        assert_eq!(plan.rotate, Some(RotateReason::NoRecord));
        let s = [managed(
            1,
            now() - Duration::days(70),
            now() + Duration::days(20),
        )];
        let plan = decide(
            &s,
            Some(&record(1, now() - Duration::days(70))),
            &timing(),
            false,
            false,
            now(),
        );
        assert_eq!(
            plan.rotate,
            Some(RotateReason::ExpiresSoon(now() + Duration::days(20)))
        );
    }

    #[test]
    fn a_missing_or_expired_current_secret_is_rotated_and_flagged() {
        let r = record(3, now() - Duration::days(1));
        let plan = decide(&[], Some(&r), &timing(), false, false, now());
        assert_eq!(plan.rotate, Some(RotateReason::CurrentMissing(3)));
        assert!(plan.rotate.unwrap().current_invalid());
        let s = [unmanaged(3, now() - Duration::seconds(1))];
        let plan = decide(&s, Some(&r), &timing(), false, false, now());
        assert_eq!(plan.rotate, Some(RotateReason::CurrentExpired(3)));
    }

    #[test]
    fn max_age_and_force_rotate_a_healthy_secret() {
        let s = [managed(
            1,
            now() - Duration::days(10),
            now() + Duration::days(80),
        )];
        let r = record(1, now() - Duration::days(10));
        let mut t = timing();
        t.max_age = Some(Duration::days(7));
        let plan = decide(&s, Some(&r), &t, false, false, now());
        assert!(matches!(plan.rotate, Some(RotateReason::TooOld(_))));
        let plan = decide(&s, Some(&r), &timing(), false, true, now());
        assert_eq!(plan.rotate, Some(RotateReason::Forced));
    }

    #[test]
    fn orphans_are_managed_newer_than_current_and_older_than_orphan_grace() {
        let r = record(2, now() - Duration::days(1));
        let s = [
            managed(2, now() - Duration::days(1), now() + Duration::days(89)),
            managed(3, now() - Duration::minutes(11), now() + Duration::days(90)),
            managed(4, now() - Duration::minutes(5), now() + Duration::days(90)),
            unmanaged(5, now() + Duration::days(90)),
        ];
        let plan = decide(&s, Some(&r), &timing(), false, false, now());
        assert_eq!(plan.clean_up, vec![(3, DeleteReason::Orphan)]);
        assert_eq!(plan.next_check, Some(now() + Duration::minutes(5)));
    }

    #[test]
    fn superseded_secrets_are_retired_only_after_grace() {
        let s = [
            managed(1, now() - Duration::days(70), now() + Duration::days(20)),
            unmanaged(2, now() + Duration::days(20)),
            managed(3, now() - Duration::hours(2), now() + Duration::days(90)),
        ];
        let r = record(3, now() - Duration::hours(2));
        let plan = decide(&s, Some(&r), &timing(), false, false, now());
        assert!(plan.retire.is_empty());
        assert_eq!(plan.next_check, Some(now() + Duration::hours(22)));
        let later = now() + Duration::hours(22);
        let plan = decide(&s, Some(&r), &timing(), false, false, later);
        assert_eq!(plan.retire, vec![1], "unmanaged 2 is left alone");
        let plan = decide(&s, Some(&r), &timing(), true, false, later);
        assert_eq!(plan.retire, vec![1, 2]);
    }

    #[test]
    fn the_current_secret_is_never_deleted_even_when_expired() {
        let s = [managed(
            1,
            now() - Duration::days(100),
            now() - Duration::days(1),
        )];
        let r = record(1, now() - Duration::days(100));
        let plan = decide(&s, Some(&r), &timing(), true, false, now());
        assert!(plan.clean_up.is_empty() && plan.retire.is_empty());
        assert_eq!(plan.rotate, Some(RotateReason::CurrentExpired(1)));
    }

    #[test]
    fn nothing_is_retired_while_the_current_secret_is_broken() {
        let s = [managed(
            1,
            now() - Duration::days(70),
            now() + Duration::days(20),
        )];
        let r = record(2, now() - Duration::days(3));
        let plan = decide(&s, Some(&r), &timing(), false, false, now());
        assert!(plan.retire.is_empty());
        assert_eq!(plan.rotate, Some(RotateReason::CurrentMissing(2)));
    }

    #[test]
    fn expired_managed_secrets_make_room_and_a_full_client_is_flagged() {
        let mut s: Vec<_> = (1..=9)
            .map(|i| unmanaged(i, now() + Duration::days(5)))
            .collect();
        s.push(managed(
            10,
            now() - Duration::days(100),
            now() - Duration::days(1),
        ));
        let plan = decide(&s, None, &timing(), false, false, now());
        assert_eq!(plan.clean_up, vec![(10, DeleteReason::Expired)]);
        assert!(!plan.full);
        s[9] = unmanaged(10, now() + Duration::days(5));
        let plan = decide(&s, None, &timing(), false, false, now());
        assert!(plan.full);
    }
}
