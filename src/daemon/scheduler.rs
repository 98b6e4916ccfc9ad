//! The daemon's timetable: for each client, when its schedule fires next, when its last
//! pass asked to be looked at again, and which passes are due and why.
//!
//! A pure value: every method takes the facts (a pass's end, a pickup change, a change
//! of leadership, a reload) and the time they happened at, so a test drives a year of
//! schedules with the manual clock in a blink. The daemon's loop sleeps until
//! [`Scheduler::next_wake`], calls [`Scheduler::fire`], and runs what
//! [`Scheduler::start_batch`] hands it.
//! Not here: sleeping, running passes, signals, reloading the policy (that is
//! `daemon::run`), what a pass does in or out of its window (that is `rotation`).

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};

use crate::domain::Schedule;

/// Why the daemon runs a client's pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// The first pass over every client when the daemon starts (out of the window: a
    /// due rotation waits for the schedule unless waiting is unsafe).
    Start,
    /// The client's schedule fired: its rotation window.
    Schedule,
    /// The time the client's last pass asked to be looked at again (a grace period
    /// ending, an orphan ripening, a pickup check's interval, a retry after a failure).
    FollowUp,
    /// A follow-up that retries a rotation that failed in its window: it runs in the
    /// window too.
    RetryInWindow,
    /// The client's watched pickup check saw a change while its old secrets wait.
    PickupChanged,
    /// This rotator became the leader: it looks at every client, as at start (the old
    /// leader may have left any of them half way).
    Leadership,
    /// A reload added the client (or gave its name another CDS client).
    Reload,
}

impl Wake {
    /// Whether a pass for this reason runs in the client's rotation window.
    pub fn in_window(self) -> bool {
        matches!(self, Wake::Schedule | Wake::RetryInWindow)
    }
}

/// A client as the scheduler knows it: who it is and when it may rotate.
#[derive(Clone, Debug)]
pub struct Client {
    /// The client's name in the policy.
    pub name: String,
    /// Its CDS tenant.
    pub tenant_id: String,
    /// Its CDS client id.
    pub client_id: String,
    /// Its rotation window.
    pub schedule: Schedule,
    /// How long after a pass that panicked to look again.
    pub retry_interval: Duration,
}

/// A pass the daemon is to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pass {
    /// The client's name.
    pub client: String,
    /// Whether it runs in the client's rotation window.
    pub in_window: bool,
    /// Why it runs (the reason that set `in_window` when there are several).
    pub why: Wake,
}

/// What a finished pass tells the scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PassEnd {
    /// The pass reported.
    Reported {
        /// When it asked to be looked at again.
        next_check: Option<DateTime<Utc>>,
        /// Whether it failed.
        failed: bool,
        /// Whether it left old secrets waiting for the pickup check.
        pickup_waiting: bool,
    },
    /// The pass panicked (a bug): look again after the client's retry interval.
    Panicked,
}

/// One client's times.
#[derive(Debug)]
struct Entry {
    client: Client,
    /// When the schedule fires next.
    next_fire: Option<DateTime<Utc>>,
    /// When the last pass asked to be looked at again.
    follow_up: Option<DateTime<Utc>>,
    /// Whether the follow-up retries a rotation that failed in its window (and so may
    /// rotate between windows).
    retry_in_window: bool,
    /// Whether the last pass left old secrets waiting for the pickup check.
    pickup_pending: bool,
}

impl Entry {
    fn new(client: Client, now: DateTime<Utc>) -> Entry {
        Entry {
            next_fire: client.schedule.next_after(now),
            client,
            follow_up: None,
            retry_in_window: false,
            pickup_pending: false,
        }
    }

    /// The earliest of its times, and why (the schedule when both fall together).
    fn next(&self) -> Option<(DateTime<Utc>, Wake)> {
        let follow_up = self.follow_up.map(|t| {
            let why = if self.retry_in_window {
                Wake::RetryInWindow
            } else {
                Wake::FollowUp
            };
            (t, why)
        });
        match (self.next_fire.map(|t| (t, Wake::Schedule)), follow_up) {
            (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
            (a, b) => a.or(b),
        }
    }
}

/// What a reload changed, by client name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// The clients the new policy adds (or whose name now means another CDS client).
    pub added: Vec<String>,
    /// The clients it no longer has.
    pub removed: Vec<String>,
}

