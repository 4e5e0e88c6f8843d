//! Item ids, given by the writer from one counter in memory.
//!
//! A turn run on the direct path (`accept_turn`) needs an id from the inbox's
//! sequence, so its messages sort among the user's other turns, but its item is
//! handled already: inserting a row only to delete it in the same transaction cost
//! two statements a turn and the pages of `d_items` and its index a commit, for
//! nothing. The writer now counts ids itself, and stored items are inserted with
//! theirs.
//!
//! The counter is kept in `d_items`'s own `sqlite_sequence` row, written once per
//! commit that took ids (see `threads::run_all`), inside that commit: an id is never
//! in the file without its counter, so ids are never given twice across restarts
//! (whatever a failed batch took is skipped, never reused). Keeping it there rather
//! than in `d_meta` means an older build, which lets `AUTOINCREMENT` choose, still
//! goes on after every id this one gave.
//!
//! Only the writer thread takes ids (inside its transaction), so they grow in commit
//! order: a user's items and turns sort the way they were stored.

use super::ItemId;
use rusqlite::{Connection, params};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const SEQ: &str = "SELECT seq FROM sqlite_sequence WHERE name = 'd_items'";

#[derive(Debug)]
pub(super) struct ItemIds {
    /// The last id given.
    last: AtomicU64,
    /// The running batch took ids: the counter must be written before it commits.
    taken: AtomicBool,
}

impl ItemIds {
    /// Reads the file's counter, creating its row if no item was ever stored.
    pub(super) fn open(conn: &Connection) -> rusqlite::Result<ItemIds> {
        conn.execute(
            "INSERT INTO sqlite_sequence (name, seq)
             SELECT 'd_items', COALESCE((SELECT MAX(id) FROM d_items), 0)
             WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'd_items')",
            [],
        )?;
        let seq: i64 = conn.query_row(SEQ, [], |r| r.get(0))?;
        Ok(ItemIds {
            last: AtomicU64::new(u64::try_from(seq).unwrap_or(0)),
            taken: AtomicBool::new(false),
        })
    }

    /// The next id. Writer thread only, inside its transaction. Past the file's
    /// counter too (one row of a one-page table): whatever wrote rows there besides
    /// this writer, ids are never given twice.
    pub(super) fn take(&self, conn: &Connection) -> rusqlite::Result<ItemId> {
        let seq: i64 = conn.prepare_cached(SEQ)?.query_row([], |r| r.get(0))?;
        let id = self
            .last
            .load(Ordering::Relaxed)
            .max(u64::try_from(seq).unwrap_or(0))
            + 1;
        self.last.store(id, Ordering::Relaxed);
        self.taken.store(true, Ordering::Relaxed);
        Ok(ItemId(id))
    }

    /// Writes the counter into the running transaction when this batch took ids.
    /// Called last, before `COMMIT`: never inside a write's savepoint, which could
    /// undo it while the ids it counts stay. (Ids a batch took that did not commit are
    /// skipped: nothing was stored with them.)
    pub(super) fn store(&self, conn: &Connection) -> rusqlite::Result<()> {
        if !self.taken.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let last = i64::try_from(self.last.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
        conn.prepare_cached(
            "UPDATE sqlite_sequence SET seq = ?1 WHERE name = 'd_items' AND seq < ?1",
        )?
        .execute(params![last])?;
        Ok(())
    }
}
