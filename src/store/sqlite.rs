//! The default store: one SQLite file (WAL mode), created on first use. Survives
//! restarts; several processes on one machine may share it.

use super::{SentRecord, SessionKey, StatusRecord, Store, StoreError, decode, encode};
use crate::engine::Session;
use crate::engine::session::SESSION_VERSION;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sessions (
    phone_number_id TEXT NOT NULL,
    user TEXT NOT NULL,
    version INTEGER NOT NULL,
    data TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (phone_number_id, user)
);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions (user);
CREATE INDEX IF NOT EXISTS sessions_updated ON sessions (updated_at);
CREATE TABLE IF NOT EXISTS seen_messages (
    message_id TEXT PRIMARY KEY,
    at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS seen_at ON seen_messages (at);
CREATE TABLE IF NOT EXISTS sent_messages (
    message_id TEXT PRIMARY KEY,
    phone_number_id TEXT NOT NULL,
    user TEXT NOT NULL,
    flow TEXT NOT NULL,
    node TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sent_at ON sent_messages (at);
CREATE TABLE IF NOT EXISTS statuses (
    message_id TEXT NOT NULL,
    status TEXT NOT NULL,
    at INTEGER NOT NULL,
    recipient TEXT,
    error_code INTEGER,
    error_title TEXT,
    PRIMARY KEY (message_id, status)
);
";

pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// A second, read-only connection for counting sessions (the `/metrics` gauge):
    /// WAL lets it read while `conn` writes, so a slow count never holds the lock that
    /// webhook handling and turns need.
    counter: Mutex<Connection>,
}

fn err(e: rusqlite::Error) -> StoreError {
    StoreError(e.to_string())
}

impl SqliteStore {
    /// Opens (or creates, with its folders) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError(format!("cannot create {}: {e}", dir.display())))?;
        }
        let conn = Connection::open(path)
            .map_err(|e| StoreError(format!("cannot open {}: {e}", path.display())))?;
        // WAL lets readers run while one writer writes; NORMAL is durable across a process
        // crash (the case that matters here) and much faster than FULL.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        let counter = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StoreError(format!("cannot open {} for reading: {e}", path.display())))?;
        counter
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            counter: Mutex::new(counter),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // SQLite keeps its own consistency; a panic elsewhere cannot corrupt it.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store for SqliteStore {
    fn load_session(&self, key: &SessionKey) -> Result<Option<Session>, StoreError> {
        let row: Option<(i64, String)> = self
            .conn()
            .prepare_cached(
                "SELECT version, data FROM sessions WHERE phone_number_id = ?1 AND user = ?2",
            )
            .and_then(|mut q| {
                q.query_row(params![key.phone_number_id, key.user], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()
            })
            .map_err(err)?;
        Ok(row.and_then(|(version, data)| decode(version, &data)))
    }

    fn save_session(&self, key: &SessionKey, session: &Session) -> Result<(), StoreError> {
        let data = encode(session)?;
        self.conn()
            .prepare_cached(
                "INSERT INTO sessions (phone_number_id, user, version, data, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (phone_number_id, user) DO UPDATE SET version = ?3, data = ?4, updated_at = ?5",
            )
            .and_then(|mut q| q.execute(params![key.phone_number_id, key.user, SESSION_VERSION, data, session.updated_at]))
            .map(|_| ())
            .map_err(err)
    }

    fn first_delivery(&self, message_id: &str, at: i64) -> Result<bool, StoreError> {
        let inserted = self
            .conn()
            .prepare_cached("INSERT OR IGNORE INTO seen_messages (message_id, at) VALUES (?1, ?2)")
            .and_then(|mut q| q.execute(params![message_id, at]))
            .map_err(err)?;
        Ok(inserted == 1)
    }

    fn record_status(&self, s: &StatusRecord) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached(
                "INSERT OR IGNORE INTO statuses (message_id, status, at, recipient, error_code, error_title)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut q| q.execute(params![s.message_id, s.status, s.at, s.recipient, s.error_code, s.error_title]))
            .map(|_| ())
            .map_err(err)
    }

    fn record_sent(&self, s: &SentRecord) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached(
                "INSERT OR REPLACE INTO sent_messages (message_id, phone_number_id, user, flow, node, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut q| q.execute(params![s.message_id, s.key.phone_number_id, s.key.user, s.flow, s.node, s.at]))
            .map(|_| ())
            .map_err(err)
    }

    fn sent(&self, message_id: &str) -> Result<Option<SentRecord>, StoreError> {
        self.conn()
            .prepare_cached("SELECT message_id, phone_number_id, user, flow, node, at FROM sent_messages WHERE message_id = ?1")
            .and_then(|mut q| {
                q.query_row(params![message_id], |r| {
                    Ok(SentRecord {
                        message_id: r.get(0)?,
                        key: SessionKey {
                            phone_number_id: r.get(1)?,
                            user: r.get(2)?,
                        },
                        flow: r.get(3)?,
                        node: r.get(4)?,
                        at: r.get(5)?,
                    })
                })
                .optional()
            })
            .map_err(err)
    }

    fn statuses(&self, message_id: &str) -> Result<Vec<StatusRecord>, StoreError> {
        let conn = self.conn();
        let mut q = conn
            .prepare_cached(
                "SELECT message_id, status, at, recipient, error_code, error_title FROM statuses
                 WHERE message_id = ?1 ORDER BY at, status",
            )
            .map_err(err)?;
        let rows = q
            .query_map(params![message_id], |r| {
                Ok(StatusRecord {
                    message_id: r.get(0)?,
                    status: r.get(1)?,
                    at: r.get(2)?,
                    recipient: r.get(3)?,
                    error_code: r.get(4)?,
                    error_title: r.get(5)?,
                })
            })
            .map_err(err)?;
        rows.collect::<Result<_, _>>().map_err(err)
    }

    fn ping(&self) -> Result<(), StoreError> {
        // On the reading connection, like the session count: a probe never queues
        // behind turns, and reading a table proves the file and its schema are there.
        // While a `/metrics` count runs on that connection the store is evidently
        // answering: say so rather than wait behind a count that may take seconds.
        let counter = match self.counter.try_lock() {
            Ok(c) => c,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Ok(()),
        };
        counter
            .prepare_cached("SELECT 1 FROM sessions LIMIT 1")
            .and_then(|mut s| s.exists([]))
            .map(|_| ())
            .map_err(err)
    }

    fn count_sessions(&self, since: i64) -> Result<usize, StoreError> {
        self.counter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .query_row(
                "SELECT COUNT(*) FROM sessions WHERE updated_at >= ?1",
                params![since],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as usize)
            .map_err(err)
    }

    fn delete_user(&self, user: &str) -> Result<usize, StoreError> {
        self.conn()
            .execute("DELETE FROM sessions WHERE user = ?1", params![user])
            .map_err(err)
    }

    fn purge(&self, sessions_before: i64, seen_before: i64) -> Result<usize, StoreError> {
        let conn = self.conn();
        let sessions = conn
            .execute(
                "DELETE FROM sessions WHERE updated_at < ?1",
                params![sessions_before],
            )
            .map_err(err)?;
        let seen = conn
            .execute(
                "DELETE FROM seen_messages WHERE at < ?1",
                params![seen_before],
            )
            .map_err(err)?;
        conn.execute(
            "DELETE FROM sent_messages WHERE at < ?1",
            params![seen_before],
        )
        .map_err(err)?;
        Ok(sessions + seen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests as behaviour;
    use std::sync::Arc;

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("data/parlance.db")).unwrap();
        (dir, store)
    }

    #[test]
    fn behaves_like_a_store() {
        behaviour::sessions_round_trip(&store().1);
        behaviour::first_delivery_is_exactly_once(&store().1);
        behaviour::statuses_are_kept_per_message(&store().1);
        behaviour::sent_messages_are_found_by_id(&store().1);
        behaviour::purge_removes_only_old_data(&store().1);
    }

    #[test]
    fn ping_does_not_wait_behind_a_session_count() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(SqliteStore::open(&dir.path().join("p.db")).unwrap());
        // A `/metrics` count holds the reading connection (here: for as long as we like).
        let counting = store.counter.lock().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let probe = std::sync::Arc::clone(&store);
        std::thread::spawn(move || {
            let _ = tx.send(probe.ping().is_ok());
        });
        let answered = rx.recv_timeout(std::time::Duration::from_secs(2));
        drop(counting);
        assert_eq!(answered, Ok(true), "the probe waited behind the count");
    }

    #[test]
    fn ping_answers_until_the_database_is_broken() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("parlance.db");
        let store = SqliteStore::open(&path).unwrap();
        store.ping().unwrap();
        Connection::open(&path)
            .unwrap()
            .execute_batch("DROP TABLE sessions")
            .unwrap();
        let e = store.ping().unwrap_err();
        assert_eq!(e.to_string(), "store: no such table: sessions");
    }

    #[test]
    fn a_restart_keeps_every_conversation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data/parlance.db");
        let key = SessionKey::new("1001", "4915112345678");
        let mut s = Session::new("4915112345678", 100);
        s.vars.insert("qty".into(), serde_json::json!(3));
        {
            let store = SqliteStore::open(&path).unwrap();
            store.save_session(&key, &s).unwrap();
            assert!(store.first_delivery("wamid.1", 100).unwrap());
        }
        let reopened = SqliteStore::open(&path).unwrap();
        assert_eq!(reopened.load_session(&key).unwrap(), Some(s));
        assert!(
            !reopened.first_delivery("wamid.1", 200).unwrap(),
            "seen ids survive a restart"
        );
    }

    #[test]
    fn concurrent_redeliveries_are_claimed_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        // Two processes' worth of connections to one file, eight threads each trying.
        let stores = [
            Arc::new(SqliteStore::open(&path).unwrap()),
            Arc::new(SqliteStore::open(&path).unwrap()),
        ];
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let store = Arc::clone(&stores[i % 2]);
                std::thread::spawn(move || {
                    (0..50)
                        .filter(|n| store.first_delivery(&format!("wamid.{n}"), 1).unwrap())
                        .count()
                })
            })
            .collect();
        let claimed: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(claimed, 50);
    }

    #[test]
    fn an_old_session_format_starts_afresh() {
        let (_dir, store) = store();
        let key = SessionKey::new("1001", "u");
        store.save_session(&key, &Session::new("u", 1)).unwrap();
        store
            .conn()
            .execute("UPDATE sessions SET version = 0", [])
            .unwrap();
        assert_eq!(store.load_session(&key).unwrap(), None);
        store
            .conn()
            .execute(
                "UPDATE sessions SET version = ?1, data = 'not json'",
                params![SESSION_VERSION],
            )
            .unwrap();
        assert_eq!(store.load_session(&key).unwrap(), None);
    }

    #[test]
    fn open_reports_a_path_it_cannot_use() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("file"), "x").unwrap();
        let e = SqliteStore::open(&dir.path().join("file/sub/p.db"))
            .err()
            .unwrap();
        assert!(e.0.starts_with("cannot create"), "{e}");
        assert_eq!(
            crate::store::open("redis://localhost", dir.path())
                .err()
                .unwrap()
                .0,
            "this build cannot keep sessions in Redis (\"redis://localhost\"); hint: this build stores sessions in SQLite: sqlite://data/parlance.db; Redis comes with the release that serves one number from several instances"
        );
    }

    #[test]
    fn counting_sessions_does_not_wait_for_the_connection_turns_use() {
        let (_dir, store) = store();
        let store = Arc::new(store);
        store
            .save_session(&SessionKey::new("1001", "u"), &Session::new("u", 100))
            .unwrap();
        // A turn (or webhook) holds the main connection while the count runs.
        let held = store.conn();
        let counting = Arc::clone(&store);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(counting.count_sessions(0).map_err(|e| e.0));
        });
        let counted = rx.recv_timeout(std::time::Duration::from_secs(5));
        drop(held);
        assert_eq!(
            counted,
            Ok(Ok(1)),
            "the count finished while the lock was held"
        );
    }
}
