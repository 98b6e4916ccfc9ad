//! The decision of one pass: pure functions from what was observed and the clock to a
//! [`Plan`] and what follows from it: the managed/unmanaged split ([`managed`]), the
//! rotation window, clean-up, retire and its pickup gating ([`Plan::after_pickup`]),
//! making room ([`Room`]), the revoke rule ([`revoke`]), the "record missing" warning
//! ([`record_missing`]) and the next check ([`earliest`]). No I/O here, so every rule
//! can be tested directly, and `plan`, `status` and the pass decide alike.
//!
//! Not here: asking CDS, the store or the pickup check (the reconciler observes and
//! acts), and the wording of messages.

use std::fmt;

use chrono::{DateTime, Duration, Utc};

use super::marker::Marker;
use crate::connect::{ClientSecret, MAX_SECRETS_PER_CLIENT};
use crate::domain::Schedule;
use crate::domain::{SecretId, StoreRecord};
use crate::policy::Timing;
use crate::store::LateWrite;

/// Why a secret is to be deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteReason {
    /// A managed secret newer than the published one, left by a pass that died.
    Orphan,
    /// A managed secret that has expired: it no longer works anyway.
    Expired,
    /// An older secret, superseded and past the grace period.
    Superseded,
    /// Any other secret, deleted at once after an emergency rotation (`--revoke-old`).
    Revoked,
}

impl fmt::Display for DeleteReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeleteReason::Orphan => "orphan",
            DeleteReason::Expired => "expired",
            DeleteReason::Superseded => "superseded",
            DeleteReason::Revoked => "revoked",
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
    /// The store's secret was published (at this time) longer ago than `max_age` (this
    /// long).
    TooOld(DateTime<Utc>, Duration),
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
            RotateReason::TooOld(at, max_age) => write!(
                f,
                "the current secret was published at {at}, more than max_age ({}) ago",
                crate::policy::duration::format(*max_age)
            ),
        }
    }
}

/// Whether a pass runs inside the client's rotation window.
///
/// Operators use the schedule as the rotation window (change control): a due rotation
/// waits for the next scheduled time, unless waiting would be unsafe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    /// A scheduled time, `--run-now` or a retry after a failed rotation: a due rotation
    /// happens now.
    Open,
    /// Between windows (the daemon's start pass, a follow-up): a due rotation waits for
    /// `next` unless the store's secret is missing, expired, never expiring, or would
    /// expire before `next` + `verify_timeout`.
    Closed {
        /// The next scheduled time; `None` if the schedule never fires again.
        next: Option<DateTime<Utc>>,
    },
}

impl Window {
    /// The window of a pass: open when it runs `in_window`, else closed until the
    /// schedule's next time after `now`.
    pub fn of(in_window: bool, schedule: &Schedule, now: DateTime<Utc>) -> Window {
        if in_window {
            Window::Open
        } else {
            Window::Closed {
                next: schedule.next_after(now),
            }
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
    /// Superseded secrets still inside the grace period, and when it ends.
    pub retire_later: (Vec<SecretId>, Option<DateTime<Utc>>),
    /// Orphans still inside `orphan_grace` (their create may be in flight), or inside
    /// the time the store lets a lost write of their publish land.
    pub orphans_later: Vec<SecretId>,
    /// Managed secrets created after the current one was published whose publish may
    /// still land ([`LateWrite`]: at any time, or within the clock-skew margin of the
    /// publish and not yet past the store's bound): kept, and superseded by the next
    /// publish (or, within the margin, once the bound has passed).
    pub in_doubt: Vec<SecretId>,
    /// Unexpired managed secrets that nothing proves unused: the store has no record, so
    /// any of them may be what consumers hold. Kept; superseded after the next publish.
    pub possibly_in_use: Vec<SecretId>,
    /// Secrets the rotator did not create and will not retire that expire within
    /// `rotate_before`, or never: whoever uses them should know (the vendor says every
    /// secret should expire).
    pub expiring_unmanaged: Vec<SecretId>,
    /// Whether, and why, to rotate.
    pub rotate: Option<RotateReason>,
    /// A rotation that is due but waits for the rotation window at the given time.
    pub deferred: Option<(RotateReason, DateTime<Utc>)>,
    /// A rotation is due but the client would still hold the maximum after clean-up
    /// (and after `retire`, if the pickup check has not answered yet: see [`Room`]).
    pub full: bool,
    /// Whether a due rotation has room for its new secret: what make_room follows.
    pub room: Room,
    /// The pickup check did not confirm the current secret: `retire` waits, and frees
    /// no room in this pass (see [`Plan::after_pickup`]).
    pub retire_held: bool,
    /// When a later pass has something to do (a grace period ends, an orphan ripens,
    /// the rotation falls due); `None` when only the schedule matters.
    pub next_check: Option<DateTime<Utc>>,
}

impl Plan {
    /// Whether the plan changes nothing.
    pub fn is_noop(&self) -> bool {
        self.clean_up.is_empty() && self.retire.is_empty() && self.rotate.is_none()
    }

    /// The plan once the pickup check answered about the current secret (pickup gating):
    /// unconfirmed, `retire` waits for a later pass, so a rotation that needed the room
    /// it frees is full now. `plan`, `status` and the pass all go through here, so what
    /// they say about room is what make_room does.
    pub fn after_pickup(mut self, confirmed: bool) -> Plan {
        self.retire_held = !confirmed && !self.retire.is_empty();
        if self.room == Room::OnceRetired {
            self.room = if confirmed { Room::Free } else { Room::Full };
        }
        self.full = self.room == Room::Full;
        self
    }

    /// The superseded secrets this pass deletes now: none while the pickup check holds
    /// them.
    pub fn retire_now(&self) -> &[SecretId] {
        if self.retire_held { &[] } else { &self.retire }
    }

    /// Whether make_room lets the rotation go on: only with room for certain (a retire
    /// the pickup check was not asked about frees nothing).
    pub fn has_room(&self) -> bool {
        self.room == Room::Free
    }

    /// The secrets of `secrets` (as observed) that are left once the pass did what the
    /// plan says: cleaned up, and retired unless the pickup check holds them.
    pub fn remaining<'a>(&self, secrets: &'a [ClientSecret]) -> Vec<&'a ClientSecret> {
        secrets
            .iter()
            .filter(|s| !self.clean_up.iter().any(|(id, _)| *id == s.id))
            .filter(|s| !self.retire_now().contains(&s.id))
            .collect()
    }
}

