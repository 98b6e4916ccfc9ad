//! What `status` and `plan` show: one [`ClientView`] per client, as a table for people
//! and as JSON for scripts (`--output json`; the field names are documented in the
//! README and kept stable), and which states need attention (exit code 1).
//!
//! Not here: observing or deciding (a dry-run pass of `rotation` produced the reports).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::connect::{ClientSecret, MAX_SECRETS_PER_CLIENT};
use crate::domain::SecretId;
use crate::rotation::last_result::LastResult;
use crate::rotation::marker::Marker;
use crate::rotation::{ClientJob, PassReport, Plan};
use crate::text::escape_control;

/// A client as `status` and `plan` show it.
#[derive(Clone, Debug, Serialize)]
pub struct ClientView {
    /// The client's name in the policy.
    pub client: String,
    /// The CDS client id.
    pub client_id: String,
    /// `client_credentials` or `hybrid`.
    pub kind: String,
    /// `ok`, `rotation_due`, `waiting_for_window`, `waiting_for_pickup`, `attention` or
    /// `error`.
    pub state: &'static str,
    /// Why the client needs attention: `current_invalid` (the store's secret is missing,
    /// expired or never expiring in CDS), `full` (a rotation is due and the client holds
    /// 10 secrets), `record_missing` (the store has no record of what consumers hold),
    /// `error` (the client could not be observed: CDS, the store, a value changed by hand),
    /// `pickup_timeout` (the pickup check has not confirmed within its timeout).
    pub attention: Vec<&'static str>,
    /// Old secrets past grace wait for the pickup check; `null` when none do.
    pub pickup: Option<PickupView>,
    /// What the store holds, per its record.
    pub current: Option<CurrentView>,
    /// The client's secrets in CDS.
    pub secrets: SecretsView,
    /// Superseded secrets still inside their grace period.
    pub pending_retire: Vec<SecretId>,
    /// When their grace period ends.
    pub retire_after: Option<String>,
    /// Orphans: managed secrets made after the current one was published and never
    /// published (deleted after `orphan_grace`).
    pub orphans: Vec<SecretId>,
    /// Managed secrets kept because the store has no record (any may be in use).
    pub possibly_in_use: Vec<SecretId>,
    /// What a pass would do now.
    pub planned: Vec<PlannedStep>,
    /// The next rotation.
    pub rotation: RotationView,
    /// The next scheduled time (rotation window).
    pub next_window: Option<String>,
    /// How the last real pass over the client ended (time, outcome, step, message).
    pub last_result: Option<LastResult>,
    /// Why the client could not be observed now.
    pub error: Option<String>,
    /// The last writes to CDS and the store for this client, from the audit log
    /// (`daemon.audit_log`), oldest first; empty without one.
    pub recent_writes: Vec<crate::audit::Entry>,
}

/// Old secrets kept until the pickup check confirms the current secret.
#[derive(Clone, Debug, Serialize)]
pub struct PickupView {
    /// What the check said.
    pub reason: String,
    /// When an unconfirmed pickup is overdue (`published_at + grace + timeout`).
    pub deadline: Option<String>,
    /// Whether it is overdue (`pickup_timeout`).
    pub overdue: bool,
}

/// The store's current secret.
#[derive(Clone, Debug, Serialize)]
pub struct CurrentView {
    /// Its CDS id.
    pub secret_id: SecretId,
    /// The first 16 hex digits of the SHA-256 of the value.
    pub fingerprint: String,
    /// When it expires, per CDS (or the record if CDS no longer lists it).
    pub expiration: String,
    /// When the rotator published it.
    pub published_at: String,
    /// Where it is published.
    pub location: String,
}

/// Secrets split by who made them.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SecretsView {
    /// Made by the rotator (its marker in the description).
    pub managed: Vec<SecretView>,
    /// Made by someone else.
    pub unmanaged: Vec<SecretView>,
}

/// One secret in CDS.
#[derive(Clone, Debug, Serialize)]
pub struct SecretView {
    /// Its id.
    pub id: SecretId,
    /// When it expires; `null` when it never does.
    pub expiration: Option<String>,
    /// When the rotator made it (managed secrets only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
}

