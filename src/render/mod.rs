//! Stage 5: a rendered message → the exact Cloud API request body
//! (`POST /{phone_number_id}/messages`), checked against `schemas/whatsapp/`.
//!
//! Architecture Invariant: this is the only place that knows WhatsApp's outbound JSON.
//! The engine produces typed [`Message`]s; the sender posts what this returns.

pub mod terminal;

use crate::engine::message::{Header, MediaRef, Message, Row};
use crate::flow::WhatsAppFlowMode;
use serde_json::{Map, Value, json};
use std::sync::OnceLock;

/// The outbound message schema, written from Meta's documentation and checked against
/// Meta's sample payloads (tests/whatsapp_schemas.rs).
const MESSAGE_SCHEMA: &str = include_str!("../../schemas/whatsapp/message.schema.json");

/// The request body that sends `message` to `to`, quoting `reply_to` when given.
pub fn payload(to: &str, message: &Message, reply_to: Option<&str>) -> Value {
    let mut body = Map::new();
    body.insert("messaging_product".into(), json!("whatsapp"));
    body.insert("recipient_type".into(), json!("individual"));
    body.insert("to".into(), json!(to));
    if let Some(id) = reply_to
        && !matches!(message, Message::Reaction { .. })
    {
        body.insert("context".into(), json!({ "message_id": id }));
    }
    let (kind, object) = match message {
        Message::Text { body, preview_url } => {
            ("text", json!({ "preview_url": preview_url, "body": body }))
        }
        Message::Media {
            kind,
            source,
            caption,
            filename,
        } => {
            let mut m = media(source);
            if let Some(c) = caption {
                m.insert("caption".into(), json!(c));
            }
            if let Some(f) = filename {
                m.insert("filename".into(), json!(f));
            }
            (kind.name(), Value::Object(m))
        }
        Message::Buttons {
            header,
            body,
            footer,
            buttons,
        } => {
            let buttons: Vec<Value> = buttons
                .iter()
                .map(|b| json!({ "type": "reply", "reply": { "id": b.id, "title": b.title } }))
                .collect();
            let i = interactive(
                "button",
                header.as_ref().map(header_json),
                body,
                footer,
                json!({ "buttons": buttons }),
            );
            ("interactive", i)
        }
        Message::List {
            header,
            body,
            footer,
            button,
            sections,
        } => {
            let sections: Vec<Value> = sections
                .iter()
                .map(|s| {
                    let mut o = Map::new();
                    if let Some(t) = &s.title {
                        o.insert("title".into(), json!(t));
                    }
                    o.insert(
                        "rows".into(),
                        Value::Array(s.rows.iter().map(row).collect()),
                    );
                    Value::Object(o)
                })
                .collect();
            let header = header
                .as_ref()
                .map(|h| json!({ "type": "text", "text": h }));
            let action = json!({ "button": button, "sections": sections });
            (
                "interactive",
                interactive("list", header, body, footer, action),
            )
        }
        Message::CtaUrl {
            header,
            body,
            footer,
            button,
            url,
        } => {
            let action =
                json!({ "name": "cta_url", "parameters": { "display_text": button, "url": url } });
            (
                "interactive",
                interactive(
                    "cta_url",
                    header.as_ref().map(header_json),
                    body,
                    footer,
                    action,
                ),
            )
        }
        Message::RequestLocation { body } => {
            let action = json!({ "name": "send_location" });
            (
                "interactive",
                interactive("location_request_message", None, body, &None, action),
            )
        }
        Message::WhatsAppFlow {
            header,
            body,
            footer,
            flow_id,
            flow_name,
            cta,
            mode,
            flow_token,
            screen,
            data,
        } => {
            let mut p = Map::new();
            p.insert("flow_message_version".into(), json!("3"));
            if let Some(id) = flow_id {
                p.insert("flow_id".into(), json!(id));
            }
            if let Some(name) = flow_name {
                p.insert("flow_name".into(), json!(name));
            }
            p.insert("flow_cta".into(), json!(cta));
            p.insert(
                "mode".into(),
                json!(match mode {
                    WhatsAppFlowMode::Draft => "draft",
                    WhatsAppFlowMode::Published => "published",
                }),
            );
            p.insert("flow_token".into(), json!(flow_token));
            match screen {
                Some(screen) => {
                    p.insert("flow_action".into(), json!("navigate"));
                    let mut payload = json!({ "screen": screen });
                    if let (Some(d), Value::Object(o)) = (data, &mut payload) {
                        o.insert("data".into(), d.clone());
                    }
                    p.insert("flow_action_payload".into(), payload);
                }
                None => {
                    p.insert("flow_action".into(), json!("data_exchange"));
                }
            }
            let header = header
                .as_ref()
                .map(|h| json!({ "type": "text", "text": h }));
            let action = json!({ "name": "flow", "parameters": p });
            (
                "interactive",
                interactive("flow", header, body, footer, action),
            )
        }
        Message::Template {
            name,
            language,
            components,
        } => {
            let mut t = json!({ "name": name, "language": { "code": language } });
            if !components.is_empty()
                && let Value::Object(o) = &mut t
            {
                o.insert("components".into(), Value::Array(components.clone()));
            }
            ("template", t)
        }
        Message::Location {
            latitude,
            longitude,
            name,
            address,
        } => {
            let mut l = json!({ "latitude": latitude, "longitude": longitude });
            if let Value::Object(o) = &mut l {
                if let Some(n) = name {
                    o.insert("name".into(), json!(n));
                }
                if let Some(a) = address {
                    o.insert("address".into(), json!(a));
                }
            }
            ("location", l)
        }
        Message::Contacts(cards) => ("contacts", Value::Array(cards.clone())),
        Message::Reaction { message_id, emoji } => (
            "reaction",
            json!({ "message_id": message_id, "emoji": emoji }),
        ),
        Message::Payload(object) => {
            // The designer's object; the envelope (who it goes to) is ours.
            if let Value::Object(o) = object {
                for (k, v) in o {
                    if !matches!(k.as_str(), "messaging_product" | "to") {
                        body.insert(k.clone(), v.clone());
                    }
                }
            }
            return Value::Object(body);
        }
    };
    body.insert("type".into(), json!(kind));
    body.insert(kind.into(), object);
    Value::Object(body)
}

