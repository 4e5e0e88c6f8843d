//! The session trace: the answer to "why did the bot say this?". For each user, the
//! newest turns this instance ran: the inbound event, the nodes visited (with where
//! they are written), the variables before and after, each outgoing payload exactly as
//! it is posted with its wamid and delivery status, the problems, and where the
//! conversation stands after (`GET /api/v1/users/{user}/trace`, the `/dev` inspector).
//!
//! In memory, per instance, bounded: the newest [`TraceLimits::turns_per_user`] turns
//! per (number, user), at most [`TraceLimits::users`] users and about
//! [`TraceLimits::bytes`] in all, the least recently active users dropped first. Lost
//! on restart; with several instances each holds the turns it ran.
//!
//! Cheap on the turn path: a turn's fixed parts are compact JSON texts (parsed again
//! only when someone reads the trace), each outgoing message its payload as JSON. Texts
//! that repeat are kept once ([`Texts`]): most turns of a bot send the same menus and
//! prompts and walk the same nodes, and a turn's variables before are the previous
//! turn's after; only what the user sent is the turn's own. The sender and the status
//! webhooks update an entry by its outbox place (turn, index) or its wamid, searching
//! one user's few turns. Variables declared `pii: true` are masked when the turn is
//! recorded (never kept) unless the number is local (no WhatsApp credentials: test
//! users).

use super::codec::Destination;
use crate::engine::{self, EffectOutcome, Event, EventKind, HandoverOutcome, Session, State};
use crate::flow::{Bot, NodeRef};
use crate::store::SessionKey;
use crate::store::durable::OutKey;
use lru::LruCache;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::broadcast;
use utoipa::ToSchema;

/// How a variable declared `pii: true` is shown.
pub const MASKED: &str = "•••";

/// A variable (or an event's detail) whose JSON is longer than this is shown as a
/// note of its size: one `http` response saved in `vars` must not take the budget of
/// a thousand turns.
const VALUE_MAX: usize = 8 * 1024;

/// An inbound summary longer than this (in characters) is cut.
const SUMMARY_MAX: usize = 200;

/// Shards, each with its own lock and its share of the limits: every turn and every
/// send writes here, and different users should not wait on one lock.
const SHARDS: usize = 8;

/// What a record costs besides its texts (the structs, the list entries), counted
/// against [`TraceLimits::bytes`].
const RECORD_OVERHEAD: usize = 128;
const OUTGOING_OVERHEAD: usize = 64;

/// The memory the trace takes at most by default, in MiB (`serve --trace-memory`).
pub const DEFAULT_MIB: usize = 32;

/// How much the trace keeps; any limit 0 turns it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceLimits {
    /// The newest turns kept per (number, user).
    pub turns_per_user: usize,
    /// Users kept at most; the least recently active goes first.
    pub users: usize,
    /// About this many bytes of traces in all; the least recently active users go
    /// first (a user alone over it keeps only their newest turn).
    pub bytes: usize,
}

impl Default for TraceLimits {
    fn default() -> Self {
        TraceLimits {
            turns_per_user: 50,
            users: 10_000,
            bytes: DEFAULT_MIB * 1024 * 1024,
        }
    }
}

/// Every user's trace on one (number, user): `GET /api/v1/users/{user}/trace`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserTrace {
    /// The user's WhatsApp id.
    pub user: String,
    /// One entry per number (that the key opens) with turns of the user.
    pub numbers: Vec<NumberTrace>,
}

/// The user's turns on one number.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NumberTrace {
    pub phone_number_id: String,
    /// Oldest first.
    pub turns: Vec<TraceTurn>,
}

/// One turn as this instance ran it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TraceTurn {
    /// Unique among this instance's traces, growing: a key for the turn (`turn` is not:
    /// a new conversation counts from 1 again, and an effect's outcome continues the
    /// turn that asked for it).
    pub seq: u64,
    /// The conversation's turn counter after this turn (`session.turn`).
    pub turn: u64,
    /// When the turn ran (RFC 3339, UTC).
    pub at: String,
    pub inbound: Inbound,
    /// The nodes run or answered, in order.
    pub visited: Vec<VisitedNode>,
    /// The conversation's variables before the turn; `pii: true` ones are `•••` unless
    /// the number is local.
    #[schema(value_type = Object)]
    pub vars_before: Map<String, Value>,
    /// The variables after it, masked the same way.
    #[schema(value_type = Object)]
    pub vars_after: Map<String, Value>,
    /// The messages the turn queued, in order, with what became of them.
    pub outgoing: Vec<TraceOutgoing>,
    /// Errors and warnings of the turn: `error: file:line:col: flow.node: message`.
    pub problems: Vec<String>,
    pub state_after: StateAfter,
}

/// What started the turn.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Inbound {
    /// `text`, `reply`, `button`, `location`, `media`, `contacts`, `reaction`,
    /// `flow_reply`, `unsupported` (the user's messages); `inject`, `notify` (the API);
    /// `effect_result` (an `http` call or handover answered); `delivery_failed` (a
    /// `failed` status); `timer` (a handover timed out); `agent` (an agent resolved a
    /// handover or replied).
    pub kind: String,
    /// The message's wamid, when WhatsApp sent it.
    pub id: Option<String>,
    /// One line for people.
    pub summary: String,
    /// The event as the engine got it.
    #[schema(value_type = Object)]
    pub detail: Value,
}

