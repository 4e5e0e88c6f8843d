//! The simulator's view of local numbers (the `/dev` page, `server::dev`): what the
//! simulated users sent and what the bot sent them, live and as a history, and the
//! simulated clock.
//!
//! The per-user loop tells the hub what happens to a local number's users (a message
//! "sent" by the local sink, a turn committed, a typing pause); the hub keeps a short
//! history per user and broadcasts each happening as a [`DevEvent`] to every open
//! `/dev/api/events` stream. Numbers with WhatsApp credentials never reach it.
//!
//! Everything here is memory only, bounded, and lost on restart: the durable truth of
//! a conversation stays in the store.

use super::codec::OutgoingBody;
use super::runtime::{Number, Runtime, TurnReport};
use crate::store::SessionKey;
use crate::store::durable::{Millis, OutKey};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use tokio::sync::broadcast;

/// Happenings kept per user (the oldest go first).
pub const KEEP_PER_USER: usize = 500;
/// Users kept (the one seen longest ago goes first).
pub const KEEP_USERS: usize = 1000;
/// Events an SSE stream may fall behind by before it misses some.
const EVENT_BUFFER: usize = 1024;
/// WhatsApp's customer service window.
pub const WINDOW_MS: Millis = 24 * 3600 * 1000;

/// What a simulated user sends, as the page sends it (`POST /dev/api/message` without
/// `from` and `name`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum DevInput {
    Text(String),
    Reply(DevReply),
    Location(DevLocation),
    Media(DevMedia),
}

/// A tap on a reply button or a list row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevReply {
    pub id: String,
    /// The button's or row's title (default: the id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// `button` or `list` (default `button`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ReplyKind>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyKind {
    Button,
    List,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevLocation {
    pub latitude: f64,
    pub longitude: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// A media file by link (the page shows it; the bot gets a media id, as from WhatsApp).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevMedia {
    pub kind: DevMediaKind,
    pub link: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
    /// The media id the bot sees; made up by the server when the page sends none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DevMediaKind {
    Image,
    Video,
    Audio,
    Document,
}

impl DevMediaKind {
    pub fn name(self) -> &'static str {
        match self {
            DevMediaKind::Image => "image",
            DevMediaKind::Video => "video",
            DevMediaKind::Audio => "audio",
            DevMediaKind::Document => "document",
        }
    }
}

/// A message a simulated user sent.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// The message id the bot saw (`wamid.dev…`).
    pub id: String,
    pub input: DevInput,
    /// The profile name sent with it.
    pub name: Option<String>,
    /// Simulated Unix ms.
    pub at: Millis,
    /// The inbox item its turn ran as, once it ran: the bot's messages of that turn
    /// carry it (see [`Outbound::item`]).
    pub item: Option<u64>,
}

/// A message the local sink "sent" to a simulated user.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub wamid: String,
    /// The exact Cloud API JSON.
    pub payload: Value,
    /// `sent` (what Graph's acceptance means), then `delivered`, `read`, or `failed`.
    pub status: String,
    pub error: Option<String>,
    /// Simulated Unix ms.
    pub at: Millis,
    /// The node that sent it.
    pub flow: String,
    pub node: String,
    /// The inbox item whose turn queued it (an effect's follow-up keeps its turn's).
    pub item: u64,
}

/// One line of a user's history.
#[derive(Debug, Clone)]
pub enum Entry {
    In(Inbound),
    Out(Outbound),
}

impl Entry {
    /// The JSON of `GET /dev/api/users/{user}/history`.
    pub fn to_json(&self) -> Value {
        match self {
            Entry::In(i) => json!({
                "direction": "in",
                "id": i.id,
                "payload": i.input,
                "name": i.name,
                "at": i.at,
            }),
            Entry::Out(o) => json!({
                "direction": "out",
                "wamid": o.wamid,
                "payload": o.payload,
                "status": o.status,
                "error": o.error,
                "at": o.at,
                "flow": o.flow,
                "node": o.node,
            }),
        }
    }
}

