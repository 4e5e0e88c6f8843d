//! Webhook POST bodies → a flat, ordered list of [`Item`]s.
//!
//! ```text
//! {object:"whatsapp_business_account", entry:[{id, changes:[{field, value:{
//!    messaging_product, metadata{display_phone_number, phone_number_id},
//!    contacts[{profile{name, username?}, wa_id?, user_id?}],
//!    messages[] | statuses[] | errors[] }}]}]}
//! ```
//!
//! [`parse`] fails only when the body as a whole is not a WhatsApp webhook (bad JSON, not
//! an object, wrong or missing `object`). Below that it is lenient, because Meta varies
//! (fields come and go between API versions, and business-scoped user ids may replace
//! phone numbers) and because a non-200 answer makes Meta redeliver the same body for
//! up to 7 days: unknown fields are ignored, almost every field is optional, and a part
//! that cannot be read is skipped or degraded with a line in [`Webhook::notes`] instead
//! of failing the whole batch (up to 1000 updates). A user message is never dropped for
//! its type: what the engine has no event for becomes `EventKind::Unsupported(type)`,
//! answered by the fallback flow. Nothing here panics on input.

use crate::engine::{Event, EventKind};
use crate::flow::MediaKind;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use serde_json::value::RawValue;
use std::fmt;

/// The only `object` a WhatsApp Business Account webhook carries.
pub const OBJECT: &str = "whatsapp_business_account";

// ---------------------------------------------------------------------------------------
// What the parser produces
// ---------------------------------------------------------------------------------------

/// Who sent a message. The phone-based `wa_id` when the webhook has one, else the
/// business-scoped user id (BSUID, e.g. `US.13491…`), which is all Meta sends for users
/// who chat by username and hide their number (v25+).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UserId {
    /// `from` / contact `wa_id`: a phone number in international form without `+`.
    WaId(String),
    /// `from_user_id` / contact `user_id`: a business-scoped user id.
    Bsuid(String),
}

impl UserId {
    pub fn as_str(&self) -> &str {
        match self {
            UserId::WaId(id) | UserId::Bsuid(id) => id,
        }
    }

    pub fn is_business_scoped(&self) -> bool {
        matches!(self, UserId::Bsuid(_))
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error object as WhatsApp puts it in `value.errors[]`, `messages[].errors[]` and
/// `statuses[].errors[]`. Meta says to act on `code` and `details`, not the title.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// 0 when missing.
    pub code: i64,
    pub title: String,
    pub message: String,
    /// `error_data.details`.
    pub details: Option<String>,
}

/// One update from a webhook body, in body order.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// A message from a user (`field: "messages"`, `value.messages[]`).
    Message {
        /// The business number it was sent to (`metadata.phone_number_id`); `None` only
        /// when the change has no readable `metadata` (Meta always sends it).
        phone_number_id: Option<String>,
        user: UserId,
        event: Event,
        /// `messages[].type` as sent (`"unknown"` when missing).
        raw_type: String,
    },
    /// A delivery status of a message the business sent (`value.statuses[]`).
    Status {
        phone_number_id: Option<String>,
        message_id: String,
        /// `sent`, `delivered`, `read`, `failed`, `played`, … as sent.
        status: String,
        /// `recipient_id` (phone or group id), else `recipient_user_id` (BSUID).
        recipient: Option<String>,
        /// Unix seconds; 0 when missing or invalid (with a note).
        at: i64,
        /// Why a `failed` status failed.
        errors: Vec<ApiError>,
        biz_opaque_callback_data: Option<String>,
    },
    /// Errors not tied to one message (`value.errors[]`).
    Error {
        phone_number_id: Option<String>,
        errors: Vec<ApiError>,
    },
    /// A change whose `field` is not `messages` (account_update, template status, calls,
    /// echoes, user_preferences, …): for the log.
    Other { field: String },
}

/// A parsed webhook body.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Webhook {
    /// Every update in the order of `entry[] → changes[] → messages[], statuses[], errors[]`.
    pub items: Vec<Item>,
    /// What was odd but not fatal (a missing timestamp, an unreadable part skipped), each
    /// with its JSON path. For the log; the items are usable regardless.
    pub notes: Vec<String>,
}

/// Why a body is not a WhatsApp webhook at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Not valid JSON (or not UTF-8).
    Json {
        line: usize,
        column: usize,
        message: String,
    },
    /// Valid JSON, but not an object (the found kind: "array", "string", …).
    NotAnObject(&'static str),
    /// An object without an `object` member.
    MissingObject,
    /// `object` is not `"whatsapp_business_account"` (what it was, as JSON).
    WrongObject(String),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Json {
                line,
                column,
                message,
            } => write!(
                f,
                "malformed JSON at line {line}, column {column}: {message}"
            ),
            ParseError::NotAnObject(kind) => {
                write!(f, "expected a JSON object, found {}", with_article(kind))
            }
            ParseError::MissingObject => {
                write!(f, "no \"object\" member; expected \"object\": \"{OBJECT}\"")
            }
            ParseError::WrongObject(found) => {
                write!(f, "\"object\" is {found}, expected \"{OBJECT}\"")
            }
        }
    }
}

impl std::error::Error for ParseError {}

fn with_article(kind: &str) -> String {
    if kind.starts_with(['a', 'o']) {
        format!("an {kind}")
    } else {
        format!("a {kind}")
    }
}

