//! The `teams` notifier: a Microsoft Teams incoming-webhook message carrying an
//! Adaptive Card with the event's summary and facts.

pub mod spec;

use serde_json::{Value, json};

use crate::domain::Event;

/// The body: [`payload`] as JSON text.
pub fn body(event: &Event) -> Vec<u8> {
    payload(event).to_string().into_bytes()
}

/// The message: one Adaptive Card (title, summary, a fact set).
pub fn payload(event: &Event) -> Value {
    let facts: Vec<Value> = event
        .facts()
        .into_iter()
        .map(|(title, value)| json!({ "title": title, "value": value }))
        .collect();
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [
                    {
                        "type": "TextBlock",
                        "text": format!("cds-rotator: {}", event.kind),
                        "weight": "Bolder",
                        "size": "Medium",
                        "wrap": true
                    },
                    { "type": "TextBlock", "text": event.summary(), "wrap": true },
                    { "type": "FactSet", "facts": facts }
                ]
            }
        }]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::tests::rotated;

    #[test]
    fn a_teams_message_is_one_adaptive_card_with_the_facts() {
        let event = rotated();
        let p = payload(&event);
        assert_eq!(p["type"], "message");
        let a = &p["attachments"][0];
        assert_eq!(a["contentType"], "application/vnd.microsoft.card.adaptive");
        assert_eq!(a["content"]["type"], "AdaptiveCard");
        let body = a["content"]["body"].as_array().unwrap();
        assert_eq!(body[1]["text"], event.summary());
        let facts = body[2]["facts"].as_array().unwrap();
        assert!(
            facts
                .iter()
                .any(|f| f["title"] == "Fingerprint" && f["value"] == "0123456789abcdef"),
            "{facts:?}"
        );
    }
}
