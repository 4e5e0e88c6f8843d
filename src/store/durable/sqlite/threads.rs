//! The store's writer thread, doing group commits. Callers hand it closures through a
//! channel and await the answer on a oneshot.

use super::{MAX_BATCH, err};
use crate::store::StoreError;
use rusqlite::Connection;
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
    /// fenced) and its savepoint must be rolled back.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller once the transaction's fate is known.
    fn answer(self: Box<Self>, committed: Result<(), String>);
}

pub(super) type WriteResult<T> = Result<T, WriteError>;

pub(super) struct Pending<T, F> {
    pub(super) work: Option<F>,
    pub(super) out: Option<WriteResult<T>>,
    pub(super) reply: oneshot::Sender<WriteResult<T>>,
}

impl<T, F> WriteJob for Pending<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> WriteResult<T> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let out = match self.work.take() {
            Some(work) => work(conn),
            None => Err(WriteError::Store(StoreError("a write ran twice".into()))),
        };
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
) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let committed = run_batch(&conn, &mut batch);
        match &committed {
            Ok(()) => {
                commits.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::error!(error = %e, writes = batch.len(), "an SQLite commit failed");
            }
        }
        for job in batch {
            job.answer(committed.clone());
        }
    }
}

fn run_batch(conn: &Connection, batch: &mut [Box<dyn WriteJob>]) -> Result<(), String> {
    // Cached statements: `execute_batch` would parse these again for every write.
    let run = |sql: &str| conn.prepare_cached(sql).and_then(|mut s| s.execute([]));
    run("BEGIN IMMEDIATE").map_err(|e| e.to_string())?;
    let result = (|| -> rusqlite::Result<usize> {
        // Until a write of the batch has succeeded, the transaction holds nothing to
        // keep: a write then runs without a savepoint, and if it fails the whole
        // transaction is rolled back and begun again. A savepoint costs a copy of every
        // page the write touches (SQLite's sub-journal), and a batch is often one write.
        let mut kept = false;
        for job in batch.iter_mut() {
            if kept {
                run("SAVEPOINT job")?;
            }
            // A write that panicked is a failed write: the writer, and every other
            // caller, go on.
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run(conn)));
            let ok = ran.unwrap_or(false);
            match (kept, ok) {
                (true, true) => {
                    run("RELEASE job")?;
                }
                (true, false) => {
                    run("ROLLBACK TO job")?;
                    run("RELEASE job")?;
                }
                (false, true) => kept = true,
                (false, false) => {
                    run("ROLLBACK")?;
                    run("BEGIN IMMEDIATE")?;
                }
            }
        }
        run("COMMIT")
    })();
    if let Err(e) = result {
        // Nothing of the batch stands; every caller is told.
        let _ = run("ROLLBACK");
        return Err(e.to_string());
    }
    Ok(())
}
