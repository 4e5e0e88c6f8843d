//! A flow file, as a bot designer writes it (`flows/**/*.yaml`).
//!
//! Every doc comment here becomes a description in `schemas/flow.schema.json`, which is
//! what an editor shows while the designer types: write them for that reader.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One conversation flow: an ordered set of nodes, and the triggers that start it.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Parlance flow")]
#[schemars(rename = "Flow")]
pub struct RawFlow {
    /// The flow's id, unique in the bot. Other flows reach it with `next: { flow: ID }`.
    /// Defaults to the file name without its extension.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"))]
    pub id: Option<String>,
    /// What this flow does, for the people who maintain the bot.
    pub description: Option<String>,
    /// Any of these starts this flow, wherever the user is (unless the current flow is
    /// not `interruptible`).
    #[serde(default)]
    pub triggers: Vec<RawTrigger>,
    /// May a trigger of another flow pull the user out of this one while it waits for an
    /// answer? Default: true. Set false for flows that must finish, like a payment.
    pub interruptible: Option<bool>,
    /// The nodes, in order. A node without `next` continues with the node below it; the
    /// first node is where the flow starts.
    #[schemars(extend("minProperties" = 1))]
    pub nodes: IndexMap<String, RawNode>,
}

/// Something the user sends that starts this flow.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[schemars(rename = "Trigger")]
pub enum RawTrigger {
    /// The whole message equals one of these words (ignoring case, accents and extra spaces).
    Keywords(#[schemars(length(min = 1))] Vec<String>),
    /// The message matches this regular expression, ignoring case; named groups like
    /// `(?P<item>\w+)` are saved as variables (`vars.item`).
    Regex(String),
    /// The user tapped a button or list row with this id.
    Reply(String),
}

/// One step of a flow. A node has exactly one kind key (`say`, `buttons`, `ask`, ...)
/// plus optional `next`, `save`, `on_error` and `on_window_closed`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = super::exactly_one_kind)]
#[schemars(rename = "Node")]
pub struct RawNode {
    /// Send text: `say: "Hello {{ contact.name }}"`, `{ text, preview_url }`, or a list of
    /// texts sent as separate messages. At most 4096 characters each.
    pub say: Option<RawSay>,
    /// Send an image (JPEG or PNG, up to 5 MB) by `link` or uploaded `id`, with an optional `caption`.
    pub image: Option<RawMedia>,
    /// Send a video (MP4 or 3GP, up to 16 MB) by `link` or `id`, with an optional `caption`.
    pub video: Option<RawMedia>,
    /// Send an audio file (up to 16 MB) by `link` or `id`. Audio has no caption.
    pub audio: Option<RawMedia>,
    /// Send a document (up to 100 MB) by `link` or `id`, with `filename` and optional `caption`.
    pub document: Option<RawMedia>,
    /// Send a WebP sticker by `link` or `id`. Stickers have no caption.
    pub sticker: Option<RawMedia>,
    /// Send 1 to 3 reply buttons and wait for a tap; `save` stores the tapped button's id.
    /// Typing a button's title also counts as tapping it.
    pub buttons: Option<RawButtons>,
    /// Send a list message (a button that opens up to 10 rows) and wait for a choice;
    /// `save` stores the chosen row's id.
    pub list: Option<RawList>,
    /// Ask a question and wait for an answer of the expected kind; `save` stores it.
    pub ask: Option<RawAsk>,
    /// Send a pre-approved message template. The only kind WhatsApp delivers outside the
    /// 24-hour customer service window.
    pub template: Option<RawTemplate>,
    /// Send a location pin.
    pub location: Option<RawLocation>,
    /// Ask the user to share their location and wait; `save` stores
    /// `{latitude, longitude, name, address}`.
    pub request_location: Option<RawRequestLocation>,
    /// Send 1 to 5 contact cards.
    #[schemars(length(min = 1, max = 5))]
    pub contacts: Option<Vec<RawContact>>,
    /// Send a message with a call-to-action button that opens a URL.
    pub cta_url: Option<RawCtaUrl>,
    /// Send an interactive WhatsApp Flows message and wait for the form; `save` stores the
    /// response JSON.
    pub whatsapp_flow: Option<RawWhatsAppFlow>,
    /// React with this emoji to the user's last message, e.g. `react: "👍"`.
    pub react: Option<String>,
    /// Send any Cloud API message object, written as YAML (without `messaging_product` and
    /// `to`, which Parlance adds). The escape hatch for what no other kind covers.
    pub payload: Option<serde_json::Map<String, serde_json::Value>>,
    /// Set variables: `set: { total: "vars.qty * 9.5", tries: 0 }`. Text values are
    /// expressions (quote text literals inside them: `"'gold'"`); numbers and booleans are
    /// taken as they are.
    #[schemars(extend("minProperties" = 1))]
    pub set: Option<IndexMap<String, RawSetValue>>,
    /// Call an HTTP API; `save` stores the JSON answer, `on_error` is where to go when
    /// the call fails. Checked, but not run by this build: a bot that uses it is refused.
    pub http: Option<RawHttp>,
    /// Run a sandboxed Rhai script, inline (`script: "..."`) or from a file
    /// (`script: { file: scripts/price.rhai }`). It may set variables and choose `next`.
    /// Checked, but not run by this build: a bot that uses it is refused.
    pub script: Option<RawScript>,
    /// Hand the conversation to a human agent. The bot stays silent until the agent
    /// resolves it, then continues at `next`. Checked, but not run by this build: a bot
    /// that uses it is refused.
    #[serde(default, deserialize_with = "super::present")]
    #[schemars(with = "Option<RawHandover>")]
    pub handover: Option<Option<RawHandover>>,
    /// Pause, shown to the user as typing: `wait: 2s`. At most 25s; longer pauses need
    /// durable timers (planned).
    pub wait: Option<String>,
    /// Run another flow as a subroutine, then come back and continue below this node:
    /// `call: { flow: address }` or `call: address`.
    pub call: Option<RawFlowRef>,
    /// End the conversation, optionally with a last message: `end: "Bye!"` or just `end:`.
    /// The user's next message starts afresh.
    #[serde(default, deserialize_with = "super::present")]
    #[schemars(with = "Option<RawSay>")]
    pub end: Option<Option<RawSay>>,