/// `value` as JSON, cut to a length fit for an error message or a log line.
fn short(value: &Value) -> String {
    const MAX: usize = 80;
    let mut text = value.to_string();
    if text.len() > MAX {
        let mut cut = MAX;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

// ---------------------------------------------------------------------------------------
// The webhook as written (serde)
// ---------------------------------------------------------------------------------------

/// A part that may be unreadable without spoiling its siblings: deserialises `T`, or
/// keeps the reason it could not.
#[derive(Debug, Clone, PartialEq)]
pub enum Lenient<T> {
    Ok(T),
    Invalid(String),
}

thread_local! {
    /// Set while [`parse`] tries its one-pass reading (see [`one_pass`]).
    static ONE_PASS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Lenient<T> {
    /// The part's own JSON text is set apart, then read as a `T` on its own. (Through a
    /// `Value` instead, every level of nesting built its part's tree once more: that
    /// was most of the cost of a webhook.) So a `Lenient` is read from JSON text only,
    /// as [`parse`] does. In the one-pass reading the `T` is read in place, and an
    /// error fails the whole reading (the part-by-part one then runs).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if ONE_PASS.with(std::cell::Cell::get) {
            return T::deserialize(deserializer).map(Lenient::Ok);
        }
        let raw = <&RawValue>::deserialize(deserializer)?;
        Ok(match serde_json::from_str::<T>(raw.get()) {
            Ok(t) => Lenient::Ok(t),
            Err(e) => Lenient::Invalid(without_position(&e)),
        })
    }
}

/// A serde_json error without its " at line L column C": positions inside a part's
/// own text would mislead (the part is named by its path instead).
fn without_position(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    full.strip_suffix(&suffix).unwrap_or(&full).to_string()
}

impl<T> Lenient<T> {
    /// The value, or `None` with a note naming `path`.
    fn take(self, path: &str, notes: &mut Vec<String>) -> Option<T> {
        match self {
            Lenient::Ok(t) => Some(t),
            Lenient::Invalid(why) => {
                notes.push(format!("{path}: unreadable, skipped ({why})"));
                None
            }
        }
    }
}

/// An optional array whose elements are read one by one. `null` counts as empty.
pub type List<T> = Option<Lenient<Vec<Lenient<T>>>>;

/// The readable elements of `list` with their index; notes for the rest.
fn elements<T>(list: List<T>, path: &str, notes: &mut Vec<String>) -> Vec<(usize, T)> {
    let Some(list) = list else {
        return Vec::new();
    };
    let Some(list) = list.take(path, notes) else {
        return Vec::new();
    };
    list.into_iter()
        .enumerate()
        .filter_map(|(i, item)| item.take(&format!("{path}[{i}]"), notes).map(|t| (i, t)))
        .collect()
}

/// An id-like string that Meta (or a test) may also write as a JSON number.
fn id_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    match Option::<Value>::deserialize(deserializer)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(D::Error::custom(format!(
            "expected a string, found {}",
            with_article(json_kind(&other))
        ))),
    }
}

/// A number that may also be written as a numeric string.
fn lenient_f64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<f64>, D::Error> {
    match Option::<Value>::deserialize(deserializer)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Some)
            .ok_or_else(|| D::Error::custom(format!("expected a number, found {s:?}"))),
        Some(other) => Err(D::Error::custom(format!(
            "expected a number, found {}",
            with_article(json_kind(&other))
        ))),
    }
}

/// An integer that may also be written as a numeric string.
fn lenient_i64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    match Option::<Value>::deserialize(deserializer)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_i64()),
        Some(Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| D::Error::custom(format!("expected an integer, found {s:?}"))),
        Some(other) => Err(D::Error::custom(format!(
            "expected an integer, found {}",
            with_article(json_kind(&other))
        ))),
    }
}

/// The top level.
#[derive(Debug, Clone, Deserialize)]
pub struct Envelope {
    #[serde(default)]
    pub object: Present,
    #[serde(default)]
    pub entry: List<Entry>,
}

/// A field that may be missing, kept apart from one that is `null`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Present(pub Option<Value>);

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(|v| Present(Some(v)))
    }
}

/// `entry[]`: one WhatsApp Business Account.
#[derive(Debug, Clone, Deserialize)]
pub struct Entry {
    /// The WABA id.
    #[serde(default, deserialize_with = "id_string")]
    pub id: Option<String>,
    #[serde(default)]
    pub changes: List<Change>,
}

/// `entry[].changes[]`. `value` is read according to `field`.
#[derive(Debug, Clone, Deserialize)]
pub struct Change {
    #[serde(default)]
    pub field: Option<String>,
    #[serde(default)]
    pub value: Option<Box<RawValue>>,
}