/// A node the turn ran or answered.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VisitedNode {
    pub flow: String,
    pub node: String,
    /// Its kind: `say`, `ask`, `buttons`, `http`, …
    pub kind: String,
    /// Where it is written: `flows/main.yaml:12:5`.
    pub source: String,
}

/// One message the turn queued.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TraceOutgoing {
    /// Its place in the turn's outbox order (an effect's follow-up messages go on
    /// counting from the turn's first ones).
    pub index: u32,
    /// The Cloud API JSON as posted (the node's `on_window_closed` template when
    /// WhatsApp refused the message outside the 24-hour window).
    #[schema(value_type = Object)]
    pub payload: Value,
    /// The id WhatsApp gave it, once accepted.
    pub wamid: Option<String>,
    /// `queued`, `sent`, `delivered`, `read` or `failed`.
    pub status: String,
    /// Why it failed, or why the last attempt did (`131047: …`).
    pub error: Option<String>,
    /// The node's `on_window_closed` template went instead (WhatsApp answered 131047).
    pub window_template: bool,
}

/// Where the conversation stands after the turn.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StateAfter {
    /// `waiting` (for the user's answer), `ended` (the conversation ended in this turn),
    /// `effect` (an `http` call or handover is performed), `handover` (an agent has the
    /// conversation) or `idle`.
    pub kind: String,
    pub flow: Option<String>,
    pub node: Option<String>,
}

/// Something changed in a user's trace (for live views: the `/dev` inspector).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceChange {
    pub key: SessionKey,
    pub what: ChangeKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A turn was recorded.
    Turn,
    /// An outgoing message's wamid or status changed.
    Outgoing,
}

/// A turn's trace before its messages have outbox places (they get them with the
/// commit).
#[derive(Debug)]
pub struct Draft {
    turn: u64,
    at_ms: i64,
    /// [`Inbound`] as compact JSON: the turn's own.
    inbound: Box<str>,
    /// [`Route`] as compact JSON: the same for every turn that took the same way.
    route: Box<str>,
    vars_before: Box<str>,
    vars_after: Box<str>,
}

/// Where a turn went and how it ended, stored as one JSON text.
#[derive(Serialize)]
struct RouteOut<'a> {
    visited: &'a [VisitedNode],
    problems: &'a [String],
    state_after: &'a StateAfter,
}

/// [`RouteOut`] read back.
#[derive(Deserialize)]
struct Route {
    visited: Vec<VisitedNode>,
    problems: Vec<String>,
    state_after: StateAfter,
}

/// Variables as the trace shows them: JSON text, `pii` masked (when `mask`), a value
/// too large shown as a note of its size. Taken before a turn (the session moves into
/// the engine) and after it.
#[derive(Debug)]
pub struct Vars(Box<RawValue>);

impl Vars {
    pub fn of(vars: &Map<String, Value>, bot: &Bot, mask: bool) -> Vars {
        let shown = |name: &str, value: &Value| -> Value {
            if mask && bot.is_pii(name) {
                return Value::from(MASKED);
            }
            value.clone()
        };
        let masked: Map<String, Value> =
            if mask && bot.has_pii() && vars.keys().any(|k| bot.is_pii(k)) {
                vars.iter().map(|(k, v)| (k.clone(), shown(k, v))).collect()
            } else {
                Map::new()
            };
        let source = if masked.is_empty() { vars } else { &masked };
        let text = serde_json::to_string(source).unwrap_or_else(|_| "{}".into());
        let text = if text.len() > VALUE_MAX {
            // Rarely: only then is each value measured, and the large ones noted.
            let capped: Map<String, Value> =
                source.iter().map(|(k, v)| (k.clone(), capped(v))).collect();
            serde_json::to_string(&capped).unwrap_or_else(|_| "{}".into())
        } else {
            text
        };
        Vars(RawValue::from_string(text).unwrap_or_else(|_| empty_object()))
    }
}

fn empty_object() -> Box<RawValue> {
    // "{}" is JSON; the fallback is unreachable but must not panic.
    RawValue::from_string("{}".into()).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// `value`, or a note of its size when its JSON is longer than [`VALUE_MAX`].
fn capped(value: &Value) -> Value {
    let len = serde_json::to_string(value).map_or(0, |t| t.len());
    if len <= VALUE_MAX {
        return value.clone();
    }
    Value::from(too_large(len))
}

impl Draft {
    /// The trace of a turn that ran `visited` for `event`, `before` and `after` it.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        bot: &Bot,
        inbound: InboundDraft,
        visited: &[NodeRef],
        before: Vars,
        after: &Session,
        mask: bool,
        problems: &[String],
        ended: bool,
        at_ms: i64,
    ) -> Draft {
        let visited: Vec<VisitedNode> = visited
            .iter()
            .map(|r| {
                let v = engine::visit_of(bot, *r);
                VisitedNode {
                    flow: v.at.flow,
                    node: v.at.node,
                    kind: v.kind.to_string(),
                    source: v.source,
                }
            })
            .collect();
        let vars_after = Vars::of(&after.vars, bot, mask);
        let state_after = state_after(&after.state, ended);
        let route = RouteOut {
            visited: &visited,
            problems,
            state_after: &state_after,
        };
        Draft {
            turn: after.turn,
            at_ms,
            inbound: json_text(&inbound),
            route: json_text(&route),
            vars_before: before.0.into(),
            vars_after: vars_after.0.into(),
        }
    }
}

