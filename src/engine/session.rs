//! A session: everything the engine knows about one user's conversation. It is stored
//! between turns (SQLite, Redis), so it is plain serde data that names flows and nodes
//! by id, never by index: a reload that reorders nodes does not confuse it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Bumped whenever the stored shape changes, so old sessions can be migrated or reset.
pub const SESSION_VERSION: u32 = 1;

/// WhatsApp's customer service window: free-form messages are allowed for 24 hours
/// after the user's last message.
pub const WINDOW_SECONDS: i64 = 24 * 60 * 60;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub version: u32,
    /// Unique per conversation: the user and when it started.
    pub id: String,
    pub contact: Contact,
    /// When this conversation started (Unix seconds).
    pub started_at: i64,
    /// The last time anything happened (Unix seconds); the session expires after
    /// `session.timeout` of silence.
    pub updated_at: i64,
    /// Turns handled in this conversation.
    pub turn: u64,
    pub state: State,
    /// Where each running `call` returns to: the calling node, innermost last.
    pub stack: Vec<NodeAt>,
    /// Variables of this conversation (`vars`).
    pub vars: Map<String, Value>,
    /// Variables kept across conversations (`profile`).
    pub profile: Map<String, Value>,
    /// When the user last wrote (Unix seconds): the 24-hour window runs from here.
    pub last_user_message_at: Option<i64>,
    /// The id of the user's last message, for reactions and quoted replies.
    pub last_user_message_id: Option<String>,
    /// The last handover of this conversation once it ended (`handover` in templates:
    /// `id`, `state`, `status`, `agent`). Absent in sessions written before handovers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handover: Option<Value>,
}

/// The user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    pub wa_id: String,
    pub name: Option<String>,
}

/// A flow and node, by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAt {
    pub flow: String,
    pub node: String,
}

/// Where the conversation stands between turns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    /// No conversation is running: the next message starts the entry flow.
    Idle,
    /// A node asked something and waits for the answer.
    Waiting {
        at: NodeAt,
        /// Unusable answers so far.
        retries_used: u32,
        /// The buttons or rows as they were shown (titles rendered), so a typed title
        /// can be matched even after the bot was reloaded.
        choices: Vec<ShownChoice>,
    },
    /// A human agent has the conversation (a `handover` node); the bot is silent.
    Handover { at: NodeAt },
    /// An `http` or `handover` node waits for its effect's outcome
    /// (`EventKind::EffectResult`). `message` is the user's message of the turn that
    /// asked for it, as templates see it: what `message` still is when the turn goes on.
    Effect {
        at: NodeAt,
        message: serde_json::Value,
        /// Where the messages that follow the effect go in the user's outbox: set by
        /// the serving side before it commits the session (the engine leaves it
        /// `None` and never reads it), so that a restart that performs the effect
        /// again queues them after the ones already queued.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume: Option<OutboxPlace>,
        /// What the turn did before it stopped here: the turn goes on after the
        /// outcome, so its limits and its one fallback hold across the effect.
        #[serde(default)]
        so_far: SoFar,
    },
}

/// A button or row as the user saw it.
/// How far a turn got before it stopped at an effect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SoFar {
    /// Nodes run (for `limits.nodes_per_turn`).
    pub nodes: u32,
    /// Messages queued (for `limits.messages_per_turn`).
    pub sent: u32,
    /// The fallback flow runs because of an error: another error stops the turn.
    pub recovering: bool,
}

/// A place in a user's outbox: the turn (the serving side's item id) and the index of
/// the next message in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxPlace {
    pub turn: u64,
    pub index: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShownChoice {
    pub id: String,
    pub title: String,
}

impl Session {
    /// A fresh session for a user who has not written before.
    pub fn new(wa_id: &str, now: i64) -> Self {
        Session {
            version: SESSION_VERSION,
            id: format!("{wa_id}-{now}"),
            contact: Contact {
                wa_id: wa_id.to_string(),
                name: None,
            },
            started_at: now,
            updated_at: now,
            turn: 0,
            state: State::Idle,
            stack: Vec::new(),
            vars: Map::new(),
            profile: Map::new(),
            last_user_message_at: None,
            last_user_message_id: None,
            handover: None,
        }
    }

    /// Starts a new conversation for the same user: the profile, the contact and the
    /// 24-hour window carry over, everything else starts afresh.
    pub fn restart(&mut self, now: i64) {
        let fresh = Session {
            profile: std::mem::take(&mut self.profile),
            contact: self.contact.clone(),
            last_user_message_at: self.last_user_message_at,
            last_user_message_id: self.last_user_message_id.take(),
            ..Session::new(&self.contact.wa_id, now)
        };
        *self = fresh;
    }

    /// Whether `timeout_secs` of silence have passed.
    pub fn is_expired(&self, now: i64, timeout_secs: i64) -> bool {
        timeout_secs > 0 && now - self.updated_at > timeout_secs
    }

    /// Whether free-form messages may be sent now (the user wrote in the last 24 hours).
    pub fn window_open(&self, now: i64) -> bool {
        self.last_user_message_at
            .is_some_and(|at| now - at < WINDOW_SECONDS)
    }

    /// The flow and node the conversation waits at, if any.
    pub fn waiting_at(&self) -> Option<&NodeAt> {
        match &self.state {
            State::Waiting { at, .. } | State::Handover { at } | State::Effect { at, .. } => {
                Some(at)
            }
            State::Idle => None,
        }
    }
}
