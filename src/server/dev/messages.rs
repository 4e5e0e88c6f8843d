//! `POST /dev/api/message`: a simulated user sends text, taps a button or list row,
//! shares a location or sends a media link. The message goes the way a webhook's does
//! (the user's durable inbox, their worker); the answer is 202 at once, and the bot's
//! replies arrive as `message` events.

use crate::api::error::ApiError;
use crate::delivery::dev_hub::{DevInput, DevMediaKind, Inbound};
use crate::delivery::runtime::Number;
use crate::engine::{Event, EventKind};
use crate::flow::MediaKind;
use crate::server::AppState;
use crate::store::SessionKey;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Map, Value, json};

/// The body forms, for error messages.
pub const FORMS: &str = r#"{"from": "15550001111", "name": "Maria"?, and one of "text": "hi" | "reply": {"id": "medium", "title": "Medium"?, "kind": "button"|"list"?} | "location": {"latitude": 52.5, "longitude": 13.4, "name"?, "address"?} | "media": {"kind": "image"|"video"|"audio"|"document", "link": "https://...", "caption"?}}"#;

/// A simulated user's message, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Submission {
    pub user: String,
    pub name: Option<String>,
    pub input: DevInput,
    /// The simulated number (default: the first one).
    pub phone_number_id: Option<String>,
}

/// `POST /dev/api/message` → 202 `{"id": "wamid.dev…"}`.
pub async fn message(
    State(state): State<AppState>,
    sim: super::Sim,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let submission = parse(&body)?;
    let number = sim.number(submission.phone_number_id.as_deref())?;
    let id = new_message_id();
    submit(&state, &number, &id, submission).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "id": id }))))
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", message)
}

/// Reads a body of one of the [`FORMS`].
pub fn parse(body: &[u8]) -> Result<Submission, ApiError> {
    let mut map: Map<String, Value> = super::json_body(body, FORMS)?;
    let user = match map.remove("from") {
        Some(Value::String(s)) => s,
        Some(_) | None => {
            return Err(bad(format!(
                "\"from\" must be the simulated user's WhatsApp id as text; expected {FORMS}"
            )));
        }
    };
    super::user(&user)
        .map_err(|_| bad("\"from\" must be a WhatsApp id: 1 to 15 digits, e.g. \"15550001111\""))?;
    let name = match map.remove("name") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err(bad("\"name\" must be text")),
    };
    let phone_number_id = match map.remove("phone_number_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err(bad("\"phone_number_id\" must be text")),
    };
    if map.len() != 1 {
        let keys: Vec<&str> = map.keys().map(String::as_str).collect();
        return Err(bad(format!(
            "give exactly one of \"text\", \"reply\", \"location\", \"media\" (got {}); expected {FORMS}",
            if keys.is_empty() {
                "none".to_string()
            } else {
                keys.join(", ")
            }
        )));
    }
    let input: DevInput = serde_json::from_value(Value::Object(map))
        .map_err(|e| bad(format!("{e}; expected {FORMS}")))?;
    check(&input)?;
    Ok(Submission {
        user,
        name,
        input,
        phone_number_id,
    })
}

/// What WhatsApp would never deliver: empty text, a tap without an id, a location off
/// the globe, a media link that is not http(s).
fn check(input: &DevInput) -> Result<(), ApiError> {
    match input {
        DevInput::Text(t) if t.trim().is_empty() => Err(bad("\"text\" is empty")),
        DevInput::Text(t) if t.chars().count() > 4096 => {
            Err(bad("\"text\" is longer than WhatsApp's 4096 characters"))
        }
        DevInput::Text(_) => Ok(()),
        DevInput::Reply(r) if r.id.trim().is_empty() => Err(bad("\"reply.id\" is empty")),
        DevInput::Reply(_) => Ok(()),
        DevInput::Location(l)
            if !(-90.0..=90.0).contains(&l.latitude)
                || !(-180.0..=180.0).contains(&l.longitude) =>
        {
            Err(bad(
                "\"location\" needs a latitude within ±90 and a longitude within ±180",
            ))
        }
        DevInput::Location(_) => Ok(()),
        DevInput::Media(m) => match url::Url::parse(&m.link) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(()),
            Ok(_) | Err(_) => Err(bad("\"media.link\" must be an http(s) URL")),
        },
    }
}

/// A fresh id for a simulated message.
pub fn new_message_id() -> String {
    crate::delivery::agent_hook::random_id("wamid.dev.")
}

/// Stores the message for its turn (the hub records it first, so the page's history
/// has it before the bot's answer). `id` is the message's id; a waiter for it may be
/// registered already (`/dev/message`).
pub async fn submit(
    state: &AppState,
    number: &Number,
    id: &str,
    submission: Submission,
) -> Result<(), ApiError> {
    let Some(_admitted) = state.runtime.admit() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "shutting down; retry later",
        ));
    };
    let hub = &state.runtime.dev;
    let at = hub.now_ms();
    // WhatsApp always sends a profile name: a simulated user without one is called
    // what a conversation test calls its user, so a recorded test sees the same texts.
    let name = submission
        .name
        .unwrap_or_else(|| crate::testing::DEFAULT_NAME.to_string());
    let mut input = submission.input;
    if let DevInput::Media(m) = &mut input
        && m.id.is_none()
    {
        m.id = Some(format!("media.dev.{}", id.trim_start_matches("wamid.dev.")));
    }
    let event = Event {
        id: Some(id.to_string()),
        at: at.div_euclid(1000),
        contact_name: Some(name.clone()),
        kind: event_kind(&input),
    };
    let key = SessionKey::new(&number.phone_number_id, &submission.user);
    hub.inbound(
        &key,
        Inbound {
            id: id.to_string(),
            input,
            name: Some(name),
            at,
            item: None,
        },
    );
    state
        .runtime
        .accept_message(key, event)
        .await
        .map_err(|e| ApiError::store(&e))
}