/// `value` as compact JSON (`{}` in the impossible case that it cannot be written).
fn json_text(value: &impl Serialize) -> Box<str> {
    serde_json::to_string(value)
        .unwrap_or_else(|_| "{}".into())
        .into_boxed_str()
}

fn state_after(state: &State, ended: bool) -> StateAfter {
    let (kind, at) = match state {
        State::Idle if ended => ("ended", None),
        State::Idle => ("idle", None),
        State::Waiting { at, .. } => ("waiting", Some(at)),
        State::Effect { at, .. } => ("effect", Some(at)),
        State::Handover { at } => ("handover", Some(at)),
    };
    StateAfter {
        kind: kind.to_string(),
        flow: at.map(|a| a.flow.clone()),
        node: at.map(|a| a.node.clone()),
    }
}

/// The values of the variables declared `pii: true` before a turn, to see whether the
/// turn set one (then its message is likely what was saved: [`mask_inbound`]). Empty
/// when the bot declares none.
pub fn pii_values(vars: &Map<String, Value>, bot: &Bot) -> Vec<(String, Value)> {
    if !bot.has_pii() {
        return Vec::new();
    }
    vars.iter()
        .filter(|(k, _)| bot.is_pii(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Whether the turn set a `pii: true` variable to a new value.
pub fn pii_changed(before: &[(String, Value)], after: &Map<String, Value>, bot: &Bot) -> bool {
    bot.has_pii()
        && after.iter().filter(|(k, _)| bot.is_pii(k)).any(|(k, v)| {
            before
                .iter()
                .find(|(name, _)| name == k)
                .is_none_or(|(_, old)| old != v)
        })
}

/// What started a turn, as the trace keeps it (read back as [`Inbound`]).
#[derive(Debug, Serialize)]
pub struct InboundDraft {
    kind: String,
    id: Option<String>,
    summary: String,
    /// JSON, at most [`VALUE_MAX`] long (else a note of its size).
    detail: Box<RawValue>,
}

/// The inbound part of a turn's trace for `event`. `masked` when the turn saved a
/// `pii: true` variable on a number with credentials: what the user sent is most
/// likely what was saved, so neither the summary nor the message's content is kept.
pub fn inbound(event: &Event, masked: bool) -> InboundDraft {
    let (summary, detail) = if masked {
        let detail = serde_json::json!({
            "id": event.id,
            "at": event.at,
            "contact_name": event.contact_name,
            "kind": MASKED,
        });
        (MASKED.to_string(), raw(&detail))
    } else {
        (cut(&summary(&event.kind)), raw(event))
    };
    InboundDraft {
        kind: kind_name(&event.kind).to_string(),
        id: event.id.clone(),
        summary,
        detail,
    }
}

/// The inbound part of a turn that ran no event (an API notify's message, an agent's
/// reply): `kind` and `summary` as given, `detail` the message.
pub fn inbound_of(kind: &str, summary: &str, detail: &Value) -> InboundDraft {
    InboundDraft {
        kind: kind.to_string(),
        id: None,
        summary: cut(summary),
        detail: raw(detail),
    }
}

/// `value` as JSON text, or a note of its size when longer than [`VALUE_MAX`].
fn raw(value: &impl Serialize) -> Box<RawValue> {
    let text = serde_json::to_string(value).unwrap_or_else(|_| "null".into());
    let text = if text.len() > VALUE_MAX {
        Value::from(too_large(text.len())).to_string()
    } else {
        text
    };
    RawValue::from_string(text).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

fn too_large(len: usize) -> String {
    format!("… {len} bytes of JSON, too large for the trace")
}

fn kind_name(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::Text(_) => "text",
        EventKind::Reply { .. } => "reply",
        EventKind::Button { .. } => "button",
        EventKind::Location { .. } => "location",
        EventKind::Media { .. } => "media",
        EventKind::Contacts(_) => "contacts",
        EventKind::Reaction { .. } => "reaction",
        EventKind::FlowReply(_) => "flow_reply",
        EventKind::DeliveryFailed { .. } => "delivery_failed",
        EventKind::EffectResult(_) => "effect_result",
        EventKind::Unsupported(_) => "unsupported",
        EventKind::Injected(_) => "inject",
        EventKind::Data(_) => "data",
        EventKind::StartFlow { .. } => "notify",
        EventKind::HandoverEnded(end) => match end.outcome {
            HandoverOutcome::TimedOut => "timer",
            HandoverOutcome::Resolved => "agent",
        },
    }
}

fn summary(kind: &EventKind) -> String {
    match kind {
        EventKind::Text(text) => text.clone(),
        EventKind::Reply { id, title } => format!("{title} ({id})"),
        EventKind::Button { payload, text } => format!("{text} ({payload})"),
        EventKind::Location {
            latitude,
            longitude,
            name,
            ..
        } => match name {
            Some(name) => format!("{name} ({latitude}, {longitude})"),
            None => format!("{latitude}, {longitude}"),
        },
        EventKind::Media { kind, caption, .. } => match caption {
            Some(c) => format!("{}: {c}", kind.name()),
            None => kind.name().to_string(),
        },
        EventKind::Contacts(cards) => format!("{} contact card(s)", cards.len()),
        EventKind::Reaction { emoji, .. } => format!("reacted {emoji}"),
        EventKind::FlowReply(_) => "a WhatsApp Flows form was submitted".into(),
        EventKind::DeliveryFailed {
            flow,
            node,
            code,
            reason,
        } => {
            let code = code.map_or_else(String::new, |c| format!(" ({c})"));
            format!("WhatsApp could not deliver the message of {flow}.{node}{code}: {reason}")
        }
        EventKind::EffectResult(outcome) => match outcome {
            EffectOutcome::Http(v) => match v.get("status") {
                Some(status) => format!("the http call answered {status}"),
                None => "the http call answered".into(),
            },
            EffectOutcome::HttpFailed(f) => {
                format!("the http call failed ({}): {}", f.kind.as_str(), f.message)
            }
            EffectOutcome::HandoverStarted => "the handover started".into(),
            EffectOutcome::Unavailable => "no agent is available".into(),
            EffectOutcome::Failed(why) => format!("the effect failed: {why}"),
            EffectOutcome::Unsupported => "the effect is not supported here".into(),
        },
        EventKind::Unsupported(what) => format!("a message the bot cannot use: {what}"),
        EventKind::Injected(inner) => format!("injected: {}", summary(inner)),
        EventKind::Data(v) => format!("data {v}"),
        EventKind::StartFlow { flow, node } => match node {
            Some(node) => format!("notify: start {flow}.{node}"),
            None => format!("notify: start flow {flow}"),
        },
        EventKind::HandoverEnded(end) => {
            let by = end
                .agent
                .as_deref()
                .map_or_else(String::new, |a| format!(" by {a}"));
            let status = end
                .status
                .as_deref()
                .map_or_else(String::new, |s| format!(" ({s})"));
            format!("the handover {}{by}{status}", end.outcome.as_str())
        }
    }
}

/// `text` cut to [`SUMMARY_MAX`] characters.
fn cut(text: &str) -> String {
    match text.char_indices().nth(SUMMARY_MAX) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// Where an outgoing message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Status {
    Queued,
    Sent,
    Delivered,
    Read,
    Failed,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Sent => "sent",
            Status::Delivered => "delivered",
            Status::Read => "read",
            Status::Failed => "failed",
        }
    }

    /// A status webhook's `status`; `None` for one the trace does not show.
    fn parse(status: &str) -> Option<Status> {
        match status {
            "sent" => Some(Status::Sent),
            "delivered" => Some(Status::Delivered),
            "read" => Some(Status::Read),
            "failed" => Some(Status::Failed),
            _ => None,
        }
    }
}

/// One outgoing message of a recorded turn.
#[derive(Debug)]
struct OutRecord {
    index: u32,
    /// The payload as JSON.
    payload: Arc<str>,
    /// The node's `on_window_closed` template as JSON, when it has one.
    instead: Option<Arc<str>>,
    /// An event for the agent webhook, not a message to the user: not shown.
    to_agent: bool,
    wamid: Option<Box<str>>,
    status: Status,
    error: Option<Box<str>>,
    window_template: bool,
}

/// The parts of an outbox body the trace keeps, borrowed from its text.
#[derive(Deserialize)]
struct BodyParts<'a> {
    #[serde(borrow)]
    payload: &'a RawValue,
    #[serde(borrow, default)]
    instead: Option<&'a RawValue>,
    #[serde(default)]
    to: Destination,
}

