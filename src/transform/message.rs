//! The message an `input` transformer returns → the engine's event.
//!
//! The transformer sees the message in the shape templates see (`engine::context::
//! message_value`), and the event the flow runs on is rebuilt from what it returns: by
//! `type`, from the same keys (`reply.id`, `location.latitude`, `media.id`…). `text` is
//! the text a user typed or tapped, so a changed `text` wins over the title of a reply
//! or button and the caption of a media message. `id` and `timestamp` are the
//! WhatsApp message's and cannot be changed (the inbox deduplicates by the id).

use crate::engine::{Event, EventKind};
use crate::flow::MediaKind;
use serde_json::Value;

/// The event for the message `returned` by an input transformer that was given
/// `original`; `Err` says what is wrong with the returned message.
pub fn to_event(original: &Event, returned: &Value) -> Result<Event, String> {
    let Value::Object(m) = returned else {
        return Err(format!(
            "input must return the message (a map) or () to drop it, not {}",
            json_kind(returned)
        ));
    };
    let Some(kind) = m.get("type").and_then(Value::as_str) else {
        return Err("the returned message has no `type` (text)".into());
    };
    // A `text` the transformer changed; one it left or removed changes nothing.
    let text = match m.get("text") {
        Some(Value::String(t)) if Some(t.as_str()) != original.kind.text() => Some(t.clone()),
        Some(Value::String(_)) | None | Some(Value::Null) => None,
        Some(other) => {
            return Err(format!(
                "message.text must be text, not {}",
                json_kind(other)
            ));
        }
    };
    let kind = match kind {
        "text" => match m.get("text") {
            Some(Value::String(t)) => EventKind::Text(t.clone()),
            Some(_) | None => return Err("a text message needs message.text".into()),
        },
        "reply" => EventKind::Reply {
            id: string(returned, "reply", "id")?,
            title: text.map_or_else(|| string(returned, "reply", "title"), Ok)?,
        },
        "button" => EventKind::Button {
            payload: string(returned, "button", "payload")?,
            text: text.map_or_else(|| string(returned, "button", "text"), Ok)?,
        },
        "location" => EventKind::Location {
            latitude: number(returned, "location", "latitude")?,
            longitude: number(returned, "location", "longitude")?,
            name: optional(returned, "location", "name")?,
            address: optional(returned, "location", "address")?,
        },
        "image" | "video" | "audio" | "document" | "sticker" => EventKind::Media {
            kind: media_kind(kind).ok_or("message.type is not a media kind")?,
            id: string(returned, "media", "id")?,
            mime_type: optional(returned, "media", "mime_type")?,
            caption: match text {
                Some(t) => Some(t),
                None => optional(returned, "media", "caption")?,
            },
            filename: optional(returned, "media", "filename")?,
        },
        "contacts" => match m.get("contacts") {
            Some(Value::Array(c)) => EventKind::Contacts(c.clone()),
            Some(_) | None => return Err("message.contacts must be a list".into()),
        },
        "reaction" => EventKind::Reaction {
            message_id: string(returned, "reaction", "message_id")?,
            emoji: string(returned, "reaction", "emoji")?,
        },
        "flow_reply" => EventKind::FlowReply(m.get("flow_reply").cloned().unwrap_or(Value::Null)),
        other => match &original.kind {
            EventKind::Unsupported(what) if what == other => EventKind::Unsupported(what.clone()),
            EventKind::Text(_)
            | EventKind::Reply { .. }
            | EventKind::Button { .. }
            | EventKind::Location { .. }
            | EventKind::Media { .. }
            | EventKind::Contacts(_)
            | EventKind::Reaction { .. }
            | EventKind::FlowReply(_)
            | EventKind::DeliveryFailed { .. }
            | EventKind::EffectResult(_)
            | EventKind::Injected(_)
            | EventKind::Data(_)
            | EventKind::StartFlow { .. }
            | EventKind::HandoverEnded(_)
            | EventKind::Unsupported(_) => {
                return Err(format!(
                    "message.type \"{other}\" is not a kind of message a bot receives (text, reply, button, location, image, video, audio, document, sticker, contacts, reaction, flow_reply)"
                ));
            }
        },
    };
    Ok(Event {
        id: original.id.clone(),
        at: original.at,
        contact_name: original.contact_name.clone(),
        kind,
    })
}

fn media_kind(name: &str) -> Option<MediaKind> {
    [
        MediaKind::Image,
        MediaKind::Video,
        MediaKind::Audio,
        MediaKind::Document,
        MediaKind::Sticker,
    ]
    .into_iter()
    .find(|k| k.name() == name)
}

fn string(m: &Value, part: &str, key: &str) -> Result<String, String> {
    match &m[part][key] {
        Value::String(s) => Ok(s.clone()),
        _ => Err(format!("message.{part}.{key} must be text")),
    }
}

fn optional(m: &Value, part: &str, key: &str) -> Result<Option<String>, String> {
    match &m[part][key] {
        Value::String(s) => Ok(Some(s.clone())),
        Value::Null => Ok(None),
        _ => Err(format!("message.{part}.{key} must be text or ()")),
    }
}

fn number(m: &Value, part: &str, key: &str) -> Result<f64, String> {
    m[part][key]
        .as_f64()
        .ok_or_else(|| format!("message.{part}.{key} must be a number"))
}

/// How a JSON value is named in messages.
pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "()",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a map",
    }
}