/// Whether a due rotation has room for its new secret (I5: never past
/// [`MAX_SECRETS_PER_CLIENT`]). Clean-up always happens before make_room (or the pass
/// ends); `retire` only once the pickup check confirms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Room {
    /// No rotation is due, or the new secret fits once `clean_up` is done.
    Free,
    /// It fits only once `retire` is done too: known after the pickup check answers
    /// ([`Plan::after_pickup`]).
    OnceRetired,
    /// It does not fit: the rotation fails at make_room with the client's listing.
    Full,
}

/// The room a rotation has: `secrets` observed, `clean_up` and `retire` planned.
fn room(rotate: bool, secrets: usize, clean_up: usize, retire: usize) -> Room {
    let after_clean_up = secrets.saturating_sub(clean_up);
    if !rotate || after_clean_up < MAX_SECRETS_PER_CLIENT {
        Room::Free
    } else if after_clean_up.saturating_sub(retire) < MAX_SECRETS_PER_CLIENT {
        Room::OnceRetired
    } else {
        Room::Full
    }
}

/// How far apart the clocks of two rotators (or of one rotator before and after a
/// correction) may be. A managed secret counts as created after the store's current one
/// was published only when its marker is later by more than this, so a skewed clock
/// can never turn a secret consumers hold into an "orphan".
pub const CLOCK_SKEW_MARGIN: Duration = Duration::minutes(5);

/// Until when a lost write of the publish of a secret created at `m.created` can land.
enum Landing {
    /// It cannot: the store's writer is this process.
    Over,
    /// Until then (`None`: past the end of time).
    Until(Option<DateTime<Utc>>),
    /// At any time.
    Unbounded,
}

/// When a lost write of the publish of the secret marked `m` stops being able to land:
/// its publish began at most `verify_timeout` after the create.
fn late_write_ends(m: &Marker, timing: &Timing, late_write: LateWrite) -> Landing {
    match late_write {
        LateWrite::Never => Landing::Over,
        LateWrite::Within(late) => Landing::Until(
            plus(m.created, timing.verify_timeout).and_then(|begun| plus(begun, late)),
        ),
        LateWrite::Unbounded => Landing::Unbounded,
    }
}

/// `t + d`, or `None` past the end of time (never a panic).
fn plus(t: DateTime<Utc>, d: Duration) -> Option<DateTime<Utc>> {
    t.checked_add_signed(d)
}

/// Decides one pass: `secrets` as CDS lists them, `record` as the store holds it, and
/// `late_write` how late the store may still apply a publish whose answer was lost.
///
/// Secret ids are used for identity only, never for age: CDS documents them as int32
/// and promises no order (a deleted id may come back). Age comes from what the rotator
/// wrote itself: the creation time in a managed secret's marker, and the time the
/// store's record was published.
// Each input is a plain value that a test spells out; a struct would only hide them.
#[allow(clippy::too_many_arguments)]
pub fn decide(
    secrets: &[ClientSecret],
    record: Option<&StoreRecord>,
    timing: &Timing,
    late_write: LateWrite,
    retire_unmanaged: bool,
    force: bool,
    window: Window,
    now: DateTime<Utc>,
) -> Plan {
    let current = record.and_then(|r| secrets.iter().find(|s| is_recorded_secret(s, r)));
    let current_works = current.is_some_and(|c| !c.is_expired(now));
    let mut later = Later { now, at: None };
    let sorted = sort(
        secrets,
        record,
        current.map(|c| c.id),
        timing,
        late_write,
        retire_unmanaged,
        now,
        &mut later,
    );
    // Old secrets may go once consumers had `grace` to switch to the current one.
    let grace_end = record.and_then(|r| plus(r.published_at, timing.grace));
    let grace_over = current_works && grace_end.is_some_and(|end| end <= now);
    // Only while the current secret works: retiring the others then would leave none.
    let superseded = sorted.superseded;
    let (retire, retire_later) = match (superseded.is_empty(), current_works, grace_over) {
        (false, true, true) => (superseded, (Vec::new(), None)),
        (false, true, false) => {
            later.at(grace_end);
            (Vec::new(), (superseded, grace_end))
        }
        _ => (Vec::new(), (superseded, None)),
    };
    let mut rotate = if force {
        Some(RotateReason::Forced)
    } else {
        due(record, current, timing, now, &mut later)
    };
    // Outside the window only what cannot wait happens now.
    let deferred = match (&rotate, window) {
        (Some(reason), Window::Closed { next: Some(next) })
            if can_wait(reason, current, next, timing) =>
        {
            rotate.take().map(|r| (r, next))
        }
        _ => None,
    };
    let room = room(
        rotate.is_some(),
        secrets.len(),
        sorted.clean_up.len(),
        retire.len(),
    );
    Plan {
        clean_up: sorted.clean_up,
        retire,
        retire_later,
        orphans_later: sorted.orphans_later,
        in_doubt: sorted.in_doubt,
        possibly_in_use: sorted.possibly_in_use,
        expiring_unmanaged: sorted.expiring_unmanaged,
        rotate,
        deferred,
        full: room == Room::Full,
        room,
        retire_held: false,
        next_check: later.at,
    }
}

/// When a later pass has something to do: the earliest time after `now` asked for.
struct Later {
    now: DateTime<Utc>,
    at: Option<DateTime<Utc>>,
}

impl Later {
    /// Asks for a pass at `at`, if that is after now.
    fn at(&mut self, at: Option<DateTime<Utc>>) {
        self.at = earliest(self.at, at.filter(|at| *at > self.now));
    }
}

