//! [`SqliteDurable`]: the durable store in one SQLite file (WAL), the embedded default.
//!
//! ## Design
//! - **One writer.** SQLite lets one transaction write at a time whatever we do; with
//!   several writer connections they queue on its file lock with busy-waits and
//!   retries. So every write goes to one connection on one dedicated thread, fed by a
//!   channel: no lock contention, no `SQLITE_BUSY`, and no blocking-pool thread per call
//!   (the old store's cost: hundreds of parked threads).
//! - **Group commit.** The writer takes the first waiting write and every write that
//!   arrived meanwhile (up to [`MAX_BATCH`]; when several were waiting, it first yields
//!   its core once, so threads about to queue writes get to), and runs them in one
//!   transaction, without
//!   savepoints (each would copy every page its write touches). A write that fails (or
//!   is fenced) before changing anything just drops out; one that fails after changing
//!   rows makes the batch start over with a savepoint per write, so it is rolled back
//!   alone; writes are closures that may run twice (`threads`). Each caller
//!   is answered only after the transaction committed, so an answer always means
//!   "durable". Under load a commit carries many turns, which is where the throughput
//!   comes from; alone, a write commits at once (no waiting for a batch to fill).
//! - **Reads** use read-only connections of their own ([`Readers`]): WAL lets them read
//!   the last committed state while the writer writes. A caller that awaited a write
//!   and then reads sees it. A point lookup (the next item, a session) runs on the
//!   caller's thread: it takes microseconds, less than handing it to another thread
//!   and waking the caller again (which, several times a message, was most of the
//!   serving cost). Scans (the scanner, admin listings) go to tokio's blocking pool.
//! - **Sessions committed last stay in memory** (`sessions`): the writer fills that
//!   cache in commit order with what it committed, so a user's next turn skips the read.
//! - **Durability.** WAL with `synchronous=NORMAL`: a committed transaction survives the
//!   process being killed (the OS has it); a power loss may lose the last commits
//!   (FULL would fsync every commit, several times slower). Checkpoints (copying the
//!   WAL into the file, then two `fsync`s) run on a thread and connection of their own,
//!   so commits do not wait for them; the writer checkpoints itself only when the WAL
//!   has grown past ~32 MiB.
//! - **One process per file.** Leases are only as good as the clock and the file they
//!   live in; two processes on one file would also fight for the writer lock. `open`
//!   takes an exclusive OS lock on `<file>.lock` and fails clearly when another process
//!   holds it; several instances use Redis.
//! - **Leases and fencing** live in memory (`leases`: the file lock makes this process
//!   the file's only user, so no lease has to outlive it, and leases cost no commits);
//!   every leased write checks its lease in the writer's transaction. Tokens come from
//!   one counter (`d_meta.last_token`, reserved in blocks), so a user's tokens keep
//!   growing across releases, expiries, erasure and restarts.
//! - **Item ids** come from the writer's counter (`ids`), kept in `d_items`'s
//!   `sqlite_sequence` row in the same commits as the ids it gave, and dead-letter ids
//!   are `AUTOINCREMENT`: never reused, so a commit for a handled item can never match
//!   a newer one. A turn on the direct path takes an id without storing its item.
//! - **Bad rows** (an item kind from a newer version, a value of the wrong type) are
//!   moved to `d_quarantine` with a log line when read, so a user is never stuck behind
//!   them and nothing panics.
//!
//! Tables are prefixed `d_` so the same file can also hold today's `SqliteStore` tables.
//! A file an older build made is brought to today's layout at open (`schema::migrate`).

use super::handover::{Changed, Handover, HandoverChange, HandoverFilter, HandoverMessage};
use super::{
    Accepted, CommitError, DeadLetter, Direct, DirectTurn, Durable, Item, ItemId, ItemKind, Lease,
    Millis, NewItem, NewTimer, OutKey, Outgoing, Peek, TurnCommit, UserData, memory::after,
};
use crate::engine::Session;
use crate::engine::session::SESSION_VERSION;
use crate::store::{SentRecord, SessionKey, StatusRecord, StoreError, decode, encode};
use ids::ItemIds;
use leases::{Leases, NeedTokens, TOKEN_BLOCK};
use lock::lock;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};
use schema::SCHEMA;
use sessions::SessionCache;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use threads::{Pending, WriteError, WriteJob, WriteResult, checkpoint_loop, wal_hook, write_loop};
use tokio::sync::oneshot;

/// The most writes one transaction carries: bounds how long the first caller of a
/// batch waits behind the others.
pub const MAX_BATCH: usize = 256;
/// Idle read connections kept open; more are opened when more reads run at once.
const IDLE_READERS: usize = 8;

// The user's first item and first outgoing message, read at every step of a worker.
// `+?1` rather than `?1`: the same value, and the same index search, but SQLite (3.47
// on) no longer re-compiles the statement each time a new value is bound, which it does
// for a bare parameter compared in a query with an ORDER BY the index gives. Without the
// `+` that re-compiling was a quarter of the server's CPU under load.
// (`tests::hot_reads_are_compiled_once` keeps it so.)
pub(super) const NEXT_ITEM: &str = "SELECT id, kind, body, at FROM d_items
     WHERE phone_number_id = +?1 AND user = +?2 ORDER BY id LIMIT 1";
// Whether the user has an item waiting (a direct turn must not overtake it). No ORDER
// BY, so bare parameters (and the `d_items_key` index) do not cost a re-compile.
pub(super) const USER_HAS_ITEMS: &str =
    "SELECT 1 FROM d_items WHERE phone_number_id = ?1 AND user = ?2 LIMIT 1";
pub(super) const NEXT_OUTGOING: &str =
    "SELECT rowid, turn, idx, body, attempts, ambiguous, not_before FROM d_outbox
     WHERE phone_number_id = +?1 AND user = +?2 ORDER BY turn, idx LIMIT 1";