/// One step a pass would take.
#[derive(Clone, Debug, Serialize)]
pub struct PlannedStep {
    /// `delete`, `retire` or `rotate`.
    pub action: &'static str,
    /// The secret concerned (`delete`, `retire`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_id: Option<SecretId>,
    /// Why.
    pub reason: String,
    /// Whether the step cannot happen (a rotation at 10 secrets).
    pub blocked: bool,
}

/// When the next rotation happens.
#[derive(Clone, Debug, Serialize)]
pub struct RotationView {
    /// Whether it is due now.
    pub due: bool,
    /// Why it is due (or waits).
    pub reason: Option<String>,
    /// `now`, or when it will happen: the window it waits for, or when it falls due.
    pub at: Option<String>,
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn secret_view(s: &ClientSecret) -> SecretView {
    SecretView {
        id: s.id,
        expiration: s.expires_at().map(ts),
        created: crate::rotation::decide::managed(s).map(|m: Marker| ts(m.created)),
    }
}

/// The view of one client from a dry-run pass at `now`.
pub fn view(job: &ClientJob, r: &PassReport, now: DateTime<Utc>) -> ClientView {
    let plan = r.plan.as_ref();
    let current_secret = r
        .record
        .as_ref()
        .and_then(|rec| r.secrets.iter().find(|s| s.id == rec.secret_id));
    let current = r.record.as_ref().map(|rec| CurrentView {
        secret_id: rec.secret_id,
        fingerprint: rec.fingerprint.to_string(),
        expiration: ts(current_secret
            .and_then(ClientSecret::expires_at)
            .unwrap_or(rec.expiration)),
        published_at: ts(rec.published_at),
        location: job.store.location(&job.store_key),
    });
    let mut secrets = SecretsView::default();
    for s in &r.secrets {
        let v = secret_view(s);
        if v.created.is_some() {
            secrets.managed.push(v);
        } else {
            secrets.unmanaged.push(v);
        }
    }
    let attention = attention(r, plan);
    let planned = planned_steps(r, plan);
    let next_window = job.timing.schedule.next_after(now);
    let rotation = rotation_view(job, r, plan, current_secret);
    let state = state(r, plan, &attention);
    ClientView {
        client: r.client.clone(),
        client_id: job.client.client_id.clone(),
        kind: job.client.kind.to_string(),
        state,
        attention,
        pickup: r.pickup.as_ref().map(|w| PickupView {
            reason: w.reason.clone(),
            deadline: w.deadline.map(ts),
            overdue: w.overdue,
        }),
        current,
        secrets,
        pending_retire: plan.map(|p| p.retire_later.0.clone()).unwrap_or_default(),
        retire_after: plan.and_then(|p| p.retire_later.1).map(ts),
        orphans: plan
            .map(|p| {
                p.clean_up
                    .iter()
                    .filter(|(_, why)| *why == crate::rotation::DeleteReason::Orphan)
                    .map(|(id, _)| *id)
                    .chain(p.orphans_later.iter().copied())
                    .collect()
            })
            .unwrap_or_default(),
        possibly_in_use: plan.map(|p| p.possibly_in_use.clone()).unwrap_or_default(),
        planned,
        rotation,
        next_window: next_window.map(ts),
        last_result: r.last.clone(),
        error: r.error.as_ref().map(|e| e.source.to_string()),
        recent_writes: Vec::new(),
    }
}

/// What in a client's view needs someone to look (its `attention` list).
fn attention(r: &PassReport, plan: Option<&Plan>) -> Vec<&'static str> {
    let mut attention = Vec::new();
    if r.error.is_some() {
        attention.push("error");
    }
    if plan.is_some_and(|p| p.rotate.as_ref().is_some_and(|why| why.current_invalid())) {
        attention.push("current_invalid");
    }
    if plan.is_some_and(|p| {
        p.rotate
            .as_ref()
            .is_some_and(|why| matches!(why, crate::rotation::RotateReason::CurrentNeverExpires(_)))
    }) {
        attention.push("current_invalid");
    }
    if plan.is_some_and(|p| p.full) {
        attention.push("full");
    }
    if crate::rotation::decide::record_missing(r.record.as_ref(), r.unrecorded, plan) {
        attention.push("record_missing");
    }
    if r.pickup.as_ref().is_some_and(|p| p.overdue) {
        attention.push("pickup_timeout");
    }
    attention.dedup();
    attention
}

