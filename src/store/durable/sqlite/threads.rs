//! The store's writer thread, doing group commits. Callers hand it closures through a
//! channel and await the answer on a oneshot.

use super::ids::ItemIds;
use super::sessions::SessionCache;
use super::{MAX_BATCH, err};
use crate::store::StoreError;
use rusqlite::Connection;
use rusqlite::hooks::Wal;
use rusqlite::wal::CheckpointMode;
use std::ffi::c_int;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use tokio::sync::oneshot;

/// What a write did not do: fenced, or the store failed.
#[derive(Debug)]
pub(super) enum WriteError {
    Fenced,
    Store(StoreError),
}

impl From<rusqlite::Error> for WriteError {
    fn from(e: rusqlite::Error) -> Self {
        WriteError::Store(err(e))
    }
}

impl From<StoreError> for WriteError {
    fn from(e: StoreError) -> Self {
        WriteError::Store(e)
    }
}

/// Several writes share one transaction: each is run, then answered after the commit.
pub(super) trait WriteJob: Send {
    /// Runs the write inside the batch's transaction; `false` when it failed (or was
    /// fenced). A write may be run again (its batch started over): writes only touch
    /// the database, never state of their own outside it.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller once the transaction's fate is known.
    fn answer(self: Box<Self>, committed: Result<(), String>);
}

pub(super) type WriteResult<T> = Result<T, WriteError>;

pub(super) struct Pending<T, F> {
    pub(super) work: F,
    pub(super) out: Option<WriteResult<T>>,
    pub(super) reply: oneshot::Sender<WriteResult<T>>,
}

impl<T, F> WriteJob for Pending<T, F>
where
    T: Send,
    F: FnMut(&Connection) -> WriteResult<T> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        // An earlier run's answer (its batch started over) must not outlive it, should
        // this run panic.
        self.out = None;
        let out = (self.work)(conn);
        let ok = out.is_ok();
        self.out = Some(out);
        ok
    }

    fn answer(self: Box<Self>, committed: Result<(), String>) {
        let Pending { out, reply, .. } = *self;
        let answer = match committed {
            Ok(()) => out.unwrap_or_else(|| {
                Err(WriteError::Store(StoreError("a write did not run".into())))
            }),
            Err(e) => Err(WriteError::Store(StoreError(e))),
        };
        // The caller may have gone (its future dropped): the write stands regardless.
        let _ = reply.send(answer);
    }
}

/// The writer thread: group commits until the store is dropped.
pub(super) fn write_loop(
    conn: Connection,
    jobs: mpsc::Receiver<Box<dyn WriteJob>>,
    commits: &AtomicU64,
    sessions: &SessionCache,
    ids: &ItemIds,
) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        take_waiting(&jobs, &mut batch);
        if batch.len() >= LOADED_AT {
            // Writes were already waiting: the server is under load, and the threads
            // about to queue more (the tokio workers' turns and sent records) may be
            // waiting for the core this thread was just woken on. Yielding it once lets
            // them run first, so this commit carries their writes too (about twice the
            // writes per commit at 32 users in flight, a third fewer WAL frames per
            // message). Under a light load the writer commits at once: there the yield
            // would often hand the core to an unrelated process and only delay the
            // commit (measured: webhooks ~0.1 ms slower at 4 users in flight).
            std::thread::yield_now();
            take_waiting(&jobs, &mut batch);
        }
        let committed = run_batch(&conn, &mut batch, sessions, ids);
        // Before anyone is answered: a caller that awaited its write and then reads
        // its session must find it.
        match &committed {
            Ok(()) => {
                sessions.apply();
                commits.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                sessions.discard();
                tracing::error!(error = %e, writes = batch.len(), "an SQLite commit failed");
            }
        }
        for job in batch {
            job.answer(committed.clone());
        }
    }
}

/// Writes found waiting (the first included) from which the writer yields its core
/// before committing (see `write_loop`). 2, 3 and 4 batched alike under load.
const LOADED_AT: usize = 4;

