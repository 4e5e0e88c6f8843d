//! What starts a turn: a message from the user, parsed from the webhook (or typed in
//! `parlance chat`, or scripted in a conversation test).

use crate::flow::MediaKind;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Serializable: it is what the durable inbox stores for a user's message (see
/// `delivery::codec`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The WhatsApp message id (wamid), when there is one.
    pub id: Option<String>,
    /// When it was sent (Unix seconds).
    pub at: i64,
    /// The user's WhatsApp profile name, when the webhook carried it.
    pub contact_name: Option<String>,
    pub kind: EventKind,
}

/// The `reason` of a [`EventKind::DeliveryFailed`] whose status carried no error (what
/// `serve` reports, and what a conversation test's `status:` step defaults to).
pub const NO_FAILURE_REASON: &str = "no reason given";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Text(String),
    /// A reply button or list row was tapped.
    Reply {
        id: String,
        title: String,
    },
    /// A template's quick-reply button was tapped.
    Button {
        payload: String,
        text: String,
    },
    Location {
        latitude: f64,
        longitude: f64,
        name: Option<String>,
        address: Option<String>,
    },
    Media {
        #[serde(with = "media_kind")]
        kind: MediaKind,
        id: String,
        mime_type: Option<String>,
        caption: Option<String>,
        filename: Option<String>,
    },
    Contacts(Vec<Value>),
    Reaction {
        message_id: String,
        emoji: String,
    },
    /// A WhatsApp Flows form was submitted.
    FlowReply(Value),
    /// WhatsApp reported that a message the bot sent could not be delivered (a `failed`
    /// status): the node that sent it takes its `on_error` branch.
    DeliveryFailed {
        /// The node that sent the message.
        flow: String,
        node: String,
        /// Meta's error code, e.g. 131026 (not a WhatsApp user) or 131049.
        code: Option<i64>,
        /// The error's title, or [`NO_FAILURE_REASON`] when WhatsApp gave none.
        reason: String,
    },
    /// The outcome of the effect (an `http` call, a handover) the session waits for:
    /// the node that asked for it goes on.
    EffectResult(EffectOutcome),
    /// Something the engine has no use for (an order, a system message, an unsupported
    /// type): answered by the fallback flow, never dropped silently.
    Unsupported(String),
    /// A message put into the conversation through the API (`POST /api/v1/inject`):
    /// handled as the same message from the user would be (`message.type` is the inner
    /// kind's, `message.injected` is true), but the user did not write it, so the
    /// 24-hour window (only the user opens it) and the message to quote stay as they
    /// were. The input transformer does not see it (it rewrites what users send).
    Injected(Box<EventKind>),
    /// JSON put into the conversation through the API (inside [`EventKind::Injected`]):
    /// no text; `message.data` for templates, `message.type` = `data`.
    Data(Value),
    /// `POST /api/v1/notify` with a flow: the bot starts `flow` (at `node`, else at its
    /// first node) on its own, keeping the conversation's variables. Not from the user:
    /// the window stays, and what the flow sends outside it follows the usual rule
    /// (its `on_window_closed` template, or an error).
    StartFlow {
        flow: String,
        node: Option<String>,
    },
    /// The handover the conversation is in ended: an agent resolved it (the flow goes
    /// on at the node's `next`) or nobody accepted it in time (`on_timeout`). Not from
    /// the user: the window stays.
    HandoverEnded(HandoverEnd),
}

/// How a handover ended ([`EventKind::HandoverEnded`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandoverEnd {
    /// The handover's id.
    pub id: String,
    pub outcome: HandoverOutcome,
    /// The status the agent resolved it with (`handover.status`).
    pub status: Option<String>,
    /// The agent who had it.
    pub agent: Option<String>,
    /// Merged into `vars` (the resolve's `vars`).
    #[serde(default)]
    pub vars: serde_json::Map<String, Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HandoverOutcome {
    /// An agent gave the conversation back: the node's `next`.
    Resolved,
    /// Nobody accepted it within the node's `timeout`: `on_timeout` (else `next`).
    TimedOut,
}

impl HandoverOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            HandoverOutcome::Resolved => "resolved",
            HandoverOutcome::TimedOut => "timed_out",
        }
    }
}