impl OutRecord {
    /// Counts every text whole, shared or not: the budget bounds the memory from above.
    fn bytes(&self) -> usize {
        OUTGOING_OVERHEAD
            + self.payload.len()
            + self.instead.as_ref().map_or(0, |i| i.len())
            + self.wamid.as_ref().map_or(0, |w| w.len())
            + self.error.as_ref().map_or(0, |e| e.len())
    }
}

/// One recorded turn.
#[derive(Debug)]
struct TurnRecord {
    seq: u64,
    turn: u64,
    at_ms: i64,
    /// The outbox turn of its messages (`OutKey::turn`).
    out_turn: u64,
    inbound: Box<str>,
    route: Arc<str>,
    vars_before: Arc<str>,
    vars_after: Arc<str>,
    outgoing: Vec<OutRecord>,
}

impl TurnRecord {
    /// Counts every text whole, shared or not: the budget bounds the memory from above.
    fn bytes(&self) -> usize {
        RECORD_OVERHEAD
            + self.inbound.len()
            + self.route.len()
            + self.vars_before.len()
            + self.vars_after.len()
            + self.outgoing.iter().map(OutRecord::bytes).sum::<usize>()
    }

    fn view(&self) -> Option<TraceTurn> {
        let route: Route = serde_json::from_str(&self.route).ok()?;
        let outgoing = self.outgoing.iter().filter_map(OutRecord::view).collect();
        Some(TraceTurn {
            seq: self.seq,
            turn: self.turn,
            at: rfc3339(self.at_ms),
            inbound: serde_json::from_str(&self.inbound).ok()?,
            visited: route.visited,
            vars_before: serde_json::from_str(&self.vars_before).ok()?,
            vars_after: serde_json::from_str(&self.vars_after).ok()?,
            outgoing,
            problems: route.problems,
            state_after: route.state_after,
        })
    }
}

