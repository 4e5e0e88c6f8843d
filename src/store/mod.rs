//! Where sessions, seen message ids and delivery statuses live between turns.
//!
//! `Store` is the seam: SQLite is the default (a file, nothing to install), memory is
//! for tests, and a Redis implementation for several instances plugs in here without
//! touching the engine or the handlers. Calls are synchronous and short; the server runs
//! them off its async threads.
//!
//! Architecture Invariant: a store keeps data, it does not decide. Expiry is the
//! engine's (a session carries `updated_at`); `purge` only removes what is long dead.

pub mod durable;
pub mod memory;
pub mod sqlite;

use crate::engine::Session;
use crate::engine::session::SESSION_VERSION;
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

pub trait Store: Send + Sync {
    /// The user's session, or `None` for a user seen for the first time (or whose
    /// stored session has an older format: they start afresh).
    fn load_session(&self, key: &SessionKey) -> Result<Option<Session>, StoreError>;

    fn save_session(&self, key: &SessionKey, session: &Session) -> Result<(), StoreError>;

    /// Records an inbound message id; `false` when it was seen before (Meta redelivers,
    /// sometimes to several instances at once: exactly one caller gets `true`).
    fn first_delivery(&self, message_id: &str, at: i64) -> Result<bool, StoreError>;

    fn record_status(&self, status: &StatusRecord) -> Result<(), StoreError>;

    fn record_sent(&self, sent: &SentRecord) -> Result<(), StoreError>;

    /// The message with this wamid, if this store sent it.
    fn sent(&self, message_id: &str) -> Result<Option<SentRecord>, StoreError>;

    /// Every status recorded for one sent message, oldest first.
    fn statuses(&self, message_id: &str) -> Result<Vec<StatusRecord>, StoreError>;

    /// Answers when the store can be read (`/readyz`): cheap, and never waits behind
    /// the writes of turns.
    fn ping(&self) -> Result<(), StoreError>;

    /// How many sessions were active at or after `since` (Unix seconds).
    fn count_sessions(&self, since: i64) -> Result<usize, StoreError>;

    /// Forgets a user: their sessions for every number (erasure on request).
    fn delete_user(&self, user: &str) -> Result<usize, StoreError>;

    /// Removes sessions idle since before `sessions_before`, and inbound ids seen and
    /// sent messages recorded before `seen_before` (Meta stops redelivering and
    /// reporting after days, not months). Returns how many went.
    fn purge(&self, sessions_before: i64, seen_before: i64) -> Result<usize, StoreError>;
}

/// A session store URL, understood: what `session.store` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// An SQLite file, relative to the bot folder unless absolute.
    Sqlite(PathBuf),
    /// Kept in memory, lost on restart (tests, throwaway setups).
    Memory,
}

/// Why a `session.store` URL cannot be used by this build: a message and a hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreUrlError {
    pub message: String,
    pub hint: String,
}

/// Reads a `session.store` URL without touching the disk. The loader (so `validate`)
/// and [`open`] (so `serve`) both call it: a URL that passes here is one `serve` opens.
pub fn parse_url(url: &str) -> Result<StoreUrl, StoreUrlError> {
    const SQLITE_HINT: &str = "this build stores sessions in SQLite: sqlite://data/parlance.db (or memory:// for sessions lost on restart)";
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
    let message = match url.split_once("://") {
        Some(("redis" | "rediss", _)) => {
            return Err(StoreUrlError {
                message: format!("this build cannot keep sessions in Redis (\"{url}\")"),
                hint: "this build stores sessions in SQLite: sqlite://data/parlance.db; Redis comes with the release that serves one number from several instances".into(),
            });
        }
        Some((scheme, _)) => format!("unknown session store \"{scheme}://\""),
        None => format!("\"{url}\" is not a store URL"),
    };
    Err(StoreUrlError {
        message,
        hint: SQLITE_HINT.into(),
    })
}

