//! A conversation test file (`tests/**/*.yaml` in a bot folder), as written. The runner
//! behind `parlance test` plays the user steps against the engine and checks the bot steps.

use super::flow::NODE_KINDS;
use indexmap::IndexMap;
use schemars::{JsonSchema, Schema};
use serde::Deserialize;
use serde_json::{Value, json};

/// Node kinds that send nothing, so no `bot:` step can expect a message from them.
pub const SILENT_KINDS: &[&str] = &["set", "http", "script", "wait", "call"];

/// The node kinds that send a message a `bot:` step can expect: every kind of
/// [`NODE_KINDS`] but the silent ones, in the same order.
pub fn message_kinds() -> Vec<&'static str> {
    NODE_KINDS
        .iter()
        .copied()
        .filter(|k| !SILENT_KINDS.contains(k))
        .collect()
}

/// A `bot:` mapping names exactly one message kind.
fn one_message_kind(schema: &mut Schema) {
    if let Some(Value::Array(branches)) = schema.get_mut("anyOf") {
        for branch in branches
            .iter_mut()
            .filter(|b| b.get("type") == Some(&json!("object")))
        {
            if let Value::Object(map) = branch {
                map.insert("propertyNames".into(), json!({ "enum": message_kinds() }));
                map.insert("minProperties".into(), json!(1));
                map.insert("maxProperties".into(), json!(1));
            }
        }
    }
}

/// A scripted conversation and what the bot must answer.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Parlance conversation test")]
#[schemars(rename = "ConversationTest")]
pub struct RawTestFile {
    /// What this conversation checks; shown when it fails.
    pub name: String,
    /// More words about the test, for the people who maintain it.
    pub description: Option<String>,
    /// Who the simulated user is (default: wa_id 15550001111, name "Test User").
    pub contact: Option<RawTestContact>,
    /// Profile variables the user already has (kept across sessions).
    #[serde(default)]
    pub profile: IndexMap<String, serde_json::Value>,
    /// Answers for the bot's `http` nodes, by node id (or `flow.node` when the id is not
    /// unique in the bot): one answer, or a list answered in order when the node is
    /// called several times. Tests never call the network: an `http` node reached
    /// without a mock fails the test.
    #[serde(default)]
    pub mocks: IndexMap<String, RawMocks>,
    /// Environment variables templates read as `env.NAME` in this test, over the
    /// process's (each name must be listed in `expose_env`): a test that does not depend
    /// on where it runs.
    #[serde(default)]
    pub env: IndexMap<String, String>,
    /// The conversation, one step per item: `user:` says something, `bot:` is what the bot
    /// must answer, `vars:` checks variables, `advance:` moves the simulated clock,
    /// `status:` reports a delivery status of a message the bot sent.
    #[schemars(length(min = 1))]
    pub steps: Vec<RawStep>,
}

/// The simulated user.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "TestContact")]
pub struct RawTestContact {
    /// The user's WhatsApp id (their phone number without `+`).
    pub wa_id: Option<String>,
    /// The user's WhatsApp profile name.
    pub name: Option<String>,
}

/// One step of a conversation test: exactly one of `user`, `bot`, `vars`, `advance`,
/// `status`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[schemars(rename = "Step")]
pub enum RawStep {
    /// The user sends a message: text, or `{ reply: ID }`, `{ location: ... }`, `{ image: ... }`...
    User(RawUserInput),
    /// The next message the bot sends must look like this: `bot: "exact text"`,
    /// `bot: "/regex/"`, or `bot: { KIND: EXPECTATION }`.
    Bot(RawBotExpect),
    /// These session variables must have these values.
    Vars(IndexMap<String, serde_json::Value>),
    /// Move the simulated clock forward, e.g. `advance: 31m` to let the session expire.
    Advance(String),
    /// WhatsApp reports a delivery status for a message the bot sent, as `serve` hears of
    /// it: `status: { failed: 131026 }`. Not a message from the user, so it does not
    /// reopen the 24-hour window: after `advance: 25h` the `on_error` branch it starts
    /// meets a closed window.
    Status(RawStatus),
}

