//! The `slack` notifier: a Slack incoming-webhook message, `blocks` with the event's
//! summary and facts, and `text` as the fallback for notifications.

pub mod spec;

use serde_json::{Value, json};

use crate::domain::Event;

/// The body: [`payload`] as JSON text.
pub fn body(event: &Event) -> Vec<u8> {
    payload(event).to_string().into_bytes()
}

/// The message: a header, the summary, the facts as fields (Slack takes at most ten).
pub fn payload(event: &Event) -> Value {
    let summary = event.summary();
    let fields: Vec<Value> = event
        .facts()
        .into_iter()
        .take(10)
        .map(|(title, text)| json!({ "type": "mrkdwn", "text": format!("*{title}*\n{}", escape(&text)) }))
        .collect();
    json!({
        "text": summary,
        "blocks": [
            {
                "type": "header",
                "text": { "type": "plain_text", "text": format!("cds-rotator: {}", event.kind) }
            },
            { "type": "section", "text": { "type": "mrkdwn", "text": escape(&summary) } },
            { "type": "section", "fields": fields }
        ]
    })
}

/// Slack's mrkdwn treats `&`, `<` and `>` as markup.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::tests::rotated;

    #[test]
    fn a_slack_message_has_text_and_blocks_with_the_facts() {
        let mut event = rotated();
        event.detail = Some("<b> & co".into());
        let p = payload(&event);
        assert_eq!(p["text"], event.summary());
        assert_eq!(p["blocks"][0]["type"], "header");
        assert_eq!(p["blocks"][0]["text"]["text"], "cds-rotator: rotated");
        let section = p["blocks"][1]["text"]["text"].as_str().unwrap();
        assert!(section.contains("&lt;b&gt; &amp; co"), "{section}");
        let fields = p["blocks"][2]["fields"].as_array().unwrap();
        assert!(fields.len() <= 10);
        assert!(
            fields.iter().any(|f| f["text"] == "*Secret ids*\n7"),
            "{fields:?}"
        );
    }
}