    /// Where to go after this node: a node id, `end`, `{ flow: ID }`, `{ flow: ID, node: ID }`,
    /// or a list of `{ if: EXPRESSION, then: TARGET }` with a final `{ else: TARGET }`.
    /// Without it, the node below this one comes next.
    pub next: Option<RawNext>,
    /// The variable that stores the user's answer (buttons, list, ask, request_location,
    /// whatsapp_flow, template quick replies) or the HTTP response. Read it as `vars.NAME`.
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub save: Option<String>,
    /// The value `save` stores is personal data (a phone number, an email, an address):
    /// the session trace (`GET /api/v1/users/{user}/trace`, the `/dev` inspector) shows
    /// this variable as `•••` on numbers with WhatsApp credentials, wherever it is set.
    pub pii: Option<bool>,
    /// Where to go when this node fails (an HTTP error, a script error, a send WhatsApp refused).
    pub on_error: Option<RawTarget>,
    /// A template to send instead when the user's 24-hour customer service window has
    /// closed (WhatsApp refuses free-form messages then). Without it such a send is
    /// reported, not attempted.
    pub on_window_closed: Option<RawTemplate>,
}

/// Text to send: a string, a `{ text, preview_url }` mapping, or a list of them.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "Text")]
pub enum RawSay {
    Text(String),
    Rich(RawText),
    Many(#[schemars(length(min = 1))] Vec<RawTextItem>),
}

/// One text message of a list.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "TextItem")]
pub enum RawTextItem {
    Text(String),
    Rich(RawText),
}

/// A text message with options.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "TextWithOptions")]
pub struct RawText {
    /// The message text (a template), at most 4096 characters. WhatsApp formatting works:
    /// *bold*, _italic_, ~strike~, ```code```.
    pub text: String,
    /// Show a preview of the first http(s) URL in the text.
    pub preview_url: Option<bool>,
}

/// A media file: a public `link`, or the `id` of a file uploaded to WhatsApp. A plain
/// string is taken as the link.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "Media")]
pub enum RawMedia {
    Link(String),
    Full(RawMediaObject),
}

/// A media file with options.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "MediaWithOptions")]
pub struct RawMediaObject {
    /// A public https URL of the file (give `link` or `id`, not both).
    pub link: Option<String>,
    /// The id of a file uploaded with the Media API (valid 30 days).
    pub id: Option<String>,
    /// Text shown under an image, video or document; at most 1024 characters.
    pub caption: Option<String>,
    /// The file name shown for a document.
    pub filename: Option<String>,
}

/// The header of an interactive message: text (at most 60 characters), or a media file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "Header")]
pub enum RawHeader {
    Text(String),
    Rich(RawRichHeader),
}

/// A header written as a mapping: exactly one of `text`, `image`, `video`, `document`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[schemars(rename = "HeaderWithMedia")]
pub enum RawRichHeader {
    /// Header text, at most 60 characters.
    Text(String),
    /// A header image.
    Image(RawMedia),
    /// A header video.
    Video(RawMedia),
    /// A header document.
    Document(RawMedia),
}

/// Up to three reply buttons under a text.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Buttons")]
pub struct RawButtons {
    /// Optional header: text (at most 60 characters) or `{ image | video | document: ... }`.
    pub header: Option<RawHeader>,
    /// The message text, at most 1024 characters.
    pub body: String,
    /// Optional small grey text under the body, at most 60 characters.
    pub footer: Option<String>,
    /// One to three buttons. Ids and titles must be unique in the message.
    #[schemars(length(min = 1, max = 3))]
    pub buttons: Vec<RawButton>,
    /// How often to ask again when the answer is not one of the buttons (default 2).
    pub retries: Option<u32>,
    /// What to say when the answer is not one of the buttons (default: the message again).
    pub reprompt: Option<String>,
    /// Where to go when the retries are used up (default: the bot's fallback flow).
    pub on_fail: Option<RawTarget>,
}

/// A reply button.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Button")]
pub struct RawButton {
    /// What `save` stores when the button is tapped; at most 256 characters.
    pub id: String,
    /// The button's label, at most 20 characters.
    pub title: String,
}

/// A list message: a button that opens a menu of up to 10 rows in sections.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "List")]
pub struct RawList {
    /// Optional header text, at most 60 characters (lists take no media header).
    pub header: Option<String>,
    /// The message text, at most 4096 characters.
    pub body: String,
    /// Optional small grey text under the body, at most 60 characters.
    pub footer: Option<String>,
    /// The label of the button that opens the list, at most 20 characters.
    pub button: String,
    /// One to ten sections; at most 10 rows in all. With more than one section, each
    /// needs a title.
    #[schemars(length(min = 1, max = 10))]
    pub sections: Vec<RawSection>,
    /// How often to ask again when the answer is not one of the rows (default 2).
    pub retries: Option<u32>,
    /// What to say when the answer is not one of the rows (default: the message again).
    pub reprompt: Option<String>,
    /// Where to go when the retries are used up (default: the bot's fallback flow).
    pub on_fail: Option<RawTarget>,
}

/// A section of a list.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Section")]
pub struct RawSection {
    /// The section title, at most 24 characters; required when the list has several sections.
    pub title: Option<String>,
    /// The rows of this section.
    #[schemars(length(min = 1, max = 10))]
    pub rows: Vec<RawRow>,
}

/// A row of a list.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Row")]
pub struct RawRow {
    /// What `save` stores when the row is chosen; at most 200 characters, unique in the list.
    pub id: String,
    /// The row's label, at most 24 characters.
    pub title: String,
    /// Optional grey text under the title, at most 72 characters.
    pub description: Option<String>,
}

/// A question and what counts as an answer.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Question")]
pub struct RawAsk {
    /// The question, at most 4096 characters.
    pub text: String,
    /// What kind of answer to accept (default `text`). `{ regex: "..." }` accepts text
    /// matching a regular expression.
    pub expect: Option<RawExpect>,
    /// An extra check on the parsed answer, which is `answer` in the expression:
    /// `validate: "answer >= 1 and answer <= 10"`.
    pub validate: Option<String>,
    /// How often to ask again after an unusable answer (default 2).
    pub retries: Option<u32>,
    /// What to say after an unusable answer (default: the question again).
    pub reprompt: Option<String>,
    /// Where to go when the retries are used up (default: the bot's fallback flow).
    pub on_fail: Option<RawTarget>,
}

/// The kind of answer an `ask` accepts.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "Expect")]
pub enum RawExpect {
    Kind(ExpectKind),
    Regex(RawExpectRegex),
}

/// Accept text matching a regular expression.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ExpectRegex")]
pub struct RawExpectRegex {
    /// The regular expression the whole answer must match (case matters, unlike in
    /// triggers; add `(?i)` to ignore it); named groups are saved as variables.
    pub regex: String,
}

/// Kinds of answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExpectKind {
    /// Any text message.
    Text,
    /// A number, like 3, 2.5 or 2,5.
    Number,
    /// A whole number.
    Integer,
    /// An email address.
    Email,
    /// A phone number.
    Phone,
    /// A date, like 2026-03-14 or 14/03/2026.
    Date,
    /// A time of day, like 14:30 or 2:30 pm.
    Time,
    /// Yes or no (also y, n, ja, nein, sí, oui, non...); saved as true or false.
    YesNo,
    /// A shared location.
    Location,
    /// An image.
    Image,
    /// A document.
    Document,
    /// An audio file or voice note.
    Audio,
    /// A video.
    Video,
    /// Anything the user sends.
    Any,
}

/// A pre-approved message template.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Template")]
pub struct RawTemplate {
    /// The template's name as approved by Meta: lowercase letters, digits and `_`.
    pub name: String,
    /// The template's language code, e.g. `en_US` or `de`.
    pub language: String,
    /// Shorthand for the body's text parameters, in order: `body: ["{{ vars.name }}", "42"]`.
    pub body: Option<Vec<String>>,
    /// The template's components with their parameters, as the Cloud API takes them.
    pub components: Option<Vec<RawTemplateComponent>>,
}

/// A template component and its parameters.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "TemplateComponent")]
pub struct RawTemplateComponent {
    /// Which part of the template the parameters fill.
    #[serde(rename = "type")]
    pub kind: TemplateComponentKind,
    /// For buttons: the kind of button.
    pub sub_type: Option<TemplateButtonKind>,
    /// For buttons: the button's position, from 0.
    pub index: Option<u32>,
    /// The parameters, as the Cloud API takes them, e.g. `{ type: text, text: "{{ vars.name }}" }`.
    #[serde(default)]
    pub parameters: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// Template component kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TemplateComponentKind {
    Header,
    Body,
    Button,
}

/// Template button kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TemplateButtonKind {
    QuickReply,
    Url,
    CopyCode,
    Flow,
    Catalog,
}