/// `changes[].value` of a `messages` change.
#[derive(Debug, Clone, Deserialize)]
pub struct ChangeValue {
    #[serde(default)]
    pub messaging_product: Option<String>,
    #[serde(default)]
    pub metadata: Option<Lenient<Metadata>>,
    #[serde(default)]
    pub contacts: List<Contact>,
    /// Read one by one into [`Message`] (with a fallback, so none is lost to a typo).
    #[serde(default)]
    pub messages: Option<Lenient<Vec<Box<RawValue>>>>,
    #[serde(default)]
    pub statuses: List<Status>,
    #[serde(default)]
    pub errors: List<RawError>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Metadata {
    #[serde(default, deserialize_with = "id_string")]
    pub display_phone_number: Option<String>,
    #[serde(default, deserialize_with = "id_string")]
    pub phone_number_id: Option<String>,
}

/// `value.contacts[]`: who the messages of this change are from.
#[derive(Debug, Clone, Deserialize)]
pub struct Contact {
    #[serde(default)]
    pub profile: Option<Lenient<Profile>>,
    #[serde(default, deserialize_with = "id_string")]
    pub wa_id: Option<String>,
    #[serde(default, deserialize_with = "id_string")]
    pub user_id: Option<String>,
    #[serde(default, deserialize_with = "id_string")]
    pub parent_user_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Profile {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
}

/// `value.messages[]`. The payload object named by `type` is read on its own, so a
/// malformed one degrades that message to `Unsupported` instead of losing it.
#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    #[serde(default, deserialize_with = "id_string")]
    pub from: Option<String>,
    #[serde(default, deserialize_with = "id_string")]
    pub from_user_id: Option<String>,
    #[serde(default, deserialize_with = "id_string")]
    pub id: Option<String>,
    /// Unix seconds as a string (a number is accepted too).
    #[serde(default)]
    pub timestamp: Option<Value>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// Reply-to / forwarded / product inquiry; not used by the engine yet.
    #[serde(default)]
    pub context: Option<Value>,
    #[serde(default)]
    pub text: Option<Lenient<TextBody>>,
    #[serde(default)]
    pub interactive: Option<Lenient<Interactive>>,
    #[serde(default)]
    pub button: Option<Lenient<QuickReply>>,
    #[serde(default)]
    pub location: Option<Lenient<LocationBody>>,
    #[serde(default)]
    pub image: Option<Lenient<MediaBody>>,
    #[serde(default)]
    pub video: Option<Lenient<MediaBody>>,
    #[serde(default)]
    pub audio: Option<Lenient<MediaBody>>,
    #[serde(default)]
    pub document: Option<Lenient<MediaBody>>,
    #[serde(default)]
    pub sticker: Option<Lenient<MediaBody>>,
    #[serde(default)]
    pub contacts: Option<Lenient<Vec<Value>>>,
    #[serde(default)]
    pub reaction: Option<Lenient<ReactionBody>>,
    /// Present on `unsupported` messages and when Meta could not process one.
    #[serde(default)]
    pub errors: Option<Value>,
}

impl Message {
    /// What can be read of a message that does not deserialise: its sender, id, time and
    /// type where those are strings, and no payload.
    fn salvage(raw: &Value) -> Message {
        let string = |key: &str| raw.get(key).and_then(Value::as_str).map(str::to_string);
        Message {
            from: string("from"),
            from_user_id: string("from_user_id"),
            id: string("id"),
            timestamp: raw.get("timestamp").cloned(),
            kind: string("type"),
            context: None,
            text: None,
            interactive: None,
            button: None,
            location: None,
            image: None,
            video: None,
            audio: None,
            document: None,
            sticker: None,
            contacts: None,
            reaction: None,
            errors: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct TextBody {
    #[serde(default)]
    pub body: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Interactive {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub button_reply: Option<Lenient<ReplyBody>>,
    #[serde(default)]
    pub list_reply: Option<Lenient<ReplyBody>>,
    #[serde(default)]
    pub nfm_reply: Option<Lenient<NfmReply>>,
}

/// `button_reply` / `list_reply`.
#[derive(Debug, Clone, Deserialize)]
pub struct ReplyBody {
    #[serde(default, deserialize_with = "id_string")]
    pub id: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// A WhatsApp Flows submission.
#[derive(Debug, Clone, Deserialize)]
pub struct NfmReply {
    /// A JSON document in a string (incl. `flow_token`).
    #[serde(default)]
    pub response_json: Option<Value>,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

/// A template's quick-reply button (`type: "button"`).
#[derive(Debug, Clone, Deserialize)]
pub struct QuickReply {
    #[serde(default)]
    pub payload: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LocationBody {
    #[serde(default, deserialize_with = "lenient_f64")]
    pub latitude: Option<f64>,
    #[serde(default, deserialize_with = "lenient_f64")]
    pub longitude: Option<f64>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
}

/// image / video / audio / document / sticker.
#[derive(Debug, Clone, Deserialize)]
pub struct MediaBody {
    #[serde(default, deserialize_with = "id_string")]
    pub id: Option<String>,
    #[serde(default)]
    pub mime_type: Option<String>,
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub caption: Option<String>,
    #[serde(default)]
    pub filename: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ReactionBody {
    #[serde(default, deserialize_with = "id_string")]
    pub message_id: Option<String>,
    /// Missing or empty: the user removed their reaction.
    #[serde(default)]
    pub emoji: Option<String>,
}

/// `value.statuses[]`.
#[derive(Debug, Clone, Deserialize)]
pub struct Status {
    #[serde(default, deserialize_with = "id_string")]
    pub id: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub timestamp: Option<Value>,
    #[serde(default, deserialize_with = "id_string")]
    pub recipient_id: Option<String>,
    #[serde(default, deserialize_with = "id_string")]
    pub recipient_user_id: Option<String>,
    #[serde(default)]
    pub biz_opaque_callback_data: Option<String>,
    #[serde(default)]
    pub errors: List<RawError>,
}

/// An error object as written.
#[derive(Debug, Clone, Deserialize)]
pub struct RawError {
    #[serde(default, deserialize_with = "lenient_i64")]
    pub code: Option<i64>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub error_data: Option<Lenient<ErrorData>>,
    #[serde(default)]
    pub href: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ErrorData {
    #[serde(default)]
    pub details: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------

/// Parses a webhook POST body (verify its signature first, over the same bytes).
pub fn parse(body: &[u8]) -> Result<Webhook, ParseError> {
    match one_pass(body) {
        Some(hook) => Ok(hook),
        None => part_by_part(body),
    }
}

/// The reading that says what is off: each [`Lenient`] part from its own text, so one
/// unreadable part is noted and the rest kept.
fn part_by_part(body: &[u8]) -> Result<Webhook, ParseError> {
    // Checks the whole body is JSON (with the position of what is not), without
    // building it: each part is read from its own text below.
    let raw: &RawValue = serde_json::from_slice(body).map_err(|e| ParseError::Json {
        line: e.line(),
        column: e.column(),
        message: without_position(&e),
    })?;
    let text = raw.get();
    if !text.trim_start().starts_with('{') {
        let kind = serde_json::from_str::<Value>(text).map_or("value", |v| json_kind(&v));
        return Err(ParseError::NotAnObject(kind));
    }
    let mut hook = Webhook::default();
    let envelope = match serde_json::from_str::<Envelope>(text) {
        Ok(envelope) => envelope,
        // Only a key written twice gets here (every part is lenient).
        Err(e) => {
            hook.notes
                .push(format!("envelope unreadable: {}", without_position(&e)));
            return Ok(hook);
        }
    };
    read_envelope(envelope, hook)
}

/// The webhook of a read envelope (`hook` holds what was noted before).
fn read_envelope(envelope: Envelope, mut hook: Webhook) -> Result<Webhook, ParseError> {
    match &envelope.object.0 {
        None => return Err(ParseError::MissingObject),
        Some(Value::String(s)) if s == OBJECT => {}
        Some(other) => return Err(ParseError::WrongObject(short(other))),
    }
    for (e, entry) in elements(envelope.entry, "entry", &mut hook.notes) {
        let path = format!("entry[{e}].changes");
        for (c, change) in elements(entry.changes, &path, &mut hook.notes) {
            read_change(change, &format!("{path}[{c}]"), &mut hook);
        }
    }
    Ok(hook)
}

/// The common case, cheaply: a body whose every part reads as expected, read with each
/// [`Lenient`] part in place instead of from its own text (which scanned a message's
/// text about seven times). `None` when anything is off (not UTF-8, not JSON, a part
/// unreadable, anything noted): the part-by-part reading then runs and says what. Both
/// give the same webhook for a body this one reads: each part here is read as it is
/// there, and a body that would get a note there fails here.
fn one_pass(body: &[u8]) -> Option<Webhook> {
    /// Turns the one-pass reading off again, however the reading ends.
    struct Off;
    impl Drop for Off {
        fn drop(&mut self) {
            ONE_PASS.with(|on| on.set(false));
        }
    }
    // The part-by-part reading refuses a body that is not UTF-8 as a whole (its
    // RawValue is text), even where the bad bytes sit in a field nobody reads.
    let text = std::str::from_utf8(body).ok()?;
    ONE_PASS.with(|on| on.set(true));
    let _off = Off;
    let envelope = serde_json::from_str::<Envelope>(text).ok()?;
    let hook = read_envelope(envelope, Webhook::default()).ok()?;
    hook.notes.is_empty().then_some(hook)
}

fn read_change(change: Change, path: &str, hook: &mut Webhook) {
    let notes = &mut hook.notes;
    let field = match change.field {
        Some(field) => field,
        None => {
            notes.push(format!("{path}: no \"field\""));
            String::new()
        }
    };
    if field != "messages" {
        hook.items.push(Item::Other { field });
        return;
    }
    let text = change.value.as_deref().map_or("null", RawValue::get);
    let value = match serde_json::from_str::<ChangeValue>(text) {
        Ok(value) => value,
        Err(e) => {
            let e = without_position(&e);
            notes.push(format!("{path}.value: unreadable, skipped ({e})"));
            return;
        }
    };
    let path = format!("{path}.value");
    if let Some(product) = &value.messaging_product
        && product != "whatsapp"
    {
        notes.push(format!("{path}.messaging_product is {product:?}"));
    }
    let phone_number_id = value
        .metadata
        .and_then(|m| m.take(&format!("{path}.metadata"), notes))
        .and_then(|m| m.phone_number_id);
    let contacts: Vec<Contact> = elements(value.contacts, &format!("{path}.contacts"), notes)
        .into_iter()
        .map(|(_, c)| c)
        .collect();

    let messages_path = format!("{path}.messages");
    let messages = value
        .messages
        .and_then(|list| list.take(&messages_path, notes))
        .unwrap_or_default();
    for (m, raw) in messages.into_iter().enumerate() {
        let at = format!("{messages_path}[{m}]");
        let (message, readable) = match serde_json::from_str::<Message>(raw.get()) {
            Ok(message) => (message, true),
            Err(e) => {
                let e = without_position(&e);
                notes.push(format!("{at}: unreadable ({e}); passed on as unsupported"));
                let value = serde_json::from_str::<Value>(raw.get()).unwrap_or(Value::Null);
                (Message::salvage(&value), false)
            }
        };
        let item = read_message(message, readable, &contacts, &phone_number_id, &at, notes);
        hook.items.extend(item);
    }

    let statuses_path = format!("{path}.statuses");
    for (s, status) in elements(value.statuses, &statuses_path, notes) {
        let at = format!("{statuses_path}[{s}]");
        let item = read_status(status, &phone_number_id, &at, notes);
        hook.items.push(item);
    }

    let errors = read_errors(value.errors, &format!("{path}.errors"), notes);
    if !errors.is_empty() {
        hook.items.push(Item::Error {
            phone_number_id,
            errors,
        });
    }
}

/// The contact a message is from: the one whose `wa_id` / `user_id` matches, else the
/// only one of the change.
fn contact_for<'a>(contacts: &'a [Contact], message: &Message) -> Option<&'a Contact> {
    let matches = |c: &&Contact| {
        (message.from.is_some() && c.wa_id == message.from)
            || (message.from_user_id.is_some() && c.user_id == message.from_user_id)
    };
    contacts.iter().find(matches).or(match contacts {
        [only] => Some(only),
        _ => None,
    })
}

fn read_message(
    message: Message,
    readable: bool,
    contacts: &[Contact],
    phone_number_id: &Option<String>,
    path: &str,
    notes: &mut Vec<String>,
) -> Option<Item> {
    let mut message = message;
    for id in [
        &mut message.from,
        &mut message.from_user_id,
        &mut message.kind,
    ] {
        if id.as_deref().is_some_and(|s| s.trim().is_empty()) {
            *id = None;
        }
    }
    let contact = contact_for(contacts, &message);
    let non_empty = |id: &Option<String>| id.clone().filter(|s| !s.trim().is_empty());
    let user = if let Some(from) = &message.from {
        UserId::WaId(from.clone())
    } else if let Some(bsuid) = &message.from_user_id {
        UserId::Bsuid(bsuid.clone())
    } else if let Some(wa_id) = contact.and_then(|c| non_empty(&c.wa_id)) {
        notes.push(format!("{path}: no \"from\"; using the contact's wa_id"));
        UserId::WaId(wa_id)
    } else if let Some(bsuid) = contact.and_then(|c| non_empty(&c.user_id)) {
        notes.push(format!("{path}: no \"from\"; using the contact's user_id"));
        UserId::Bsuid(bsuid)
    } else {
        notes.push(format!(
            "{path}: no sender (\"from\", \"from_user_id\" or a contact); skipped"
        ));
        return None;
    };
    let contact_name = contact
        .and_then(|c| c.profile.clone())
        .and_then(|p| p.take(&format!("{path} (contact profile)"), notes))
        .and_then(|p| p.name);
    let at = timestamp(message.timestamp.as_ref(), path, notes);
    let raw_type = match &message.kind {
        Some(kind) => kind.clone(),
        None => {
            notes.push(format!("{path}: no \"type\""));
            "unknown".to_string()
        }
    };
    let id = message.id.clone();
    if id.is_none() {
        notes.push(format!("{path}: no \"id\""));
    }
    let kind = if readable {
        event_kind(message, &raw_type, path, notes)
    } else {
        EventKind::Unsupported(raw_type.clone())
    };
    Some(Item::Message {
        phone_number_id: phone_number_id.clone(),
        user,
        event: Event {
            id,
            at,
            contact_name,
            kind,
        },
        raw_type,
    })
}

fn has_errors(errors: &Option<Value>) -> bool {
    match errors {
        None | Some(Value::Null) => false,
        Some(Value::Array(list)) => !list.is_empty(),
        Some(_) => true,
    }
}

/// The engine's view of one message. Whatever it has no event for, or cannot read,
/// becomes `Unsupported`.
fn event_kind(message: Message, raw_type: &str, path: &str, notes: &mut Vec<String>) -> EventKind {
    let unsupported = || EventKind::Unsupported(raw_type.to_string());
    if has_errors(&message.errors) {
        return unsupported();
    }
    // The payload object named by `type`, read; a note when it is missing or unreadable.
    fn payload<T>(
        part: Option<Lenient<T>>,
        raw_type: &str,
        path: &str,
        notes: &mut Vec<String>,
    ) -> Option<T> {
        match part {
            Some(part) => part.take(&format!("{path}.{raw_type}"), notes),
            None => {
                notes.push(format!(
                    "{path}: type {raw_type:?} but no {raw_type:?} object; passed on as unsupported"
                ));
                None
            }
        }
    }
    let missing = |what: &str, notes: &mut Vec<String>| {
        notes.push(format!(
            "{path}: {raw_type} without {what}; passed on as unsupported"
        ));
        EventKind::Unsupported(raw_type.to_string())
    };

    match raw_type {
        "text" => match payload(message.text, raw_type, path, notes) {
            Some(TextBody { body: Some(body) }) => EventKind::Text(body),
            Some(_) => missing("text.body", notes),
            None => unsupported(),
        },
        "interactive" => match payload(message.interactive, raw_type, path, notes) {
            Some(interactive) => interactive_kind(interactive, path, notes),
            None => unsupported(),
        },
        "button" => match payload(message.button, raw_type, path, notes) {
            Some(QuickReply {
                payload: None,
                text: None,
            }) => missing("button.payload and button.text", notes),
            Some(QuickReply { payload, text }) => EventKind::Button {
                payload: payload.clone().or_else(|| text.clone()).unwrap_or_default(),
                text: text.or(payload).unwrap_or_default(),
            },
            None => unsupported(),
        },
        "location" => match payload(message.location, raw_type, path, notes) {
            Some(LocationBody {
                latitude: Some(latitude),
                longitude: Some(longitude),
                name,
                address,
                ..
            }) => EventKind::Location {
                latitude,
                longitude,
                name,
                address,
            },
            Some(_) => missing("latitude and longitude", notes),
            None => unsupported(),
        },
        "image" | "video" | "audio" | "document" | "sticker" => {
            let (kind, part) = match raw_type {
                "image" => (MediaKind::Image, message.image),
                "video" => (MediaKind::Video, message.video),
                "audio" => (MediaKind::Audio, message.audio),
                "document" => (MediaKind::Document, message.document),
                _ => (MediaKind::Sticker, message.sticker),
            };
            match payload(part, raw_type, path, notes) {
                Some(MediaBody {
                    id: Some(id),
                    mime_type,
                    caption,
                    filename,
                    ..
                }) => EventKind::Media {
                    kind,
                    id,
                    mime_type,
                    caption,
                    filename,
                },
                Some(_) => missing("a media id", notes),
                None => unsupported(),
            }
        }
        "contacts" => match payload(message.contacts, raw_type, path, notes) {
            Some(cards) => EventKind::Contacts(cards),
            None => unsupported(),
        },
        "reaction" => match payload(message.reaction, raw_type, path, notes) {
            Some(ReactionBody {
                message_id: Some(message_id),
                emoji,
            }) => EventKind::Reaction {
                message_id,
                emoji: emoji.unwrap_or_default(),
            },
            Some(_) => missing("reaction.message_id", notes),
            None => unsupported(),
        },
        // order, system, unsupported, revoke, edit, and whatever Meta adds next.
        _ => unsupported(),
    }
}

fn interactive_kind(interactive: Interactive, path: &str, notes: &mut Vec<String>) -> EventKind {
    let Some(sub) = interactive.kind else {
        notes.push(format!(
            "{path}: interactive without interactive.type; passed on as unsupported"
        ));
        return EventKind::Unsupported("interactive".to_string());
    };
    let reply = match sub.as_str() {
        "button_reply" => interactive.button_reply,
        "list_reply" => interactive.list_reply,
        "nfm_reply" => {
            let Some(nfm) = interactive
                .nfm_reply
                .and_then(|n| n.take(&format!("{path}.interactive.nfm_reply"), notes))
            else {
                notes.push(format!(
                    "{path}: nfm_reply unreadable or missing; passed on as unsupported"
                ));
                return EventKind::Unsupported(sub);
            };
            return EventKind::FlowReply(flow_response(nfm.response_json, path, notes));
        }
        // call_permission_reply and other interactive replies the engine has no event for.
        _ => return EventKind::Unsupported(sub),
    };
    match reply.and_then(|r| r.take(&format!("{path}.interactive.{sub}"), notes)) {
        Some(ReplyBody {
            id: Some(id),
            title,
            ..
        }) => EventKind::Reply {
            id,
            title: title.unwrap_or_default(),
        },
        _ => {
            notes.push(format!(
                "{path}: interactive {sub} without an id; passed on as unsupported"
            ));
            EventKind::Unsupported(sub)
        }
    }
}

/// `nfm_reply.response_json`: a JSON document in a string. Kept as the raw string when it
/// is not valid JSON; taken as is when Meta already sent an object.
fn flow_response(response: Option<Value>, path: &str, notes: &mut Vec<String>) -> Value {
    match response {
        Some(Value::String(raw)) => match serde_json::from_str::<Value>(&raw) {
            Ok(parsed) => parsed,
            Err(e) => {
                notes.push(format!(
                    "{path}: nfm_reply.response_json is not valid JSON ({e}); kept as a string"
                ));
                Value::String(raw)
            }
        },
        Some(Value::Null) | None => {
            notes.push(format!("{path}: nfm_reply without response_json"));
            Value::Null
        }
        Some(other) => other,
    }
}

fn read_status(
    status: Status,
    phone_number_id: &Option<String>,
    path: &str,
    notes: &mut Vec<String>,
) -> Item {
    let message_id = status.id.unwrap_or_else(|| {
        notes.push(format!("{path}: no \"id\""));
        String::new()
    });
    let status_name = status.status.unwrap_or_else(|| {
        notes.push(format!("{path}: no \"status\""));
        String::new()
    });
    Item::Status {
        phone_number_id: phone_number_id.clone(),
        message_id,
        status: status_name,
        recipient: status.recipient_id.or(status.recipient_user_id),
        at: timestamp(status.timestamp.as_ref(), path, notes),
        errors: read_errors(status.errors, &format!("{path}.errors"), notes),
        biz_opaque_callback_data: status.biz_opaque_callback_data,
    }
}

fn read_errors(list: List<RawError>, path: &str, notes: &mut Vec<String>) -> Vec<ApiError> {
    elements(list, path, notes)
        .into_iter()
        .map(|(i, raw)| ApiError {
            code: raw.code.unwrap_or(0),
            title: raw.title.clone().unwrap_or_default(),
            message: raw.message.or(raw.title).unwrap_or_default(),
            details: raw
                .error_data
                .and_then(|d| d.take(&format!("{path}[{i}].error_data"), notes))
                .and_then(|d| d.details),
        })
        .collect()
}

/// Unix seconds from a string (as Meta sends) or a number; 0 with a note otherwise.
fn timestamp(value: Option<&Value>, path: &str, notes: &mut Vec<String>) -> i64 {
    let parsed = match value {
        Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
        Some(Value::Number(n)) => n.as_i64(),
        _ => None,
    };
    parsed.unwrap_or_else(|| {
        match value {
            None | Some(Value::Null) => notes.push(format!("{path}: no timestamp; using 0")),
            Some(v) => notes.push(format!("{path}: invalid timestamp {}; using 0", short(v))),
        }
        0
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn envelope(value: Value) -> Vec<u8> {
        json!({
            "object": OBJECT,
            "entry": [{"id": "1", "changes": [{"field": "messages", "value": value}]}]
        })
        .to_string()
        .into_bytes()
    }

    fn one_message(message: Value) -> (Item, Vec<String>) {
        let body = envelope(json!({
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550001111", "phone_number_id": "PNID"},
            "contacts": [{"profile": {"name": "Ann"}, "wa_id": "111"}],
            "messages": [message]
        }));
        let hook = parse(&body).expect("parses");
        assert_eq!(hook.items.len(), 1, "{hook:?}");
        (hook.items[0].clone(), hook.notes)
    }

    fn kind_of(item: &Item) -> &EventKind {
        match item {
            Item::Message { event, .. } => &event.kind,
            other => panic!("not a message: {other:?}"),
        }
    }

    /// Every body of the sample corpus reads the same both ways, and the common ones
    /// (a text, a button reply, a status) take the one-pass way.
    #[test]
    fn one_pass_reads_the_corpus_as_part_by_part_does() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/whatsapp/samples/inbound");
        let mut one_pass_read = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("the sample corpus") {
            let path = entry.expect("a corpus entry").path();
            let body = std::fs::read(&path).expect("a sample");
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            if let Some(hook) = one_pass(&body) {
                let other = part_by_part(&body).expect("one pass read it, so it parses");
                assert_eq!(hook, other, "{name:?}");
                one_pass_read.extend(name);
            }
        }
        for common in [
            "meta-openapi--webhook--text-message.json",
            "meta-openapi--webhook--interactive-button-reply-message.json",
            "pywa--message-status--delivered.json",
        ] {
            assert!(
                one_pass_read.iter().any(|n| n == common),
                "{common} should take the one-pass reading: {one_pass_read:?}"
            );
        }
    }

    #[test]
    fn text_message() {
        let (item, notes) = one_message(json!({
            "from": "111", "id": "wamid.1", "timestamp": "1700000000",
            "type": "text", "text": {"body": "hi"}
        }));
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(
            item,
            Item::Message {
                phone_number_id: Some("PNID".into()),
                user: UserId::WaId("111".into()),
                event: Event {
                    id: Some("wamid.1".into()),
                    at: 1_700_000_000,
                    contact_name: Some("Ann".into()),
                    kind: EventKind::Text("hi".into()),
                },
                raw_type: "text".into(),
            }
        );
    }

    #[test]
    fn missing_or_invalid_timestamp_is_zero_with_a_note() {
        for ts in [json!(null), json!("soon"), json!([1])] {
            let (item, notes) = one_message(json!({
                "from": "111", "id": "w", "timestamp": ts, "type": "text", "text": {"body": "x"}
            }));
            let Item::Message { event, .. } = item else {
                panic!()
            };
            assert_eq!(event.at, 0);
            assert!(notes.iter().any(|n| n.contains("timestamp")), "{notes:?}");
        }
        let (item, _) = one_message(json!({
            "from": "111", "id": "w", "timestamp": 1700000001, "type": "text", "text": {"body": "x"}
        }));
        let Item::Message { event, .. } = item else {
            panic!()
        };
        assert_eq!(event.at, 1_700_000_001);
    }

    #[test]
    fn malformed_payloads_degrade_to_unsupported() {
        let cases = [
            (json!({"type": "text", "text": {"body": 5}}), "text"),
            (json!({"type": "text"}), "text"),
            (
                json!({"type": "image", "image": {"caption": "no id"}}),
                "image",
            ),
            (
                json!({"type": "location", "location": {"latitude": 1.0}}),
                "location",
            ),
            (
                json!({"type": "interactive", "interactive": {"type": "button_reply"}}),
                "button_reply",
            ),
            (
                json!({"type": "reaction", "reaction": {"emoji": "x"}}),
                "reaction",
            ),
            (json!({"type": "button", "button": {}}), "button"),
            (
                json!({"type": "text", "text": {"body": "x"}, "errors": [{"code": 1}]}),
                "text",
            ),
            (json!({"type": "brand_new_thing"}), "brand_new_thing"),
            (json!({}), "unknown"),
        ];
        for (mut message, expected) in cases {
            message["from"] = json!("111");
            message["id"] = json!("w");
            message["timestamp"] = json!("1");
            let (item, _) = one_message(message.clone());
            assert_eq!(
                kind_of(&item),
                &EventKind::Unsupported(expected.into()),
                "{message}"
            );
        }
    }

    #[test]
    fn flow_reply_keeps_invalid_json_as_string() {
        let (item, notes) = one_message(json!({
            "from": "111", "id": "w", "timestamp": "1", "type": "interactive",
            "interactive": {"type": "nfm_reply", "nfm_reply": {"response_json": "{not json", "body": "Sent", "name": "flow"}}
        }));
        assert_eq!(
            kind_of(&item),
            &EventKind::FlowReply(Value::String("{not json".into()))
        );
        assert!(notes.iter().any(|n| n.contains("response_json")));
    }

    #[test]
    fn location_accepts_numeric_strings() {
        let (item, _) = one_message(json!({
            "from": "111", "id": "w", "timestamp": "1", "type": "location",
            "location": {"latitude": "1.5", "longitude": -2}
        }));
        assert_eq!(
            kind_of(&item),
            &EventKind::Location {
                latitude: 1.5,
                longitude: -2.0,
                name: None,
                address: None
            }
        );
    }

    #[test]
    fn sender_falls_back_to_business_scoped_id_then_contact() {
        let (item, _) = one_message(json!({
            "from_user_id": "US.1", "id": "w", "timestamp": "1", "type": "text", "text": {"body": "x"}
        }));
        let Item::Message { user, event, .. } = item else {
            panic!()
        };
        assert_eq!(user, UserId::Bsuid("US.1".into()));
        assert!(user.is_business_scoped());
        // the single contact of the change still gives the name
        assert_eq!(event.contact_name.as_deref(), Some("Ann"));

        let (item, notes) = one_message(json!({
            "id": "w", "timestamp": "1", "type": "text", "text": {"body": "x"}
        }));
        let Item::Message { user, .. } = item else {
            panic!()
        };
        assert_eq!(user, UserId::WaId("111".into()));
        assert!(notes.iter().any(|n| n.contains("no \"from\"")));
    }

    #[test]
    fn contact_is_matched_by_id_among_several() {
        let body = envelope(json!({
            "metadata": {"phone_number_id": "P"},
            "contacts": [
                {"profile": {"name": "A"}, "wa_id": "1"},
                {"profile": {"name": "B"}, "user_id": "US.2"}
            ],
            "messages": [
                {"from_user_id": "US.2", "id": "x", "timestamp": "1", "type": "text", "text": {"body": "b"}},
                {"from": "1", "id": "y", "timestamp": "1", "type": "text", "text": {"body": "a"}},
                {"from": "3", "id": "z", "timestamp": "1", "type": "text", "text": {"body": "c"}}
            ]
        }));
        let hook = parse(&body).expect("parses");
        let names: Vec<_> = hook
            .items
            .iter()
            .map(|i| match i {
                Item::Message { event, .. } => event.contact_name.clone(),
                _ => panic!(),
            })
            .collect();
        assert_eq!(names, [Some("B".into()), Some("A".into()), None]);
    }

    #[test]
    fn message_without_any_sender_is_skipped_with_a_note() {
        let body = envelope(json!({
            "contacts": [{"profile": {"name": "A"}, "wa_id": ""}],
            "messages": [
                {"id": "x", "timestamp": "1", "type": "text", "text": {"body": "b"}},
                {"from": "", "from_user_id": " ", "type": ""}
            ]
        }));
        let hook = parse(&body).expect("parses");
        assert!(hook.items.is_empty());
        assert!(hook.notes.iter().any(|n| n.contains("no sender")));
    }

    #[test]
    fn unreadable_parts_do_not_spoil_the_batch() {
        let body = json!({
            "object": OBJECT,
            "entry": [
                5,
                {"changes": "nope"},
                {"changes": [
                    {"field": 7},
                    {"field": "messages", "value": {"messages": [
                        "garbage",
                        {"from": {"x": 1}, "type": "text"},
                        {"from": "2", "id": true, "timestamp": "1", "type": "text", "text": {"body": "lost"}},
                        {"from": "1", "id": "ok", "timestamp": "1", "type": "text", "text": {"body": "fine"}}
                    ], "statuses": [{"id": "s", "status": "read", "timestamp": "2", "errors": "bad"}]}}
                ]}
            ]
        });
        let hook = parse(body.to_string().as_bytes()).expect("parses");
        assert_eq!(hook.items.len(), 3, "{hook:#?}");
        assert_eq!(
            kind_of(&hook.items[0]),
            &EventKind::Unsupported("text".into())
        );
        assert_eq!(kind_of(&hook.items[1]), &EventKind::Text("fine".into()));
        assert!(
            matches!(&hook.items[2], Item::Status { status, errors, .. } if status == "read" && errors.is_empty())
        );
        assert!(hook.notes.len() >= 5, "{:#?}", hook.notes);
    }

    #[test]
    fn status_with_errors_and_bsuid_recipient() {
        let body = envelope(json!({
            "metadata": {"phone_number_id": "P"},
            "statuses": [{
                "id": "wamid.s", "status": "failed", "timestamp": "10",
                "recipient_user_id": "US.9", "biz_opaque_callback_data": "t",
                "errors": [{"code": "131049", "title": "T", "error_data": {"details": "D"}}]
            }]
        }));
        let hook = parse(&body).expect("parses");
        assert_eq!(
            hook.items,
            [Item::Status {
                phone_number_id: Some("P".into()),
                message_id: "wamid.s".into(),
                status: "failed".into(),
                recipient: Some("US.9".into()),
                at: 10,
                errors: vec![ApiError {
                    code: 131049,
                    title: "T".into(),
                    message: "T".into(),
                    details: Some("D".into())
                }],
                biz_opaque_callback_data: Some("t".into()),
            }]
        );
    }

    #[test]
    fn top_level_errors() {
        assert!(matches!(
            parse(b"{\"object\": "),
            Err(ParseError::Json { line: 1, .. })
        ));
        assert_eq!(parse(b"[]"), Err(ParseError::NotAnObject("array")));
        assert_eq!(parse(b"{}"), Err(ParseError::MissingObject));
        assert_eq!(
            parse(br#"{"object":"page","entry":[]}"#),
            Err(ParseError::WrongObject("\"page\"".into()))
        );
        assert_eq!(
            parse(br#"{"object":"whatsapp_business_account"}"#),
            Ok(Webhook::default())
        );
        let long = format!(r#"{{"object":"{}"}}"#, "é".repeat(500));
        match parse(long.as_bytes()) {
            Err(ParseError::WrongObject(found)) => {
                assert!(found.len() <= 84 && found.ends_with('…'), "{found}")
            }
            other => panic!("{other:?}"),
        }
        let err = parse(b"[1]").expect_err("array");
        assert_eq!(err.to_string(), "expected a JSON object, found an array");
        let err = parse(b"{\n  \"object\": tru }").expect_err("bad json");
        assert!(
            err.to_string()
                .starts_with("malformed JSON at line 2, column "),
            "{err}"
        );
        assert!(parse(&[0xff, 0xfe]).is_err());
    }
}