/// The engine's event for a simulated message, as the webhook parser makes it of the
/// same message from WhatsApp.
pub fn event_kind(input: &DevInput) -> EventKind {
    match input {
        DevInput::Text(t) => EventKind::Text(t.clone()),
        DevInput::Reply(r) => EventKind::Reply {
            id: r.id.clone(),
            title: r.title.clone().unwrap_or_else(|| r.id.clone()),
        },
        DevInput::Location(l) => EventKind::Location {
            latitude: l.latitude,
            longitude: l.longitude,
            name: l.name.clone(),
            address: l.address.clone(),
        },
        DevInput::Media(m) => {
            let path = url::Url::parse(&m.link)
                .ok()
                .map(|u| u.path().to_string())
                .unwrap_or_default();
            let filename = path
                .rsplit('/')
                .next()
                .filter(|f| !f.is_empty())
                .map(str::to_string);
            EventKind::Media {
                kind: media_kind(m.kind),
                id: m.id.clone().unwrap_or_default(),
                mime_type: mime_guess::from_path(&path)
                    .first()
                    .map(|m| m.essence_str().to_string()),
                caption: m.caption.clone(),
                filename: match m.kind {
                    DevMediaKind::Document => filename,
                    DevMediaKind::Image | DevMediaKind::Video | DevMediaKind::Audio => None,
                },
            }
        }
    }
}

fn media_kind(kind: DevMediaKind) -> MediaKind {
    match kind {
        DevMediaKind::Image => MediaKind::Image,
        DevMediaKind::Video => MediaKind::Video,
        DevMediaKind::Audio => MediaKind::Audio,
        DevMediaKind::Document => MediaKind::Document,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::dev_hub::{DevLocation, DevReply, ReplyKind};

    fn parsed(body: Value) -> Result<Submission, ApiError> {
        parse(&serde_json::to_vec(&body).unwrap())
    }

    #[test]
    fn the_four_forms_are_read() {
        let text = parsed(json!({"from": "15550001111", "name": "Maria", "text": "hi"})).unwrap();
        assert_eq!(text.input, DevInput::Text("hi".into()));
        assert_eq!(text.name.as_deref(), Some("Maria"));
        let reply = parsed(
            json!({"from": "1", "reply": {"id": "medium", "title": "Medium", "kind": "list"}}),
        )
        .unwrap();
        assert_eq!(
            reply.input,
            DevInput::Reply(DevReply {
                id: "medium".into(),
                title: Some("Medium".into()),
                kind: Some(ReplyKind::List)
            })
        );
        let location =
            parsed(json!({"from": "1", "location": {"latitude": 52.5, "longitude": 13.4}}))
                .unwrap();
        assert_eq!(
            location.input,
            DevInput::Location(DevLocation {
                latitude: 52.5,
                longitude: 13.4,
                name: None,
                address: None
            })
        );
        let media = parsed(json!({"from": "1", "media": {"kind": "document", "link": "https://example.com/menu.pdf"}})).unwrap();
        match event_kind(&media.input) {
            EventKind::Media {
                kind,
                mime_type,
                filename,
                ..
            } => {
                assert_eq!(kind, MediaKind::Document);
                assert_eq!(mime_type.as_deref(), Some("application/pdf"));
                assert_eq!(filename.as_deref(), Some("menu.pdf"));
            }
            other => panic!("not media: {other:?}"),
        }
    }

    #[test]
    fn anything_else_is_refused_with_the_reason() {
        let cases = [
            (json!({"text": "hi"}), "\"from\""),
            (json!({"from": "+49 30", "text": "hi"}), "1 to 15 digits"),
            (json!({"from": "1"}), "exactly one"),
            (
                json!({"from": "1", "text": "a", "reply": {"id": "x"}}),
                "exactly one",
            ),
            (json!({"from": "1", "text": "  "}), "empty"),
            (json!({"from": "1", "reply": {"id": ""}}), "empty"),
            (json!({"from": "1", "reply": "x"}), "expected"),
            (json!({"from": "1", "sticker": {}}), "unknown variant"),
            (
                json!({"from": "1", "location": {"latitude": 91, "longitude": 0}}),
                "latitude",
            ),
            (
                json!({"from": "1", "media": {"kind": "image", "link": "file:///etc/passwd"}}),
                "http(s)",
            ),
            (
                json!({"from": "1", "media": {"kind": "gif", "link": "https://x.y/a.gif"}}),
                "unknown variant",
            ),
            (json!(["from"]), "expected"),
        ];
        for (body, why) in cases {
            let e = parsed(body.clone()).expect_err(&body.to_string());
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{body}");
            assert!(e.message.contains(why), "{body}: {}", e.message);
        }
    }
}