/// When each client's pass is due and why.
#[derive(Debug)]
pub struct Scheduler {
    /// In policy order.
    entries: Vec<Entry>,
    /// The passes waiting to run: client name → whether in the window, and why.
    due: BTreeMap<String, (bool, Wake)>,
    /// The clients of the batch that runs.
    running: Vec<String>,
}

impl Scheduler {
    /// The timetable of a daemon that starts at `now`: a pass over every client, out of
    /// the window, then each at its schedule.
    pub fn new(clients: Vec<Client>, now: DateTime<Utc>) -> Scheduler {
        let mut scheduler = Scheduler {
            entries: clients.into_iter().map(|c| Entry::new(c, now)).collect(),
            due: BTreeMap::new(),
            running: Vec::new(),
        };
        for name in scheduler.names() {
            scheduler.add_due(name, Wake::Start);
        }
        scheduler
    }

    /// How many clients it schedules.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it schedules no client.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether passes wait to run.
    pub fn has_due(&self) -> bool {
        !self.due.is_empty()
    }

    /// The earliest time a client is due, why, and which client (the first in policy
    /// order when several are due together).
    pub fn next(&self) -> Option<(DateTime<Utc>, Wake, &str)> {
        self.entries
            .iter()
            .filter_map(|e| e.next().map(|(at, why)| (at, why, e.client.name.as_str())))
            .min_by_key(|(at, _, _)| *at)
    }

    /// When the daemon has to wake up next, and why; `None`: never, unless something
    /// else happens (a pickup change, a reload, a change of leadership).
    pub fn next_wake(&self) -> Option<(DateTime<Utc>, Wake)> {
        self.next().map(|(at, why, _)| (at, why))
    }

    /// Makes every schedule and follow-up at or before `now` a due pass; a schedule
    /// that fired is set to its next time after `now`.
    pub fn fire(&mut self, now: DateTime<Utc>) {
        let mut fired = Vec::new();
        for e in &mut self.entries {
            if e.next_fire.is_some_and(|t| t <= now) {
                e.next_fire = e.client.schedule.next_after(now);
                fired.push((e.client.name.clone(), Wake::Schedule));
            }
            if e.follow_up.is_some_and(|t| t <= now) {
                e.follow_up = None;
                let why = if e.retry_in_window {
                    Wake::RetryInWindow
                } else {
                    Wake::FollowUp
                };
                fired.push((e.client.name.clone(), why));
            }
        }
        for (name, why) in fired {
            self.add_due(name, why);
        }
    }

    /// Takes the due passes of clients it schedules, as one batch (in name order); the
    /// batch runs until [`Scheduler::batch_done`].
    pub fn start_batch(&mut self) -> Vec<Pass> {
        let batch: Vec<Pass> = std::mem::take(&mut self.due)
            .into_iter()
            .filter(|(name, _)| self.entry(name).is_some())
            .map(|(client, (in_window, why))| Pass {
                client,
                in_window,
                why,
            })
            .collect();
        self.running = batch.iter().map(|p| p.client.clone()).collect();
        batch
    }

    /// The batch ended at `now`, with what each of its passes told (a batch that ended
    /// abnormally tells nothing). A pass of a client the policy no longer has is done.
    pub fn batch_done(
        &mut self,
        ends: impl IntoIterator<Item = (Pass, PassEnd)>,
        now: DateTime<Utc>,
    ) {
        self.running.clear();
        for (pass, end) in ends {
            let Some(e) = self
                .entries
                .iter_mut()
                .find(|e| e.client.name == pass.client)
            else {
                continue;
            };
            match end {
                PassEnd::Reported {
                    next_check,
                    failed,
                    pickup_waiting,
                } => {
                    e.follow_up = next_check;
                    e.retry_in_window = pass.in_window && failed;
                    e.pickup_pending = pickup_waiting;
                }
                PassEnd::Panicked => {
                    e.follow_up = now.checked_add_signed(e.client.retry_interval);
                    e.retry_in_window = pass.in_window;
                }
            }
        }
    }