/// Adds the writes waiting in the channel to the batch, up to [`MAX_BATCH`].
fn take_waiting(jobs: &mpsc::Receiver<Box<dyn WriteJob>>, batch: &mut Vec<Box<dyn WriteJob>>) {
    while batch.len() < MAX_BATCH {
        match jobs.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
}

fn run_batch(
    conn: &Connection,
    batch: &mut [Box<dyn WriteJob>],
    sessions: &SessionCache,
    ids: &ItemIds,
) -> Result<(), String> {
    match run_all(conn, batch, Undo::Batch, sessions, ids) {
        // A write failed after changing rows: the batch runs again from the start,
        // this time each write in a savepoint, so that one is undone alone.
        Err(Failed::HalfDone) => {
            run_all(conn, batch, Undo::EachWrite, sessions, ids).map_err(Failed::into_message)
        }
        done => done.map_err(Failed::into_message),
    }
}

/// How a batch's failed write is undone.
#[derive(Clone, Copy, PartialEq)]
enum Undo {
    /// No savepoints. A savepoint costs a copy of every page its write touches (SQLite's
    /// sub-journal: most of the writer's `memcpy`), and nearly every failed write
    /// changed nothing (a fenced lease, checked before writing; a failed statement
    /// undoes itself), so the transaction simply goes on without it. One that failed
    /// after changing rows ends the try ([`Failed::HalfDone`]).
    Batch,
    /// Every write in a savepoint, rolled back alone when it fails.
    EachWrite,
}

enum Failed {
    /// A write failed after changing rows; the transaction was rolled back.
    HalfDone,
    /// The transaction failed (or SQLite ended it); nothing of the batch stands.
    Batch(String),
}

impl Failed {
    fn into_message(self) -> String {
        match self {
            Failed::HalfDone => "a write failed after changing rows".into(),
            Failed::Batch(e) => e,
        }
    }
}

fn run_all(
    conn: &Connection,
    batch: &mut [Box<dyn WriteJob>],
    undo: Undo,
    sessions: &SessionCache,
    ids: &ItemIds,
) -> Result<(), Failed> {
    // A batch that starts over stages its sessions again.
    sessions.discard();
    // Cached statements: `execute_batch` would parse these again for every write.
    let run = |sql: &str| conn.prepare_cached(sql).and_then(|mut s| s.execute([]));
    run("BEGIN IMMEDIATE").map_err(|e| Failed::Batch(e.to_string()))?;
    let result = (|| -> Result<(), Failed> {
        let sql = |e: rusqlite::Error| Failed::Batch(e.to_string());
        for job in batch.iter_mut() {
            if undo == Undo::EachWrite {
                run("SAVEPOINT job").map_err(sql)?;
            }
            let before = conn.total_changes();
            let staged = sessions.mark();
            // A write that panicked is a failed write: the writer, and every other
            // caller, go on.
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run(conn)));
            let ok = ran.unwrap_or(false);
            if !ok {
                // Undone (or dropped out having changed nothing): so is what it staged.
                sessions.unstage_to(staged);
            }
            if !ok && conn.is_autocommit() {
                // SQLite ended the transaction itself (an I/O error, a full disk).
                return Err(Failed::Batch(
                    "SQLite rolled the transaction back after a failed write".into(),
                ));
            }
            match (undo, ok) {
                (Undo::EachWrite, true) => {
                    run("RELEASE job").map_err(sql)?;
                }
                (Undo::EachWrite, false) => {
                    run("ROLLBACK TO job").map_err(sql)?;
                    run("RELEASE job").map_err(sql)?;
                }
                (Undo::Batch, true) => {}
                (Undo::Batch, false) => {
                    if conn.total_changes() != before {
                        return Err(Failed::HalfDone);
                    }
                }
            }
        }
        // The item ids the batch's writes took, counted in the same commit (`ids`).
        ids.store(conn).map_err(sql)?;
        run("COMMIT").map(drop).map_err(sql)
    })();
    if result.is_err() && !conn.is_autocommit() {
        let _ = run("ROLLBACK");
    }
    result
}

/// Checkpoints the WAL into the database file off the writer's thread: a checkpoint
/// ends in two `fsync`s, and run by the writer (SQLite's default, every 1,000 pages)
/// every commit waited for them. The writer nudges this thread through its WAL hook
/// ([`wal_hook`]); the channel closes with the writer's connection.
pub(super) fn checkpoint_loop(conn: Connection, nudges: mpsc::Receiver<()>) {
    while nudges.recv().is_ok() {
        if let Err(e) = conn.wal_checkpoint_v2(None::<&str>, CheckpointMode::PASSIVE) {
            tracing::debug!(error = %e, "a background WAL checkpoint did not run");
        }
    }
}

/// The WAL's size, in pages, at which the checkpointer thread is nudged (SQLite's own
/// default for checkpoints).
const CHECKPOINT_PAGES: c_int = 1_000;
/// The size at which the writer checkpoints itself (~32 MiB of WAL). Under a steady
/// load the checkpointer copies what was committed before it started while the writer
/// appends more, so the WAL may never be wholly copied, and SQLite starts it over only
/// when it is; the writer, between its own commits, copies the rest.
const WRITER_CHECKPOINT_PAGES: c_int = 8_000;

/// The writer's WAL hook (called after each commit with the WAL's size in pages).
pub(super) fn wal_hook(
    nudge: mpsc::SyncSender<()>,
) -> impl FnMut(&mut Wal, c_int) -> rusqlite::Result<()> + Send + 'static {
    move |wal, pages| {
        if pages >= WRITER_CHECKPOINT_PAGES {
            if let Err(e) = wal.checkpoint_v2(CheckpointMode::PASSIVE) {
                tracing::debug!(error = %e, "the writer's WAL checkpoint did not run");
            }
        } else if pages >= CHECKPOINT_PAGES {
            // Full: a nudge is already waiting.
            let _ = nudge.try_send(());
        }
        // The commit stands whatever a checkpoint did; an error here would be reported
        // as the commit's.
        Ok(())
    }
}
