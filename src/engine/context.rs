//! What templates and expressions see (FLOWS.md): `vars`, `profile`, `message`,
//! `contact`, `session`, `now`, `env`. Built from the session at the moment a node runs,
//! so a `say` after a `set` sees the new value.

use super::event::EventKind;
use super::session::{NodeAt, Session};
use chrono::DateTime;
use minijinja::Value as Jinja;
use minijinja::value::Serde;
use serde_json::{Map, Value, json};

/// Unix seconds as RFC 3339 (`2026-03-14T09:30:00Z`): readable, sortable, and what the
/// `date` filter takes.
pub fn rfc3339(secs: i64) -> String {
    // Not `format("%Y-…")`: that parses the format on every call, and this runs for
    // every message (and every transformer call).
    DateTime::from_timestamp(secs, 0).map_or_else(
        || secs.to_string(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

/// `message` for templates: only the keys this kind of message has, so
/// `message.text | default('')` works and a typo fails.
pub fn message_value(id: Option<&str>, kind: &EventKind, at: i64) -> Value {
    let mut m = Map::new();
    if let Some(id) = id {
        m.insert("id".into(), Value::from(id));
    }
    m.insert("type".into(), Value::from(kind.type_name()));
    m.insert("timestamp".into(), Value::from(rfc3339(at)));
    if let Some(text) = kind.text() {
        m.insert("text".into(), Value::from(text));
    }
    match kind {
        EventKind::Reply { id, title } => {
            m.insert("reply".into(), json!({ "id": id, "title": title }));
        }
        EventKind::Button { payload, text } => {
            m.insert("button".into(), json!({ "payload": payload, "text": text }));
        }
        EventKind::Location {
            latitude,
            longitude,
            name,
            address,
        } => {
            m.insert(
                "location".into(),
                super::answer::location(*latitude, *longitude, name, address),
            );
        }
        EventKind::Media { .. } => {
            if let Some(media) = super::answer::media_value(kind) {
                m.insert("media".into(), media);
            }
        }
        EventKind::Contacts(c) => {
            m.insert("contacts".into(), Value::from(c.clone()));
        }
        EventKind::Reaction { message_id, emoji } => {
            m.insert(
                "reaction".into(),
                json!({ "message_id": message_id, "emoji": emoji }),
            );
        }
        EventKind::FlowReply(v) => {
            m.insert("flow_reply".into(), v.clone());
        }
        EventKind::DeliveryFailed { code, reason, .. } => {
            m.insert("error".into(), json!({ "code": code, "reason": reason }));
        }
        EventKind::Injected(inner) => {
            if let Value::Object(inner) = message_value(None, inner, at) {
                m.extend(inner);
            }
            m.insert("injected".into(), Value::Bool(true));
        }
        EventKind::Data(data) => {
            m.insert("data".into(), data.clone());
        }
        EventKind::Text(_)
        | EventKind::Unsupported(_)
        | EventKind::EffectResult(_)
        | EventKind::StartFlow { .. }
        | EventKind::HandoverEnded(_) => {}
    }
    Value::Object(m)
}

/// `contact`: `wa_id`, and `name` when WhatsApp gave one.
pub fn contact_value(session: &Session) -> Value {
    let mut contact = Map::new();
    contact.insert("wa_id".into(), Value::from(session.contact.wa_id.as_str()));
    if let Some(name) = &session.contact.name {
        contact.insert("name".into(), Value::from(name.as_str()));
    }
    Value::Object(contact)
}

/// `session`: `id`, `started_at`, `window_open`, `turn`, `flow`, `node`.
pub fn session_value(session: &Session, here: Option<&NodeAt>, now: i64) -> Value {
    let (flow, node) = here.map_or((Value::Null, Value::Null), |at| {
        (Value::from(at.flow.as_str()), Value::from(at.node.as_str()))
    });
    json!({
        "id": session.id,
        "started_at": rfc3339(session.started_at),
        "window_open": session.window_open(now),
        "turn": session.turn,
        "flow": flow,
        "node": node,
    })
}

/// The whole context for one render.
pub fn build(
    session: &Session,
    here: Option<&NodeAt>,
    message: &Value,
    now: i64,
    env: &Map<String, Value>,
    extra: Option<(&str, &Value)>,
) -> Jinja {
    let mut ctx = json!({
        "vars": session.vars,
        "profile": session.profile,
        "message": message,
        "contact": contact_value(session),
        "session": session_value(session, here, now),
        "now": rfc3339(now),
        "env": env,
        "handover": session.handover.clone().unwrap_or(Value::Null),
    });
    if let (Some((name, value)), Value::Object(map)) = (extra, &mut ctx) {
        map.insert(name.to_string(), value.clone());
    }
    Jinja::from(Serde(ctx))
}

/// A template value as JSON, for `set` and saved answers. Undefined and none become null.
pub fn to_json(value: &Jinja) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}