/// Opens the store a bot's `session.store` names (see [`parse_url`]): `sqlite://PATH`
/// (relative to the bot folder unless absolute; created with its folders on first use)
/// or `memory://`.
pub fn open(url: &str, bot_dir: &Path) -> Result<Arc<dyn Store>, StoreError> {
    match parse_url(url) {
        Ok(StoreUrl::Sqlite(path)) => {
            let path = if path.is_absolute() {
                path
            } else {
                bot_dir.join(path)
            };
            Ok(Arc::new(sqlite::SqliteStore::open(&path)?))
        }
        Ok(StoreUrl::Memory) => Ok(Arc::new(memory::MemoryStore::default())),
        Err(e) => Err(StoreError(format!("{}; hint: {}", e.message, e.hint))),
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

#[cfg(test)]
pub(crate) mod tests {
    //! The behaviour every store must have; each implementation runs these.
    use super::*;

    pub fn sessions_round_trip(store: &dyn Store) {
        let key = SessionKey::new("1001", "4915112345678");
        assert_eq!(store.load_session(&key).unwrap(), None);
        let mut s = Session::new("4915112345678", 100);
        s.vars.insert("topic".into(), serde_json::json!("sales"));
        store.save_session(&key, &s).unwrap();
        assert_eq!(store.load_session(&key).unwrap(), Some(s.clone()));
        s.turn = 7;
        store.save_session(&key, &s).unwrap();
        assert_eq!(store.load_session(&key).unwrap().unwrap().turn, 7);
        // Another number, same user: another session.
        assert_eq!(
            store
                .load_session(&SessionKey::new("1002", "4915112345678"))
                .unwrap(),
            None
        );
        assert_eq!(store.delete_user("4915112345678").unwrap(), 1);
        assert_eq!(store.load_session(&key).unwrap(), None);
    }

    pub fn first_delivery_is_exactly_once(store: &(dyn Store + 'static)) {
        assert!(store.first_delivery("wamid.1", 10).unwrap());
        assert!(!store.first_delivery("wamid.1", 11).unwrap());
        assert!(store.first_delivery("wamid.2", 12).unwrap());
    }

    pub fn statuses_are_kept_per_message(store: &dyn Store) {
        let failed = StatusRecord {
            message_id: "wamid.out.1".into(),
            status: "failed".into(),
            at: 20,
            recipient: Some("4915112345678".into()),
            error_code: Some(131047),
            error_title: Some("Re-engagement message".into()),
        };
        let sent = StatusRecord {
            status: "sent".into(),
            at: 10,
            error_code: None,
            error_title: None,
            ..failed.clone()
        };
        store.record_status(&failed).unwrap();
        store.record_status(&sent).unwrap();
        store.record_status(&sent).unwrap();
        assert_eq!(store.statuses("wamid.out.1").unwrap(), vec![sent, failed]);
        assert!(store.statuses("wamid.other").unwrap().is_empty());
    }

    pub fn sent_messages_are_found_by_id(store: &dyn Store) {
        let sent = SentRecord {
            message_id: "wamid.out.9".into(),
            key: SessionKey::new("1001", "4915112345678"),
            flow: "main".into(),
            node: "welcome".into(),
            at: 50,
        };
        assert_eq!(store.sent("wamid.out.9").unwrap(), None);
        store.record_sent(&sent).unwrap();
        assert_eq!(store.sent("wamid.out.9").unwrap(), Some(sent));
    }

    pub fn purge_removes_only_old_data(store: &dyn Store) {
        let old = SessionKey::new("1001", "old");
        let new = SessionKey::new("1001", "new");
        store.save_session(&old, &Session::new("old", 100)).unwrap();
        store
            .save_session(&new, &Session::new("new", 5000))
            .unwrap();
        store.first_delivery("wamid.old", 100).unwrap();
        store.first_delivery("wamid.new", 5000).unwrap();
        assert_eq!(store.count_sessions(1000).unwrap(), 1);
        assert_eq!(store.purge(1000, 1000).unwrap(), 2);
        assert_eq!(store.load_session(&old).unwrap(), None);
        assert!(store.load_session(&new).unwrap().is_some());
        assert!(
            store.first_delivery("wamid.old", 6000).unwrap(),
            "a purged id is new again"
        );
        assert!(!store.first_delivery("wamid.new", 6000).unwrap());
    }
}