/// A location pin.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Location")]
pub struct RawLocation {
    /// Latitude in degrees, a number or a template like `"{{ vars.lat }}"`.
    pub latitude: RawNumber,
    /// Longitude in degrees, a number or a template.
    pub longitude: RawNumber,
    /// The place's name.
    pub name: Option<String>,
    /// The place's address.
    pub address: Option<String>,
}

/// A number, or a template that renders to one.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "NumberOrTemplate")]
pub enum RawNumber {
    Number(f64),
    Template(String),
}

/// A location request: the text asking for it, or `{ body, retries, reprompt, on_fail }`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "RequestLocation")]
pub enum RawRequestLocation {
    Text(String),
    Full(RawRequestLocationBody),
}

/// A location request with options.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "RequestLocationWithOptions")]
pub struct RawRequestLocationBody {
    /// The message text, at most 1024 characters.
    pub body: String,
    /// How often to ask again when the answer is not a location (default 2).
    pub retries: Option<u32>,
    /// What to say when the answer is not a location (default: the request again).
    pub reprompt: Option<String>,
    /// Where to go when the retries are used up (default: the bot's fallback flow).
    pub on_fail: Option<RawTarget>,
}

/// A contact card.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Contact")]
pub struct RawContact {
    /// The contact's name; `formatted_name` is required.
    pub name: RawContactName,
    /// Phone numbers.
    #[serde(default)]
    pub phones: Vec<RawContactPhone>,
    /// Email addresses.
    #[serde(default)]
    pub emails: Vec<RawContactEmail>,
    /// Company details.
    pub org: Option<RawContactOrg>,
    /// Web addresses.
    #[serde(default)]
    pub urls: Vec<RawContactUrl>,
}

