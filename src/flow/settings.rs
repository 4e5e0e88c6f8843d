//! The bot's settings from `parlance.yaml`, resolved: defaults applied, durations parsed.

use super::Overflow;
use std::fmt;
use std::time::Duration;

/// Meta's default throughput for a registered phone number.
pub const DEFAULT_MESSAGES_PER_SECOND: u32 = 80;

/// Most messages one turn sends unless `limits.messages_per_turn` says otherwise.
pub const DEFAULT_MESSAGES_PER_TURN: u32 = 10;
/// Most nodes one turn runs unless `limits.nodes_per_turn` says otherwise.
pub const DEFAULT_NODES_PER_TURN: u32 = 100;

/// `Debug` never prints the API key, nor a password in the store's URL.
#[derive(Clone)]
pub struct Settings {
    pub name: String,
    pub whatsapp: WhatsAppSettings,
    pub session_timeout: Duration,
    pub store: String,
    pub overflow: Overflow,
    pub expose_env: Vec<String>,
    pub transformers: Transformers,
    pub api_key: Option<String>,
    /// Whether `/dev` simulates this bot (`dev.enabled`; see [`Settings::simulated`]).
    pub dev: DevMode,
    pub mask_logs: bool,
    pub keep_transcripts: Duration,
    pub limits: TurnLimits,
    /// Bounds on every script run (`scripts:`).
    pub scripts: crate::script::Limits,
    /// Where `http` nodes may call and how much they read (`http:`).
    pub http: HttpSettings,
    /// The agent inbox `handover` nodes hand over to (`handover:`); `None` when not set.
    pub handover: Option<HandoverSettings>,
}

/// Whether the `/dev` simulator serves a bot (`dev.enabled` in parlance.yaml).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DevMode {
    /// Not set: on in local mode, off beside WhatsApp credentials.
    #[default]
    Default,
    /// `dev.enabled: true`: on, beside credentials too (behind `api.key`, which the
    /// loader then requires).
    On,
    /// `dev.enabled: false`: off.
    Off,
}

impl Settings {
    /// How `/dev` simulates this bot: not at all, as the bot itself (local mode: it has
    /// no WhatsApp credentials), or through a local twin beside its real number.
    pub fn simulated(&self) -> Simulated {
        match (self.dev, self.whatsapp.is_local()) {
            (DevMode::Off, _) | (DevMode::Default, false) => Simulated::No,
            (DevMode::Default | DevMode::On, true) => Simulated::Itself,
            (DevMode::On, false) => Simulated::Twin,
        }
    }
}

/// See [`Settings::simulated`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Simulated {
    No,
    /// A local bot: its own number is the simulated one.
    Itself,
    /// A bot with WhatsApp credentials and `dev.enabled: true`: a local twin number
    /// (`dev-<phone_number_id>`, memory store) runs the same bot for simulated users.
    Twin,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A URL's password sits between `:` and `@` in its authority.
        let store = match (self.store.find("://"), self.store.find('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!(
                    "{}://<credentials>@{}",
                    &self.store[..scheme],
                    &self.store[at + 1..]
                )
            }
            _ => self.store.clone(),
        };
        f.debug_struct("Settings")
            .field("name", &self.name)
            .field("whatsapp", &self.whatsapp)
            .field("session_timeout", &self.session_timeout)
            .field("store", &store)
            .field("overflow", &self.overflow)
            .field("expose_env", &self.expose_env)
            .field("transformers", &self.transformers)
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .field("dev", &self.dev)
            .field("mask_logs", &self.mask_logs)
            .field("keep_transcripts", &self.keep_transcripts)
            .field("limits", &self.limits)
            .field("scripts", &self.scripts)
            .field("http", &self.http)
            .field("handover", &self.handover)
            .finish()
    }
}

/// The agent inbox of `handover:` in parlance.yaml. The loader has checked that the
/// webhook is an http(s) URL and that the secret is set. `Debug` never prints the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct HandoverSettings {
    pub webhook: String,
    pub secret: String,
}

impl fmt::Debug for HandoverSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandoverSettings")
            .field("webhook", &self.webhook)
            .field("secret", &"<set>")
            .finish()
    }
}

/// Largest answer body an `http` node reads unless `http.max_body_bytes` says otherwise.
pub const DEFAULT_HTTP_MAX_BODY_BYTES: u64 = 1024 * 1024;
/// The most `http.max_body_bytes` may be: the body is kept in the session (`save`).
pub const MAX_HTTP_MAX_BODY_BYTES: u64 = 16 * 1024 * 1024;

/// The calls `http` nodes may make (`http:` in parlance.yaml).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// When set, only these hosts (names or IP addresses, any port) may be called; the
    /// loader has checked each entry is a bare host.
    pub allow_hosts: Option<Vec<String>>,
    /// The largest answer body read; a longer one is a `too_large` failure.
    pub max_body_bytes: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            allow_hosts: None,
            max_body_bytes: DEFAULT_HTTP_MAX_BODY_BYTES,
        }
    }
}

/// Bounds on one turn (`limits:` in parlance.yaml), checked by the engine as it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TurnLimits {
    pub messages_per_turn: u32,
    pub nodes_per_turn: u32,
}

impl Default for TurnLimits {
    fn default() -> Self {
        TurnLimits {
            messages_per_turn: DEFAULT_MESSAGES_PER_TURN,
            nodes_per_turn: DEFAULT_NODES_PER_TURN,
        }
    }
}

/// Transformer script paths, relative to the bot folder.
#[derive(Debug, Clone, Default)]
pub struct Transformers {
    pub input: Option<String>,
    pub output: Option<String>,
    pub finished: Option<String>,
}

/// One WhatsApp Business number. `Debug` never prints the secrets.
#[derive(Clone, Default)]
pub struct WhatsAppSettings {
    pub app_id: Option<String>,
    pub access_token: Option<String>,
    pub phone_number_id: Option<String>,
    pub verify_token: Option<String>,
    pub app_secret: Option<String>,
    /// Unsigned webhook POSTs are accepted for this number (test setups only).
    pub allow_unsigned: bool,
    pub message_delay: Duration,
    pub api_version: String,
    pub base_url: String,
    pub mark_as_read: bool,
    pub typing_indicator: bool,
    pub max_messages_per_second: u32,
}

impl WhatsAppSettings {
    /// Without a token and a phone number id nothing can be sent: the bot runs locally.
    /// (The loader refuses one without the other, so either both are set or neither.)
    pub fn is_local(&self) -> bool {
        self.access_token.as_deref().is_none_or(str::is_empty)
            || self.phone_number_id.as_deref().is_none_or(str::is_empty)
    }
}

impl fmt::Debug for WhatsAppSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = |s: &Option<String>| if s.is_some() { "<set>" } else { "<unset>" };
        f.debug_struct("WhatsAppSettings")
            .field("app_id", &self.app_id)
            .field("access_token", &secret(&self.access_token))
            .field("phone_number_id", &self.phone_number_id)
            .field("verify_token", &secret(&self.verify_token))
            .field("app_secret", &secret(&self.app_secret))
            .field("allow_unsigned", &self.allow_unsigned)
            .field("message_delay", &self.message_delay)
            .field("api_version", &self.api_version)
            .field("base_url", &self.base_url)
            .field("mark_as_read", &self.mark_as_read)
            .field("typing_indicator", &self.typing_indicator)
            .field("max_messages_per_second", &self.max_messages_per_second)
            .finish()
    }
}