fn err(e: rusqlite::Error) -> StoreError {
    StoreError(e.to_string())
}
/// The durable store on one SQLite file; see the module docs.
pub struct SqliteDurable {
    path: PathBuf,
    writes: Option<mpsc::Sender<Box<dyn WriteJob>>>,
    readers: Arc<Readers>,
    threads: Vec<JoinHandle<()>>,
    /// Transactions committed so far.
    commits: Arc<AtomicU64>,
    /// Who holds which user's lease (see `leases`).
    leases: Arc<Leases>,
    /// The sessions committed last (see `sessions`).
    sessions: Arc<SessionCache>,
    /// The writer's item id counter (see `ids`).
    ids: Arc<ItemIds>,
    /// Held (and so the OS lock) until the threads above have stopped.
    _lock: Option<File>,
}

impl std::fmt::Debug for SqliteDurable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteDurable")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Drop for SqliteDurable {
    fn drop(&mut self) {
        // Closing the channels ends the threads once the work already sent is done;
        // the file lock goes last, so a new `open` never runs beside our last commit.
        self.writes.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // Idle read connections close before the lock goes too (a scan still running
        // on the blocking pool closes its own when it ends).
        self.readers
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self._lock.take();
    }
}

impl SqliteDurable {
    /// Opens (or creates, with its folders) the store at `path`. Fails when another
    /// process has it open.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError(format!("cannot create {}: {e}", dir.display())))?;
        }
        let lock = lock(path)?;
        let mut writer = Connection::open(path)
            .map_err(|e| StoreError(format!("cannot open {}: {e}", path.display())))?;
        writer
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        writer
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        // Writes of a group commit run in savepoints; their undo pages stay in memory
        // instead of a temporary file.
        writer
            .pragma_update(None, "temp_store", "MEMORY")
            .map_err(err)?;
        // Only for today's SqliteStore sharing the file: our own writes never wait.
        writer.busy_timeout(Duration::from_secs(5)).map_err(err)?;
        writer.execute_batch(SCHEMA).map_err(err)?;
        schema::migrate(&writer).map_err(err)?;
        let ids = Arc::new(ItemIds::open(&writer).map_err(err)?);
        // Leases live in memory (see `leases`); rows an earlier version kept belong to
        // a process that is gone (the file lock proves it).
        writer.execute("DELETE FROM d_leases", []).map_err(err)?;
        let last_token: i64 = writer
            .query_row(
                "SELECT COALESCE((SELECT value FROM d_meta WHERE name = 'last_token'), 0)",
                [],
                |r| r.get(0),
            )
            .map_err(err)?;
        let leases = Arc::new(Leases::new(uint(last_token)));

        let mut threads = Vec::with_capacity(2);
        // Checkpoints run on their own thread and connection (see `checkpoint_loop`);
        // the hook replaces SQLite's automatic checkpoint on the writer.
        let checkpointer = Connection::open(path)
            .map_err(|e| StoreError(format!("cannot open {}: {e}", path.display())))?;
        checkpointer
            .busy_timeout(Duration::from_secs(5))
            .map_err(err)?;
        checkpointer
            .pragma_update(None, "cache_size", -64)
            .map_err(err)?;
        let (nudge, nudges) = mpsc::sync_channel(1);
        writer.wal_hook(Some(wal_hook(nudge))).map_err(err)?;
        threads.push(
            std::thread::Builder::new()
                .name("parlance-sqlite-checkpoint".into())
                .spawn(move || checkpoint_loop(checkpointer, nudges))
                .map_err(|e| StoreError(format!("cannot start the SQLite checkpointer: {e}")))?,
        );
        let (writes, write_rx) = mpsc::channel::<Box<dyn WriteJob>>();
        let commits = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&commits);
        let sessions = Arc::new(SessionCache::new());
        let staged = Arc::clone(&sessions);
        let counter = Arc::clone(&ids);
        threads.push(
            std::thread::Builder::new()
                .name("parlance-sqlite-writer".into())
                .spawn(move || write_loop(writer, write_rx, &counted, &staged, &counter))
                .map_err(|e| StoreError(format!("cannot start the SQLite writer: {e}")))?,
        );
        let readers = Arc::new(Readers {
            path: path.to_path_buf(),
            idle: Mutex::new(Vec::new()),
        });
        // Opened now, so a file that cannot be read fails here rather than at a turn.
        readers.read(|_| Ok(()))?;
        Ok(SqliteDurable {
            path: path.to_path_buf(),
            writes: Some(writes),
            readers,
            threads,
            commits,
            leases,
            sessions,
            ids,
            _lock: Some(lock),
        })
    }

    /// How many transactions the writer committed (each carries one or more writes).
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Runs `work` in the next group commit and answers after it committed.
    async fn write<T, F>(&self, work: F) -> WriteResult<T>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> WriteResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Pending {
            work,
            out: None,
            reply,
        });
        let sent = self.writes.as_ref().is_some_and(|w| w.send(job).is_ok());
        if !sent {
            return Err(WriteError::Store(stopped("writer")));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(WriteError::Store(stopped("writer"))))
    }

    /// A write that cannot be fenced (no lease involved).
    async fn write_plain<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> WriteResult<T> + Send + 'static,
    {
        self.write(work).await.map_err(|e| match e {
            WriteError::Store(e) => e,
            WriteError::Fenced => StoreError("an unleased write was fenced".into()),
        })
    }

    /// A write under a lease.
    async fn write_leased<T, F>(&self, work: F) -> Result<T, CommitError>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> WriteResult<T> + Send + 'static,
    {
        self.write(work).await.map_err(|e| match e {
            WriteError::Store(e) => CommitError::Store(e),
            WriteError::Fenced => CommitError::Fenced,
        })
    }

    /// A point lookup, on the caller's thread (see the module docs).
    #[allow(clippy::unused_async)] // async like the rest of the store's calls
    async fn read<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Connection) -> Result<T, StoreError>,
    {
        self.readers.read(work)
    }

    /// A scan that may read many rows, on tokio's blocking pool.
    async fn scan<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let readers = Arc::clone(&self.readers);
        tokio::task::spawn_blocking(move || readers.read(work))
            .await
            .unwrap_or_else(|e| Err(StoreError(format!("an SQLite scan failed: {e}"))))
    }

    /// The user's first row of `sql` (whose parameters are the phone number id and the
    /// user), read with `row`. An unreadable one is moved to `d_quarantine` and the next
    /// one read, so a user is never stuck behind it.
    async fn first_readable<T>(
        &self,
        key: &SessionKey,
        sql: &'static str,
        row: fn(&SessionKey, &Row) -> Result<T, BadRow>,
    ) -> Result<Option<T>, StoreError> {
        loop {
            let found = self
                .read(|conn| {
                    conn.prepare_cached(sql)
                        .and_then(|mut q| {
                            q.query_row(params![key.phone_number_id, key.user], |r| Ok(row(key, r)))
                                .optional()
                        })
                        .map_err(err)
                })
                .await?;
            match found {
                None => return Ok(None),
                Some(Ok(found)) => return Ok(Some(found)),
                // Each pass moves one row away, so this ends.
                Some(Err(bad)) => self.quarantine(bad).await?,
            }
        }
    }

    /// Moves one bad row aside, with a log line, so its user is not stuck behind it.
    async fn quarantine(&self, bad: BadRow) -> Result<(), StoreError> {
        self.write_plain(move |conn| Ok(quarantine(conn, &bad)?))
            .await
    }
}

