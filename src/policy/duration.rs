//! Durations as the policy writes them: `0s`, `90s`, `10m`, `36h`, `90d`, `2w`, `1d12h`.

use chrono::Duration;

/// Parses a policy duration: one or more `<number><unit>` with units `s m h d w`.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration; write e.g. 90d, 36h, 10m or 0s".to_owned());
    }
    let mut total = Duration::zero();
    let mut digits = String::new();
    for ch in text.chars() {
        if ch.is_ascii_digit() {
            digits.push(ch);
            continue;
        }
        let unit_secs: i64 = match ch {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            'w' => 604_800,
            _ => {
                return Err(format!(
                    "`{text}` is not a duration: unknown unit `{ch}`; use s, m, h, d or w (e.g. 90d)"
                ));
            }
        };
        let n: i64 = digits
            .parse()
            .map_err(|_| format!("`{text}` is not a duration: a number must come before `{ch}`"))?;
        digits.clear();
        let secs = n
            .checked_mul(unit_secs)
            .filter(|s| *s <= 100 * 365 * 86_400)
            .ok_or_else(|| format!("`{text}` is too long a duration"))?;
        total += Duration::seconds(secs);
    }
    if !digits.is_empty() {
        return Err(format!(
            "`{text}` is not a duration: `{digits}` has no unit; use s, m, h, d or w (e.g. {digits}d)"
        ));
    }
    Ok(total)
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
