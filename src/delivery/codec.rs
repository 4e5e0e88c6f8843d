//! What the delivery side writes into the durable store's opaque bodies: inbox items
//! and outgoing messages, as versioned JSON.
//!
//! The store never parses these (its invariant). A body this build cannot read (a newer
//! or older format, or damage) is never a panic and never a stuck user: the runtime
//! moves it aside (an item is dropped with a log line, an outgoing message becomes a
//! dead letter that says why).

use crate::engine::Event;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The format of every body below. Bump it when a shape changes incompatibly.
pub const BODY_VERSION: u32 = 1;

/// An inbox item of kind `Message`: what the user sent (or the simulator typed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageItem {
    pub v: u32,
    pub event: Event,
}

/// An inbox item of kind `Status`: WhatsApp reported that a message the bot sent
/// failed. The conversation of that message hears of it in order with the user's own
/// messages (its node's `on_error`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedItem {
    pub v: u32,
    /// The wamid of the message that failed.
    pub message_id: String,
    /// When WhatsApp reported it (Unix seconds).
    pub at: i64,
    pub code: Option<i64>,
    pub title: Option<String>,
}

/// An inbox item of kind `Inject`: a message the API put into the conversation
/// (`POST /api/v1/inject`), run as an [`crate::engine::EventKind::Injected`] event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InjectItem {
    pub v: u32,
    /// Who waits for the turn's report (the request's id, see `Runtime::waiters`).
    pub request: String,
    pub event: Event,
}

/// An inbox item of kind `Notify`: something the API sends straight to the user
/// (`POST /api/v1/notify`), in order with the user's other items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotifyItem {
    pub v: u32,
    pub request: String,
    /// When the request came (Unix seconds).
    pub at: i64,
    pub notify: Notify,
}

/// What a notify sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Notify {
    /// A text: only inside the 24-hour window.
    Text(String),
    /// A Cloud API template (name, language, components): allowed outside the window.
    Template {
        name: String,
        language: String,
        components: Vec<Value>,
    },
    /// A flow (at a node) the bot starts as a turn of its own.
    Flow { flow: String, node: Option<String> },
}

/// An inbox item of kind `AgentReply`: what an agent did through the API during a
/// handover, handled in order with the user's messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentItem {
    pub v: u32,
    pub handover_id: String,
    /// When the request came (Unix ms).
    pub at: i64,
    pub action: AgentAction,
}

/// What an agent did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentAction {
    /// A reply to the user: the Cloud API payload, rendered and checked by the API.
    Reply {
        payload: Value,
        /// A template (allowed outside the 24-hour window).
        template: bool,
    },
    /// The agent gave the conversation back; the record is resolved already (the API
    /// did the compare-and-set), the flow goes on at the node's `next`.
    Resolve {
        status: String,
        agent: Option<String>,
        #[serde(default)]
        vars: serde_json::Map<String, Value>,
    },
    /// WhatsApp's status of an agent's reply (written by the webhook, not the API; the
    /// item's `handover_id` is empty: the user's latest handover is meant).
    Status {
        message_id: String,
        status: String,
        /// Meta's timestamp (Unix seconds).
        at: i64,
        error_code: Option<i64>,
        error_title: Option<String>,
    },
}

/// An inbox item of kind `Timer`: a timer the loop set fell due.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimerItem {
    pub v: u32,
    /// Which timer (`effect`: a pending effect's watchdog).
    pub name: String,
}

/// An outgoing message: the exact Cloud API payload, rendered and checked when the turn
/// ran, with what the sender needs besides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutgoingBody {
    pub v: u32,
    /// The node that sent it (for `failed` statuses and dead letters).
    pub flow: String,
    pub node: String,
    /// When the turn queued it (Unix ms): retries give up `retry_deadline` after it.
    pub queued_at: i64,
    pub payload: Value,
    /// The node's `on_window_closed` template, sent instead on 131047.
    pub instead: Option<Value>,
    /// Where it goes: the Graph API (the default, not written) or the bot's agent
    /// webhook (a handover event, `payload` being the event's JSON).
    #[serde(default, skip_serializing_if = "Destination::is_graph")]
    pub to: Destination,
    /// `payload` passed WhatsApp's schema ([`crate::render::check`]) when it was queued,
    /// so the sender posts it as stored. Unchecked (older bodies, or a payload that
    /// failed), the sender checks it and dead-letters it when it fails.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub checked: bool,
}