impl OutRecord {
    /// The message as the API shows it; `None` for an event to the agent webhook
    /// (not a message to the user).
    fn view(&self) -> Option<TraceOutgoing> {
        if self.to_agent {
            return None;
        }
        let shown = match (self.window_template, &self.instead) {
            (true, Some(instead)) => instead,
            (true, None) | (false, _) => &self.payload,
        };
        Some(TraceOutgoing {
            index: self.index,
            payload: serde_json::from_str(shown).ok()?,
            wamid: self.wamid.as_deref().map(str::to_string),
            status: self.status.as_str().to_string(),
            error: self.error.as_deref().map(str::to_string),
            window_template: self.window_template,
        })
    }
}

/// Texts kept once however many records hold them (a shard's). A text no record holds
/// any more is dropped by the next sweep, which runs when the set has doubled since
/// the last one: amortized, a lookup per text recorded.
#[derive(Default)]
struct Texts {
    set: HashSet<Arc<str>, foldhash::fast::RandomState>,
    sweep_at: usize,
}

/// The set is swept no sooner than at this size.
const TEXTS_MIN_SWEEP: usize = 1024;

impl Texts {
    fn get(&mut self, text: &str) -> Arc<str> {
        if let Some(kept) = self.set.get(text) {
            return Arc::clone(kept);
        }
        if self.set.len() >= self.sweep_at.max(TEXTS_MIN_SWEEP) {
            // Held by the set alone: no record uses it.
            self.set.retain(|t| Arc::strong_count(t) > 1);
            self.sweep_at = self.set.len() * 2;
        }
        let kept: Arc<str> = Arc::from(text);
        self.set.insert(Arc::clone(&kept));
        kept
    }
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// One user's recorded turns, oldest first.
#[derive(Debug, Default)]
struct UserTurns {
    turns: VecDeque<TurnRecord>,
    bytes: usize,
}

impl UserTurns {
    fn out_mut(&mut self, at: OutKey) -> Option<&mut OutRecord> {
        // The message being sent is nearly always of the newest turns.
        self.turns
            .iter_mut()
            .rev()
            .filter(|t| t.out_turn == at.turn)
            .flat_map(|t| t.outgoing.iter_mut())
            .find(|o| o.index == at.index)
    }