/// What came of an effect (`engine::Effect`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EffectOutcome {
    /// The http call answered 2xx: what the node's `save` stores (`status`, `headers`,
    /// `body`).
    Http(Value),
    /// The http call failed: the node's `on_error`.
    HttpFailed(HttpFailure),
    /// An agent queue took the conversation (handover).
    HandoverStarted,
    /// No agent can take it: the handover node's `on_unavailable`.
    Unavailable,
    /// It was tried and failed: the node's `on_error`.
    Failed(String),
    /// This runtime cannot perform it: always an error, never `on_error`.
    Unsupported,
}

impl EventKind {
    /// The `message.type` templates see.
    pub fn type_name(&self) -> &str {
        match self {
            EventKind::Text(_) => "text",
            EventKind::Reply { .. } => "reply",
            EventKind::Button { .. } => "button",
            EventKind::Location { .. } => "location",
            EventKind::Media { kind, .. } => kind.name(),
            EventKind::Contacts(_) => "contacts",
            EventKind::Reaction { .. } => "reaction",
            EventKind::FlowReply(_) => "flow_reply",
            EventKind::DeliveryFailed { .. } => "delivery_failed",
            EventKind::EffectResult(_) => "effect_result",
            EventKind::Unsupported(what) => what,
            EventKind::Injected(inner) => inner.type_name(),
            EventKind::Data(_) => "data",
            EventKind::StartFlow { .. } => "notify",
            EventKind::HandoverEnded(_) => "handover_ended",
        }
    }

    /// The text a user typed or tapped, where there is one.
    pub fn text(&self) -> Option<&str> {
        match self {
            EventKind::Text(t) => Some(t),
            EventKind::Reply { title, .. } => Some(title),
            EventKind::Button { text, .. } => Some(text),
            EventKind::Media { caption, .. } => caption.as_deref(),
            EventKind::Injected(inner) => inner.text(),
            _ => None,
        }
    }
}

impl Event {
    /// A text message (tests, chat, inject).
    pub fn text(body: &str, at: i64) -> Self {
        Event {
            id: None,
            at,
            contact_name: None,
            kind: EventKind::Text(body.to_string()),
        }
    }
}

/// `MediaKind` by its name (the flow model has no serde: see `flow`'s invariant).
mod media_kind {
    use crate::flow::MediaKind;
    use serde::{Deserialize, Deserializer, Serializer};

    const ALL: [MediaKind; 5] = [
        MediaKind::Image,
        MediaKind::Video,
        MediaKind::Audio,
        MediaKind::Document,
        MediaKind::Sticker,
    ];

    pub fn serialize<S: Serializer>(kind: &MediaKind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(kind.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<MediaKind, D::Error> {
        let name = String::deserialize(d)?;
        ALL.into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown media kind \"{name}\"")))
    }
}

/// Why an `http` node's call failed: what an `on_error` branch reads as `message.error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpFailure {
    pub kind: HttpErrorKind,
    /// The answer's status, when there was an answer.
    pub status: Option<u16>,
    /// What went wrong, for people (no secrets: URLs without their query).
    pub message: String,
    /// The answer (`status`, `headers`, `body`) when there was one: stored in `save`
    /// too, so a branch can read a backend's error body.
    pub response: Option<Value>,
}

/// The kinds of [`HttpFailure`], as `message.error.kind` spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpErrorKind {
    /// The answer's status was not 2xx (`message.error.status` has it).
    Status,
    /// No answer within the node's `timeout`.
    Timeout,
    /// No connection (refused, unknown host, TLS).
    Connect,
    /// The host may not be called (`http.allow_hosts`; link-local and cloud-metadata
    /// addresses unless listed).
    Forbidden,
    /// The answer's body was over the size limit.
    TooLarge,
    /// The answer said it was JSON and was not.
    InvalidJson,
    /// A redirect was not followed (too many, or to a host that may not be called).
    Redirect,
    /// `parlance test` reached the node without a mock, or `parlance chat --no-http`.
    NotCalled,
}

impl HttpErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HttpErrorKind::Status => "status",
            HttpErrorKind::Timeout => "timeout",
            HttpErrorKind::Connect => "connect",
            HttpErrorKind::Forbidden => "forbidden",
            HttpErrorKind::TooLarge => "too_large",
            HttpErrorKind::InvalidJson => "invalid_json",
            HttpErrorKind::Redirect => "redirect",
            HttpErrorKind::NotCalled => "not_called",
        }
    }
}