/// The steps a pass would take now, in order.
fn planned_steps(r: &PassReport, plan: Option<&Plan>) -> Vec<PlannedStep> {
    let mut planned = Vec::new();
    if let Some(p) = plan {
        for (id, why) in &p.clean_up {
            planned.push(PlannedStep {
                action: "delete",
                secret_id: Some(*id),
                reason: why.to_string(),
                blocked: false,
            });
        }
        for id in &p.retire {
            planned.push(PlannedStep {
                action: "retire",
                secret_id: Some(*id),
                reason: match &r.pickup {
                    Some(w) => format!("superseded, grace over; {w}"),
                    None => "superseded, grace over".to_owned(),
                },
                blocked: false,
            });
        }
        if let Some(why) = &p.rotate {
            planned.push(PlannedStep {
                action: "rotate",
                secret_id: None,
                reason: why.to_string(),
                blocked: p.full,
            });
        }
    }
    planned
}

/// When the client's next rotation happens, and why.
fn rotation_view(
    job: &ClientJob,
    r: &PassReport,
    plan: Option<&Plan>,
    current_secret: Option<&ClientSecret>,
) -> RotationView {
    match plan {
        Some(p) if p.rotate.is_some() => RotationView {
            due: true,
            reason: p.rotate.as_ref().map(ToString::to_string),
            at: Some("now".to_owned()),
        },
        Some(p) if p.deferred.is_some() => RotationView {
            due: true,
            reason: p
                .deferred
                .as_ref()
                .map(|(why, _)| format!("{why}; waits for the rotation window")),
            at: p.deferred.as_ref().map(|(_, at)| ts(*at)),
        },
        _ => {
            let due = current_secret
                .and_then(ClientSecret::expires_at)
                .and_then(|at| at.checked_sub_signed(job.timing.rotate_before))
                .map(|due| match (job.timing.max_age, r.record.as_ref()) {
                    (Some(age), Some(rec)) => rec
                        .published_at
                        .checked_add_signed(age)
                        .map_or(due, |old| due.min(old)),
                    _ => due,
                });
            // It happens at the first window once due.
            let at = due.map(|due| next_window_from(job, due).unwrap_or(due));
            RotationView {
                due: false,
                reason: due.map(|d| format!("falls due at {}", ts(d))),
                at: at.map(ts),
            }
        }
    }
}

/// The one word for a client's state.
fn state(r: &PassReport, plan: Option<&Plan>, attention: &[&str]) -> &'static str {
    if r.error.is_some() {
        "error"
    } else if !attention.is_empty() {
        "attention"
    } else if plan.is_some_and(|p| p.rotate.is_some()) {
        "rotation_due"
    } else if plan.is_some_and(|p| p.deferred.is_some()) {
        "waiting_for_window"
    } else if r.pickup.is_some() {
        "waiting_for_pickup"
    } else {
        "ok"
    }
}

/// How many audit entries `status` shows per client.
pub const RECENT_WRITES: usize = 10;

