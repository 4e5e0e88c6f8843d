//! Handover records: what the store keeps about each time a `handover` node gave a
//! conversation to a human agent, and the messages exchanged while it lasted.
//!
//! A record is created `queued` when the handover starts; its state only moves by
//! compare-and-set ([`HandoverChange`]): the agent API's accept and resolve and the
//! worker's timeout race each other, and whoever changes the state first wins (an
//! accept of a handover already accepted is a conflict, answered 409). Records and
//! their messages belong to their user: [`super::Durable::delete_user`] erases them,
//! [`super::Durable::export_user`] lists them.
//!
//! As everywhere in the store, message bodies are opaque JSON text written by the
//! delivery side; the store never parses them.

use super::Millis;
use crate::store::SessionKey;

/// Where a handover is in its life. `queued` and `accepted` are open; the others ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandoverState {
    /// Waiting for an agent to take it.
    Queued,
    /// An agent has it.
    Accepted,
    /// The agent gave the conversation back to the bot.
    Resolved,
    /// Nobody accepted it within the node's `timeout`.
    TimedOut,
    /// No agent inbox could be reached.
    Unavailable,
}

impl HandoverState {
    pub const ALL: [HandoverState; 5] = [
        HandoverState::Queued,
        HandoverState::Accepted,
        HandoverState::Resolved,
        HandoverState::TimedOut,
        HandoverState::Unavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HandoverState::Queued => "queued",
            HandoverState::Accepted => "accepted",
            HandoverState::Resolved => "resolved",
            HandoverState::TimedOut => "timed_out",
            HandoverState::Unavailable => "unavailable",
        }
    }

    /// The state named `name`; `None` for a name this build does not know.
    pub fn parse(name: &str) -> Option<HandoverState> {
        HandoverState::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether the handover still lasts (an agent may yet take it or has it).
    pub fn is_open(self) -> bool {
        match self {
            HandoverState::Queued | HandoverState::Accepted => true,
            HandoverState::Resolved | HandoverState::TimedOut | HandoverState::Unavailable => false,
        }
    }
}

/// One handover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover {
    /// Opaque and unguessable (`ho_` + random hex), made by the delivery side.
    pub id: String,
    /// The number and the user handed over.
    pub key: SessionKey,
    /// The node's `queue`, if it names one.
    pub queue: Option<String>,
    pub state: HandoverState,
    /// The agent who accepted it.
    pub agent: Option<String>,
    pub created: Millis,
    /// When the state last changed.
    pub updated: Millis,
    /// When it ended (resolved, timed out, unavailable).
    pub ended: Option<Millis>,
    /// The status the agent resolved it with (`handover.status` in templates).
    pub status: Option<String>,
}

/// Who wrote a message of a handover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandoverAuthor {
    User,
    Agent,
    Bot,
}

impl HandoverAuthor {
    pub const ALL: [HandoverAuthor; 3] = [
        HandoverAuthor::User,
        HandoverAuthor::Agent,
        HandoverAuthor::Bot,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HandoverAuthor::User => "user",
            HandoverAuthor::Agent => "agent",
            HandoverAuthor::Bot => "bot",
        }
    }

    pub fn parse(name: &str) -> Option<HandoverAuthor> {
        HandoverAuthor::ALL.into_iter().find(|a| a.as_str() == name)
    }
}

/// A message of a handover, in the order it was added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoverMessage {
    pub from: HandoverAuthor,
    pub at: Millis,
    /// JSON text, opaque to the store.
    pub body: String,
}

/// A handover with its messages, oldest first (for exports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoverData {
    pub handover: Handover,
    pub messages: Vec<HandoverMessage>,
}

/// A compare-and-set of a handover's state: applied only when its state is one of
/// `from`. Reaching an ended state sets `ended` to `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoverChange {
    pub from: Vec<HandoverState>,
    pub to: HandoverState,
    /// Set when given (kept otherwise).
    pub agent: Option<String>,
    /// Set when given (kept otherwise).
    pub status: Option<String>,
    pub now: Millis,
}

impl HandoverChange {
    /// `record` after the change, or `None` when its state is not one of `from`.
    pub fn apply(&self, record: &Handover) -> Option<Handover> {
        if !self.from.contains(&record.state) {
            return None;
        }
        let mut next = record.clone();
        next.state = self.to;
        next.updated = self.now;
        if let Some(agent) = &self.agent {
            next.agent = Some(agent.clone());
        }
        if let Some(status) = &self.status {
            next.status = Some(status.clone());
        }
        if !self.to.is_open() {
            next.ended = Some(self.now);
        }
        Some(next)
    }
}

/// What [`super::Durable::change_handover`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    /// The record after the change.
    Done(Handover),
    /// Its state was not one of `from`: nothing was written. The record as it is.
    Conflict(Handover),
    NotFound,
}

/// Which handovers [`super::Durable::handovers`] lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoverFilter {
    /// Only these numbers' handovers (the API key's numbers).
    pub numbers: Vec<String>,
    pub queue: Option<String>,
    pub state: Option<HandoverState>,
    pub limit: usize,
}

impl HandoverFilter {
    pub fn matches(&self, h: &Handover) -> bool {
        self.numbers.contains(&h.key.phone_number_id)
            && self
                .queue
                .as_ref()
                .is_none_or(|q| h.queue.as_ref() == Some(q))
            && self.state.is_none_or(|s| h.state == s)
    }
}

/// Newest first: by `created`, then by id (descending), the order of every listing.
pub fn newest_first(a: &Handover, b: &Handover) -> std::cmp::Ordering {
    (b.created, &b.id).cmp(&(a.created, &a.id))
}