/// The secrets other than the current one, by what becomes of them.
#[derive(Default)]
struct Sorted {
    clean_up: Vec<(SecretId, DeleteReason)>,
    superseded: Vec<SecretId>,
    possibly_in_use: Vec<SecretId>,
    orphans_later: Vec<SecretId>,
    in_doubt: Vec<SecretId>,
    expiring_unmanaged: Vec<SecretId>,
}

/// Sorts every secret but the current one (`current_id`, never deleted: I3).
#[allow(clippy::too_many_arguments)]
fn sort(
    secrets: &[ClientSecret],
    record: Option<&StoreRecord>,
    current_id: Option<SecretId>,
    timing: &Timing,
    late_write: LateWrite,
    retire_unmanaged: bool,
    now: DateTime<Utc>,
    later: &mut Later,
) -> Sorted {
    let mut out = Sorted::default();
    let warn_from = plus(now, timing.rotate_before);
    for s in secrets {
        if Some(s.id) == current_id {
            continue; // I3: the current secret is never deleted.
        }
        match (managed(s), record) {
            (Some(_), _) if s.is_expired(now) => out.clean_up.push((s.id, DeleteReason::Expired)),
            // No record: nothing proves that nobody holds this value.
            (Some(_), None) => out.possibly_in_use.push(s.id),
            (Some(m), Some(r))
                if plus(r.published_at, CLOCK_SKEW_MARGIN)
                    .is_some_and(|published| m.created > published) =>
            {
                // Created after the current secret was published, by a pass that did not
                // publish it: nobody was handed its value, unless its publish is in doubt
                // and may still land. Wait out orphan_grace in case its create is still
                // in flight, and as long as the store lets a lost write land late.
                let ripe = match late_write_ends(&m, timing, late_write) {
                    Landing::Over => plus(m.created, timing.orphan_grace),
                    Landing::Until(end) => plus(m.created, timing.orphan_grace)
                        .zip(end)
                        .map(|(a, b)| a.max(b)),
                    Landing::Unbounded => {
                        out.in_doubt.push(s.id);
                        continue;
                    }
                };
                if ripe.is_some_and(|ripe| ripe <= now) {
                    out.clean_up.push((s.id, DeleteReason::Orphan));
                } else {
                    out.orphans_later.push(s.id);
                    later.at(ripe);
                }
            }
            // Created after the publish by its marker, but within the clock-skew margin:
            // superseded if the clocks disagreed, or newer and its publish in doubt. It is
            // retired as superseded only once a late write of it can no longer land.
            (Some(m), Some(r)) if m.created > r.published_at => {
                match late_write_ends(&m, timing, late_write) {
                    Landing::Over => out.superseded.push(s.id),
                    Landing::Until(end) if end.is_some_and(|end| end <= now) => {
                        out.superseded.push(s.id);
                    }
                    Landing::Until(end) => {
                        out.in_doubt.push(s.id);
                        later.at(end);
                    }
                    Landing::Unbounded => out.in_doubt.push(s.id),
                }
            }
            // Created before the current secret was published: superseded.
            (Some(_), Some(_)) => out.superseded.push(s.id),
            // Unmanaged: no marker, so no age. With retire_unmanaged the rotator owns the
            // client: every other secret goes once the current one is past its grace.
            (None, Some(_)) if retire_unmanaged => out.superseded.push(s.id),
            (None, _) => {
                if s.expires_at()
                    .is_none_or(|at| warn_from.is_none_or(|w| at <= w))
                {
                    out.expiring_unmanaged.push(s.id);
                }
            }
        }
    }
    out
}

/// Whether, and why, a rotation is due (not forced): from the store's record and the
/// secret it names (`current`, if CDS still lists it).
fn due(
    record: Option<&StoreRecord>,
    current: Option<&ClientSecret>,
    timing: &Timing,
    now: DateTime<Utc>,
    later: &mut Later,
) -> Option<RotateReason> {
    let (r, c) = match (record, current) {
        (None, _) => return Some(RotateReason::NoRecord),
        (Some(r), None) => return Some(RotateReason::CurrentMissing(r.secret_id)),
        (Some(r), Some(c)) => (r, c),
    };
    let at = match c.expires_at() {
        None => return Some(RotateReason::CurrentNeverExpires(c.id)),
        Some(at) if at <= now => return Some(RotateReason::CurrentExpired(c.id)),
        Some(at) => at,
    };
    let due = at.checked_sub_signed(timing.rotate_before);
    if due.is_none_or(|due| due <= now) {
        return Some(RotateReason::ExpiresSoon(at));
    }
    later.at(due);
    match timing.max_age.map(|age| (age, plus(r.published_at, age))) {
        Some((age, Some(due))) if due <= now => Some(RotateReason::TooOld(r.published_at, age)),
        Some((_, due)) => {
            later.at(due);
            None
        }
        None => None,
    }
}

/// Whether a rotation due for `reason` can wait for the window at `next`: only one
/// that is due by age, while the current secret outlives `next` + `verify_timeout`.
fn can_wait(
    reason: &RotateReason,
    current: Option<&ClientSecret>,
    next: DateTime<Utc>,
    timing: &Timing,
) -> bool {
    let expires = current.and_then(ClientSecret::expires_at);
    let safe_until = plus(next, timing.verify_timeout);
    match reason {
        RotateReason::ExpiresSoon(_) | RotateReason::TooOld(..) => {
            matches!((expires, safe_until), (Some(e), Some(s)) if e > s)
        }
        _ => false,
    }
}

/// How long a watched pickup check (the ack file) waits for its own wake-up before the
/// daemon looks again anyway.
pub const PICKUP_FALLBACK: Duration = Duration::hours(6);

/// The follow-up while a pickup check has not confirmed the current secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PickupWait {
    /// When to ask the check again.
    pub next_check: Option<DateTime<Utc>>,
    /// When an unconfirmed pickup becomes overdue: `published_at + grace + timeout`
    /// (the timeout counts from the end of grace; `None` without a timeout).
    pub deadline: Option<DateTime<Utc>>,
    /// Whether `now` is past the deadline (`pickup_timeout`; nothing is retired).
    pub overdue: bool,
}

