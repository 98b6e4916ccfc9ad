//! Durations as the policy writes them: `0s`, `90s`, `10m`, `36h`, `90d`, `2w`, `1d12h`.
//!
//! An error says what is wrong with the text, what it should be (whole numbers with units
//! `s m h d w`, no sign, combined like `1d12h`) and, when the intent is clear, the exact
//! duration to write instead. The caller puts the key in front. Not here: each key's
//! bounds (its check).

use chrono::Duration;

/// The longest duration the policy accepts anywhere, in seconds (100 years: 36500d), so
/// that adding any policy duration to a date can never overflow.
const MAX_SECS: u64 = 36_500 * 86_400;

/// What every malformed duration is told.
const HOW: &str =
    "use whole numbers with units s, m, h, d or w, no sign or spaces, combined like 1d12h";

/// The units, largest first, with their length in seconds.
const UNITS: [(char, u64); 5] = [
    ('w', 604_800),
    ('d', 86_400),
    ('h', 3_600),
    ('m', 60),
    ('s', 1),
];

/// Parses a policy duration: one or more `<number><unit>` with units `s m h d w`, in
/// total at most 36500d.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("empty duration; {HOW}"));
    }
    let shown = shown(text);
    let too_long = || format!("`{shown}` is longer than 36500d");
    let bad = |why: String| format!("`{shown}` is not a duration: {why}; {HOW}");
    if let Some(why) = misshapen(text) {
        return Err(bad(why));
    }

    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let (number, after) = rest.split_at(digits);
        let letters = after.len() - after.trim_start_matches(char::is_alphabetic).len();
        let (unit, after) = after.split_at(letters);
        rest = after;
        if unit.is_empty() {
            return match after.chars().next() {
                Some(c) => Err(bad(format!(
                    "`{}` cannot be part of a duration",
                    c.escape_debug()
                ))),
                // Digits at the end, after at least one unit (a lone number is handled
                // by `misshapen`).
                None => Err(bad(format!(
                    "the last number `{}` has no unit",
                    shown_part(number)
                ))),
            };
        }
        if number.is_empty() {
            return Err(bad(format!(
                "a number must come before `{}`",
                shown_part(unit)
            )));
        }
        let Some(unit_secs) = unit_secs(unit) else {
            return Err(bad(unknown_unit(unit)));
        };
        total = number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(unit_secs))
            .and_then(|secs| total.checked_add(secs))
            .filter(|t| *t <= MAX_SECS)
            .ok_or_else(too_long)?;
    }
    i64::try_from(total)
        .ok()
        .and_then(Duration::try_seconds)
        .ok_or_else(too_long)
}

/// What is wrong with a text that is not even a list of `<number><unit>`: a sign, a
/// fraction, spaces, or a number alone. With the duration to write when it is clear.
fn misshapen(text: &str) -> Option<String> {
    if text.starts_with(['-', '+']) {
        let which = if text.starts_with('-') {
            "a duration cannot be negative"
        } else {
            "no sign"
        };
        // All signs at once, so that this never recurses more than once.
        return Some(match parse(text.trim_start_matches(['-', '+'])) {
            Ok(d) => format!("{which}: write `{}`", format(d)),
            Err(_) => which.to_owned(),
        });
    }
    if text.chars().any(char::is_whitespace) {
        let joined: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        return Some(match parse(&joined) {
            Ok(d) => format!("no spaces inside a duration: write `{}`", format(d)),
            Err(_) => "no spaces inside a duration".to_owned(),
        });
    }
    if text.contains(['.', ',']) {
        return Some(match fraction(text) {
            Some(secs) => format!("whole numbers only: write `{}`", format_secs(secs)),
            None => "whole numbers only".to_owned(),
        });
    }
    if text.chars().all(|c| c.is_ascii_digit()) {
        return Some(match text.parse::<u64>().ok().filter(|n| *n <= MAX_SECS) {
            Some(n) => {
                let exact = largest_exact_unit(n);
                let also = if exact == format!("{n}s") {
                    String::new()
                } else {
                    format!(" (or `{exact}`)")
                };
                format!(
                    "`{}` has no unit; in seconds write `{n}s`{also}",
                    shown_part(text)
                )
            }
            None => format!("`{}` has no unit", shown_part(text)),
        });
    }
    None
}

