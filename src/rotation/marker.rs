//! The description that marks a secret as the rotator's own ("managed").
//!
//! `cds-rotator managed; created=<RFC 3339, milliseconds>; run=<run id>.<attempt>`. The
//! creation time is the only age the rotator trusts (CDS ids promise no order): it tells
//! an orphan (created after the current secret was published) from a superseded secret
//! (created before), and an orphan from a create still in flight. The run id lets a pass
//! recognise its own create when the answer to the POST was lost. Secrets without the
//! marker are unmanaged and left alone unless the policy says otherwise.

use chrono::{DateTime, SecondsFormat, Utc};

const PREFIX: &str = "cds-rotator managed; created=";

/// What the marker of a managed secret says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marker {
    /// When the pass that created it started the create.
    pub created: DateTime<Utc>,
    /// `<run id>.<attempt>`: unique per create attempt.
    pub run: String,
}

impl Marker {
    /// The description to send with a create.
    pub fn description(&self) -> String {
        format!(
            "{PREFIX}{}; run={}",
            self.created.to_rfc3339_opts(SecondsFormat::Millis, true),
            self.run
        )
    }

    /// Reads a marker back from a description; `None` for unmanaged secrets.
    pub fn parse(description: Option<&str>) -> Option<Marker> {
        let rest = description?.strip_prefix(PREFIX)?;
        let (created, run) = rest.split_once("; run=")?;
        let created = DateTime::parse_from_rfc3339(created).ok()?.to_utc();
        if run.is_empty() {
            return None;
        }
        Some(Marker {
            created,
            run: run.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn marker_round_trips_through_the_description() {
        let m = Marker {
            created: Utc.with_ymd_and_hms(2026, 11, 22, 3, 0, 0).unwrap(),
            run: "6f1c2d3e.1".into(),
        };
        let d = m.description();
        assert_eq!(
            d,
            "cds-rotator managed; created=2026-11-22T03:00:00.000Z; run=6f1c2d3e.1"
        );
        assert_eq!(Marker::parse(Some(&d)), Some(m.clone()));
        // Markers written with whole seconds read back the same.
        let old = "cds-rotator managed; created=2026-11-22T03:00:00Z; run=6f1c2d3e.1";
        assert_eq!(Marker::parse(Some(old)), Some(m));
    }

    #[test]
    fn other_descriptions_are_unmanaged() {
        assert_eq!(Marker::parse(None), None);
        assert_eq!(Marker::parse(Some("made by hand")), None);
        assert_eq!(
            Marker::parse(Some("cds-rotator managed; created=yesterday; run=x")),
            None
        );
    }
}
