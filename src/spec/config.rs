//! `parlance.yaml`, as written: the bot's settings. Every field is optional; a bot
//! folder without the file runs locally with defaults.

use schemars::JsonSchema;
use serde::Deserialize;

/// Settings of one bot: its WhatsApp number, sessions, scripts, API and privacy.
/// `${NAME}` anywhere reads the environment variable NAME (`${NAME:-default}` when unset).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Parlance bot settings")]
#[schemars(rename = "Settings")]
pub struct RawConfig {
    /// The bot's name and where conversations start.
    pub bot: Option<RawBotSettings>,
    /// The WhatsApp Business number this bot answers. Without `access_token` and
    /// `phone_number_id` the bot runs locally and sends nothing to Meta.
    pub whatsapp: Option<RawWhatsApp>,
    /// How conversations are kept.
    pub session: Option<RawSession>,
    /// Rendering options.
    pub render: Option<RawRender>,
    /// Endpoint transformers: Rhai files (paths relative to the bot folder) whose
    /// functions run around every turn. See docs/scripts.md.
    pub transformers: Option<RawTransformers>,
    /// The HTTP API (inject, notify, handover, erasure).
    pub api: Option<RawApi>,
    /// The `/dev` simulator (docs/simulator.md).
    pub dev: Option<RawDev>,
    /// Where `handover` nodes send the conversation: the agent inbox's webhook. Required
    /// when a flow has a `handover` node.
    pub handover: Option<RawHandover>,
    /// What is kept and what is shown in logs.
    pub privacy: Option<RawPrivacy>,
    /// Bounds on one turn, so a flow that loops cannot flood a user.
    pub limits: Option<RawLimits>,
    /// Bounds on every script run (`script` nodes), so a runaway script stops quickly.
    pub scripts: Option<RawScripts>,
    /// Where `http` nodes may call, and how much of an answer they read.
    pub http: Option<RawHttpSettings>,
    /// Environment variables that templates may read as `env.NAME`. No others are visible.
    #[serde(default)]
    pub expose_env: Vec<String>,
}

/// The bot's name and its entry and fallback flows.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "BotSettings")]
pub struct RawBotSettings {
    /// A short name, shown in logs and the simulator.
    pub name: Option<String>,
    /// The flow a new conversation starts in (default: `main`, or the only flow).
    pub entry: Option<String>,
    /// The flow that handles what no flow understands (default: the entry flow).
    pub fallback: Option<String>,
}

/// The credentials and behaviour of a WhatsApp Business phone number.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "WhatsApp")]
pub struct RawWhatsApp {
    /// The Meta app's id.
    pub app_id: Option<String>,
    /// A system user access token with `whatsapp_business_messaging`; keep it in the
    /// environment: `access_token: ${WA_ACCESS_TOKEN}`.
    pub access_token: Option<String>,
    /// The id of the phone number that sends (from the WhatsApp Manager, not the number itself).
    pub phone_number_id: Option<String>,
    /// The string you enter as "Verify token" when you set the callback URL in Meta's app dashboard.
    pub verify_token: Option<String>,
    /// The app secret (Meta app dashboard: App settings, Basic). Required with
    /// `access_token`: every webhook POST for this number must carry a valid
    /// X-Hub-Signature-256 made with it. Keep it in the environment: `${WA_APP_SECRET}`.
    pub app_secret: Option<String>,
    /// For test setups only: accept unsigned webhook POSTs for a number that has an
    /// `access_token` but no `app_secret`. Anyone who can reach the server can then make
    /// the bot send messages; `serve` logs a warning at every start. Ignored when
    /// `app_secret` is set (signatures are then checked).
    pub allow_unsigned: Option<bool>,
    /// Pause between consecutive replies to one user, in milliseconds (default 0).
    pub message_delay_ms: Option<u64>,
    /// The Graph API version, e.g. `v23.0`.
    #[schemars(regex(pattern = r"^v\d+\.\d+$"))]
    pub api_version: Option<String>,
    /// The Graph API base URL (default `https://graph.facebook.com`); tests point it at a fake.
    pub base_url: Option<String>,
    /// Mark each handled message as read (blue ticks).
    pub mark_as_read: Option<bool>,
    /// Show "typing…" while the bot prepares a reply.
    pub typing_indicator: Option<bool>,
    /// Most messages per second sent from this number (default 80, Meta's default).
    #[schemars(range(min = 1))]
    pub max_messages_per_second: Option<u32>,
}

/// Where sessions live and when they expire.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Session")]
pub struct RawSession {
    /// After this much silence a conversation starts afresh, e.g. `30m` (default 30m).
    pub timeout: Option<String>,
    /// Where sessions, queued messages and delivery records are kept:
    /// `sqlite://data/parlance.db` (default, relative to the bot folder; one instance),
    /// `redis://host:6379/0` (several instances; `?prefix=NAME` sets the key prefix) or
    /// `memory://` (lost on restart).
    pub store: Option<String>,
}

/// Rendering options.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Render")]
pub struct RawRender {
    /// What to do when a rendered text is longer than WhatsApp allows: `error` (default:
    /// the send fails and says which node and field) or `truncate` (shorten it and log a warning).
    pub overflow: Option<Overflow>,
}

/// What to do with over-long rendered text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    #[default]
    Error,
    Truncate,
}