/// A delivery status WhatsApp reports for a message the bot sent: exactly one key.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[schemars(rename = "DeliveryStatus")]
pub enum RawStatus {
    /// The message could not be delivered: Meta's error code (`failed: 131026`), or
    /// `failed: { code, reason, node }`. The node that sent it takes its `on_error` branch.
    Failed(RawFailed),
}

/// A `failed` status: an error code, or its details.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "FailedStatus")]
pub enum RawFailed {
    /// Meta's error code, e.g. 131026 (message undeliverable); the last message the bot
    /// sent failed.
    Code(i64),
    /// Which message failed and why.
    Details(RawFailedDetails),
}

/// The details of a `failed` status; everything is optional.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "FailedDetails")]
pub struct RawFailedDetails {
    /// Meta's error code (`message.error.code` in the `on_error` branch); left out, the
    /// status carries none.
    pub code: Option<i64>,
    /// The error's title (`message.error.reason`); default `no reason given`, as `serve`
    /// has it when WhatsApp sends none.
    pub reason: Option<String>,
    /// The node whose message failed, as `flow.node`: its last message in this test.
    /// Default: the last message the bot sent.
    pub node: Option<String>,
}

/// What the simulated user sends.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "UserInput")]
pub enum RawUserInput {
    /// A text message.
    Text(String),
    /// Any other kind of message.
    Event(RawUserEvent),
}

/// A user message other than plain text: exactly one key.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[schemars(rename = "UserEvent")]
pub enum RawUserEvent {
    /// A text message (same as `user: "..."`).
    Text(String),
    /// Tap the button or list row with this id.
    Reply(String),
    /// Tap a template's quick-reply button with this payload.
    Button(String),
    /// Share a location.
    Location(RawTestLocation),
    /// Send an image.
    Image(RawTestMedia),
    /// Send a document.
    Document(RawTestMedia),
    /// Send an audio file or voice note.
    Audio(RawTestMedia),
    /// Send a video.
    Video(RawTestMedia),
    /// Send a sticker.
    Sticker(RawTestMedia),
    /// React to the bot's last message with this emoji.
    Reaction(String),
    /// Share contact cards, each at least `{ name: ... }`.
    Contacts(Vec<serde_json::Value>),
    /// Submit a WhatsApp Flows form with this response.
    FlowReply(serde_json::Map<String, serde_json::Value>),
}

/// A shared location.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "TestLocation")]
pub struct RawTestLocation {
    /// Latitude in degrees.
    pub latitude: f64,
    /// Longitude in degrees.
    pub longitude: f64,
    /// The place's name, as when the user picks a place.
    pub name: Option<String>,
    /// The place's address.
    pub address: Option<String>,
}

/// A media file the user sends.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "TestMedia")]
pub struct RawTestMedia {
    /// A media id (default: a generated one).
    pub id: Option<String>,
    /// The MIME type, e.g. `image/jpeg`.
    pub mime_type: Option<String>,
    /// A caption.
    pub caption: Option<String>,
    /// A file name (documents).
    pub filename: Option<String>,
}

/// What the next bot message must be.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "BotExpect", transform = one_message_kind)]
pub enum RawBotExpect {
    /// The message's text (or body, or caption) equals this, or matches it when written as `/regex/`.
    Text(String),
    /// The message's kind and details.
    Kind(IndexMap<String, RawMessageExpect>),
}

/// Expectations on one message. Text values are exact, or regular expressions when
/// written as `/.../`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "MessageExpect")]
pub enum RawMessageExpect {
    /// The message's main text (text, body or caption) equals or matches this.
    Text(String),
    /// Details to check; everything left out is not checked.
    Fields(Box<RawMessageFields>),
}

/// Details of a message to check.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "MessageFields")]
pub struct RawMessageFields {
    /// The main text (text, body or caption) equals this (or matches `/regex/`).
    pub body: Option<String>,
    /// The main text contains this.
    pub body_contains: Option<String>,
    /// The header text equals this (or matches `/regex/`).
    pub header: Option<String>,
    /// The footer text equals this (or matches `/regex/`).
    pub footer: Option<String>,
    /// The reply button titles, in order.
    pub buttons: Option<Vec<String>>,
    /// The row titles of a list, in order.
    pub rows: Option<Vec<String>>,
    /// The label of the button that opens a list, or of a cta_url button.
    pub button: Option<String>,
    /// The media link.
    pub link: Option<String>,
    /// The URL a cta_url button opens.
    pub url: Option<String>,
    /// The template name.
    pub name: Option<String>,
    /// A part of the Cloud API payload that must be present, e.g. `{ text: { preview_url: true } }`.
    pub payload: Option<serde_json::Value>,
}

