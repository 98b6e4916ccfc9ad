//! Durations as the policy writes them: `0s`, `90s`, `10m`, `36h`, `90d`, `2w`, `1d12h`.

use chrono::Duration;

/// The longest duration the policy accepts anywhere, in seconds (100 years: 36500d), so
/// that adding any policy duration to a date can never overflow.
const MAX_SECS: u64 = 36_500 * 86_400;

/// Parses a policy duration: one or more `<number><unit>` with units `s m h d w`, in
/// total at most 36500d.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration; write e.g. 90d, 36h, 10m or 0s".to_owned());
    }
    let shown = shown(text);
    let too_long = || format!("`{shown}` is longer than 36500d");
    let mut total: u64 = 0;
    let mut number: Option<u64> = None;
    for ch in text.chars() {
        if let Some(digit) = ch.to_digit(10) {
            let n = number
                .unwrap_or(0)
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(digit)))
                .ok_or_else(too_long)?;
            number = Some(n);
            continue;
        }
        let unit_secs: u64 = match ch {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            'w' => 604_800,
            _ => {
                return Err(format!(
                    "`{shown}` is not a duration: unknown unit `{}`; use s, m, h, d or w (e.g. 90d)",
                    ch.escape_debug()
                ));
            }
        };
        let n = number.take().ok_or_else(|| {
            format!("`{shown}` is not a duration: a number must come before `{ch}`")
        })?;
        total = n
            .checked_mul(unit_secs)
            .and_then(|secs| total.checked_add(secs))
            .filter(|t| *t <= MAX_SECS)
            .ok_or_else(too_long)?;
    }
    if let Some(n) = number {
        return Err(format!(
            "`{shown}` is not a duration: `{n}` has no unit; use s, m, h, d or w (e.g. {n}d)"
        ));
    }
    i64::try_from(total)
        .ok()
        .and_then(Duration::try_seconds)
        .ok_or_else(too_long)
}

/// The duration as written, cut short and escaped for an error message.
fn shown(text: &str) -> String {
    const KEEP: usize = 40;
    let mut out: String = text
        .chars()
        .take(KEEP)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().nth(KEEP).is_some() {
        out.push('…');
    }
    out
}

/// Writes a duration back in the policy's notation (largest whole units).
pub fn format(d: Duration) -> String {
    let mut secs = d.num_seconds();
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