/// A contact's name.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ContactName")]
pub struct RawContactName {
    /// The name as shown.
    pub formatted_name: String,
    /// First name.
    pub first_name: Option<String>,
    /// Last name.
    pub last_name: Option<String>,
}

/// A contact's phone number.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ContactPhone")]
pub struct RawContactPhone {
    /// The number, with country code, e.g. `+49 30 1234567`.
    pub phone: String,
    /// `CELL`, `MAIN`, `IPHONE`, `HOME` or `WORK`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// The WhatsApp id, which adds a "Message" button to the card.
    pub wa_id: Option<String>,
}

/// A contact's email address.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ContactEmail")]
pub struct RawContactEmail {
    /// The address.
    pub email: String,
    /// `HOME` or `WORK`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// A contact's company.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ContactOrg")]
pub struct RawContactOrg {
    /// Company name.
    pub company: Option<String>,
    /// Department.
    pub department: Option<String>,
    /// Job title.
    pub title: Option<String>,
}

/// A contact's web address.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ContactUrl")]
pub struct RawContactUrl {
    /// The address, e.g. `https://example.com`.
    pub url: String,
    /// `HOME` or `WORK`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// A message with a button that opens a URL.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "CtaUrl")]
pub struct RawCtaUrl {
    /// Optional header: text (at most 60 characters) or `{ image | video | document: ... }`.
    pub header: Option<RawHeader>,
    /// The message text, at most 1024 characters.
    pub body: String,
    /// Optional small grey text under the body, at most 60 characters.
    pub footer: Option<String>,
    /// The button's label, at most 20 characters.
    pub button: String,
    /// The URL the button opens.
    pub url: String,
}

/// An interactive WhatsApp Flows message.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "WhatsAppFlow")]
pub struct RawWhatsAppFlow {
    /// Optional header text, at most 60 characters.
    pub header: Option<String>,
    /// The message text, at most 1024 characters.
    pub body: String,
    /// Optional small grey text under the body, at most 60 characters.
    pub footer: Option<String>,
    /// The published WhatsApp Flow's id (give `flow_id` or `flow_name`).
    pub flow_id: Option<String>,
    /// The WhatsApp Flow's name (give `flow_id` or `flow_name`).
    pub flow_name: Option<String>,
    /// The label of the button that opens the form, at most 30 characters.
    pub cta: String,
    /// `published` (default) or `draft` for testing.
    pub mode: Option<WhatsAppFlowMode>,
    /// A token sent back with the response (default: the session id).
    pub flow_token: Option<String>,
    /// The first screen to show.
    pub screen: Option<String>,
    /// Initial data for the first screen.
    pub data: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Whether a WhatsApp Flow is live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WhatsAppFlowMode {
    Draft,
    Published,
}

/// A value assigned by `set`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "SetValue")]
pub enum RawSetValue {
    Bool(bool),
    Number(serde_json::Number),
    /// A minijinja expression, e.g. `"vars.qty * 9.5"` or `"'gold'"` for literal text.
    Expression(String),
}

/// An HTTP call.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Http")]
pub struct RawHttp {
    /// The HTTP method (default GET).
    pub method: Option<HttpMethod>,
    /// The URL (a template), e.g. `https://api.example.com/orders/{{ vars.order }}`.
    pub url: String,
    /// Request headers; values are templates (secrets: `{{ env.API_KEY }}`).
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    /// Query parameters added to the URL, encoded; values are templates.
    #[serde(default)]
    pub query: IndexMap<String, String>,
    /// A JSON body; strings inside are templates.
    pub json: Option<serde_json::Value>,
    /// A form body (application/x-www-form-urlencoded); values are templates.
    pub form: Option<IndexMap<String, String>>,
    /// A text body, sent as is (a template); set `Content-Type` in `headers`.
    pub body: Option<String>,
    /// How long to wait for an answer, e.g. `5s` (default 10s, at most 60s).
    pub timeout: Option<String>,
    /// How many times to try again after a timeout, a connection error or a 5xx/429
    /// answer (GET, PUT and DELETE only; default 2 for them, 0 for POST and PATCH).
    pub retries: Option<u32>,
}

/// HTTP methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl HttpMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Patch => "PATCH",
            HttpMethod::Delete => "DELETE",
        }
    }