/// Moves one bad row to `d_quarantine`, with a log line, inside the caller's write.
fn quarantine(conn: &Connection, bad: &BadRow) -> rusqlite::Result<()> {
    tracing::warn!(
        table = bad.table,
        rowid = bad.rowid,
        reason = %bad.reason,
        "moved an unreadable stored row to d_quarantine"
    );
    let data = format!("SELECT * FROM {} WHERE rowid = ?1", bad.table);
    // The row as text (whatever its types) for whoever looks at it later.
    let row: Option<(Option<String>, Option<String>, String)> = conn
        .query_row(&data, params![bad.rowid], |r| {
            let cols = r.as_ref().column_count();
            let mut text = Vec::with_capacity(cols);
            for i in 0..cols {
                let v: rusqlite::types::Value = r.get(i)?;
                text.push(format!("{v:?}"));
            }
            let pnid = r.get::<_, String>("phone_number_id").ok();
            let user = r.get::<_, String>("user").ok();
            Ok((pnid, user, text.join(", ")))
        })
        .optional()?;
    if let Some((pnid, user, text)) = row {
        conn.prepare_cached(
            "INSERT INTO d_quarantine (source, phone_number_id, user, reason, data) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![bad.table, pnid, user, bad.reason, text])?;
        conn.execute(
            &format!("DELETE FROM {} WHERE rowid = ?1", bad.table),
            params![bad.rowid],
        )?;
    }
    Ok(())
}

/// Read-only connections to the file, lent to one read at a time.
struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    fn read<T>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.open()?,
        };
        let out = work(&conn);
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < IDLE_READERS {
            idle.push(conn);
        }
        out
    }

    fn open(&self) -> Result<Connection, StoreError> {
        let path = &self.path;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StoreError(format!("cannot open {} for reading: {e}", path.display())))?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
        // A small page cache (SQLite's default is 2 MB a connection): reads are point
        // lookups of recent rows, which the OS's cache holds anyway.
        conn.pragma_update(None, "cache_size", -256).map_err(err)?;
        Ok(conn)
    }
}

fn stopped(which: &str) -> StoreError {
    StoreError(format!("the SQLite {which} thread stopped"))
}