/// Seconds in `1.5d`-like text (one number with a fraction and one unit), when exact.
fn fraction(text: &str) -> Option<u64> {
    let (number, unit) = text.split_at(text.find(|c: char| c.is_alphabetic())?);
    let unit = unit_secs(unit)?;
    let (whole, part) = number.split_once(['.', ','])?;
    if part.is_empty() || part.len() > 9 || !part.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let scale = 10u64.pow(u32::try_from(part.len()).ok()?);
    let parts = whole.checked_mul(scale)?.checked_add(part.parse().ok()?)?;
    let scaled = parts.checked_mul(unit)?;
    scaled
        .is_multiple_of(scale)
        .then_some(scaled / scale)
        .filter(|s| *s <= MAX_SECS)
}

fn unit_secs(unit: &str) -> Option<u64> {
    let mut chars = unit.chars();
    let (Some(c), None) = (chars.next(), chars.next()) else {
        return None;
    };
    UNITS.iter().find(|(u, _)| *u == c).map(|(_, secs)| *secs)
}

/// Why `unit` is not a unit, naming the one to use when the intent is clear.
fn unknown_unit(unit: &str) -> String {
    let shown = shown_part(unit);
    let lower = unit.to_lowercase();
    let hint = match lower.as_str() {
        "ms" | "us" | "µs" | "ns" => "nothing shorter than a second (s) is supported".to_owned(),
        "sec" | "secs" | "second" | "seconds" => "for seconds write s".to_owned(),
        "min" | "mins" | "minute" | "minutes" => "for minutes write m".to_owned(),
        "hr" | "hrs" | "hour" | "hours" => "for hours write h".to_owned(),
        "day" | "days" => "for days write d".to_owned(),
        "wk" | "wks" | "week" | "weeks" => "for weeks write w".to_owned(),
        "mo" | "mon" | "month" | "months" | "y" | "yr" | "yrs" | "year" | "years" => {
            "months and years differ in length: write days, like 365d".to_owned()
        }
        _ if unit_secs(&lower).is_some() => format!("units are lower case: write {lower}"),
        _ => return format!("unknown unit `{shown}`"),
    };
    format!("unknown unit `{shown}`: {hint}")
}

/// `n` seconds in the largest unit that holds it exactly (`86400` is `1d`).
fn largest_exact_unit(n: u64) -> String {
    UNITS
        .iter()
        .find(|(_, secs)| n.is_multiple_of(*secs))
        .map_or_else(|| format!("{n}s"), |(u, secs)| format!("{}{u}", n / secs))
}

/// The duration as written, cut short and escaped for an error message.
fn shown(text: &str) -> String {
    cut(text, 40)
}

/// A part of the duration (a number, a unit), cut shorter.
fn shown_part(text: &str) -> String {
    cut(text, 12)
}

fn cut(text: &str, keep: usize) -> String {
    let mut out: String = text
        .chars()
        .take(keep)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().nth(keep).is_some() {
        out.push('…');
    }
    out
}

/// Writes a duration back in the policy's notation (largest whole units).
pub fn format(d: Duration) -> String {
    format_secs(u64::try_from(d.num_seconds()).unwrap_or(0))
}

fn format_secs(mut secs: u64) -> String {
    if secs == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in [('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_use_s_m_h_d_w() {
        assert_eq!(parse("0s").unwrap(), Duration::zero());
        assert_eq!(parse("36h").unwrap(), Duration::hours(36));
        assert_eq!(parse("90d").unwrap(), Duration::days(90));
        assert_eq!(parse("2w").unwrap(), Duration::days(14));
        assert_eq!(parse("1d12h").unwrap(), Duration::hours(36));
    }

    #[test]
    fn bad_durations_say_what_to_write() {
        assert!(parse("90").unwrap_err().contains("no unit"));
        assert!(parse("90y").unwrap_err().contains("unknown unit"));
        assert!(parse("d").unwrap_err().contains("number"));
        assert!(parse("").is_err());
        assert!(parse("99999999999999w").is_err());
    }

    #[test]
    fn format_round_trips() {
        for d in ["0s", "90d", "1d12h", "10m", "1h1s"] {
            assert_eq!(format(parse(d).unwrap()), d);
        }
    }
}