fn media(source: &MediaRef) -> Map<String, Value> {
    let mut m = Map::new();
    match source {
        MediaRef::Link(l) => m.insert("link".into(), json!(l)),
        MediaRef::Id(id) => m.insert("id".into(), json!(id)),
    };
    m
}

fn header_json(h: &Header) -> Value {
    match h {
        Header::Text(t) => json!({ "type": "text", "text": t }),
        Header::Media(kind, source) => json!({ "type": kind.name(), kind.name(): media(source) }),
    }
}

fn row(r: &Row) -> Value {
    let mut o = json!({ "id": r.id, "title": r.title });
    if let (Some(d), Value::Object(m)) = (&r.description, &mut o) {
        m.insert("description".into(), json!(d));
    }
    o
}

fn interactive(
    kind: &str,
    header: Option<Value>,
    body: &str,
    footer: &Option<String>,
    action: Value,
) -> Value {
    let mut i = Map::new();
    i.insert("type".into(), json!(kind));
    if let Some(h) = header {
        i.insert("header".into(), h);
    }
    i.insert("body".into(), json!({ "text": body }));
    if let Some(f) = footer {
        i.insert("footer".into(), json!({ "text": f }));
    }
    i.insert("action".into(), action);
    Value::Object(i)
}

/// WhatsApp's outbound schema, compiled once per process.
fn validator() -> Result<&'static jsonschema::Validator, &'static str> {
    static VALIDATOR: OnceLock<Result<jsonschema::Validator, String>> = OnceLock::new();
    VALIDATOR
        .get_or_init(|| {
            serde_json::from_str::<Value>(MESSAGE_SCHEMA)
                .map_err(|e| e.to_string())
                .and_then(|s| jsonschema::validator_for(&s).map_err(|e| e.to_string()))
        })
        .as_ref()
        .map_err(String::as_str)
}

/// Compiles the outbound schema now (`serve` calls it at start), so the first message
/// sent does not wait for it.
pub fn warm() {
    let _ = validator();
}

/// Checks a payload against WhatsApp's outbound schema: every problem as
/// `/json/pointer: what is wrong`.
pub fn check(payload: &Value) -> Result<(), Vec<String>> {
    let validator =
        validator().map_err(|e| vec![format!("the outbound schema does not load: {e}")])?;
    if validator.is_valid(payload) {
        return Ok(());
    }
    Err(validator
        .iter_errors(payload)
        .map(|e| format!("{}: {e}", e.instance_path().as_str()))
        .collect())
}