/// What to do while the pickup of `record` is pending: ask again after `interval` (a
/// check that wakes the daemon itself has none: then at its deadline, or after
/// [`PICKUP_FALLBACK`]). Past the deadline the old secrets are still kept: an overdue
/// pickup is reported, never taken as confirmed.
pub fn pickup_wait(
    record: &StoreRecord,
    grace: Duration,
    timeout: Option<Duration>,
    interval: Option<Duration>,
    now: DateTime<Utc>,
) -> PickupWait {
    let deadline = timeout.and_then(|t| plus(record.published_at, grace).and_then(|g| plus(g, t)));
    let overdue = deadline.is_some_and(|d| now > d);
    let next_check = match interval {
        Some(i) => plus(now, i.max(Duration::seconds(1))),
        None => {
            let fallback = plus(now, PICKUP_FALLBACK);
            match deadline.filter(|d| *d >= now) {
                // Just after the deadline, to report it.
                Some(d) => plus(d, Duration::seconds(1)).min(fallback).or(fallback),
                None => fallback,
            }
        }
    };
    PickupWait {
        next_check,
        deadline,
        overdue,
    }
}

/// The managed/unmanaged split, the one every part of the rotator uses: a secret the
/// rotator created carries its marker (when it was created, by which run); any other
/// is unmanaged (`None`).
pub fn managed(s: &ClientSecret) -> Option<Marker> {
    Marker::parse(s.description.as_deref())
}

/// Whether the rotator created `s` (see [`managed`]).
pub fn is_managed(s: &ClientSecret) -> bool {
    managed(s).is_some()
}

/// Whether the store lost track of what consumers hold: it has no record, and either
/// holds a value without one (`unrecorded`) or managed secrets may be in use (`plan`
/// says which; `None` when the client could not be planned).
pub fn record_missing(record: Option<&StoreRecord>, unrecorded: bool, plan: Option<&Plan>) -> bool {
    record.is_none() && (unrecorded || plan.is_some_and(|p| !p.possibly_in_use.is_empty()))
}

/// The next check: the earlier of the one set so far and `at` (either may be none).
pub fn earliest(
    next_check: Option<DateTime<Utc>>,
    at: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    match (next_check, at) {
        (Some(n), Some(at)) => Some(n.min(at)),
        (n, at) => n.or(at),
    }
}

/// What an emergency rotation (`--revoke-old`) does with a secret other than the new one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Revoke<'a> {
    /// The policy lets the rotator delete it: it goes now.
    Delete(SecretId),
    /// Unmanaged with `retire_unmanaged: false`, and unexpired: it still gets tokens.
    LeaveValid(&'a ClientSecret),
}

/// The revoke rule: for each of `secrets` (listed after the publish) but `current`, in
/// their order, whether it is deleted now or left valid (an expired unmanaged one is
/// neither: it no longer works and is not the rotator's).
pub fn revoke(
    secrets: &[ClientSecret],
    current: SecretId,
    retire_unmanaged: bool,
    now: DateTime<Utc>,
) -> Vec<Revoke<'_>> {
    secrets
        .iter()
        .filter(|s| s.id != current)
        .filter_map(|s| {
            if is_managed(s) || retire_unmanaged {
                Some(Revoke::Delete(s.id))
            } else {
                (!s.is_expired(now)).then_some(Revoke::LeaveValid(s))
            }
        })
        .collect()
}