/// The sender's reading of an [`OutgoingBody`] for the usual case (a checked message to
/// the Graph API): the payload stays the JSON text it was stored as and is posted as
/// it is, never rebuilt as a `Value` and written out again.
#[derive(Debug, Deserialize)]
pub struct OutgoingSend<'a> {
    pub v: u32,
    pub flow: String,
    pub node: String,
    #[serde(borrow)]
    pub payload: &'a serde_json::value::RawValue,
    #[serde(default)]
    pub to: Destination,
    #[serde(default)]
    pub checked: bool,
}

impl<'a> OutgoingSend<'a> {
    /// `None` unless `text` is a checked Graph message of this format: the sender then
    /// reads the whole body ([`decode`]), which says what is wrong if anything is.
    pub fn read(text: &'a str) -> Option<Self> {
        serde_json::from_str::<OutgoingSend>(text)
            .ok()
            .filter(|s| s.v == BODY_VERSION && s.checked && s.to.is_graph())
    }
}

/// Where an outgoing message goes. Agent webhook events share the user's outbox with
/// the messages to the user, so they are ordered with them, retried with the same
/// backoff and deadline, dead-lettered like them, and survive a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Destination {
    #[default]
    Graph,
    /// `handover.webhook`, signed with `handover.secret`.
    Agent,
}

impl Destination {
    pub fn is_graph(&self) -> bool {
        *self == Destination::Graph
    }
}

/// Encodes any body (these types always serialize).
pub fn encode<T: Serialize>(body: &T) -> String {
    serde_json::to_string(body).unwrap_or_default()
}

/// Why a stored body cannot be used.
#[derive(Debug)]
pub struct Unreadable(pub String);

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Decodes a body written by this format version.
pub fn decode<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T, Unreadable> {
    #[derive(Deserialize)]
    struct Versioned {
        v: Option<u32>,
    }
    let version = serde_json::from_str::<Versioned>(text)
        .map_err(|e| Unreadable(format!("not a Parlance body: {e}")))?
        .v;
    if version != Some(BODY_VERSION) {
        return Err(Unreadable(format!(
            "written in format {} (this build reads {BODY_VERSION})",
            version.map_or_else(|| "?".to_string(), |v| v.to_string())
        )));
    }
    serde_json::from_str(text).map_err(|e| Unreadable(format!("damaged body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EventKind;
    use crate::flow::MediaKind;

    /// The sender posts a body's stored payload text as it is only when the turn
    /// checked it and it goes to the Graph API; anything else is read whole.
    #[test]
    fn only_checked_graph_messages_are_posted_as_stored() {
        let body = |checked, to| OutgoingBody {
            v: BODY_VERSION,
            flow: "main".into(),
            node: "hello".into(),
            queued_at: 1,
            payload: serde_json::json!({ "type": "text", "text": { "body": "hi \"there\"" } }),
            instead: None,
            to,
            checked,
        };
        let text = encode(&body(true, Destination::Graph));
        let send = OutgoingSend::read(&text).expect("a checked Graph message");
        assert_eq!(
            serde_json::from_str::<Value>(send.payload.get()).unwrap(),
            body(true, Destination::Graph).payload
        );
        assert_eq!((send.flow.as_str(), send.node.as_str()), ("main", "hello"));
        assert!(OutgoingSend::read(&encode(&body(false, Destination::Graph))).is_none());
        assert!(OutgoingSend::read(&encode(&body(true, Destination::Agent))).is_none());
        assert!(OutgoingSend::read(&text.replace("\"v\":1", "\"v\":2")).is_none());
        // Unchecked bodies (older ones) do not write the field at all.
        assert!(!encode(&body(false, Destination::Graph)).contains("checked"));
    }

    #[test]
    fn events_round_trip_and_other_versions_are_refused() {
        let item = MessageItem {
            v: BODY_VERSION,
            event: Event {
                id: Some("wamid.1".into()),
                at: 5,
                contact_name: Some("Ada".into()),
                kind: EventKind::Media {
                    kind: MediaKind::Image,
                    id: "m1".into(),
                    mime_type: None,
                    caption: Some("look".into()),
                    filename: None,
                },
            },
        };
        let text = encode(&item);
        assert_eq!(decode::<MessageItem>(&text).unwrap(), item);
        let newer = text.replace("\"v\":1", "\"v\":2");
        let e = decode::<MessageItem>(&newer).unwrap_err();
        assert!(e.0.contains("format 2"), "{e}");
        assert!(decode::<MessageItem>("{not json").is_err());
        assert!(decode::<MessageItem>(r#"{"v":1,"event":{"kind":"x"}}"#).is_err());
    }
}