/// One happening, as an SSE event: [`DevEvent::name`] is the `event:` line and the
/// variant's fields the `data:` JSON (docs/simulator.md lists them).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum DevEvent {
    /// The local sink sent a message (after `message_delay_ms`, as WhatsApp would show it).
    Message {
        user: String,
        phone_number_id: String,
        wamid: String,
        payload: Value,
        at: Millis,
        flow: String,
        node: String,
    },
    /// The bot shows (or stops showing) "typing…".
    Typing {
        user: String,
        phone_number_id: String,
        on: bool,
    },
    /// A delivery status of one of the bot's messages.
    Status {
        user: String,
        phone_number_id: String,
        wamid: String,
        status: String,
        error: Option<String>,
    },
    /// A simulated user's message, as the page sent it.
    Inbound {
        user: String,
        phone_number_id: String,
        id: String,
        payload: Value,
        at: Millis,
    },
    /// A bot folder was reloaded (or failed to).
    Reload {
        phone_number_id: String,
        ok: bool,
        version: u64,
        diagnostics: Vec<Value>,
    },
    /// A turn was committed: the inspector refetches the trace.
    Turn {
        user: String,
        phone_number_id: String,
        /// The simulated user's message the turn ran for, if it ran for one.
        message_id: Option<String>,
        /// How many messages the turn queued for the user.
        queued: usize,
        /// Its errors and warnings, as `/dev/message` reports them.
        problems: Vec<String>,
    },
    /// A user's session and history were erased.
    Reset {
        user: String,
        phone_number_id: String,
    },
    /// The simulated clock moved.
    Clock { clock_offset_secs: i64, now: String },
}

impl DevEvent {
    /// The number the event is about (`None`: the simulator as a whole, the clock).
    pub fn phone_number_id(&self) -> Option<&str> {
        match self {
            DevEvent::Message {
                phone_number_id, ..
            }
            | DevEvent::Typing {
                phone_number_id, ..
            }
            | DevEvent::Status {
                phone_number_id, ..
            }
            | DevEvent::Inbound {
                phone_number_id, ..
            }
            | DevEvent::Reload {
                phone_number_id, ..
            }
            | DevEvent::Turn {
                phone_number_id, ..
            }
            | DevEvent::Reset {
                phone_number_id, ..
            } => Some(phone_number_id),
            DevEvent::Clock { .. } => None,
        }
    }

    /// The SSE `event:` name.
    pub fn name(&self) -> &'static str {
        match self {
            DevEvent::Message { .. } => "message",
            DevEvent::Typing { .. } => "typing",
            DevEvent::Status { .. } => "status",
            DevEvent::Inbound { .. } => "inbound",
            DevEvent::Reload { .. } => "reload",
            DevEvent::Turn { .. } => "turn",
            DevEvent::Reset { .. } => "reset",
            DevEvent::Clock { .. } => "clock",
        }
    }
}

/// A user's part of the hub.
#[derive(Debug, Default)]
struct UserLog {
    entries: VecDeque<Entry>,
    /// When the user last wrote (simulated Unix ms): the 24-hour window runs from here.
    last_inbound_at: Option<Millis>,
    /// Whether "typing…" shows now (events are sent on changes only).
    typing: bool,
}

/// See the module docs. One per server ([`super::runtime::Runtime::dev`]).
pub struct DevHub {
    events: broadcast::Sender<DevEvent>,
    /// Added to the real clock for local numbers' turns, timers and the window.
    offset_secs: AtomicI64,
    users: Mutex<IndexMap<SessionKey, UserLog>>,
}

impl std::fmt::Debug for DevHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevHub")
            .field("offset_secs", &self.offset_secs())
            .finish_non_exhaustive()
    }
}

impl Default for DevHub {
    fn default() -> Self {
        DevHub {
            events: broadcast::channel(EVENT_BUFFER).0,
            offset_secs: AtomicI64::new(0),
            users: Mutex::new(IndexMap::new()),
        }
    }
}

