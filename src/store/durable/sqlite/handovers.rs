//! Handover records on SQLite (`d_handovers`, `d_handover_messages`). A state change
//! is one `UPDATE … WHERE state IN (…)`: the compare-and-set happens in the writer's
//! transaction. A row this build cannot read (a state from a newer version) is left
//! out of answers, never a panic.

use super::err;
use crate::store::durable::handover::{
    Changed, Handover, HandoverAuthor, HandoverChange, HandoverData, HandoverFilter,
    HandoverMessage, HandoverState,
};
use crate::store::{SessionKey, StoreError};
use rusqlite::{Connection, OptionalExtension, Row, params};

const COLUMNS: &str =
    "id, phone_number_id, user, queue, state, agent, created, updated, ended, status";

/// A record from a row of [`COLUMNS`]; `None` for a state this build does not know.
fn record(r: &Row) -> rusqlite::Result<Option<Handover>> {
    let state: String = r.get(4)?;
    let Some(state) = HandoverState::parse(&state) else {
        return Ok(None);
    };
    Ok(Some(Handover {
        id: r.get(0)?,
        key: SessionKey {
            phone_number_id: r.get(1)?,
            user: r.get(2)?,
        },
        queue: r.get(3)?,
        state,
        agent: r.get(5)?,
        created: r.get(6)?,
        updated: r.get(7)?,
        ended: r.get(8)?,
        status: r.get(9)?,
    }))
}

fn collect(
    rows: impl Iterator<Item = rusqlite::Result<Option<Handover>>>,
) -> Result<Vec<Handover>, StoreError> {
    let mut out = Vec::new();
    for row in rows {
        out.extend(row.map_err(err)?);
    }
    Ok(out)
}

pub(super) fn insert(conn: &Connection, h: &Handover) -> rusqlite::Result<()> {
    conn.prepare_cached(&format!(
        "INSERT INTO d_handovers ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
    ))?
    .execute(params![
        h.id,
        h.key.phone_number_id,
        h.key.user,
        h.queue,
        h.state.as_str(),
        h.agent,
        h.created,
        h.updated,
        h.ended,
        h.status
    ])?;
    Ok(())
}

pub(super) fn get(conn: &Connection, id: &str) -> Result<Option<Handover>, StoreError> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM d_handovers WHERE id = ?1"))
        .and_then(|mut q| q.query_row(params![id], record).optional())
        .map(Option::flatten)
        .map_err(err)
}

pub(super) fn messages(conn: &Connection, id: &str) -> Result<Vec<HandoverMessage>, StoreError> {
    let mut q = conn
        .prepare_cached(
            "SELECT author, at, body FROM d_handover_messages WHERE handover_id = ?1 ORDER BY seq",
        )
        .map_err(err)?;
    let rows = q
        .query_map(params![id], |r| {
            let author: String = r.get(0)?;
            let (at, body) = (r.get(1)?, r.get(2)?);
            Ok(HandoverAuthor::parse(&author).map(|from| HandoverMessage { from, at, body }))
        })
        .map_err(err)?;
    let mut out = Vec::new();
    for row in rows {
        out.extend(row.map_err(err)?);
    }
    Ok(out)
}

pub(super) fn list(
    conn: &Connection,
    filter: &HandoverFilter,
) -> Result<Vec<Handover>, StoreError> {
    // Numbers are few (the API key's); the filter runs in Rust over the newest rows
    // first, so a LIMIT would be wrong before it: read in pages until enough match.
    let mut q = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM d_handovers
             WHERE (?1 IS NULL OR queue = ?1) AND (?2 IS NULL OR state = ?2)
             ORDER BY created DESC, id DESC"
        ))
        .map_err(err)?;
    let rows = q
        .query_map(
            params![filter.queue, filter.state.map(HandoverState::as_str)],
            record,
        )
        .map_err(err)?;
    let mut out = Vec::new();
    for row in rows {
        if out.len() >= filter.limit {
            break;
        }
        if let Some(h) = row.map_err(err)?
            && filter.matches(&h)
        {
            out.push(h);
        }
    }
    Ok(out)
}

pub(super) fn of_user(conn: &Connection, key: &SessionKey) -> Result<Vec<Handover>, StoreError> {
    let mut q = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM d_handovers WHERE phone_number_id = ?1 AND user = ?2
             ORDER BY created DESC, id DESC"
        ))
        .map_err(err)?;
    let rows = q
        .query_map(params![key.phone_number_id, key.user], record)
        .map_err(err)?;
    collect(rows)
}

pub(super) fn export(conn: &Connection, key: &SessionKey) -> Result<Vec<HandoverData>, StoreError> {
    let mut out = Vec::new();
    for handover in of_user(conn, key)? {
        let messages = messages(conn, &handover.id)?;
        out.push(HandoverData { handover, messages });
    }
    Ok(out)
}

pub(super) fn change(
    conn: &Connection,
    id: &str,
    change: &HandoverChange,
) -> Result<Changed, StoreError> {
    let Some(current) = get(conn, id)? else {
        return Ok(Changed::NotFound);
    };
    // Inside the writer's transaction nobody else writes between the read and the
    // update; the `state = ?` keeps the update a compare-and-set all the same.
    let Some(next) = change.apply(&current) else {
        return Ok(Changed::Conflict(current));
    };
    let n = conn
        .prepare_cached(
            "UPDATE d_handovers SET state = ?2, agent = ?3, updated = ?4, ended = ?5, status = ?6
             WHERE id = ?1 AND state = ?7",
        )
        .and_then(|mut q| {
            q.execute(params![
                id,
                next.state.as_str(),
                next.agent,
                next.updated,
                next.ended,
                next.status,
                current.state.as_str()
            ])
        })
        .map_err(err)?;
    if n == 1 {
        Ok(Changed::Done(next))
    } else {
        Ok(Changed::Conflict(current))
    }
}

pub(super) fn add_message(
    conn: &Connection,
    id: &str,
    message: &HandoverMessage,
) -> Result<bool, StoreError> {
    let Some(h) = get(conn, id)? else {
        return Ok(false);
    };
    conn.prepare_cached(
        "INSERT INTO d_handover_messages (handover_id, user, author, at, body)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut q| {
        q.execute(params![
            id,
            h.key.user,
            message.from.as_str(),
            message.at,
            message.body
        ])
    })
    .map_err(err)?;
    Ok(true)
}