/// Bounds on one turn (one message from the user and everything it sets off). A turn
/// over a bound stops, is logged with the nodes it ran, and the fallback flow answers.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Limits")]
pub struct RawLimits {
    /// Most messages one turn may send (default 10).
    #[schemars(range(min = 1))]
    pub messages_per_turn: Option<u32>,
    /// Most nodes one turn may run without waiting for the user (default 100).
    #[schemars(range(min = 1))]
    pub nodes_per_turn: Option<u32>,
}

/// Bounds on every script run. A script over one stops with an error naming the key;
/// the node's `on_error` (or the fallback flow) takes over.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Scripts")]
pub struct RawScripts {
    /// Most operations (expressions and statements evaluated) in one run (default 100000).
    #[schemars(range(min = 1))]
    pub max_operations: Option<u64>,
    /// Deepest nesting of function calls, recursion included (default 16).
    #[schemars(range(min = 1, max = 64))]
    pub max_call_depth: Option<u32>,
    /// Deepest nesting of an expression, checked when the bot loads (default 32).
    #[schemars(range(min = 1, max = 128))]
    pub max_expr_depth: Option<u32>,
    /// Longest string in bytes; the strings of one array or map count together (default 65536).
    #[schemars(range(min = 1))]
    pub max_string_size: Option<u32>,
    /// Most items of an array, nested arrays counted together (default 10000).
    #[schemars(range(min = 1))]
    pub max_array_size: Option<u32>,
    /// Most entries of a map, nested maps counted together (default 10000).
    #[schemars(range(min = 1))]
    pub max_map_size: Option<u32>,
    /// Longest wall time of one run, e.g. `50ms` (default 100ms, at most 1s).
    pub timeout: Option<String>,
}

/// The calls `http` nodes make. Without `allow_hosts` any host may be called except
/// link-local and cloud-metadata addresses (169.254.0.0/16, fe80::/10, 169.254.169.254,
/// fd00:ec2::254, 100.100.100.200, metadata.google.internal), which must be listed to be
/// called. Loopback and private addresses are allowed: backends often run beside the bot.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "HttpSettings")]
pub struct RawHttpSettings {
    /// When set, only these hosts may be called: host names or IP addresses (any port),
    /// e.g. `[api.example.com, 10.0.0.5]`; not URLs. Checked again for every redirect
    /// and against the addresses a name resolves to.
    pub allow_hosts: Option<Vec<String>>,
    /// The largest answer body read, in bytes (default 1048576, 1 MiB; at most 16 MiB).
    /// A longer answer is a `too_large` failure: its body is not kept.
    #[schemars(range(min = 1, max = 16777216))]
    pub max_body_bytes: Option<u64>,
}

/// Endpoint transformers: each a `.rhai` file in the bot folder defining one function.
/// A failing transformer is a warning of the turn, which goes on without it.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Transformers")]
pub struct RawTransformers {
    /// Defines `fn input(message)`: gets each user message as templates see it and
    /// returns it (changed or not), or `()` to drop it. May set `vars` and `profile`.
    pub input: Option<String>,
    /// Defines `fn output(payload)`: gets each outgoing Cloud API payload and returns
    /// it (changed or not, checked against WhatsApp's schema again), or `()` to drop it.
    pub output: Option<String>,
    /// Defines `fn finished(turn)`: runs after each turn with `turn.message` and
    /// `turn.sent` (the payloads sent); may set `vars` and `profile`.
    pub finished: Option<String>,
}

/// The HTTP API.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Api")]
pub struct RawApi {
    /// The Bearer key clients must send; keep it in the environment: `key: ${PARLANCE_API_KEY}`.
    pub key: Option<String>,
}

/// The `/dev` simulator: a WhatsApp-like page to talk to the bot as simulated users.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Dev")]
pub struct RawDev {
    /// Serve the simulator. Default: on for a bot without WhatsApp credentials (local
    /// mode), off for one with them. `true` on a bot with credentials serves it beside
    /// the real number, behind `api.key` (required then): simulated users talk to a
    /// local twin of the bot (phone number id `dev-<phone_number_id>`, sessions in
    /// memory) and nothing they do reaches Meta. `false` turns it off in local mode.
    pub enabled: Option<bool>,
}

/// The agent inbox a `handover` node hands the conversation to. Parlance POSTs each
/// handover event (`handover.started`, `message`, `status`, `handover.ended`) there as
/// JSON, signed with `secret` (header `X-Parlance-Signature`, see docs/api.md).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Handover")]
pub struct RawHandover {
    /// The agent inbox's URL (http or https), e.g. `https://agents.example.com/parlance`;
    /// from the environment works too: `webhook: ${AGENT_WEBHOOK_URL}`.
    pub webhook: Option<String>,
    /// The key deliveries are signed with (HMAC-SHA256); the receiver checks it. Required
    /// with `webhook`. Keep it in the environment: `secret: ${AGENT_WEBHOOK_SECRET}`.
    pub secret: Option<String>,
}

/// Privacy settings.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Privacy")]
pub struct RawPrivacy {
    /// Mask phone numbers and message text in logs (default true).
    pub mask_logs: Option<bool>,
    /// How long transcripts are kept, e.g. `7d`; `0s` keeps none (default).
    pub keep_transcripts: Option<String>,
}