impl DevHub {
    /// Every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<DevEvent> {
        self.events.subscribe()
    }

    /// Sends `event` to every stream (none listening is fine).
    pub fn publish(&self, event: DevEvent) {
        let _ = self.events.send(event);
    }

    pub fn offset_secs(&self) -> i64 {
        self.offset_secs.load(Ordering::SeqCst)
    }

    /// Moves the simulated clock `secs` forward (never before the real clock); the new
    /// offset.
    pub fn advance(&self, secs: i64) -> i64 {
        let before = self
            .offset_secs
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |o| {
                Some(o.saturating_add(secs).max(0))
            })
            .unwrap_or_else(|o| o);
        let now = before.saturating_add(secs).max(0);
        self.publish_clock(now);
        now
    }

    /// Back to the real clock.
    pub fn reset_clock(&self) {
        self.offset_secs.store(0, Ordering::SeqCst);
        self.publish_clock(0);
    }

    fn publish_clock(&self, offset: i64) {
        self.publish(DevEvent::Clock {
            clock_offset_secs: offset,
            now: rfc3339(self.now_ms()),
        });
    }

    /// The simulated time (Unix ms).
    pub fn now_ms(&self) -> Millis {
        self.sim_ms(chrono::Utc::now().timestamp_millis())
    }

    /// `real` (Unix ms) on the simulated clock.
    pub fn sim_ms(&self, real: Millis) -> Millis {
        real.saturating_add(self.offset_secs().saturating_mul(1000))
    }

    fn with_user<T>(&self, key: &SessionKey, f: impl FnOnce(&mut UserLog) -> T) -> T {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if !users.contains_key(key) && users.len() >= KEEP_USERS {
            users.shift_remove_index(0);
        }
        let log = users.entry(key.clone()).or_default();
        f(log)
    }

    fn push(log: &mut UserLog, entry: Entry) {
        log.entries.push_back(entry);
        while log.entries.len() > KEEP_PER_USER {
            log.entries.pop_front();
        }
    }

    /// A simulated user's message was stored for its turn.
    pub fn inbound(&self, key: &SessionKey, inbound: Inbound) {
        let event = DevEvent::Inbound {
            user: key.user.clone(),
            phone_number_id: key.phone_number_id.clone(),
            id: inbound.id.clone(),
            payload: serde_json::to_value(&inbound.input).unwrap_or(Value::Null),
            at: inbound.at,
        };
        self.with_user(key, |log| {
            log.last_inbound_at = Some(inbound.at);
            Self::push(log, Entry::In(inbound));
        });
        self.publish(event);
    }

    /// The local sink accepted a message for the user (and the outbox recorded it).
    pub fn sent(&self, key: &SessionKey, out: Outbound) {
        self.typing(key, false);
        let event = DevEvent::Message {
            user: key.user.clone(),
            phone_number_id: key.phone_number_id.clone(),
            wamid: out.wamid.clone(),
            payload: out.payload.clone(),
            at: out.at,
            flow: out.flow.clone(),
            node: out.node.clone(),
        };
        self.with_user(key, |log| Self::push(log, Entry::Out(out)));
        self.publish(event);
    }

    /// A status for one of the bot's messages; `false` (and no event) for a message the
    /// hub does not know or a status behind the one it has (a `delivered` after the
    /// `read`). The same status again is sent again (the `sent` every message starts with).
    pub fn status(
        &self,
        key: &SessionKey,
        wamid: &str,
        status: &str,
        error: Option<String>,
    ) -> bool {
        let changed = self.with_user(key, |log| {
            let out = log.entries.iter_mut().rev().find_map(|e| match e {
                Entry::Out(o) if o.wamid == wamid => Some(o),
                Entry::Out(_) | Entry::In(_) => None,
            });
            match out {
                Some(o) if rank(status) >= rank(&o.status) => {
                    o.status = status.to_string();
                    o.error.clone_from(&error);
                    true
                }
                Some(_) | None => false,
            }
        });
        if changed {
            self.publish(DevEvent::Status {
                user: key.user.clone(),
                phone_number_id: key.phone_number_id.clone(),
                wamid: wamid.to_string(),
                status: status.to_string(),
                error,
            });
        }
        changed
    }

    /// A turn of the user was committed. `message_id` is the simulated message it ran
    /// for and `item` its inbox item, whose number the turn's messages carry.
    pub fn turn(
        &self,
        key: &SessionKey,
        message_id: Option<&str>,
        item: Option<u64>,
        queued: usize,
        problems: Vec<String>,
    ) {
        if let (Some(id), Some(item)) = (message_id, item) {
            self.with_user(key, |log| {
                for e in log.entries.iter_mut().rev() {
                    match e {
                        Entry::In(i) if i.id == id => {
                            i.item = Some(item);
                            break;
                        }
                        Entry::In(_) | Entry::Out(_) => {}
                    }
                }
            });
        }
        self.publish(DevEvent::Turn {
            user: key.user.clone(),
            phone_number_id: key.phone_number_id.clone(),
            message_id: message_id.map(str::to_string),
            queued,
            problems,
        });
    }

    /// "typing…" on or off for the user (an event only when it changes).
    pub fn typing(&self, key: &SessionKey, on: bool) {
        let changed = self.with_user(key, |log| std::mem::replace(&mut log.typing, on) != on);
        if changed {
            self.publish(DevEvent::Typing {
                user: key.user.clone(),
                phone_number_id: key.phone_number_id.clone(),
                on,
            });
        }
    }

    /// Whether a free-form message may reach the user now: the user wrote within 24
    /// simulated hours (or the hub never saw them write, e.g. after a restart).
    pub fn window_open(&self, key: &SessionKey) -> bool {
        let now = self.now_ms();
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users
            .get(key)
            .and_then(|log| log.last_inbound_at)
            .is_none_or(|at| now - at <= WINDOW_MS)
    }

    /// The user's history since the last reset, oldest first.
    pub fn history(&self, key: &SessionKey) -> Vec<Entry> {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users
            .get(key)
            .map(|log| log.entries.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Forgets the user's history (the caller erased the session).
    pub fn reset(&self, key: &SessionKey) {
        {
            let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
            users.shift_remove(key);
        }
        self.publish(DevEvent::Reset {
            user: key.user.clone(),
            phone_number_id: key.phone_number_id.clone(),
        });
    }
}

/// The per-user loop's side: what it tells the hub about local numbers. Numbers with
/// credentials are left alone (their clock is the real one, their users are not
/// simulated).
impl Runtime {
    /// `real` (Unix ms) as `number`'s engine and timers see it: simulated for a local
    /// number, so session expiry and the 24-hour window follow the `/dev` clock.
    pub(super) fn engine_ms(&self, number: &Number, real: Millis) -> Millis {
        if number.transport.is_local() {
            self.dev.sim_ms(real)
        } else {
            real
        }
    }

    /// A turn of a local number's user was committed. With `typing_indicator`, a turn
    /// that answers the user's message shows "typing…" until its first message goes out.
    pub(super) fn dev_turn(
        &self,
        number: &Number,
        key: &SessionKey,
        message_id: Option<&str>,
        item: Option<u64>,
        report: &TurnReport,
    ) {
        if !number.transport.is_local() {
            return;
        }
        let queued = report.sent.len();
        self.dev
            .turn(key, message_id, item, queued, report.problems.clone());
        if message_id.is_some()
            && queued > 0
            && number.live.bot().settings.whatsapp.typing_indicator
        {
            self.dev.typing(key, true);
        }
    }

    /// The local sink accepted `payload` (the outbox recorded it as `wamid`).
    pub(super) fn dev_sent(
        &self,
        number: &Number,
        key: &SessionKey,
        wamid: &str,
        payload: &Value,
        body: &OutgoingBody,
        item: u64,
    ) {
        if !number.transport.is_local() {
            return;
        }
        self.dev.sent(
            key,
            Outbound {
                wamid: wamid.to_string(),
                payload: payload.clone(),
                status: "sent".into(),
                error: None,
                at: self.dev.now_ms(),
                flow: body.flow.clone(),
                node: body.node.clone(),
                item,
            },
        );
    }

    /// A message of a local number that WhatsApp would refuse for good (131047 without
    /// an `on_window_closed` template: the simulated clock passed the 24-hour window).
    /// The chat shows it with a failed mark and why, as WhatsApp shows a message it could
    /// not deliver, rather than nothing; it has no wamid, so its id says what it is.
    pub(super) fn dev_failed(
        &self,
        number: &Number,
        key: &SessionKey,
        payload: &Value,
        body: &OutgoingBody,
        at: OutKey,
        error: &str,
    ) {
        if !number.transport.is_local() {
            return;
        }
        let id = format!("unsent.{}.{}", at.turn, at.index);
        self.dev.sent(
            key,
            Outbound {
                wamid: id.clone(),
                payload: payload.clone(),
                status: "failed".into(),
                error: Some(error.to_string()),
                at: self.dev.now_ms(),
                flow: body.flow.clone(),
                node: body.node.clone(),
                item: at.turn,
            },
        );
        // The page draws a message as sent; this tells it (and any other view) at once.
        self.dev.status(key, &id, "failed", Some(error.to_string()));
    }

    /// Whether the worker is about to sleep for a `wait` pause (not the message delay)
    /// of a local number: "typing…" shows meanwhile, as the pause means.
    pub(super) fn dev_pause(&self, number: &Number, key: &SessionKey, on: bool) {
        if number.transport.is_local() {
            self.dev.typing(key, on);
        }
    }
}

/// How far along a status is: a later one never goes back to an earlier one.
fn rank(status: &str) -> u8 {
    match status {
        "sent" => 1,
        "delivered" => 2,
        "read" => 3,
        "failed" => 4,
        // Unknown ones (`played`) never replace a known one.
        _ => 0,
    }
}

/// Unix ms as RFC 3339 (UTC).
pub fn rfc3339(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SessionKey {
        SessionKey::new("local", "15550001111")
    }

    fn out(wamid: &str) -> Outbound {
        Outbound {
            wamid: wamid.into(),
            payload: json!({"type": "text"}),
            status: "sent".into(),
            error: None,
            at: 0,
            flow: "main".into(),
            node: "hi".into(),
            item: 1,
        }
    }

    #[test]
    fn statuses_only_move_forward() {
        let hub = DevHub::default();
        hub.sent(&key(), out("w1"));
        assert!(hub.status(&key(), "w1", "sent", None));
        assert!(hub.status(&key(), "w1", "read", None));
        assert!(!hub.status(&key(), "w1", "delivered", None));
        assert!(!hub.status(&key(), "nope", "read", None));
    }

    #[test]
    fn the_window_closes_after_24_simulated_hours() {
        let hub = DevHub::default();
        assert!(hub.window_open(&key()), "unknown users are not refused");
        hub.inbound(
            &key(),
            Inbound {
                id: "m1".into(),
                input: DevInput::Text("hi".into()),
                name: None,
                at: hub.now_ms(),
                item: None,
            },
        );
        assert!(hub.window_open(&key()));
        hub.advance(23 * 3600);
        assert!(hub.window_open(&key()));
        hub.advance(2 * 3600);
        assert!(!hub.window_open(&key()));
        hub.reset_clock();
        assert_eq!(hub.offset_secs(), 0);
    }

    #[test]
    fn the_clock_never_goes_before_the_real_one() {
        let hub = DevHub::default();
        assert_eq!(hub.advance(-50), 0);
        assert_eq!(hub.advance(100), 100);
        assert_eq!(hub.advance(-30), 70);
    }

    #[test]
    fn inputs_read_as_the_page_sends_them() {
        let text: DevInput = serde_json::from_value(json!({"text": "hi"})).unwrap();
        assert_eq!(text, DevInput::Text("hi".into()));
        let reply: DevInput =
            serde_json::from_value(json!({"reply": {"id": "m", "title": "M", "kind": "list"}}))
                .unwrap();
        assert!(matches!(
            reply,
            DevInput::Reply(DevReply {
                kind: Some(ReplyKind::List),
                ..
            })
        ));
        assert!(
            serde_json::from_value::<DevInput>(json!({"text": "a", "reply": {"id": "m"}})).is_err()
        );
    }
}