/// Everything kept about `key` ([`Durable::export_user`]), read on `conn`.
fn export_rows(conn: &Connection, key: &SessionKey) -> Result<UserData, StoreError> {
    let k = params![key.phone_number_id, key.user];
    let session: Option<(i64, String)> = conn
        .prepare("SELECT version, data FROM d_sessions WHERE phone_number_id = ?1 AND user = ?2")
        .and_then(|mut q| q.query_row(k, |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(err)?;
    let mut data = UserData {
        session: session.and_then(|(version, data)| decode(version, &data)),
        ..UserData::default()
    };
    let mut q = conn
        .prepare("SELECT id, kind, body, at FROM d_items WHERE phone_number_id = ?1 AND user = ?2 ORDER BY id")
        .map_err(err)?;
    for row in q.query_map(k, |r| Ok(item_row(key, r))).map_err(err)? {
        data.items.extend(row.map_err(err)?.ok());
    }
    let mut q = conn
        .prepare("SELECT rowid, turn, idx, body, attempts, ambiguous, not_before FROM d_outbox WHERE phone_number_id = ?1 AND user = ?2 ORDER BY turn, idx")
        .map_err(err)?;
    for row in q.query_map(k, |r| Ok(outgoing_row(key, r))).map_err(err)? {
        data.outgoing.extend(row.map_err(err)?.ok());
    }
    let mut q = conn
        .prepare("SELECT rowid, phone_number_id, user, name, due, body FROM d_timers WHERE phone_number_id = ?1 AND user = ?2 ORDER BY due, name")
        .map_err(err)?;
    for row in q.query_map(k, |r| Ok(timer_row(r))).map_err(err)? {
        data.timers.extend(row.map_err(err)?.ok().map(|(_, t)| t));
    }
    let mut q = conn
        .prepare("SELECT id, phone_number_id, user, turn, idx, body, attempts, reason, since FROM d_dead WHERE phone_number_id = ?1 AND user = ?2 ORDER BY id")
        .map_err(err)?;
    for row in q.query_map(k, |r| Ok(dead_row(r))).map_err(err)? {
        data.dead_letters.extend(row.map_err(err)?.ok());
    }
    let mut q = conn
        .prepare("SELECT rowid, message_id, phone_number_id, user, flow, node, at FROM d_sent WHERE phone_number_id = ?1 AND user = ?2 ORDER BY at, message_id")
        .map_err(err)?;
    for row in q.query_map(k, |r| Ok(sent_row(r))).map_err(err)? {
        data.sent.extend(row.map_err(err)?.ok());
    }
    let mut q = conn
        .prepare("SELECT message_id, status, at, recipient, error_code, error_title FROM d_statuses WHERE message_id = ?1 ORDER BY at, status")
        .map_err(err)?;
    for sent in &data.sent {
        let rows = q
            .query_map(params![sent.message_id], |r| {
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
        for row in rows {
            data.statuses.push(row.map_err(err)?);
        }
    }
    data.handovers = handovers::export(conn, key)?;
    Ok(data)
}

// ---- values in and out of SQLite

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn uint(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn until(now: Millis, ttl: Duration) -> Millis {
    now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
}

/// A stored row this build cannot read.
struct BadRow {
    table: &'static str,
    rowid: i64,
    reason: String,
}

fn item_row(key: &SessionKey, r: &Row) -> Result<Item, BadRow> {
    let rowid: i64 = r.get(0).unwrap_or(0);
    let bad = |reason: String| BadRow {
        table: "d_items",
        rowid,
        reason,
    };
    let kind: String = r.get(1).map_err(|e| bad(e.to_string()))?;
    let kind =
        ItemKind::parse(&kind).ok_or_else(|| bad(format!("unknown item kind \"{kind}\"")))?;
    Ok(Item {
        id: ItemId(uint(rowid)),
        key: key.clone(),
        kind,
        body: r.get(2).map_err(|e| bad(e.to_string()))?,
        at: r.get(3).map_err(|e| bad(e.to_string()))?,
    })
}

fn outgoing_row(key: &SessionKey, r: &Row) -> Result<Outgoing, BadRow> {
    let rowid: i64 = r.get(0).unwrap_or(0);
    let bad = |e: rusqlite::Error| BadRow {
        table: "d_outbox",
        rowid,
        reason: e.to_string(),
    };
    let turn: i64 = r.get(1).map_err(bad)?;
    let index: u32 = r.get(2).map_err(bad)?;
    Ok(Outgoing {
        key: key.clone(),
        at: OutKey {
            turn: uint(turn),
            index,
        },
        body: r.get(3).map_err(bad)?,
        attempts: r.get(4).map_err(bad)?,
        ambiguous: r.get(5).map_err(bad)?,
        not_before: r.get(6).map_err(bad)?,
    })
}

/// A row of `table` whose column `e` could not be read.
fn bad_row(table: &'static str, rowid: i64) -> impl Fn(rusqlite::Error) -> BadRow {
    move |e| BadRow {
        table,
        rowid,
        reason: e.to_string(),
    }
}

/// `SELECT rowid, phone_number_id, user, name, due, body FROM d_timers`.
fn timer_row(r: &Row) -> Result<(SessionKey, NewTimer), BadRow> {
    let bad = bad_row("d_timers", r.get(0).unwrap_or(0));
    Ok((
        SessionKey {
            phone_number_id: r.get(1).map_err(&bad)?,
            user: r.get(2).map_err(&bad)?,
        },
        NewTimer {
            name: r.get(3).map_err(&bad)?,
            due: r.get(4).map_err(&bad)?,
            body: r.get(5).map_err(&bad)?,
        },
    ))
}

/// `SELECT id, phone_number_id, user, turn, idx, body, attempts, reason, since FROM d_dead`.
fn dead_row(r: &Row) -> Result<DeadLetter, BadRow> {
    let bad = bad_row("d_dead", r.get(0).unwrap_or(0));
    Ok(DeadLetter {
        id: uint(r.get(0).map_err(&bad)?),
        key: SessionKey {
            phone_number_id: r.get(1).map_err(&bad)?,
            user: r.get(2).map_err(&bad)?,
        },
        at: OutKey {
            turn: uint(r.get(3).map_err(&bad)?),
            index: r.get(4).map_err(&bad)?,
        },
        body: r.get(5).map_err(&bad)?,
        attempts: r.get(6).map_err(&bad)?,
        reason: r.get(7).map_err(&bad)?,
        since: r.get(8).map_err(&bad)?,
    })
}

/// `SELECT rowid, message_id, phone_number_id, user, flow, node, at FROM d_sent`.
fn sent_row(r: &Row) -> Result<SentRecord, BadRow> {
    let bad = bad_row("d_sent", r.get(0).unwrap_or(0));
    Ok(SentRecord {
        message_id: r.get(1).map_err(&bad)?,
        key: SessionKey {
            phone_number_id: r.get(2).map_err(&bad)?,
            user: r.get(3).map_err(&bad)?,
        },
        flow: r.get(4).map_err(&bad)?,
        node: r.get(5).map_err(&bad)?,
        at: r.get(6).map_err(&bad)?,
    })
}

fn require_lease(leases: &Leases, lease: &Lease, now: Millis) -> WriteResult<()> {
    if leases.holds(lease, now) {
        Ok(())
    } else {
        Err(WriteError::Fenced)
    }
}

/// Records the item's dedupe key: `false` when it was recorded before (a duplicate),
/// `true` when it is new or the item has none.
fn first_seen(conn: &Connection, item: &NewItem) -> rusqlite::Result<bool> {
    let Some(dedupe) = &item.dedupe else {
        return Ok(true);
    };
    let fresh = conn
        .prepare_cached("INSERT OR IGNORE INTO d_dedupe (key, at) VALUES (?1, ?2)")?
        .execute(params![dedupe, item.at])?;
    Ok(fresh > 0)
}

/// Stores an item under the next id (see `ids`).
fn insert_item(conn: &Connection, ids: &ItemIds, item: &NewItem) -> rusqlite::Result<ItemId> {
    let id = ids.take(conn)?;
    conn.prepare_cached(
        "INSERT INTO d_items (id, phone_number_id, user, kind, body, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        int(id.0),
        item.key.phone_number_id,
        item.key.user,
        item.kind.as_str(),
        item.body,
        item.at
    ])?;
    Ok(id)
}

fn save_session(
    conn: &Connection,
    key: &SessionKey,
    data: &str,
    updated_at: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO d_sessions (phone_number_id, user, version, data, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (phone_number_id, user) DO UPDATE SET version = ?3, data = ?4, updated_at = ?5",
    )?
    .execute(params![
        key.phone_number_id,
        key.user,
        SESSION_VERSION,
        data,
        updated_at
    ])?;
    Ok(())
}

fn insert_outgoing(
    conn: &Connection,
    key: &SessionKey,
    at: OutKey,
    body: &str,
    not_before: Millis,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO d_outbox (phone_number_id, user, turn, idx, body, attempts, ambiguous, not_before)
         VALUES (?1, ?2, ?3, ?4, ?5, 0, 0, ?6)",
    )?
    .execute(params![
        key.phone_number_id,
        key.user,
        int(at.turn),
        at.index,
        body,
        not_before
    ])?;
    Ok(())
}

/// The user's first unsent message, read inside a write (the writer's connection sees
/// what the write did): an index probe there costs less than the separate read
/// transaction the sender would make next. A row this build cannot read is left to
/// that read, which moves it aside.
fn peek(conn: &Connection, key: &SessionKey) -> rusqlite::Result<Peek> {
    let found = conn
        .prepare_cached(NEXT_OUTGOING)?
        .query_row(params![key.phone_number_id, key.user], |r| {
            Ok(outgoing_row(key, r))
        })
        .optional()?;
    Ok(match found {
        // The inbox is not looked at: this store is one process's, whose worker knows
        // (`Durable::single_process`).
        None => Peek::Next {
            next: None,
            inbox_empty: false,
        },
        Some(Ok(next)) => Peek::Next {
            next: Some(next),
            inbox_empty: false,
        },
        Some(Err(_)) => Peek::NotLooked,
    })
}

#[async_trait::async_trait]
impl Durable for SqliteDurable {
    fn single_process(&self) -> bool {
        true
    }

    async fn accept(&self, items: Vec<NewItem>) -> Result<Vec<Accepted>, StoreError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let ids = Arc::clone(&self.ids);
        self.write_plain(move |conn| {
            let mut answers = Vec::with_capacity(items.len());
            for item in &items {
                if !first_seen(conn, item)? {
                    answers.push(Accepted::Duplicate);
                    continue;
                }
                answers.push(Accepted::Stored(insert_item(conn, &ids, item)?));
            }
            Ok(answers)
        })
        .await
    }

    async fn next_item(&self, key: &SessionKey) -> Result<Option<Item>, StoreError> {
        self.first_readable(key, NEXT_ITEM, item_row).await
    }

    async fn acquire(
        &self,
        key: &SessionKey,
        holder: &str,
        now: Millis,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        loop {
            match self.leases.acquire(key, holder, now, until(now, ttl)) {
                Ok(taken) => return Ok(taken),
                Err(NeedTokens) => {
                    let block = int(TOKEN_BLOCK);
                    let last: i64 = self
                        .write_plain(move |conn| {
                            Ok(conn
                                .prepare_cached(
                                    "INSERT INTO d_meta (name, value) VALUES ('last_token', ?1)
                                     ON CONFLICT (name) DO UPDATE SET value = value + ?1 RETURNING value",
                                )?
                                .query_row(params![block], |r| r.get(0))?)
                        })
                        .await?;
                    self.leases.reserved(uint(last));
                }
            }
        }
    }

    async fn renew(
        &self,
        lease: &Lease,
        now: Millis,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        Ok(self.leases.renew(lease, now, until(now, ttl)))
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        self.leases.release(lease);
        Ok(())
    }

    async fn load_session(&self, key: &SessionKey) -> Result<Option<Session>, StoreError> {
        if let Some(data) = self.sessions.get(key) {
            return Ok(decode(i64::from(SESSION_VERSION), &data));
        }
        self.read(|conn| {
            let row: Option<(i64, String)> = conn
                .prepare_cached(
                    "SELECT version, data FROM d_sessions WHERE phone_number_id = ?1 AND user = ?2",
                )
                .and_then(|mut q| {
                    q.query_row(params![key.phone_number_id, key.user], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .optional()
                })
                .map_err(err)?;
            Ok(row.and_then(|(version, data)| decode(version, &data)))
        })
        .await
    }

    async fn commit_turn(
        &self,
        lease: &Lease,
        now: Millis,
        commit: TurnCommit,
    ) -> Result<(), CommitError> {
        let lease = lease.clone();
        // Encoded here, off the writer thread: the writer only writes.
        let data: Arc<str> = encode(&commit.session)?.into();
        let leases = Arc::clone(&self.leases);
        let sessions = Arc::clone(&self.sessions);
        self.write_leased(move |conn| {
            require_lease(&leases, &lease, now)?;
            let key = &lease.key;
            let TurnCommit {
                item,
                session,
                outgoing,
                timers,
                cancel_timers,
            } = &commit;
            if let Some(item) = item {
                let removed = conn
                    .prepare_cached(
                        "DELETE FROM d_items WHERE id = ?1 AND phone_number_id = ?2 AND user = ?3",
                    )?
                    .execute(params![int(item.0), key.phone_number_id, key.user])?;
                if removed == 0 {
                    return Err(WriteError::Fenced);
                }
            }
            save_session(conn, key, &data, session.updated_at)?;
            sessions.stage_put(key, &data);
            let mut places = std::collections::HashSet::new();
            for o in outgoing {
                let queued = conn
                    .prepare_cached(
                        "SELECT 1 FROM d_outbox WHERE phone_number_id = ?1 AND user = ?2 AND turn = ?3 AND idx = ?4",
                    )?
                    .exists(params![key.phone_number_id, key.user, int(o.at.turn), o.at.index])?;
                if queued || !places.insert(o.at) {
                    // The batch is undone to before this commit (see `threads`).
                    return Err(WriteError::Store(super::taken(o.at)));
                }
                insert_outgoing(conn, key, o.at, &o.body, o.not_before.max(now))?;
            }
            for t in timers {
                conn.prepare_cached(
                    "INSERT OR REPLACE INTO d_timers (phone_number_id, user, name, due, body) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![key.phone_number_id, key.user, t.name, t.due, t.body])?;
            }
            for name in cancel_timers {
                conn.prepare_cached(
                    "DELETE FROM d_timers WHERE phone_number_id = ?1 AND user = ?2 AND name = ?3",
                )?
                .execute(params![key.phone_number_id, key.user, name])?;
            }
            Ok(())
        })
        .await
    }

    async fn accept_turn(
        &self,
        lease: &Lease,
        now: Millis,
        turn: DirectTurn,
    ) -> Result<Direct, CommitError> {
        let lease = lease.clone();
        // Encoded here, off the writer thread: the writer only writes.
        let data: Arc<str> = encode(&turn.session)?.into();
        let leases = Arc::clone(&self.leases);
        let sessions = Arc::clone(&self.sessions);
        let ids = Arc::clone(&self.ids);
        self.write_leased(move |conn| {
            require_lease(&leases, &lease, now)?;
            let key = &lease.key;
            let waiting = conn
                .prepare_cached(USER_HAS_ITEMS)?
                .exists(params![key.phone_number_id, key.user])?;
            if waiting {
                return Ok(Direct::Declined);
            }
            let DirectTurn {
                item,
                session,
                outgoing,
            } = &turn;
            if !first_seen(conn, item)? {
                return Ok(Direct::Duplicate);
            }
            // The item takes its id from the inbox's counter, like every item, so its
            // messages sort among the user's other turns; it is handled already, so
            // it is never stored (see `ids`).
            let id = ids.take(conn)?;
            save_session(conn, key, &data, session.updated_at)?;
            sessions.stage_put(key, &data);
            for (index, o) in (0u32..).zip(outgoing) {
                let at = OutKey { turn: id.0, index };
                insert_outgoing(conn, key, at, &o.body, o.not_before.max(now))?;
            }
            Ok(Direct::Committed(id, peek(conn, key)?))
        })
        .await
    }

    fn takes_direct_turns(&self) -> bool {
        true
    }

    async fn move_aside(
        &self,
        lease: &Lease,
        now: Millis,
        item: ItemId,
        why: &str,
    ) -> Result<(), CommitError> {
        let lease = lease.clone();
        let why = why.to_string();
        let leases = Arc::clone(&self.leases);
        self.write_leased(move |conn| {
            require_lease(&leases, &lease, now)?;
            let rowid = int(item.0);
            let mine = conn
                .prepare_cached(
                    "SELECT 1 FROM d_items WHERE id = ?1 AND phone_number_id = ?2 AND user = ?3",
                )?
                .exists(params![rowid, lease.key.phone_number_id, lease.key.user])?;
            if !mine {
                return Err(WriteError::Fenced);
            }
            quarantine(
                conn,
                &BadRow {
                    table: "d_items",
                    rowid,
                    reason: why.clone(),
                },
            )?;
            Ok(())
        })
        .await
    }

    async fn next_outgoing(&self, key: &SessionKey) -> Result<Option<Outgoing>, StoreError> {
        self.first_readable(key, NEXT_OUTGOING, outgoing_row).await
    }

    async fn mark_sent(
        &self,
        lease: &Lease,
        now: Millis,
        at: OutKey,
        sent: SentRecord,
    ) -> Result<Peek, CommitError> {
        let lease = lease.clone();
        let leases = Arc::clone(&self.leases);
        self.write_leased(move |conn| {
            require_lease(&leases, &lease, now)?;
            let key = &lease.key;
            let removed = conn
                .prepare_cached(
                    "DELETE FROM d_outbox WHERE phone_number_id = ?1 AND user = ?2 AND turn = ?3 AND idx = ?4",
                )?
                .execute(params![key.phone_number_id, key.user, int(at.turn), at.index])?;
            if removed == 0 {
                return Err(WriteError::Fenced);
            }
            conn.prepare_cached(
                "INSERT OR REPLACE INTO d_sent (message_id, phone_number_id, user, flow, node, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            // Filed under the lease's user, whatever `sent.key` says (see the trait).
            .execute(params![
                sent.message_id,
                key.phone_number_id,
                key.user,
                sent.flow,
                sent.node,
                sent.at
            ])?;
            Ok(peek(conn, key)?)
        })
        .await
    }

    async fn mark_attempt(
        &self,
        lease: &Lease,
        now: Millis,
        at: OutKey,
        ambiguous: bool,
        not_before: Millis,
    ) -> Result<(), CommitError> {
        let lease = lease.clone();
        let leases = Arc::clone(&self.leases);
        self.write_leased(move |conn| {
            require_lease(&leases, &lease, now)?;
            let key = &lease.key;
            let changed = conn
                .prepare_cached(
                    "UPDATE d_outbox SET attempts = attempts + 1, ambiguous = ambiguous + ?5, not_before = ?6
                     WHERE phone_number_id = ?1 AND user = ?2 AND turn = ?3 AND idx = ?4",
                )?
                .execute(params![
                    key.phone_number_id,
                    key.user,
                    int(at.turn),
                    at.index,
                    i64::from(ambiguous),
                    not_before
                ])?;
            if changed == 0 {
                return Err(WriteError::Fenced);
            }
            Ok(())
        })
        .await
    }

    async fn dead_letter(
        &self,
        lease: &Lease,
        now: Millis,
        at: OutKey,
        reason: &str,
    ) -> Result<(), CommitError> {
        let lease = lease.clone();
        let reason = reason.to_string();
        let leases = Arc::clone(&self.leases);
        self.write_leased(move |conn| {
            require_lease(&leases, &lease, now)?;
            let key = &lease.key;
            let moved = conn
                .prepare_cached(
                    "INSERT INTO d_dead (phone_number_id, user, turn, idx, body, attempts, reason, since)
                     SELECT phone_number_id, user, turn, idx, body, attempts, ?5, ?6 FROM d_outbox
                     WHERE phone_number_id = ?1 AND user = ?2 AND turn = ?3 AND idx = ?4",
                )?
                .execute(params![key.phone_number_id, key.user, int(at.turn), at.index, reason, now])?;
            if moved == 0 {
                return Err(WriteError::Fenced);
            }
            conn.prepare_cached(
                "DELETE FROM d_outbox WHERE phone_number_id = ?1 AND user = ?2 AND turn = ?3 AND idx = ?4",
            )?
            .execute(params![key.phone_number_id, key.user, int(at.turn), at.index])?;
            Ok(())
        })
        .await
    }

    async fn dead_letters(
        &self,
        phone_number_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        loop {
            let number = phone_number_id.map(str::to_string);
            let rows: Vec<Result<DeadLetter, BadRow>> = self
                .scan(move |conn| {
                    let mut q = conn
                        .prepare_cached(
                            "SELECT id, phone_number_id, user, turn, idx, body, attempts, reason, since FROM d_dead
                             WHERE ?1 IS NULL OR phone_number_id = ?1 ORDER BY id LIMIT ?2",
                        )
                        .map_err(err)?;
                    let rows = q
                        .query_map(params![number, limit], |r| Ok(dead_row(r)))
                        .map_err(err)?;
                    rows.collect::<Result<_, _>>().map_err(err)
                })
                .await?;
            let (good, bad): (Vec<_>, Vec<_>) = rows.into_iter().partition(Result::is_ok);
            if bad.is_empty() {
                return Ok(good.into_iter().filter_map(Result::ok).collect());
            }
            // One unreadable dead letter must not hide the others: moved aside, then
            // the page is read again (each pass moves at least one row, so this ends).
            for b in bad.into_iter().filter_map(Result::err) {
                self.quarantine(b).await?;
            }
        }
    }

    async fn replay_dead_letter(&self, id: u64, now: Millis) -> Result<bool, StoreError> {
        self.write_plain(move |conn| {
            let dead: Option<(SessionKey, OutKey, String)> = conn
                .prepare_cached("SELECT phone_number_id, user, turn, idx, body FROM d_dead WHERE id = ?1")?
                .query_row(params![int(id)], |r| {
                    Ok((
                        SessionKey {
                            phone_number_id: r.get(0)?,
                            user: r.get(1)?,
                        },
                        OutKey {
                            turn: uint(r.get(2)?),
                            index: r.get(3)?,
                        },
                        r.get(4)?,
                    ))
                })
                .optional()?;
            let Some((key, own, body)) = dead else {
                return Ok(false);
            };
            let last: Option<OutKey> = conn
                .prepare_cached(
                    "SELECT turn, idx FROM d_outbox WHERE phone_number_id = +?1 AND user = +?2 ORDER BY turn DESC, idx DESC LIMIT 1",
                )?
                .query_row(params![key.phone_number_id, key.user], |r| {
                    Ok(OutKey {
                        turn: uint(r.get(0)?),
                        index: r.get(1)?,
                    })
                })
                .optional()?;
            insert_outgoing(conn, &key, after(own, last), &body, now)?;
            conn.prepare_cached("DELETE FROM d_dead WHERE id = ?1")?
                .execute(params![int(id)])?;
            Ok(true)
        })
        .await
    }

    async fn users_with_work(
        &self,
        now: Millis,
        limit: usize,
        only: Option<&[String]>,
    ) -> Result<Vec<SessionKey>, StoreError> {
        // Leased users are filtered out here (leases live in memory): asking for as
        // many more rows as there are leases still yields `limit` free ones.
        let wanted = limit;
        let enough = limit.saturating_add(self.leases.count());
        // Other numbers' users are stepped over as the rows come (SQLite groups every
        // user before the first row either way), so the query itself is not limited.
        let limit = match only {
            Some(_) => -1,
            None => i64::try_from(enough).unwrap_or(i64::MAX),
        };
        let only = only.map(<[String]>::to_vec);
        let leases = Arc::clone(&self.leases);
        let found: Vec<SessionKey> = self.scan(move |conn| {
            let mut q = conn
                .prepare_cached(
                    "SELECT w.phone_number_id, w.user, MIN(w.at) AS since FROM (
                        SELECT phone_number_id, user, at FROM d_items
                        UNION ALL
                        SELECT phone_number_id, user, not_before FROM d_outbox WHERE not_before <= ?1
                     ) AS w
                     GROUP BY w.phone_number_id, w.user
                     ORDER BY since, w.phone_number_id, w.user
                     LIMIT ?2",
                )
                .map_err(err)?;
            let rows = q
                .query_map(params![now, limit], |r| {
                    Ok(SessionKey {
                        phone_number_id: r.get(0)?,
                        user: r.get(1)?,
                    })
                })
                .map_err(err)?;
            let mut found = Vec::new();
            for row in rows {
                let key = row.map_err(err)?;
                if only.as_ref().is_none_or(|numbers| numbers.contains(&key.phone_number_id)) {
                    found.push(key);
                    if found.len() >= enough {
                        break;
                    }
                }
            }
            Ok(found)
        })
        .await?;
        Ok(found
            .into_iter()
            .filter(|key| !leases.busy(key, now))
            .take(wanted)
            .collect())
    }

    async fn fire_due_timers(&self, now: Millis, limit: usize) -> Result<usize, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let ids = Arc::clone(&self.ids);
        self.write_plain(move |conn| {
            let due: Vec<(i64, Result<(SessionKey, NewTimer), BadRow>)> = {
                let mut q = conn.prepare_cached(
                    "SELECT rowid, phone_number_id, user, name, due, body FROM d_timers WHERE due <= ?1
                     ORDER BY due, phone_number_id, user, name LIMIT ?2",
                )?;
                let rows = q.query_map(params![now, limit], |r| {
                    Ok((r.get::<_, i64>(0)?, timer_row(r)))
                })?;
                rows.collect::<Result<_, _>>()?
            };
            let mut fired = 0;
            for (rowid, timer) in due {
                let (key, t) = match timer {
                    Ok(timer) => timer,
                    // An unreadable timer must not stop every other one from firing.
                    Err(bad) => {
                        quarantine(conn, &bad)?;
                        continue;
                    }
                };
                insert_item(
                    conn,
                    &ids,
                    &NewItem {
                        key,
                        dedupe: None,
                        kind: ItemKind::Timer,
                        body: t.body,
                        at: t.due,
                    },
                )?;
                conn.prepare_cached("DELETE FROM d_timers WHERE rowid = ?1")?
                    .execute(params![rowid])?;
                fired += 1;
            }
            Ok(fired)
        })
        .await
    }

    async fn timers(&self, key: &SessionKey) -> Result<Vec<NewTimer>, StoreError> {
        let key = key.clone();
        self.scan(move |conn| {
            let mut q = conn
                .prepare_cached(
                    "SELECT rowid, phone_number_id, user, name, due, body FROM d_timers
                     WHERE phone_number_id = ?1 AND user = ?2 ORDER BY due, name",
                )
                .map_err(err)?;
            let rows = q
                .query_map(params![key.phone_number_id, key.user], |r| Ok(timer_row(r)))
                .map_err(err)?;
            let mut found = Vec::new();
            for row in rows {
                match row.map_err(err)? {
                    Ok((_, t)) => found.push(t),
                    // Listed for the trace only: an unreadable one is skipped here
                    // (fire_due_timers moves it to d_quarantine when it is due).
                    Err(bad) => {
                        tracing::warn!(rowid = bad.rowid, reason = %bad.reason, "skipped an unreadable timer")
                    }
                }
            }
            Ok(found)
        })
        .await
    }

    async fn record_status(&self, status: &StatusRecord) -> Result<(), StoreError> {
        let s = status.clone();
        self.write_plain(move |conn| {
            conn.prepare_cached(
                "INSERT OR IGNORE INTO d_statuses (message_id, status, at, recipient, error_code, error_title)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![s.message_id, s.status, s.at, s.recipient, s.error_code, s.error_title])?;
            Ok(())
        })
        .await
    }

    async fn sent(&self, message_id: &str) -> Result<Option<SentRecord>, StoreError> {
        let found = self
            .read(|conn| {
                conn.prepare_cached(
                    "SELECT rowid, message_id, phone_number_id, user, flow, node, at FROM d_sent WHERE message_id = ?1",
                )
                .and_then(|mut q| q.query_row(params![message_id], |r| Ok(sent_row(r))).optional())
                .map_err(err)
            })
            .await?;
        match found {
            None => Ok(None),
            Some(Ok(sent)) => Ok(Some(sent)),
            // A `failed` status waits on this lookup: an unreadable record must not
            // hold its user up forever. Moved aside, it is a message we know nothing of.
            Some(Err(bad)) => {
                self.quarantine(bad).await?;
                Ok(None)
            }
        }
    }

    async fn statuses(&self, message_id: &str) -> Result<Vec<StatusRecord>, StoreError> {
        let message_id = message_id.to_string();
        self.scan(move |conn| {
            let mut q = conn
                .prepare_cached(
                    "SELECT message_id, status, at, recipient, error_code, error_title FROM d_statuses
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
        })
        .await
    }

    async fn create_handover(&self, handover: &Handover) -> Result<(), StoreError> {
        let h = handover.clone();
        self.write_plain(move |conn| Ok(handovers::insert(conn, &h)?))
            .await
    }

    async fn handover(&self, id: &str) -> Result<Option<Handover>, StoreError> {
        self.read(|conn| handovers::get(conn, id)).await
    }

    async fn handover_messages(&self, id: &str) -> Result<Vec<HandoverMessage>, StoreError> {
        let id = id.to_string();
        self.scan(move |conn| handovers::messages(conn, &id)).await
    }

    async fn handovers(&self, filter: &HandoverFilter) -> Result<Vec<Handover>, StoreError> {
        let filter = filter.clone();
        self.scan(move |conn| handovers::list(conn, &filter)).await
    }

    async fn user_handovers(&self, key: &SessionKey) -> Result<Vec<Handover>, StoreError> {
        let key = key.clone();
        self.scan(move |conn| handovers::of_user(conn, &key)).await
    }

    async fn change_handover(
        &self,
        id: &str,
        change: &HandoverChange,
    ) -> Result<Changed, StoreError> {
        let (id, change) = (id.to_string(), change.clone());
        self.write_plain(move |conn| Ok(handovers::change(conn, &id, &change)?))
            .await
    }

    async fn add_handover_message(
        &self,
        id: &str,
        message: &HandoverMessage,
    ) -> Result<bool, StoreError> {
        let (id, message) = (id.to_string(), message.clone());
        self.write_plain(move |conn| Ok(handovers::add_message(conn, &id, &message)?))
            .await
    }

    async fn count_sessions(&self, since: i64) -> Result<usize, StoreError> {
        self.scan(move |conn| {
            conn.query_row(
                "SELECT COUNT(*) FROM d_sessions WHERE updated_at >= ?1",
                params![since],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| usize::try_from(n).unwrap_or(0))
            .map_err(err)
        })
        .await
    }

    async fn delete_user(&self, user: &str) -> Result<usize, StoreError> {
        self.leases.forget_user(user);
        let user = user.to_string();
        let cache = Arc::clone(&self.sessions);
        self.write_plain(move |conn| {
            let sessions = conn.execute("DELETE FROM d_sessions WHERE user = ?1", params![user])?;
            cache.stage_forget_user(&user);
            // Statuses first: those of messages sent to the user are found through
            // their sent records, which go below.
            conn.execute(
                "DELETE FROM d_statuses WHERE recipient = ?1
                 OR message_id IN (SELECT message_id FROM d_sent WHERE user = ?1)",
                params![user],
            )?;
            for table in [
                "d_items",
                "d_leases",
                "d_outbox",
                "d_dead",
                "d_timers",
                "d_sent",
                "d_quarantine",
                "d_handovers",
                "d_handover_messages",
            ] {
                conn.execute(
                    &format!("DELETE FROM {table} WHERE user = ?1"),
                    params![user],
                )?;
            }
            Ok(sessions)
        })
        .await
    }

    async fn export_user(&self, key: &SessionKey) -> Result<UserData, StoreError> {
        let key = key.clone();
        // One read transaction: the parts agree with each other. Rows this build cannot
        // read are left out (the paths that use them move them to d_quarantine).
        self.scan(move |conn| {
            let tx = conn.unchecked_transaction().map_err(err)?;
            let data = export_rows(&tx, &key)?;
            tx.finish().map_err(err)?;
            Ok(data)
        })
        .await
    }

    async fn purge(&self, before: Millis) -> Result<usize, StoreError> {
        self.write_plain(move |conn| {
            let dedupe = conn.execute("DELETE FROM d_dedupe WHERE at < ?1", params![before])?;
            let sent = conn.execute("DELETE FROM d_sent WHERE at < ?1", params![before])?;
            // Statuses are dated in Unix seconds.
            let statuses = conn.execute(
                "DELETE FROM d_statuses WHERE at < ?1",
                params![super::first_status_second(before)],
            )?;
            Ok(dedupe + sent + statuses)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        // Through the writer: a store that cannot write is not ready. It reads the
        // tables every turn needs, so a damaged file shows here too.
        self.write_plain(|conn| {
            conn.prepare_cached("SELECT 1 FROM d_sessions LIMIT 1")?
                .exists([])?;
            conn.prepare_cached("SELECT 1 FROM d_items LIMIT 1")?
                .exists([])?;
            Ok(())
        })
        .await
    }
}

mod handovers;
mod ids;
mod leases;
mod lock;
mod schema;
mod sessions;
mod threads;

#[cfg(test)]
mod tests;