    /// Whether sending the request twice does what sending it once does (RFC 9110
    /// 9.2.2): only such requests are retried.
    pub fn idempotent(self) -> bool {
        match self {
            HttpMethod::Get | HttpMethod::Put | HttpMethod::Delete => true,
            HttpMethod::Post | HttpMethod::Patch => false,
        }
    }
}

/// A script: inline code, or `{ file: path }` relative to the bot folder.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "Script")]
pub enum RawScript {
    Inline(String),
    File(RawScriptFile),
}

/// A script kept in its own file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ScriptFile")]
pub struct RawScriptFile {
    /// The script's path, relative to the bot folder and inside it, e.g. `scripts/price.rhai`.
    pub file: String,
}

/// How a conversation is handed to a human.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Handover")]
pub struct RawHandover {
    /// What to tell the user while they wait for an agent.
    pub say: Option<String>,
    /// Which team or queue should take the conversation.
    pub queue: Option<String>,
    /// How long to wait for an agent to take it, e.g. `10m`.
    pub timeout: Option<String>,
    /// Where to go when no agent took it within `timeout`.
    pub on_timeout: Option<RawTarget>,
    /// Where to go when no agent is available at all.
    pub on_unavailable: Option<RawTarget>,
}

/// The flow a `call` runs: its id, or `{ flow: ID, node: ID }` to start at a given node.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "FlowRef")]
pub enum RawFlowRef {
    Id(String),
    Full(RawFlowTarget),
}