/// Whether `s` is the secret the store's record names: the same id and, for a managed
/// secret, created no later than the record was published (an id that CDS handed out
/// again after the recorded secret was deleted belongs to a newer secret).
fn is_recorded_secret(s: &ClientSecret, r: &StoreRecord) -> bool {
    s.id == r.secret_id
        && managed(s).is_none_or(|m| {
            plus(r.published_at, CLOCK_SKEW_MARGIN).is_none_or(|published| m.created <= published)
        })
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};

    use super::*;
    use crate::domain::Fingerprint;

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
            LateWrite::Never,
            false,
            false,
            Window::Open,
            now(),
        );
        assert!(plan.is_noop(), "{plan:?}");
        assert_eq!(plan.next_check, Some(now() + Duration::days(30)));
    }

    #[test]
    fn rotation_is_due_without_a_record_and_when_expiring_soon() {
        let s = [unmanaged(1, now() + Duration::days(20))];
        let plan = decide(
            &s,
            None,
            &timing(),
            LateWrite::Never,
            false,
            false,
            Window::Open,
            now(),
        );
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
            LateWrite::Never,
            false,
            false,
            Window::Open,
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
        let plan = decide(
            &[],
            Some(&r),
            &timing(),
            LateWrite::Never,
            false,
            false,
            Window::Open,
            now(),
        );
        assert_eq!(plan.rotate, Some(RotateReason::CurrentMissing(3)));
        assert!(plan.rotate.unwrap().current_invalid());
        let s = [unmanaged(3, now() - Duration::seconds(1))];
        let plan = decide(
            &s,
            Some(&r),
            &timing(),
            LateWrite::Never,
            false,
            false,
            Window::Open,
            now(),
        );
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
        let plan = decide(
            &s,
            Some(&r),
            &t,
            LateWrite::Never,
            false,
            false,
            Window::Open,
            now(),
        );
        assert_eq!(
            plan.rotate,
            Some(RotateReason::TooOld(r.published_at, Duration::days(7)))
        );
        let reason = plan.rotate.map(|r| r.to_string()).unwrap_or_default();
        assert!(reason.ends_with(", more than max_age (7d) ago"), "{reason}");
        let plan = decide(
            &s,
            Some(&r),
            &timing(),
            LateWrite::Never,
            false,
            true,
            Window::Open,
            now(),
        );
        assert_eq!(plan.rotate, Some(RotateReason::Forced));
    }

    /// A pass over secret 2 (published a day ago) and managed secret 3, created
    /// `created_ago` before now by a pass that did not publish it.
    fn unpublished_newer_secret(created_ago: Duration, late_write: LateWrite) -> Plan {
        let r = record(2, now() - Duration::days(1));
        let s = [
            managed(2, now() - Duration::days(1), now() + Duration::days(89)),
            managed(3, now() - created_ago, now() + Duration::days(90)),
        ];
        decide(
            &s,
            Some(&r),
            &timing(),
            late_write,
            false,
            false,
            Window::Open,
            now(),
        )
    }

    #[test]
    fn a_secret_whose_publish_may_land_at_any_time_is_never_an_orphan() {
        let plan = unpublished_newer_secret(Duration::hours(20), LateWrite::Unbounded);
        assert!(plan.clean_up.is_empty(), "{plan:?}");
        assert_eq!(plan.in_doubt, vec![3]);
        assert!(plan.orphans_later.is_empty());
        assert!(plan.is_noop(), "{plan:?}");
    }

    #[test]
    fn an_orphan_waits_until_a_late_write_of_its_publish_can_no_longer_land() {
        let late = LateWrite::Within(Duration::minutes(30));
        // Past orphan_grace (10m), but verify_timeout (2m) + 30m have not passed.
        let plan = unpublished_newer_secret(Duration::minutes(20), late);
        assert!(plan.clean_up.is_empty(), "{plan:?}");
        assert_eq!(plan.orphans_later, vec![3]);
        assert_eq!(plan.next_check, Some(now() + Duration::minutes(12)));
        let plan = unpublished_newer_secret(Duration::minutes(32), late);
        assert_eq!(plan.clean_up, vec![(3, DeleteReason::Orphan)]);
        // A store whose writes cannot land late: orphan_grace alone.
        let plan = unpublished_newer_secret(Duration::minutes(11), LateWrite::Never);
        assert_eq!(plan.clean_up, vec![(3, DeleteReason::Orphan)]);
    }

    #[test]
    fn a_secret_in_doubt_is_retired_as_superseded_after_the_next_publish_and_its_grace() {
        // Secret 3's publish was in doubt; secret 4 was published after it, 25h ago.
        let r = record(4, now() - Duration::hours(25));
        let s = [
            managed(3, now() - Duration::hours(26), now() + Duration::days(89)),
            managed(4, now() - Duration::hours(25), now() + Duration::days(89)),
        ];
        let plan = decide(
            &s,
            Some(&r),
            &timing(),
            LateWrite::Unbounded,
            false,
            false,
            Window::Open,
            now(),
        );
        assert_eq!(plan.retire, vec![3]);
        assert!(plan.in_doubt.is_empty());
        assert!(plan.clean_up.is_empty());
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
        let plan = decide(
            &s,
            Some(&r),
            &timing(),
            LateWrite::Never,
            false,
            false,
            Window::Open,
            now(),
        );
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
        let plan = decide(
            &s,
            Some(&r),
            &timing(),
            LateWrite::Never,
            false,
            false,
            Window::Open,
            now(),
        );
        assert!(plan.retire.is_empty());
        assert_eq!(plan.next_check, Some(now() + Duration::hours(22)));
        let later = now() + Duration::hours(22);
        let plan = decide(
            &s,
            Some(&r),
            &timing(),
            LateWrite::Never,
            false,
            false,
            Window::Open,
            later,
        );
        assert_eq!(plan.retire, vec![1], "unmanaged 2 is left alone");
        let plan = decide(
            &s,
            Some(&r),
            &timing(),
            LateWrite::Never,
            true,
            false,
            Window::Open,
            later,
        );
        assert_eq!(plan.retire, vec![1, 2]);
    }

    #[test]
    fn unmanaged_secrets_expiring_soon_or_never_are_flagged_unless_retired() {
        let never = ClientSecret {
            id: 4,
            description: None,
            expiration: None,
            expires: Some(false),
        };
        let s = [
            unmanaged(1, now() + Duration::days(20)),
            unmanaged(2, now() + Duration::days(200)),
            managed(3, now() - Duration::hours(2), now() + Duration::days(20)),
            never,
        ];
        let r = record(3, now() - Duration::hours(2));
        let plan = decide(
            &s,
            Some(&r),
            &timing(),
            LateWrite::Never,
            false,
            false,
            Window::Open,
            now(),
        );
        assert_eq!(
            plan.expiring_unmanaged,
            vec![1, 4],
            "managed 3 is the rotator's own"
        );
        let plan = decide(
            &s,
            Some(&r),
            &timing(),
            LateWrite::Never,
            true,
            false,
            Window::Open,
            now(),
        );
        assert!(
            plan.expiring_unmanaged.is_empty(),
            "handed over: retired after grace"
        );
        let plan = decide(
            &s,
            None,
            &timing(),
            LateWrite::Never,
            false,
            false,
            Window::Open,
            now(),
        );
        assert_eq!(plan.expiring_unmanaged, vec![1, 4]);
    }

    #[test]
    fn the_current_secret_is_never_deleted_even_when_expired() {
        let s = [managed(
            1,
            now() - Duration::days(100),
            now() - Duration::days(1),
        )];
        let r = record(1, now() - Duration::days(100));
        let plan = decide(
            &s,
            Some(&r),
            &timing(),
            LateWrite::Never,
            true,
            false,
            Window::Open,
            now(),
        );
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
        let plan = decide(
            &s,
            Some(&r),
            &timing(),
            LateWrite::Never,
            false,
            false,
            Window::Open,
            now(),
        );
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
        let plan = decide(
            &s,
            None,
            &timing(),
            LateWrite::Never,
            false,
            false,
            Window::Open,
            now(),
        );
        assert_eq!(plan.clean_up, vec![(10, DeleteReason::Expired)]);
        assert!(!plan.full);
        s[9] = unmanaged(10, now() + Duration::days(5));
        let plan = decide(
            &s,
            None,
            &timing(),
            LateWrite::Never,
            false,
            false,
            Window::Open,
            now(),
        );
        assert!(plan.full);
    }

    #[test]
    fn ids_say_nothing_about_age_a_lower_id_inside_grace_is_kept() {
        // CDS handed out a lower id to the newer secret (lowest free id after a delete).
        let published = now() - Duration::hours(1);
        let s = [
            managed(1, published, now() + Duration::days(90)),
            managed(5, now() - Duration::days(60), now() + Duration::days(30)),
        ];
        let r = record(1, published);
        let plan = decide(
            &s,
            Some(&r),
            &timing(),
            LateWrite::Never,
            false,
            false,
            Window::Open,
            now(),
        );
        assert!(plan.clean_up.is_empty(), "{plan:?}");
        assert!(plan.retire.is_empty(), "{plan:?}");
        assert_eq!(plan.next_check, Some(published + Duration::hours(24)));
        let plan = decide(
            &s,
            Some(&r),
            &timing(),
            LateWrite::Never,
            false,
            false,
            Window::Open,
            published + Duration::hours(24),
        );
        assert_eq!(plan.retire, vec![5]);
        assert!(plan.clean_up.is_empty());
    }

    #[test]
    fn an_orphan_with_a_lower_id_than_the_current_is_still_an_orphan() {
        let published = now() - Duration::days(2);
        let s = [
            managed(2, now() - Duration::hours(1), now() + Duration::days(90)),
            managed(7, published, now() + Duration::days(88)),
        ];
        let plan = decide(
            &s,
            Some(&record(7, published)),
            &timing(),
            LateWrite::Never,
            false,
            false,
            Window::Open,
            now(),
        );
        assert_eq!(plan.clean_up, vec![(2, DeleteReason::Orphan)]);
        assert!(plan.retire.is_empty());
    }

    #[test]
    fn a_secret_made_minutes_after_the_publish_is_never_an_orphan() {
        // Another rotator's clock runs a little ahead: its marker says "after the
        // publish" although consumers were handed that value. Within the skew margin
        // it is superseded, not an orphan.
        let published = now() - Duration::hours(2);
        let s = [
            managed(
                3,
                published + Duration::minutes(4),
                now() + Duration::days(90),
            ),
            managed(4, published, now() + Duration::days(90)),
        ];
        let plan = decide(
            &s,
            Some(&record(4, published)),
            &timing(),
            LateWrite::Never,
            false,
            false,
            Window::Open,
            now(),
        );
        assert!(plan.clean_up.is_empty(), "{plan:?}");
        let plan = decide(
            &s,
            Some(&record(4, published)),
            &timing(),
            LateWrite::Never,
            false,
            false,
            Window::Open,
            now() + Duration::days(1),
        );
        assert_eq!(plan.retire, vec![3]);
    }

    #[test]
    fn a_secret_made_just_after_the_publish_is_kept_while_its_own_publish_may_land() {
        // Secret 3 was created a minute after secret 4 was published, and its publish
        // was in doubt: within the skew margin it looks superseded, but retiring it while
        // its write may still land could leave the store holding a deleted secret.
        let published = now() - Duration::minutes(10);
        let s = [
            managed(
                3,
                published + Duration::minutes(1),
                now() + Duration::days(90),
            ),
            managed(4, published, now() + Duration::days(90)),
        ];
        let at = |late_write, now| {
            decide(
                &s,
                Some(&record(4, published)),
                &timing(),
                late_write,
                false,
                false,
                Window::Open,
                now,
            )
        };
        let later = now() + Duration::days(1);
        let plan = at(LateWrite::Unbounded, later);
        assert_eq!(plan.in_doubt, vec![3]);
        assert!(
            plan.retire.is_empty() && plan.clean_up.is_empty(),
            "{plan:?}"
        );
        // With a bound: kept until it passes (1m + verify_timeout 2m + 30m after the
        // publish), then superseded like any other.
        let late = LateWrite::Within(Duration::minutes(30));
        let plan = at(late, now());
        assert_eq!(plan.in_doubt, vec![3]);
        assert_eq!(plan.next_check, Some(published + Duration::minutes(33)));
        let plan = at(late, later);
        assert_eq!(plan.retire, vec![3]);
    }

    #[test]
    fn an_id_handed_out_again_is_not_the_recorded_secret() {
        // The recorded secret 3 was deleted by hand; CDS gave id 3 to a newer secret.
        let published = now() - Duration::days(10);
        let s = [managed(
            3,
            now() - Duration::minutes(1),
            now() + Duration::days(90),
        )];
        let plan = decide(
            &s,
            Some(&record(3, published)),
            &timing(),
            LateWrite::Never,
            false,
            false,
            Window::Open,
            now(),
        );
        assert_eq!(plan.rotate, Some(RotateReason::CurrentMissing(3)));
        assert!(plan.clean_up.is_empty(), "not ripe yet: {plan:?}");
    }

    #[test]
    fn without_a_record_unexpired_managed_secrets_are_kept_as_possibly_in_use() {
        let s = [
            managed(1, now() - Duration::days(20), now() + Duration::days(70)),
            managed(2, now() - Duration::days(400), now() - Duration::days(1)),
            managed(3, now() - Duration::hours(1), now() + Duration::days(90)),
            unmanaged(4, now() + Duration::days(9)),
        ];
        for retire_unmanaged in [false, true] {
            let plan = decide(
                &s,
                None,
                &timing(),
                LateWrite::Never,
                retire_unmanaged,
                false,
                Window::Open,
                now(),
            );
            assert_eq!(plan.clean_up, vec![(2, DeleteReason::Expired)]);
            assert!(plan.retire.is_empty());
            assert_eq!(plan.possibly_in_use, vec![1, 3]);
            assert_eq!(plan.rotate, Some(RotateReason::NoRecord));
        }
        // After the next publish they are superseded and go only after grace.
        let published = now() + Duration::minutes(1);
        let mut s = s.to_vec();
        s.push(managed(9, published, published + Duration::days(90)));
        let r = record(9, published);
        let plan = decide(
            &s,
            Some(&r),
            &timing(),
            LateWrite::Never,
            false,
            false,
            Window::Open,
            published,
        );
        assert!(
            plan.retire.is_empty() && plan.clean_up.len() == 1,
            "{plan:?}"
        );
        let after = published + Duration::hours(24);
        let plan = decide(
            &s,
            Some(&r),
            &timing(),
            LateWrite::Never,
            false,
            false,
            Window::Open,
            after,
        );
        assert_eq!(plan.retire, vec![1, 3]);
    }

    #[test]
    fn times_at_the_end_of_the_calendar_never_panic() {
        let huge = Timing {
            lifetime: Duration::MAX,
            rotate_before: Duration::MAX,
            grace: Duration::MAX,
            orphan_grace: Duration::MAX,
            max_age: Some(Duration::MAX),
            ..timing()
        };
        let far = DateTime::<Utc>::MAX_UTC;
        let s = [
            managed(1, far, far),
            managed(2, now(), far),
            unmanaged(3, far),
        ];
        for r in [record(1, far), record(2, now()), record(3, far)] {
            for t in [timing(), huge.clone()] {
                let _ = decide(
                    &s,
                    Some(&r),
                    &t,
                    LateWrite::Never,
                    true,
                    false,
                    Window::Open,
                    now(),
                );
                let _ = decide(
                    &s,
                    Some(&r),
                    &t,
                    LateWrite::Never,
                    true,
                    false,
                    Window::Open,
                    far,
                );
                let _ = decide(
                    &s,
                    None,
                    &t,
                    LateWrite::Never,
                    true,
                    false,
                    Window::Open,
                    far,
                );
            }
        }
    }

    #[test]
    fn between_windows_a_due_rotation_waits_unless_waiting_is_unsafe() {
        let t = timing(); // rotate_before 30d, verify_timeout 2m
        let published = now() - Duration::days(61);
        let r = record(1, published);
        let next = now() + Duration::hours(20);
        let closed = Window::Closed { next: Some(next) };
        // Expires in 29 days: due, but the window tonight is soon enough.
        let s = [managed(1, published, now() + Duration::days(29))];
        let plan = decide(
            &s,
            Some(&r),
            &t,
            LateWrite::Never,
            false,
            false,
            closed,
            now(),
        );
        assert_eq!(plan.rotate, None);
        assert_eq!(
            plan.deferred,
            Some((RotateReason::ExpiresSoon(now() + Duration::days(29)), next))
        );
        // In the window it happens.
        let plan = decide(
            &s,
            Some(&r),
            &t,
            LateWrite::Never,
            false,
            false,
            Window::Open,
            now(),
        );
        assert!(matches!(plan.rotate, Some(RotateReason::ExpiresSoon(_))));
        // Expiring before the window (+ verify_timeout): now.
        let s = [managed(1, published, next + Duration::minutes(1))];
        let plan = decide(
            &s,
            Some(&r),
            &t,
            LateWrite::Never,
            false,
            false,
            closed,
            now(),
        );
        assert!(matches!(plan.rotate, Some(RotateReason::ExpiresSoon(_))));
        assert_eq!(plan.deferred, None);
        // Missing, expired, never expiring, no record, forced: never wait.
        let s = [managed(1, published, now() - Duration::seconds(1))];
        let plan = decide(
            &s,
            Some(&r),
            &t,
            LateWrite::Never,
            false,
            false,
            closed,
            now(),
        );
        assert_eq!(plan.rotate, Some(RotateReason::CurrentExpired(1)));
        let plan = decide(
            &[],
            Some(&r),
            &t,
            LateWrite::Never,
            false,
            false,
            closed,
            now(),
        );
        assert_eq!(plan.rotate, Some(RotateReason::CurrentMissing(1)));
        let plan = decide(&[], None, &t, LateWrite::Never, false, false, closed, now());
        assert_eq!(plan.rotate, Some(RotateReason::NoRecord));
        let mut never = unmanaged(1, now());
        never.expires = Some(false);
        let plan = decide(
            &[never],
            Some(&r),
            &t,
            LateWrite::Never,
            false,
            false,
            closed,
            now(),
        );
        assert_eq!(plan.rotate, Some(RotateReason::CurrentNeverExpires(1)));
        let s = [managed(1, published, now() + Duration::days(80))];
        let plan = decide(
            &s,
            Some(&r),
            &t,
            LateWrite::Never,
            false,
            true,
            closed,
            now(),
        );
        assert_eq!(plan.rotate, Some(RotateReason::Forced));
        // A schedule that never fires again cannot be waited for.
        let s = [managed(1, published, now() + Duration::days(29))];
        let plan = decide(
            &s,
            Some(&r),
            &t,
            LateWrite::Never,
            false,
            false,
            Window::Closed { next: None },
            now(),
        );
        assert!(plan.rotate.is_some());
    }

    #[test]
    fn between_windows_clean_up_and_retire_still_happen() {
        let published = now() - Duration::days(2);
        let s = [
            managed(
                1,
                published - Duration::days(60),
                now() + Duration::days(20),
            ),
            managed(2, published, now() + Duration::days(88)),
            managed(3, now() - Duration::hours(1), now() + Duration::days(90)),
        ];
        let closed = Window::Closed {
            next: Some(now() + Duration::hours(3)),
        };
        let plan = decide(
            &s,
            Some(&record(2, published)),
            &timing(),
            LateWrite::Never,
            false,
            false,
            closed,
            now(),
        );
        assert_eq!(plan.retire, vec![1]);
        assert_eq!(plan.clean_up, vec![(3, DeleteReason::Orphan)]);
    }

    #[test]
    fn a_pending_pickup_is_asked_again_and_is_overdue_only_after_grace_plus_timeout() {
        let published = now() - Duration::hours(30);
        let r = record(1, published);
        let (grace, timeout) = (Duration::hours(24), Some(Duration::hours(24)));
        let w = pickup_wait(&r, grace, timeout, Some(Duration::seconds(30)), now());
        assert_eq!(w.next_check, Some(now() + Duration::seconds(30)));
        assert_eq!(w.deadline, Some(published + Duration::hours(48)));
        assert!(!w.overdue);
        let later = published + Duration::hours(48) + Duration::seconds(1);
        let w = pickup_wait(&r, grace, timeout, Some(Duration::seconds(30)), later);
        assert!(
            w.overdue,
            "past the deadline it is overdue, and asked again"
        );
        assert_eq!(w.next_check, Some(later + Duration::seconds(30)));
        // Watched (no interval): at the deadline, else the long fallback.
        let w = pickup_wait(&r, grace, timeout, None, now());
        assert_eq!(w.next_check, Some(now() + PICKUP_FALLBACK));
        let near = published + Duration::hours(47);
        let w = pickup_wait(&r, grace, timeout, None, near);
        assert_eq!(
            w.next_check,
            Some(published + Duration::hours(48) + Duration::seconds(1))
        );
        let w = pickup_wait(&r, grace, timeout, None, later);
        assert_eq!(w.next_check, Some(later + PICKUP_FALLBACK));
        let w = pickup_wait(&r, Duration::MAX, Some(Duration::MAX), None, now());
        assert!(!w.overdue && w.deadline.is_none());
    }

    /// Ten secrets: the current one expiring in 20 days (a rotation is due) and nine
    /// superseded ones past their grace.
    fn ten_with_nine_to_retire() -> (Vec<ClientSecret>, StoreRecord) {
        let published = now() - Duration::days(70);
        let mut s = vec![managed(1, published, now() + Duration::days(20))];
        s.extend(
            (2..=10).map(|i| managed(i, now() - Duration::days(100), now() + Duration::days(20))),
        );
        (s, record(1, published))
    }

    #[test]
    fn at_ten_secrets_a_rotation_has_room_only_once_the_pickup_confirms_the_retire() {
        let (s, r) = ten_with_nine_to_retire();
        let plan = decide(
            &s,
            Some(&r),
            &timing(),
            LateWrite::Never,
            false,
            false,
            Window::Open,
            now(),
        );
        assert_eq!(plan.retire.len(), 9);
        assert!(plan.rotate.is_some());
        assert_eq!(plan.room, Room::OnceRetired);
        assert!(
            !plan.has_room(),
            "a retire nobody asked about frees nothing"
        );

        // What `plan` shows and what make_room does are the same decision.
        let held = plan.clone().after_pickup(false);
        assert_eq!(held.room, Room::Full);
        assert!(held.full && !held.has_room());
        assert!(held.retire_now().is_empty());
        assert_eq!(
            held.retire.len(),
            9,
            "still listed: they are kept for pickup"
        );
        assert_eq!(held.remaining(&s).len(), 10);

        let confirmed = plan.after_pickup(true);
        assert_eq!(confirmed.room, Room::Free);
        assert!(!confirmed.full && confirmed.has_room());
        assert_eq!(confirmed.retire_now().len(), 9);
        assert_eq!(confirmed.remaining(&s).len(), 1);
    }

    #[test]
    fn the_pickup_answer_changes_nothing_when_the_room_does_not_depend_on_it() {
        let s = [managed(
            1,
            now() - Duration::days(70),
            now() + Duration::days(20),
        )];
        let plan = decide(
            &s,
            Some(&record(1, now() - Duration::days(70))),
            &timing(),
            LateWrite::Never,
            false,
            false,
            Window::Open,
            now(),
        );
        assert_eq!(plan.room, Room::Free);
        assert_eq!(
            plan.clone().after_pickup(false),
            Plan {
                retire_held: false,
                ..plan
            }
        );
        let mut s: Vec<_> = (1..=10)
            .map(|i| unmanaged(i, now() + Duration::days(5)))
            .collect();
        s[0] = managed(1, now() - Duration::days(70), now() + Duration::days(20));
        let plan = decide(
            &s,
            Some(&record(1, now() - Duration::days(70))),
            &timing(),
            LateWrite::Never,
            false,
            false,
            Window::Open,
            now(),
        );
        assert_eq!(plan.room, Room::Full);
        assert!(plan.after_pickup(true).full);
    }

    #[test]
    fn an_emergency_rotation_deletes_what_the_policy_lets_it_and_leaves_the_rest_valid() {
        let s = [
            managed(1, now() - Duration::days(70), now() + Duration::days(20)),
            unmanaged(2, now() + Duration::days(5)),
            unmanaged(3, now() - Duration::days(1)),
            managed(4, now(), now() + Duration::days(90)),
        ];
        assert_eq!(
            revoke(&s, 4, false, now()),
            vec![Revoke::Delete(1), Revoke::LeaveValid(&s[1])]
        );
        assert_eq!(
            revoke(&s, 4, true, now()),
            vec![Revoke::Delete(1), Revoke::Delete(2), Revoke::Delete(3)]
        );
    }

    #[test]
    fn the_record_is_missing_only_without_one_and_with_something_consumers_may_hold() {
        let s = [managed(
            1,
            now() - Duration::days(1),
            now() + Duration::days(80),
        )];
        let plan = decide(
            &s,
            None,
            &timing(),
            LateWrite::Never,
            false,
            false,
            Window::Open,
            now(),
        );
        assert!(record_missing(None, false, Some(&plan)));
        let r = record(1, now() - Duration::days(1));
        assert!(!record_missing(Some(&r), true, Some(&plan)));
        let none = decide(
            &[],
            None,
            &timing(),
            LateWrite::Never,
            false,
            false,
            Window::Open,
            now(),
        );
        assert!(!record_missing(None, false, Some(&none)));
        assert!(record_missing(None, true, Some(&none)));
    }

    #[test]
    fn the_next_check_is_the_earliest_of_what_asks_for_one() {
        let (a, b) = (now(), now() + Duration::hours(1));
        assert_eq!(earliest(None, None), None);
        assert_eq!(earliest(Some(b), None), Some(b));
        assert_eq!(earliest(None, Some(a)), Some(a));
        assert_eq!(earliest(Some(b), Some(a)), Some(a));
        assert_eq!(earliest(Some(a), Some(b)), Some(a));
    }

    #[test]
    fn only_a_secret_with_the_rotators_marker_is_managed() {
        let m = managed(1, now(), now() + Duration::days(90));
        assert_eq!(super::managed(&m).map(|m| m.created), Some(now()));
        assert!(is_managed(&m));
        assert!(!is_managed(&unmanaged(2, now())));
    }

    #[test]
    fn a_pass_outside_its_window_waits_for_the_schedules_next_time() {
        let schedule = Timing::default().schedule;
        assert_eq!(Window::of(true, &schedule, now()), Window::Open);
        assert_eq!(
            Window::of(false, &schedule, now()),
            Window::Closed {
                next: schedule.next_after(now())
            }
        );
    }
}
