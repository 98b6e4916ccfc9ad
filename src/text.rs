//! Text from outside (CDS error bodies, OAuth error codes, transport errors) made safe
//! for one-line human output and text logs.
//!
//! [`escape_control`] turns every character that could forge a line, move the cursor,
//! clear the screen or reorder what a reader sees into a visible `\u{..}` escape;
//! [`clip`] bounds the length. Not here: redacting secret values (they never reach
//! text in the first place) or escaping for JSON logs (the JSON encoder does that).

/// The length [`untrusted`] clips to, in characters.
pub const UNTRUSTED_MAX_CHARS: usize = 300;

/// Whether `c` must not reach a terminal or a text log as it is: control characters
/// (C0, DEL, C1), the line and paragraph separators, and the bidirectional overrides
/// and isolates that make text read differently from how it is stored.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `s` with each control character, U+2028/U+2029 and bidi override or isolate
/// replaced by a visible escape: `\n` and `\t` as those two characters, the others as
/// `\u{1b}` (hex, as Rust writes them). Other text is left as it is.
pub fn escape_control(s: &str) -> String {
    if !s.chars().any(needs_escape) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// `s` cut to at most `max_chars` characters; a cut one ends with "…" (counted).
pub fn clip(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max_chars.saturating_sub(1)).collect();
    if max_chars > 0 {
        out.push('…');
    }
    out
}

/// Text from outside, ready for human output: escaped, then clipped to
/// [`UNTRUSTED_MAX_CHARS`].
pub fn untrusted(s: &str) -> String {
    clip(&escape_control(s), UNTRUSTED_MAX_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_left_alone() {
        for s in ["", "Injected fault.", "Zürich – 東京 ✓", r"a\b \u{1b}"] {
            assert_eq!(escape_control(s), s);
        }
    }

    #[test]
    fn newlines_and_tabs_become_their_two_character_escapes() {
        assert_eq!(escape_control("a\nb\tc"), r"a\nb\tc");
    }

    #[test]
    fn ansi_escapes_and_other_control_characters_become_visible() {
        assert_eq!(escape_control("\u{1b}[2Jx"), r"\u{1b}[2Jx");
        assert_eq!(
            escape_control("a\rb\0c\u{7f}\u{85}"),
            r"a\u{d}b\u{0}c\u{7f}\u{85}"
        );
    }

    #[test]
    fn line_separators_and_bidi_overrides_become_visible() {
        assert_eq!(escape_control("a\u{2028}b\u{2029}"), r"a\u{2028}b\u{2029}");
        for c in ('\u{202A}'..='\u{202E}').chain('\u{2066}'..='\u{2069}') {
            let escaped = escape_control(&format!("x{c}y"));
            assert_eq!(escaped, format!("x\\u{{{:x}}}y", u32::from(c)));
        }
        // Neighbours that are harmless stay.
        assert_eq!(
            escape_control("\u{2027}\u{202F}\u{2065}\u{206A}")
                .chars()
                .count(),
            4
        );
    }

    #[test]
    fn escaped_text_has_no_control_character_left() {
        let nasty: String = (0u32..0x3000).filter_map(char::from_u32).collect();
        assert!(!escape_control(&nasty).chars().any(needs_escape));
    }

    #[test]
    fn clip_keeps_short_text_and_marks_a_cut() {
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("abcd", 3), "ab…");
        assert_eq!(clip("äöüß", 2), "ä…");
        assert_eq!(clip("abc", 0), "");
        assert_eq!(
            untrusted(&"x".repeat(1000)).chars().count(),
            UNTRUSTED_MAX_CHARS
        );
    }
}
