//! The agent API's view of handovers: one JSON shape for a handover and its messages,
//! used by the agent routes and by the user export.

use crate::store::durable::handover::{Handover, HandoverData, HandoverMessage};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// A handover: a conversation a `handover` node gave to a human agent.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HandoverView {
    /// Opaque id (`ho_…`).
    pub id: String,
    pub phone_number_id: String,
    /// The user's WhatsApp id.
    pub user: String,
    /// The handover node's `queue`, if it names one.
    pub queue: Option<String>,
    /// `queued` (waiting for an agent), `accepted`, `resolved`, `timed_out` or
    /// `unavailable`.
    pub state: String,
    /// The agent who accepted it.
    pub agent: Option<String>,
    /// When it started (Unix milliseconds).
    pub created_at: i64,
    /// When its state last changed (Unix milliseconds).
    pub updated_at: i64,
    /// When it ended (Unix milliseconds).
    pub ended_at: Option<i64>,
    /// The status it was resolved with.
    pub status: Option<String>,
}

impl From<&Handover> for HandoverView {
    fn from(h: &Handover) -> Self {
        HandoverView {
            id: h.id.clone(),
            phone_number_id: h.key.phone_number_id.clone(),
            user: h.key.user.clone(),
            queue: h.queue.clone(),
            state: h.state.as_str().to_string(),
            agent: h.agent.clone(),
            created_at: h.created,
            updated_at: h.updated,
            ended_at: h.ended,
            status: h.status.clone(),
        }
    }
}

/// One message of a handover.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HandoverMessageView {
    /// `user`, `agent` or `bot`.
    pub from: String,
    /// When it was added (Unix milliseconds).
    pub at: i64,
    /// The message: a user's as templates see it (`message`), an agent's as sent.
    pub message: Value,
}

impl From<&HandoverMessage> for HandoverMessageView {
    fn from(m: &HandoverMessage) -> Self {
        HandoverMessageView {
            from: m.from.as_str().to_string(),
            at: m.at,
            message: serde_json::from_str(&m.body)
                .unwrap_or_else(|_| Value::String(m.body.clone())),
        }
    }
}

/// A handover with its messages so far, oldest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HandoverDetail {
    #[serde(flatten)]
    pub handover: HandoverView,
    pub messages: Vec<HandoverMessageView>,
}

impl From<&HandoverData> for HandoverDetail {
    fn from(d: &HandoverData) -> Self {
        HandoverDetail {
            handover: HandoverView::from(&d.handover),
            messages: d.messages.iter().map(HandoverMessageView::from).collect(),
        }
    }
}
