//! The durable store's tables. All prefixed `d_`, so one file can also hold today's
//! `SqliteStore` tables.

use rusqlite::{Connection, OptionalExtension};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS d_meta (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS d_items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    phone_number_id TEXT NOT NULL,
    user TEXT NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS d_items_key ON d_items (phone_number_id, user, id);
-- The inbox and the outbox are queues, nearly empty when all is well: erasing a user
-- scans them rather than every turn keeping a per-user index up to date. (Older
-- files had these indexes.)
DROP INDEX IF EXISTS d_items_user;
DROP INDEX IF EXISTS d_outbox_user;
CREATE TABLE IF NOT EXISTS d_dedupe (
    key TEXT PRIMARY KEY,
    at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS d_dedupe_at ON d_dedupe (at);
-- Unused since leases moved to memory (sqlite/leases.rs); kept for older files.
CREATE TABLE IF NOT EXISTS d_leases (
    phone_number_id TEXT NOT NULL,
    user TEXT NOT NULL,
    holder TEXT NOT NULL,
    token INTEGER NOT NULL,
    until INTEGER NOT NULL,
    PRIMARY KEY (phone_number_id, user)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS d_leases_user ON d_leases (user);
-- Keyed by user first, so an erasure (by user, on every number) needs no index of
-- its own; WITHOUT ROWID, so a turn's save writes one B-tree besides `updated_at`'s
-- (older files had a rowid table, its key index and a user index: `migrate`).
CREATE TABLE IF NOT EXISTS d_sessions (
    phone_number_id TEXT NOT NULL,
    user TEXT NOT NULL,
    version INTEGER NOT NULL,
    data TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (user, phone_number_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS d_sessions_updated ON d_sessions (updated_at);
-- The table's key serves lookups by user (an older build, run on this file, adds it).
DROP INDEX IF EXISTS d_sessions_user;
CREATE TABLE IF NOT EXISTS d_outbox (
    phone_number_id TEXT NOT NULL,
    user TEXT NOT NULL,
    turn INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    body TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    ambiguous INTEGER NOT NULL,
    not_before INTEGER NOT NULL,
    PRIMARY KEY (phone_number_id, user, turn, idx)
);
CREATE INDEX IF NOT EXISTS d_outbox_due ON d_outbox (not_before);
CREATE TABLE IF NOT EXISTS d_dead (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    phone_number_id TEXT NOT NULL,
    user TEXT NOT NULL,
    turn INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    body TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    reason TEXT NOT NULL,
    since INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS d_dead_number ON d_dead (phone_number_id, id);
CREATE INDEX IF NOT EXISTS d_dead_user ON d_dead (user);
CREATE TABLE IF NOT EXISTS d_timers (
    phone_number_id TEXT NOT NULL,
    user TEXT NOT NULL,
    name TEXT NOT NULL,
    due INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (phone_number_id, user, name)
);
CREATE INDEX IF NOT EXISTS d_timers_due ON d_timers (due);
CREATE INDEX IF NOT EXISTS d_timers_user ON d_timers (user);
CREATE TABLE IF NOT EXISTS d_sent (
    message_id TEXT PRIMARY KEY,
    phone_number_id TEXT NOT NULL,
    user TEXT NOT NULL,
    flow TEXT NOT NULL,
    node TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS d_sent_at ON d_sent (at);
CREATE INDEX IF NOT EXISTS d_sent_user ON d_sent (user);
CREATE TABLE IF NOT EXISTS d_statuses (
    message_id TEXT NOT NULL,
    status TEXT NOT NULL,
    at INTEGER NOT NULL,
    recipient TEXT,
    error_code INTEGER,
    error_title TEXT,
    PRIMARY KEY (message_id, status)
);
CREATE INDEX IF NOT EXISTS d_statuses_at ON d_statuses (at);
CREATE INDEX IF NOT EXISTS d_statuses_recipient ON d_statuses (recipient);
CREATE TABLE IF NOT EXISTS d_quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    phone_number_id TEXT,
    user TEXT,
    reason TEXT NOT NULL,
    data TEXT
);
CREATE INDEX IF NOT EXISTS d_quarantine_user ON d_quarantine (user);
-- Handovers (store::durable::handover): one row each, their messages in the order
-- added (seq). Listed newest first, by number and state.
CREATE TABLE IF NOT EXISTS d_handovers (
    id TEXT PRIMARY KEY,
    phone_number_id TEXT NOT NULL,
    user TEXT NOT NULL,
    queue TEXT,
    state TEXT NOT NULL,
    agent TEXT,
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    ended INTEGER,
    status TEXT
);
CREATE INDEX IF NOT EXISTS d_handovers_created ON d_handovers (created DESC, id DESC);
CREATE INDEX IF NOT EXISTS d_handovers_user ON d_handovers (user);
CREATE TABLE IF NOT EXISTS d_handover_messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    handover_id TEXT NOT NULL,
    user TEXT NOT NULL,
    author TEXT NOT NULL,
    at INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS d_handover_messages_id ON d_handover_messages (handover_id, seq);
CREATE INDEX IF NOT EXISTS d_handover_messages_user ON d_handover_messages (user);
";

/// Brings a file made by an older build to [`SCHEMA`]'s shape (run after it, which
/// creates what is missing but leaves an existing table as it is). One transaction
/// (rolled back when dropped on an error): a crash half way leaves the file as it was.
pub(super) fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let sessions: Option<String> = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'd_sessions'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if sessions.is_some_and(|sql| !sql.contains("WITHOUT ROWID")) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(
            "CREATE TABLE d_sessions_new (
                 phone_number_id TEXT NOT NULL,
                 user TEXT NOT NULL,
                 version INTEGER NOT NULL,
                 data TEXT NOT NULL,
                 updated_at INTEGER NOT NULL,
                 PRIMARY KEY (user, phone_number_id)
             ) WITHOUT ROWID;
             INSERT INTO d_sessions_new (phone_number_id, user, version, data, updated_at)
                 SELECT phone_number_id, user, version, data, updated_at FROM d_sessions;
             DROP TABLE d_sessions;
             ALTER TABLE d_sessions_new RENAME TO d_sessions;
             CREATE INDEX d_sessions_updated ON d_sessions (updated_at);",
        )?;
        tx.commit()?;
        tracing::info!("the SQLite store's sessions table was rebuilt in the new layout");
    }
    Ok(())
}
