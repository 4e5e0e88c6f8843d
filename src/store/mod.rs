//! Where sessions, inboxes, outboxes, dedupe keys and delivery statuses live: the
//! durable store ([`durable::Durable`]) the per-user event loop stands on, and the
//! `session.store` URL that picks one: SQLite (the default, one instance), Redis
//! (several instances), memory (tests and throwaway setups).
//!
//! Architecture Invariant: a store keeps data, it does not decide. Expiry is the
//! engine's (a session carries `updated_at`); `purge` only removes what is long dead.

pub mod durable;

use crate::engine::Session;
use crate::engine::session::SESSION_VERSION;
use durable::Durable;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Sessions are per business phone number and user.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey {
    pub phone_number_id: String,
    /// The user's WhatsApp id, or business-scoped user id when there is no phone number.
    pub user: String,
}

impl SessionKey {
    pub fn new(phone_number_id: &str, user: &str) -> Self {
        SessionKey {
            phone_number_id: phone_number_id.to_string(),
            user: user.to_string(),
        }
    }
}

/// A delivery status Meta reported for a message the bot sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRecord {
    /// The wamid of the message the status is about.
    pub message_id: String,
    /// sent, delivered, read, failed, played...
    pub status: String,
    /// When it happened: Meta's timestamp, Unix **seconds** (a [`SentRecord`]'s `at`
    /// is milliseconds).
    pub at: i64,
    pub recipient: Option<String>,
    /// Meta's error code for `failed` (e.g. 131047).
    pub error_code: Option<i64>,
    pub error_title: Option<String>,
}

/// A message the bot sent and WhatsApp accepted: who it went to and which node sent it,
/// so a later `failed` status can be matched back to the conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentRecord {
    /// The wamid WhatsApp gave it.
    pub message_id: String,
    pub key: SessionKey,
    pub flow: String,
    pub node: String,
    /// When Graph accepted it (Unix ms).
    pub at: i64,
}

#[derive(Debug)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "store: {}", self.0)
    }
}

impl std::error::Error for StoreError {}

/// A session store URL, understood: what `session.store` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// An SQLite file, relative to the bot folder unless absolute. One process at a
    /// time: a second instance on the same file is refused.
    Sqlite(PathBuf),
    /// A Redis server shared by several instances: the connection URL (without our
    /// `prefix` parameter) and the prefix of every key.
    Redis { url: String, prefix: String },
    /// Kept in memory, lost on restart (tests, throwaway setups).
    Memory,
}

/// Why a `session.store` URL cannot be used by this build: a message and a hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreUrlError {
    pub message: String,
    pub hint: String,
}

const STORE_HINT: &str = "sqlite://data/parlance.db for one instance, redis://host:6379/0 for several (memory:// keeps nothing across restarts)";

/// Reads a `session.store` URL without touching the disk or the network. The loader
/// (so `validate`) and [`open`] (so `serve`) both call it: a URL that passes here is
/// one `serve` opens.
pub fn parse_url(url: &str) -> Result<StoreUrl, StoreUrlError> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.trim().is_empty() {
            return Err(StoreUrlError {
                message: format!("\"{url}\" names no database file"),
                hint: "write the file after sqlite://, e.g. sqlite://data/parlance.db".into(),
            });
        }
        return Ok(StoreUrl::Sqlite(PathBuf::from(path)));
    }
    if url == "memory://" || url == "memory" {
        return Ok(StoreUrl::Memory);
    }
    if url.starts_with("redis://") || url.starts_with("rediss://") {
        return parse_redis(url);
    }
    let message = match url.split_once("://") {
        Some((scheme, _)) => format!("unknown session store \"{scheme}://\""),
        None => format!("\"{url}\" is not a store URL"),
    };
    Err(StoreUrlError {
        message,
        hint: STORE_HINT.into(),
    })
}

/// `redis://[user:password@]host[:port][/db][?prefix=NAME]`; the prefix defaults to
/// `parlance:`. Two bots on one Redis that must not see each other's users take
/// different prefixes.
fn parse_redis(url: &str) -> Result<StoreUrl, StoreUrlError> {
    let bad = |why: &str| StoreUrlError {
        message: format!("the Redis URL is not usable: {why}"),
        hint: "e.g. redis://127.0.0.1:6379/0 or redis://127.0.0.1:6379/0?prefix=shop:".into(),
    };
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut prefix = durable::redis::DEFAULT_PREFIX.to_string();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("prefix", value)) if !value.is_empty() => prefix = value.to_string(),
            _ => {
                return Err(bad(&format!(
                    "unknown parameter \"{pair}\" (only prefix=NAME is known)"
                )));
            }
        }
    }
    if prefix.contains(['{', '}']) {
        return Err(bad(
            "the prefix must not contain { or } (each user's keys carry their own cluster hash tag)",
        ));
    }
    let host = base
        .split_once("://")
        .map(|(_, rest)| rest.rsplit('@').next().unwrap_or(rest))
        .unwrap_or_default();
    if host.is_empty() || host.starts_with('/') {
        return Err(bad("it names no host"));
    }
    Ok(StoreUrl::Redis {
        url: base.to_string(),
        prefix,
    })
}

/// Opens the store a bot's `session.store` names (see [`parse_url`]): `sqlite://PATH`
/// (relative to the bot folder unless absolute; created with its folders on first use),
/// `redis://…` or `memory://`.
pub async fn open(url: &StoreUrl, bot_dir: &Path) -> Result<Arc<dyn Durable>, StoreError> {
    match url {
        StoreUrl::Sqlite(path) => {
            let path = if path.is_absolute() {
                path.clone()
            } else {
                bot_dir.join(path)
            };
            let opened =
                tokio::task::spawn_blocking(move || durable::sqlite::SqliteDurable::open(&path))
                    .await
                    .map_err(|e| StoreError(format!("opening the SQLite store failed: {e}")))??;
            Ok(Arc::new(opened))
        }
        StoreUrl::Redis { url, prefix } => Ok(Arc::new(
            durable::redis::RedisDurable::connect(url, prefix).await?,
        )),
        StoreUrl::Memory => Ok(Arc::new(durable::memory::MemoryDurable::default())),
    }
}

/// Decodes a stored session; a session from another format version, or one that no
/// longer parses, is dropped so the user starts afresh rather than being stuck.
pub(crate) fn decode(version: i64, data: &str) -> Option<Session> {
    if version != i64::from(SESSION_VERSION) {
        return None;
    }
    serde_json::from_str(data).ok()
}

pub(crate) fn encode(session: &Session) -> Result<String, StoreError> {
    serde_json::to_string(session).map_err(|e| StoreError(format!("cannot encode a session: {e}")))
}