/// Where to go next: one target, or a list of conditional branches.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "Next")]
pub enum RawNext {
    Target(RawTarget),
    Branches(#[schemars(length(min = 1))] Vec<RawBranch>),
}

/// A target: a node id of this flow, `end`, or `{ flow: ID }` / `{ flow: ID, node: ID }`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "Target")]
pub enum RawTarget {
    Node(String),
    Flow(RawFlowTarget),
}

/// A node in another (or this) flow.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "FlowTarget")]
pub struct RawFlowTarget {
    /// The flow's id.
    pub flow: String,
    /// The node's id (default: the flow's first node).
    pub node: Option<String>,
}

/// One branch of a `next` list.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "Branch")]
pub enum RawBranch {
    When(RawWhen),
    Else(RawElse),
}

/// `{ if: EXPRESSION, then: TARGET }`: taken when the expression is true.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "IfThen")]
pub struct RawWhen {
    /// A minijinja expression, e.g. `vars.topic == "sales"`.
    #[serde(rename = "if")]
    pub condition: String,
    /// Where to go when it is true.
    pub then: RawTarget,
}

/// `{ else: TARGET }`: taken when no `if` above was true. Must be last.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Else")]
pub struct RawElse {
    /// Where to go when no condition was true.
    #[serde(rename = "else")]
    pub otherwise: RawTarget,
}

/// The kind keys of a node, in the order they are documented.
pub const NODE_KINDS: &[&str] = &[
    "say",
    "image",
    "video",
    "audio",
    "document",
    "sticker",
    "buttons",
    "list",
    "ask",
    "template",
    "location",
    "request_location",
    "contacts",
    "cta_url",
    "whatsapp_flow",
    "react",
    "payload",
    "set",
    "http",
    "script",
    "handover",
    "wait",
    "call",
    "end",
];