/// The mocks of one `http` node (one answer for every call, or a list of answers, one
/// per call, in order), or of one `handover` node (`{ handover: started | unavailable }`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "Mocks")]
pub enum RawMocks {
    /// Answers every call the node makes.
    One(Box<RawMock>),
    /// Answers the node's first call, second call, ...; a call after the last fails the
    /// test.
    Each(#[schemars(length(min = 1))] Vec<RawMock>),
}

/// What a mocked `http` call does: answer (`status`, `json` or `body`, `headers`) or
/// fail (`fail`), and optionally what the request must be (`request`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "Mock")]
pub enum RawMock {
    /// The call fails without an answer: the node's `on_error`, with `message.error.kind`.
    Fail(RawMockFailure),
    /// A `handover` node's agent inbox: takes the handover (the default without a
    /// mock) or is unavailable (the node's `on_unavailable`).
    Handover(RawMockHandover),
    /// The backend answers; a status of 300 or more takes `on_error` (kind `status`).
    Answer(RawMockAnswer),
}

/// A mocked answer.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "MockAnswer")]
pub struct RawMockAnswer {
    /// The answer's status (default 200). 2xx continues at `next`; 300 and more takes
    /// `on_error` with `message.error.kind` `status` (`save` still holds the answer).
    #[schemars(range(min = 200, max = 599))]
    pub status: Option<u16>,
    /// A JSON body: what `save` holds as `body` (content-type `application/json` unless
    /// `headers` says otherwise). Not with `body`.
    pub json: Option<Value>,
    /// A text body (content-type `text/plain` unless `headers` says otherwise). Not with
    /// `json`.
    pub body: Option<String>,
    /// Answer headers; `save` holds them with lower-case names.
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    /// What the request must be; the step fails when it is not.
    pub request: Option<RawRequestExpect>,
}

/// A mocked failure: the call gets no usable answer.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "MockFailure")]
pub struct RawMockFailure {
    /// How the call fails, as `message.error.kind` reads it.
    pub fail: RawMockFailKind,
    /// What the request must be; the step fails when it is not.
    pub request: Option<RawRequestExpect>,
}

/// What the agent inbox does with a mocked `handover` node.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "MockHandover")]
pub struct RawMockHandover {
    pub handover: RawMockHandoverOutcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "MockHandoverOutcome")]
pub enum RawMockHandoverOutcome {
    /// The inbox takes it: the node's `say`, then the bot is silent (no agents are
    /// played, so the test ends here).
    Started,
    /// No agent inbox takes it: the node's `on_unavailable`.
    Unavailable,
}

/// The ways a mocked call can fail (a non-2xx answer is `status:` on an answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "MockFailKind")]
pub enum RawMockFailKind {
    /// No answer within the node's `timeout`.
    Timeout,
    /// No connection (refused, unknown host, TLS).
    Connect,
    /// The host may not be called (`http.allow_hosts`).
    Forbidden,
    /// The answer's body was over the size limit.
    TooLarge,
    /// The answer said it was JSON and was not.
    InvalidJson,
    /// A redirect was not followed.
    Redirect,
}

/// What a mocked node's request must be; everything left out is not checked. Text
/// values are exact, or regular expressions when written as `/.../`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "RequestExpect")]
pub struct RawRequestExpect {
    /// The method: GET, POST, PUT, PATCH or DELETE.
    pub method: Option<super::flow::HttpMethod>,
    /// The full URL, with the node's `query` encoded into it, e.g.
    /// `https://api.example.com/orders?id=42`.
    pub url: Option<String>,
    /// These headers are sent with these values (names in any case; other headers may
    /// be sent too).
    pub headers: Option<IndexMap<String, String>>,
    /// The JSON body equals this.
    pub json: Option<Value>,
    /// The form body has exactly these fields and values.
    pub form: Option<IndexMap<String, String>>,
    /// The text body equals this.
    pub body: Option<String>,
}