/// The audit entries of a view, one line each, for people.
pub fn recent_writes_text(v: &ClientView) -> String {
    let mut lines = vec![format!("recent writes of {} (audit log):", v.client)];
    for e in &v.recent_writes {
        let what = serde_json::to_value(e.action)
            .ok()
            .and_then(|a| a.as_str().map(str::to_owned))
            .unwrap_or_default();
        let result = serde_json::to_value(e.result)
            .ok()
            .and_then(|a| a.as_str().map(str::to_owned))
            .unwrap_or_default();
        let id = e
            .secret_id
            .map(|i| format!(" secret {i}"))
            .unwrap_or_default();
        let why = e
            .reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        let op = e
            .operation_id
            .as_deref()
            .map(|o| format!(", OperationId {o}"))
            .unwrap_or_default();
        lines.push(format!(
            "  {} {what}{id}{why}: {result} (step {}, by {} on {}{op})",
            e.at, e.step, e.actor, e.host
        ));
    }
    // The log is a file others may have edited: no line of it can forge another.
    lines
        .iter()
        .map(|l| crate::text::escape_control(l))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first window at or after `t`.
fn next_window_from(job: &ClientJob, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    job.timing
        .schedule
        .next_after(t.checked_sub_signed(chrono::Duration::seconds(1))?)
}

/// Whether `status` and `plan` exit 1: some client needs attention (its store's secret
/// is invalid in CDS, it is full, its record is missing, its pickup timed out), could
/// not be seen, or has a blocked step. One rule for both: they look at the same state,
/// and a script must not read "fine" from `plan` while consumers are broken (the
/// store's secret gone after a CDS restore) just because `--run-now` would rotate it.
pub fn needs_attention(views: &[ClientView]) -> bool {
    views.iter().any(|v| {
        !v.attention.is_empty() || v.error.is_some() || v.planned.iter().any(|s| s.blocked)
    })
}

/// The `status` table for people.
pub fn table(views: &[ClientView]) -> String {
    let mut rows = vec![[
        "CLIENT".to_owned(),
        "STATE".to_owned(),
        "SECRETS".to_owned(),
        "CURRENT".to_owned(),
        "EXPIRES".to_owned(),
        "NEXT ROTATION".to_owned(),
        "LAST PASS".to_owned(),
    ]];
    for v in views {
        let mut state = if v.attention.is_empty() {
            v.state.to_owned()
        } else {
            format!("{} ({})", v.state, v.attention.join(", "))
        };
        if let Some(p) = &v.pickup {
            state = match v.state {
                "waiting_for_pickup" => format!("waiting for pickup ({})", p.reason),
                _ => format!("{state}; waiting for pickup ({})", p.reason),
            };
        }
        let next = match (&v.error, v.rotation.due, &v.rotation.at) {
            (Some(e), _, _) => format!("error: {e}"),
            (None, true, Some(at)) if at == "now" => format!(
                "due now ({})",
                v.rotation.reason.clone().unwrap_or_default()
            ),
            (None, true, Some(at)) => format!("window {at} (due)"),
            (None, _, Some(at)) => format!("window {at}"),
            (None, _, None) => "-".to_owned(),
        };
        let last = v.last_result.as_ref().map_or_else(
            || "-".to_owned(),
            |l| {
                let outcome = serde_json::to_value(l.outcome)
                    .ok()
                    .and_then(|o| o.as_str().map(str::to_owned))
                    .unwrap_or_default();
                match (&l.step, &l.message) {
                    (Some(step), Some(m)) => format!("{outcome} {} at {step}: {m}", ts(l.at)),
                    (None, Some(m)) => format!("{outcome} {}: {m}", ts(l.at)),
                    _ => format!("{outcome} {}", ts(l.at)),
                }
            },
        );
        rows.push([
            v.client.clone(),
            state,
            if v.error.is_some() {
                "?".to_owned()
            } else {
                format!(
                    "{}/{MAX_SECRETS_PER_CLIENT}",
                    v.secrets.managed.len() + v.secrets.unmanaged.len()
                )
            },
            v.current
                .as_ref()
                .map_or_else(|| "-".to_owned(), |c| c.secret_id.to_string()),
            v.current
                .as_ref()
                .map_or_else(|| "-".to_owned(), |c| c.expiration.clone()),
            next,
            last,
        ]);
    }
    // Cells can quote CDS or a store: no control character reaches a terminal.
    for row in &mut rows {
        for cell in row.iter_mut() {
            *cell = escape_control(cell);
        }
    }
    let widths: Vec<usize> = (0..7)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let lines: Vec<String> = rows
        .iter()
        .map(|r| {
            r.iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_owned()
        })
        .collect();
    lines.join("\n")
}