    fn wamid_mut(&mut self, wamid: &str) -> Option<&mut OutRecord> {
        self.turns
            .iter_mut()
            .rev()
            .flat_map(|t| t.outgoing.iter_mut())
            .find(|o| o.wamid.as_deref() == Some(wamid))
    }
}

/// One shard: its users, least recently active first out.
struct Shard {
    users: LruCache<SessionKey, UserTurns>,
    bytes: usize,
    texts: Texts,
}

/// The trace of every user this instance ran turns for. Shared by the runtime (which
/// records) and the API (which reads).
pub struct TraceStore {
    shards: Vec<Mutex<Shard>>,
    hasher: foldhash::fast::RandomState,
    limits: TraceLimits,
    next_seq: AtomicU64,
    changes: broadcast::Sender<TraceChange>,
}

impl Default for TraceStore {
    fn default() -> Self {
        TraceStore::new(TraceLimits::default())
    }
}

impl TraceStore {
    pub fn new(limits: TraceLimits) -> Self {
        let (changes, _) = broadcast::channel(256);
        TraceStore {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        users: LruCache::unbounded(),
                        bytes: 0,
                        texts: Texts::default(),
                    })
                })
                .collect(),
            hasher: foldhash::fast::RandomState::default(),
            limits,
            next_seq: AtomicU64::new(1),
            changes,
        }
    }

    fn shard(&self, key: &SessionKey) -> MutexGuard<'_, Shard> {
        let i = (self.hasher.hash_one(key) % SHARDS as u64) as usize;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Each shard's share of the limits (at least one user each).
    fn shard_users(&self) -> usize {
        self.limits.users.div_ceil(SHARDS).max(1)
    }

    fn shard_bytes(&self) -> usize {
        self.limits.bytes.div_ceil(SHARDS)
    }

    /// Whether turns are kept at all (`serve --trace-memory 0` turns it off). When it is
    /// off, turns skip building their trace: it is per-turn work on the hot path.
    pub fn is_on(&self) -> bool {
        self.limits.turns_per_user > 0 && self.limits.users > 0 && self.limits.bytes > 0
    }

    /// Live views hear of every change from here on.
    pub fn subscribe(&self) -> broadcast::Receiver<TraceChange> {
        self.changes.subscribe()
    }

    fn changed(&self, key: &SessionKey, what: ChangeKind) {
        // Nothing to build when nobody listens (a server without `/dev` open).
        if self.changes.receiver_count() > 0 {
            let _ = self.changes.send(TraceChange {
                key: key.clone(),
                what,
            });
        }
    }

    /// Records a committed turn: `draft`, and its messages (the bodies the outbox
    /// stores) at outbox places `(out_turn, first..)`.
    pub fn record(
        &self,
        key: &SessionKey,
        draft: Draft,
        out_turn: u64,
        first: u32,
        bodies: Vec<String>,
    ) {
        if !self.is_on() {
            return;
        }
        // Read before the lock; our own bodies always read (one that did not would
        // just be missing from the trace).
        let parts: Vec<(u32, BodyParts)> = (first..)
            .zip(&bodies)
            .filter_map(|(index, body)| Some((index, serde_json::from_str(body).ok()?)))
            .collect();
        {
            let mut shard = self.shard(key);
            let shard = &mut *shard;
            let texts = &mut shard.texts;
            let record = TurnRecord {
                seq: self.next_seq.fetch_add(1, Ordering::Relaxed),
                turn: draft.turn,
                at_ms: draft.at_ms,
                out_turn,
                inbound: draft.inbound,
                route: texts.get(&draft.route),
                vars_before: texts.get(&draft.vars_before),
                vars_after: texts.get(&draft.vars_after),
                outgoing: parts
                    .into_iter()
                    .map(|(index, body)| OutRecord {
                        index,
                        payload: texts.get(body.payload.get()),
                        instead: body.instead.map(|i| texts.get(i.get())),
                        to_agent: !body.to.is_graph(),
                        wamid: None,
                        status: Status::Queued,
                        error: None,
                        window_template: false,
                    })
                    .collect(),
            };
            let added = record.bytes();
            if !shard.users.contains(key) {
                // Room for two turns, not the default four: most users in memory
                // have few (a conversation of two, a returning user's newest).
                let user = UserTurns {
                    turns: VecDeque::with_capacity(2),
                    bytes: 0,
                };
                shard.users.push(key.clone(), user);
            }
            let mut freed = 0;
            if let Some(user) = shard.users.get_mut(key) {
                user.turns.push_back(record);
                user.bytes += added;
                while user.turns.len() > self.limits.turns_per_user {
                    if let Some(old) = user.turns.pop_front() {
                        let b = old.bytes();
                        user.bytes = user.bytes.saturating_sub(b);
                        freed += b;
                    }
                }
            }
            shard.bytes = (shard.bytes + added).saturating_sub(freed);
            self.evict(shard, key);
        }
        self.changed(key, ChangeKind::Turn);
    }

    /// Drops the least recently active users while the shard is over its limits; the
    /// user just recorded (`key`) goes last, keeping at least its newest turn.
    fn evict(&self, shard: &mut Shard, key: &SessionKey) {
        let (users, bytes) = (self.shard_users(), self.shard_bytes());
        while shard.users.len() > users || (shard.bytes > bytes && shard.users.len() > 1) {
            let Some((_, gone)) = shard.users.pop_lru() else {
                break;
            };
            shard.bytes = shard.bytes.saturating_sub(gone.bytes);
        }
        if shard.bytes > bytes
            && let Some(user) = shard.users.peek_mut(key)
        {
            while shard.bytes > bytes && user.turns.len() > 1 {
                if let Some(old) = user.turns.pop_front() {
                    let b = old.bytes();
                    user.bytes = user.bytes.saturating_sub(b);
                    shard.bytes = shard.bytes.saturating_sub(b);
                }
            }
        }
    }

    /// Changes the user's outgoing message that `find` finds with `change` (which
    /// says whether anything changed); nothing when the trace no longer has it.
    fn update_out(
        &self,
        key: &SessionKey,
        find: impl FnOnce(&mut UserTurns) -> Option<&mut OutRecord>,
        change: impl FnOnce(&mut OutRecord) -> bool,
    ) {
        let changed = {
            let mut shard = self.shard(key);
            let shard = &mut *shard;
            let Some(user) = shard.users.peek_mut(key) else {
                return;
            };
            let Some(out) = find(user) else {
                return;
            };
            let before = out.bytes();
            let changed = change(out);
            let after = out.bytes();
            user.bytes = (user.bytes + after).saturating_sub(before);
            shard.bytes = (shard.bytes + after).saturating_sub(before);
            changed
        };
        if changed {
            self.changed(key, ChangeKind::Outgoing);
        }
    }

    /// WhatsApp accepted the message at `at` as `wamid` (the window template instead,
    /// when `window_template`).
    pub fn sent(&self, key: &SessionKey, at: OutKey, wamid: &str, window_template: bool) {
        self.update_out(
            key,
            |u| u.out_mut(at),
            |o| {
                o.wamid = Some(wamid.into());
                o.status = o.status.max(Status::Sent);
                o.error = None;
                o.window_template = window_template;
                true
            },
        );
    }

    /// An attempt to send the message at `at` failed; it is tried again (or waits for
    /// the credentials): it stays queued, with why.
    pub fn attempt_failed(&self, key: &SessionKey, at: OutKey, error: &str) {
        self.update_out(
            key,
            |u| u.out_mut(at),
            |o| {
                o.error = Some(error.into());
                true
            },
        );
    }

    /// The message at `at` was given up on (a dead letter). The first reason given
    /// stays (the sender says it in Graph's words, then again as the dead letter's).
    pub fn failed(&self, key: &SessionKey, at: OutKey, error: &str) {
        self.update_out(
            key,
            |u| u.out_mut(at),
            |o| {
                if o.status == Status::Failed {
                    return false;
                }
                o.status = Status::Failed;
                o.error = Some(error.into());
                true
            },
        );
    }

    /// A status webhook (or the local simulator) reports `status` for `wamid`. A
    /// status never goes back (`read` stays when a late `delivered` arrives); `failed`
    /// wins.
    pub fn status(&self, key: &SessionKey, wamid: &str, status: &str, error: Option<&str>) {
        let Some(status) = Status::parse(status) else {
            return;
        };
        self.update_out(
            key,
            |u| u.wamid_mut(wamid),
            |o| {
                let next = o.status.max(status);
                let changed = next != o.status;
                o.status = next;
                if status == Status::Failed
                    && let Some(e) = error
                {
                    o.error = Some(e.into());
                }
                changed
            },
        );
    }

    /// The user's turns on this number, oldest first; `None` when there are none.
    /// Reading does not count as activity (the least recently active still go first).
    pub fn turns(&self, key: &SessionKey) -> Option<Vec<TraceTurn>> {
        let shard = self.shard(key);
        let user = shard.users.peek(key)?;
        Some(user.turns.iter().filter_map(TurnRecord::view).collect())
    }

    /// Forgets the user's trace on this number (an erasure, a reset in `/dev`).
    pub fn forget(&self, key: &SessionKey) {
        let mut shard = self.shard(key);
        if let Some(gone) = shard.users.pop(key) {
            shard.bytes = shard.bytes.saturating_sub(gone.bytes);
        }
    }

    /// Users and bytes kept, for tests and metrics.
    pub fn usage(&self) -> (usize, usize) {
        self.shards.iter().fold((0, 0), |(u, b), s| {
            let s = s.lock().unwrap_or_else(|e| e.into_inner());
            (u + s.users.len(), b + s.bytes)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::codec::{self, OutgoingBody};

    /// A turn's trace whose variables before are `pad` bytes and a little longer.
    fn draft(turn: u64, pad: usize) -> Draft {
        let route = RouteOut {
            visited: &[],
            problems: &[],
            state_after: &state_after(&State::Idle, false),
        };
        Draft {
            turn,
            at_ms: 1_767_225_600_000,
            inbound: json_text(&inbound_of("text", "hi", &Value::Null)),
            route: json_text(&route),
            vars_before: format!("{{\"pad\":\"{}\"}}", "x".repeat(pad)).into(),
            vars_after: "{}".into(),
        }
    }

    fn body(text: &str) -> String {
        codec::encode(&OutgoingBody {
            v: codec::BODY_VERSION,
            flow: "main".into(),
            node: "hello".into(),
            queued_at: 0,
            payload: serde_json::json!({ "type": "text", "text": { "body": text } }),
            instead: Some(serde_json::json!({ "type": "template" })),
            to: Destination::Graph,
            checked: false,
        })
    }

    fn key(user: usize) -> SessionKey {
        SessionKey::new("1001", &user.to_string())
    }

    #[test]
    fn a_user_keeps_the_newest_turns_oldest_first() {
        let store = TraceStore::new(TraceLimits {
            turns_per_user: 3,
            ..TraceLimits::default()
        });
        for turn in 1..=5 {
            store.record(&key(1), draft(turn, 10), turn, 0, vec![body("hi")]);
        }
        let turns = store.turns(&key(1)).unwrap();
        let kept: Vec<u64> = turns.iter().map(|t| t.turn).collect();
        assert_eq!(kept, [3, 4, 5]);
        assert!(turns.windows(2).all(|w| w[0].seq < w[1].seq));
        assert_eq!(turns[0].at, "2026-01-01T00:00:00.000Z");
        assert!(store.turns(&key(2)).is_none());
    }

    #[test]
    fn the_least_recently_active_users_go_first() {
        // One user per shard: the limit is each shard's share.
        let store = TraceStore::new(TraceLimits {
            users: SHARDS,
            ..TraceLimits::default()
        });
        for user in 0..1000 {
            store.record(&key(user), draft(1, 10), 1, 0, Vec::new());
            // User 0 stays active.
            store.record(&key(0), draft(1, 10), 1, 0, Vec::new());
        }
        let (users, _) = store.usage();
        assert!(users <= SHARDS, "{users}");
        assert!(store.turns(&key(0)).is_some());
        // Long since pushed out by later users of its shard.
        assert!(store.turns(&key(1)).is_none());
    }

    #[test]
    fn the_byte_budget_holds_and_a_large_user_keeps_their_newest_turn() {
        let limits = TraceLimits {
            turns_per_user: 50,
            users: 10_000,
            bytes: SHARDS * 20_000,
        };
        let store = TraceStore::new(limits);
        for user in 0..200 {
            for turn in 1..=10 {
                store.record(&key(user), draft(turn, 1_000), turn, 0, vec![body("hi")]);
            }
        }
        let (users, bytes) = store.usage();
        assert!(bytes <= limits.bytes, "{bytes}");
        assert!(users < 200 && users > 0, "{users}");
        // A user whose turns alone pass a shard's share keeps the newest that fit,
        // at least one.
        for turn in 1..=3 {
            store.record(&key(7), draft(turn, 8_000), turn, 0, Vec::new());
        }
        let turns = store.turns(&key(7)).unwrap();
        assert_eq!(turns.iter().map(|t| t.turn).collect::<Vec<_>>(), [2, 3]);
        store.record(&key(7), draft(4, 30_000), 4, 0, Vec::new());
        let turns = store.turns(&key(7)).unwrap();
        assert_eq!(turns.iter().map(|t| t.turn).collect::<Vec<_>>(), [4]);
        assert_eq!(
            turns[0].vars_before["pad"].as_str().map(str::len),
            Some(30_000)
        );
        // Forgetting gives every byte back.
        for user in 0..200 {
            store.forget(&key(user));
        }
        assert_eq!(store.usage(), (0, 0));
    }

    #[test]
    fn texts_that_repeat_are_kept_once_and_dropped_when_no_turn_holds_them() {
        let store = TraceStore::default();
        let k = key(1);
        let held = |text: &str| -> usize {
            let shard = store.shard(&k);
            shard.texts.set.iter().filter(|t| t.contains(text)).count()
        };
        // The same menu three times, after the same variables: one copy of each.
        for turn in 1..=3 {
            store.record(&k, draft(turn, 10), turn, 0, vec![body("menu")]);
        }
        {
            let shard = store.shard(&k);
            let turns = &shard.users.peek(&k).unwrap().turns;
            let first = &turns[0];
            assert!(turns.iter().all(|t| {
                Arc::ptr_eq(&t.outgoing[0].payload, &first.outgoing[0].payload)
                    && Arc::ptr_eq(&t.vars_before, &first.vars_before)
            }));
        }
        assert_eq!(held("\"menu\""), 1);
        assert_eq!(
            store.turns(&k).unwrap()[2].outgoing[0].payload["text"]["body"],
            "menu"
        );
        // Once no turn holds a text, a sweep drops it; the set stays bounded.
        store.forget(&k);
        for n in 0..TEXTS_MIN_SWEEP * 3 {
            store.record(&k, draft(1, 10), 1, 0, vec![body(&format!("other {n}"))]);
        }
        assert_eq!(held("\"menu\""), 0);
        assert!(held("other") <= TEXTS_MIN_SWEEP * 2, "{}", held("other"));
        assert_eq!(store.turns(&k).unwrap().len(), 50);
    }

    #[test]
    fn sends_and_statuses_update_the_message_by_place_and_wamid() {
        let store = TraceStore::default();
        let k = key(1);
        let mut changes = store.subscribe();
        store.record(&k, draft(1, 10), 41, 0, vec![body("one"), body("two")]);
        // The rest of the turn after an effect: the same outbox turn, later places.
        store.record(&k, draft(1, 10), 41, 2, vec![body("three")]);
        store.sent(&k, OutKey { turn: 41, index: 2 }, "wamid.3", false);
        store.attempt_failed(&k, OutKey { turn: 41, index: 0 }, "retrying: 503");
        store.sent(&k, OutKey { turn: 41, index: 0 }, "wamid.1", true);
        store.failed(&k, OutKey { turn: 41, index: 1 }, "131026: undeliverable");
        store.failed(&k, OutKey { turn: 41, index: 1 }, "a later reason");
        store.status(&k, "wamid.1", "read", None);
        store.status(&k, "wamid.1", "delivered", None);
        store.status(&k, "wamid.3", "failed", Some("131049: not delivered"));
        store.status(&k, "wamid.unknown", "read", None);
        let turns = store.turns(&k).unwrap();
        let one = &turns[0].outgoing[0];
        assert_eq!(
            (one.wamid.as_deref(), one.status.as_str()),
            (Some("wamid.1"), "read")
        );
        assert_eq!(one.error, None);
        assert!(one.window_template);
        assert_eq!(one.payload, serde_json::json!({ "type": "template" }));
        let two = &turns[0].outgoing[1];
        assert_eq!(
            (two.status.as_str(), two.error.as_deref()),
            ("failed", Some("131026: undeliverable"))
        );
        assert_eq!(two.payload["text"]["body"], "two");
        let three = &turns[1].outgoing[0];
        assert_eq!(three.index, 2);
        assert_eq!(
            (three.status.as_str(), three.error.as_deref()),
            ("failed", Some("131049: not delivered"))
        );
        let mut seen = Vec::new();
        while let Ok(c) = changes.try_recv() {
            seen.push(c.what);
        }
        assert_eq!(seen.iter().filter(|w| **w == ChangeKind::Turn).count(), 2);
        // The late `delivered` and the unknown wamid changed nothing.
        assert_eq!(
            seen.iter().filter(|w| **w == ChangeKind::Outgoing).count(),
            6
        );
    }

    #[test]
    fn an_agent_event_is_not_shown_as_a_message() {
        let store = TraceStore::default();
        let agent = codec::encode(&OutgoingBody {
            v: codec::BODY_VERSION,
            flow: "handover".into(),
            node: "message".into(),
            queued_at: 0,
            payload: serde_json::json!({ "event": "message" }),
            instead: None,
            to: Destination::Agent,
            checked: false,
        });
        store.record(&key(1), draft(1, 10), 1, 0, vec![body("hi"), agent]);
        let turns = store.turns(&key(1)).unwrap();
        assert_eq!(turns[0].outgoing.len(), 1);
    }

    #[test]
    fn large_values_are_noted_and_summaries_cut() {
        let big = Value::from("z".repeat(VALUE_MAX + 1));
        assert!(
            capped(&big)
                .as_str()
                .unwrap()
                .contains("too large for the trace")
        );
        assert_eq!(capped(&Value::from("small")), Value::from("small"));
        let long = "é".repeat(SUMMARY_MAX + 5);
        assert_eq!(cut(&long).chars().count(), SUMMARY_MAX + 1);
    }
}