    /// A watched pickup check of `client` saw a change: its pass is due when its old
    /// secrets wait for pickup, or its pass runs and may leave them waiting (a write at
    /// any other time changes nothing). Whether the pass is due.
    pub fn pickup_changed(&mut self, client: &str) -> bool {
        let pending = self.entry(client).is_some_and(|e| e.pickup_pending);
        if pending || self.running.iter().any(|n| n == client) {
            self.add_due(client.to_owned(), Wake::PickupChanged);
            return true;
        }
        false
    }

    /// Leadership changed: a new leader looks at every client, as at start. A standby
    /// keeps its timetable (the daemon starts no pass while it is one).
    pub fn leadership(&mut self, leader: bool) {
        if leader {
            for name in self.names() {
                self.add_due(name, Wake::Leadership);
            }
        }
    }

    /// The policy was loaded again at `now` with `clients`. A client that was already
    /// here (same name, tenant and CDS client) keeps its follow-up, its retry and pickup
    /// state, and its next scheduled time unless its schedule changed; the others start
    /// afresh. An added client gets a pass, a removed one loses the pass it waited for.
    pub fn reload(&mut self, clients: Vec<Client>, now: DateTime<Utc>) -> Reloaded {
        let mut old = std::mem::take(&mut self.entries);
        let same = |a: &Client, b: &Client| a.name == b.name && a.client_id == b.client_id;
        let added: Vec<String> = clients
            .iter()
            .filter(|n| !old.iter().any(|o| same(&o.client, n)))
            .map(|n| n.name.clone())
            .collect();
        let removed: Vec<String> = old
            .iter()
            .filter(|o| !clients.iter().any(|n| n.name == o.client.name))
            .map(|o| o.client.name.clone())
            .collect();
        for client in clients {
            let before = old
                .iter()
                .position(|o| same(&o.client, &client) && o.client.tenant_id == client.tenant_id);
            let entry = match before.map(|i| old.swap_remove(i)) {
                Some(b) => Entry {
                    next_fire: if b.client.schedule == client.schedule {
                        b.next_fire
                    } else {
                        client.schedule.next_after(now)
                    },
                    follow_up: b.follow_up,
                    retry_in_window: b.retry_in_window,
                    pickup_pending: b.pickup_pending,
                    client,
                },
                None => Entry::new(client, now),
            };
            self.entries.push(entry);
        }
        for name in &added {
            self.add_due(name.clone(), Wake::Reload);
        }
        for name in &removed {
            self.due.remove(name);
        }
        Reloaded { added, removed }
    }

    fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.client.name == name)
    }

    fn names(&self) -> Vec<String> {
        self.entries.iter().map(|e| e.client.name.clone()).collect()
    }

    /// Adds a due pass: it runs in the window when any of its reasons does.
    fn add_due(&mut self, name: String, why: Wake) {
        let entry = self.due.entry(name).or_insert((why.in_window(), why));
        if why.in_window() && !entry.0 {
            *entry = (true, why);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use chrono::{Datelike, TimeZone, Timelike, Weekday};

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    fn client(name: &str, schedule: &str) -> Client {
        Client {
            name: name.to_owned(),
            tenant_id: "tenant".to_owned(),
            client_id: format!("id-{name}"),
            schedule: Schedule::parse(schedule).unwrap(),
            retry_interval: Duration::minutes(10),
        }
    }

    const DAILY_3: &str = "0 0 3 * * *";

    fn pass(client: &str, in_window: bool, why: Wake) -> Pass {
        Pass {
            client: client.to_owned(),
            in_window,
            why,
        }
    }

    fn ok(next_check: Option<DateTime<Utc>>) -> PassEnd {
        PassEnd::Reported {
            next_check,
            failed: false,
            pickup_waiting: false,
        }
    }

    /// Runs the due batch to its end, each pass ending with `end`; returns the batch.
    fn run_batch(s: &mut Scheduler, now: DateTime<Utc>, end: PassEnd) -> Vec<Pass> {
        let batch = s.start_batch();
        s.batch_done(batch.iter().map(|p| (p.clone(), end)), now);
        batch
    }

    #[test]
    fn a_start_passes_over_every_client_out_of_the_window() {
        let now = at("2026-01-01T00:00:00Z");
        let mut s = Scheduler::new(vec![client("app", DAILY_3), client("web", DAILY_3)], now);
        assert!(s.has_due());
        assert_eq!(
            s.start_batch(),
            [
                pass("app", false, Wake::Start),
                pass("web", false, Wake::Start)
            ]
        );
        assert!(!s.has_due());
        assert_eq!(
            s.next_wake(),
            Some((at("2026-01-01T03:00:00Z"), Wake::Schedule))
        );
    }

    #[test]
    fn a_daemon_without_clients_never_wakes() {
        let mut s = Scheduler::new(Vec::new(), at("2026-01-01T00:00:00Z"));
        assert!(!s.has_due() && s.is_empty());
        assert!(s.start_batch().is_empty());
        assert_eq!(s.next_wake(), None);
    }

    #[test]
    fn the_schedule_wakes_a_client_in_its_window_and_moves_to_its_next_time() {
        let now = at("2026-01-01T00:00:00Z");
        let mut s = Scheduler::new(vec![client("app", DAILY_3)], now);
        run_batch(&mut s, now, ok(None));
        let (t, why) = s.next_wake().unwrap();
        assert_eq!((t, why), (at("2026-01-01T03:00:00Z"), Wake::Schedule));
        // Nothing is due a second early.
        s.fire(t - Duration::seconds(1));
        assert!(!s.has_due());
        s.fire(t);
        assert_eq!(s.start_batch(), [pass("app", true, Wake::Schedule)]);
        assert_eq!(
            s.next_wake(),
            Some((at("2026-01-02T03:00:00Z"), Wake::Schedule))
        );
    }

    #[test]
    fn a_follow_up_wakes_a_client_out_of_its_window_once() {
        let now = at("2026-01-01T00:00:00Z");
        let mut s = Scheduler::new(vec![client("app", DAILY_3)], now);
        let grace_ends = at("2026-01-01T00:30:00Z");
        run_batch(&mut s, now, ok(Some(grace_ends)));
        assert_eq!(s.next_wake(), Some((grace_ends, Wake::FollowUp)));
        s.fire(grace_ends);
        assert_eq!(s.start_batch(), [pass("app", false, Wake::FollowUp)]);
        // Consumed: the schedule is next.
        assert_eq!(
            s.next_wake(),
            Some((at("2026-01-01T03:00:00Z"), Wake::Schedule))
        );
    }

    #[test]
    fn follow_ups_win_over_a_later_schedule() {
        let now = at("2026-01-01T00:00:00Z");
        let mut s = Scheduler::new(vec![client("app", DAILY_3), client("web", DAILY_3)], now);
        let batch = s.start_batch();
        let check = at("2026-01-01T01:15:00Z");
        s.batch_done(
            batch.into_iter().map(|p| {
                let end = if p.client == "web" {
                    ok(Some(check))
                } else {
                    ok(None)
                };
                (p, end)
            }),
            now,
        );
        assert_eq!(s.next_wake(), Some((check, Wake::FollowUp)));
        assert_eq!(s.next().map(|(_, _, c)| c), Some("web"));
        // A follow-up after the schedule waits its turn.
        let mut s = Scheduler::new(vec![client("app", DAILY_3)], now);
        run_batch(&mut s, now, ok(Some(at("2026-01-01T05:00:00Z"))));
        assert_eq!(
            s.next_wake(),
            Some((at("2026-01-01T03:00:00Z"), Wake::Schedule))
        );
    }

    #[test]
    fn a_rotation_that_failed_in_its_window_is_retried_in_the_window() {
        let now = at("2026-01-01T03:00:00Z");
        let mut s = Scheduler::new(vec![client("app", DAILY_3)], now - Duration::hours(1));
        s.start_batch();
        s.fire(now);
        let retry = now + Duration::minutes(10);
        let failed = PassEnd::Reported {
            next_check: Some(retry),
            failed: true,
            pickup_waiting: false,
        };
        assert_eq!(
            run_batch(&mut s, now, failed),
            [pass("app", true, Wake::Schedule)]
        );
        assert_eq!(s.next_wake(), Some((retry, Wake::RetryInWindow)));
        s.fire(retry);
        assert_eq!(s.start_batch(), [pass("app", true, Wake::RetryInWindow)]);
    }

    #[test]
    fn a_pass_that_failed_out_of_its_window_is_retried_out_of_it() {
        let now = at("2026-01-01T00:00:00Z");
        let mut s = Scheduler::new(vec![client("app", DAILY_3)], now);
        let retry = now + Duration::minutes(10);
        let failed = PassEnd::Reported {
            next_check: Some(retry),
            failed: true,
            pickup_waiting: false,
        };
        run_batch(&mut s, now, failed);
        assert_eq!(s.next_wake(), Some((retry, Wake::FollowUp)));
    }

    #[test]
    fn a_pass_that_panicked_is_looked_at_again_after_the_retry_interval() {
        let now = at("2026-01-01T03:00:00Z");
        let mut s = Scheduler::new(vec![client("app", DAILY_3)], now - Duration::hours(1));
        s.start_batch();
        s.fire(now);
        run_batch(&mut s, now, PassEnd::Panicked);
        assert_eq!(
            s.next_wake(),
            Some((now + Duration::minutes(10), Wake::RetryInWindow))
        );
    }

    #[test]
    fn a_pickup_change_wakes_a_client_only_while_its_old_secrets_wait() {
        let now = at("2026-01-01T00:00:00Z");
        let mut s = Scheduler::new(vec![client("app", DAILY_3), client("web", DAILY_3)], now);
        // While the start batch runs, a change may matter to either.
        let batch = s.start_batch();
        assert!(s.pickup_changed("web"));
        let waiting = PassEnd::Reported {
            next_check: Some(now + Duration::hours(1)),
            failed: false,
            pickup_waiting: true,
        };
        s.batch_done(
            batch.into_iter().map(|p| {
                let end = if p.client == "app" { waiting } else { ok(None) };
                (p, end)
            }),
            now,
        );
        assert_eq!(s.start_batch(), [pass("web", false, Wake::PickupChanged)]);
        s.batch_done([(pass("web", false, Wake::PickupChanged), ok(None))], now);
        // Now only app waits for pickup.
        assert!(!s.pickup_changed("web"));
        assert!(!s.pickup_changed("gone"));
        assert!(s.pickup_changed("app"));
        assert_eq!(s.start_batch(), [pass("app", false, Wake::PickupChanged)]);
    }

    #[test]
    fn a_new_leader_looks_at_every_client_and_a_standby_keeps_its_timetable() {
        let now = at("2026-01-01T00:00:00Z");
        let mut s = Scheduler::new(vec![client("app", DAILY_3), client("web", DAILY_3)], now);
        run_batch(&mut s, now, ok(None));
        let before = s.next_wake();
        s.leadership(false);
        assert!(!s.has_due());
        assert_eq!(s.next_wake(), before);
        s.leadership(true);
        assert_eq!(
            s.start_batch(),
            [
                pass("app", false, Wake::Leadership),
                pass("web", false, Wake::Leadership)
            ]
        );
    }

    #[test]
    fn a_due_pass_runs_in_the_window_when_any_of_its_reasons_does() {
        let now = at("2026-01-01T03:00:00Z");
        let mut s = Scheduler::new(vec![client("app", DAILY_3)], now - Duration::hours(1));
        // A standby that saw its schedule fire, then became the leader.
        s.fire(now);
        s.leadership(true);
        assert_eq!(s.start_batch(), [pass("app", true, Wake::Schedule)]);
    }

    #[test]
    fn a_reload_passes_over_added_clients_and_drops_removed_ones() {
        let now = at("2026-01-01T00:00:00Z");
        let mut s = Scheduler::new(vec![client("app", DAILY_3), client("web", DAILY_3)], now);
        run_batch(&mut s, now, ok(None));
        s.fire(at("2026-01-01T03:00:00Z"));
        // web's scheduled pass has not run yet when the reload drops it.
        let reloaded = s.reload(
            vec![client("app", DAILY_3), client("api", DAILY_3)],
            at("2026-01-01T03:00:01Z"),
        );
        assert_eq!(
            reloaded,
            Reloaded {
                added: vec!["api".into()],
                removed: vec!["web".into()]
            }
        );
        assert_eq!(s.len(), 2);
        assert_eq!(
            s.start_batch(),
            [
                pass("api", false, Wake::Reload),
                pass("app", true, Wake::Schedule)
            ]
        );
    }

    #[test]
    fn a_name_given_to_another_cds_client_starts_afresh() {
        let now = at("2026-01-01T00:00:00Z");
        let mut s = Scheduler::new(vec![client("app", DAILY_3)], now);
        run_batch(&mut s, now, ok(Some(now + Duration::minutes(5))));
        let mut other = client("app", DAILY_3);
        other.client_id = "another".into();
        let reloaded = s.reload(vec![other], now);
        assert_eq!(reloaded.added, ["app"]);
        assert!(reloaded.removed.is_empty());
        assert_eq!(s.start_batch(), [pass("app", false, Wake::Reload)]);
        // Its follow-up was the old client's.
        assert_eq!(
            s.next_wake(),
            Some((at("2026-01-01T03:00:00Z"), Wake::Schedule))
        );
    }

    #[test]
    fn a_reload_that_changes_one_schedule_keeps_the_others_times() {
        let start = at("2026-01-01T00:00:00Z");
        let mut s = Scheduler::new(
            vec![
                client("app", DAILY_3),
                client("web", "0 0 4 * * *"),
                client("api", "0 0 12 * * *"),
            ],
            start,
        );
        let batch = s.start_batch();
        let api_check = at("2026-01-01T02:00:00Z");
        s.batch_done(
            batch.into_iter().map(|p| {
                let end = match p.client.as_str() {
                    "api" => PassEnd::Reported {
                        next_check: Some(api_check),
                        failed: false,
                        pickup_waiting: true,
                    },
                    _ => ok(None),
                };
                (p, end)
            }),
            start,
        );
        // Reloaded at 05:00 without a wake in between: app's 03:00 and web's 04:00 are
        // still owed, api's follow-up and pickup state too; only web's schedule changes.
        let now = at("2026-01-01T05:00:00Z");
        let reloaded = s.reload(
            vec![
                client("app", DAILY_3),
                client("web", "0 30 6 * * *"),
                client("api", "0 0 12 * * *"),
            ],
            now,
        );
        assert_eq!(reloaded, Reloaded::default());
        assert!(!s.has_due());
        assert_eq!(s.next_wake(), Some((api_check, Wake::FollowUp)));
        s.fire(now);
        assert_eq!(
            s.start_batch(),
            [
                pass("api", false, Wake::FollowUp),
                pass("app", true, Wake::Schedule)
            ]
        );
        // web's new schedule counts from the reload.
        assert_eq!(
            s.next().map(|(t, _, c)| (t, c)),
            Some((at("2026-01-01T06:30:00Z"), "web"))
        );
        assert!(s.pickup_changed("api"));
    }

    #[test]
    fn a_year_of_a_weekly_window_in_seconds() {
        // Mondays 03:00; each window's pass leaves the old secret for an hour's grace,
        // then its follow-up retires it out of the window.
        let weekly = "0 0 3 * * Mon";
        let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap());
        let end = clock.now() + Duration::days(365);
        let mut s = Scheduler::new(vec![client("app", weekly)], clock.now());
        run_batch(&mut s, clock.now(), ok(None));
        let (mut windows, mut follow_ups) = (0, 0);
        while let Some((t, why)) = s.next_wake() {
            if t > end {
                break;
            }
            assert!(t >= clock.now(), "a wake in the past: {t}");
            clock.advance(t - clock.now());
            let now = clock.now();
            s.fire(now);
            let batch = s.start_batch();
            assert_eq!(batch.len(), 1);
            assert_eq!(batch[0].why, why);
            let monday_3 = now.weekday() == Weekday::Mon
                && (now.hour(), now.minute(), now.second()) == (3, 0, 0);
            if batch[0].in_window {
                assert_eq!(why, Wake::Schedule);
                assert!(monday_3, "a pass in the window outside it: {now}");
                windows += 1;
                s.batch_done(
                    [(batch[0].clone(), ok(Some(now + Duration::hours(1))))],
                    now,
                );
            } else {
                assert_eq!(why, Wake::FollowUp);
                assert_eq!((now.hour(), now.minute()), (4, 0), "{now}");
                follow_ups += 1;
                s.batch_done([(batch[0].clone(), ok(None))], now);
            }
        }
        assert!(windows == 52 || windows == 53, "{windows} windows");
        assert_eq!(follow_ups, windows);
    }
}
