//! Handover records on Redis. A record is JSON in its user's `ho` hash (the user's
//! slot, so erasure finds it with the user's other keys); its messages are a list in
//! the same slot. Two global keys find a record by id and list them newest first
//! (`{handovers}:owner`, `{handovers}:created`); like the other global keys they are
//! hints, written before the record: an entry without a record behind it is skipped.
//!
//! A state change is a compare-and-set in Lua: the record is replaced only if it is
//! still the one read, else read again and the change decided afresh.

use super::*;
use crate::store::durable::handover::{
    Changed, Handover, HandoverAuthor, HandoverChange, HandoverData, HandoverFilter,
    HandoverMessage, HandoverState, newest_first,
};
use serde::{Deserialize, Serialize};
use std::sync::LazyLock;

/// Replaces field ARGV[1] of hash KEYS[1] with ARGV[3] if it still holds ARGV[2].
static CAS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
           redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) return 1 end
         return 0",
    )
});

/// Appends ARGV[2] to list KEYS[2] if hash KEYS[1] has the handover ARGV[1].
static ADD_MESSAGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
           redis.call('RPUSH', KEYS[2], ARGV[2]) return 1 end
         return 0",
    )
});

/// How many times a change is decided again after another change won the race.
const CAS_RETRIES: usize = 16;
/// How many index entries a listing reads at a time.
const LIST_BATCH: isize = 256;

#[derive(Serialize, Deserialize)]
struct Record {
    id: String,
    number: String,
    user: String,
    queue: Option<String>,
    state: String,
    agent: Option<String>,
    created: Millis,
    updated: Millis,
    ended: Option<Millis>,
    status: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Message {
    from: String,
    at: Millis,
    body: String,
}

fn to_json(h: &Handover) -> String {
    let r = Record {
        id: h.id.clone(),
        number: h.key.phone_number_id.clone(),
        user: h.key.user.clone(),
        queue: h.queue.clone(),
        state: h.state.as_str().to_string(),
        agent: h.agent.clone(),
        created: h.created,
        updated: h.updated,
        ended: h.ended,
        status: h.status.clone(),
    };
    serde_json::to_string(&r).unwrap_or_default()
}

/// A record read back; `None` when unreadable (damage, a newer version's state).
fn from_json(text: &str) -> Option<Handover> {
    let r: Record = serde_json::from_str(text).ok()?;
    Some(Handover {
        id: r.id,
        key: SessionKey {
            phone_number_id: r.number,
            user: r.user,
        },
        queue: r.queue,
        state: HandoverState::parse(&r.state)?,
        agent: r.agent,
        created: r.created,
        updated: r.updated,
        ended: r.ended,
        status: r.status,
    })
}

fn message_from_json(text: &str) -> Option<HandoverMessage> {
    let m: Message = serde_json::from_str(text).ok()?;
    Some(HandoverMessage {
        from: HandoverAuthor::parse(&m.from)?,
        at: m.at,
        body: m.body,
    })
}

/// The user's keys of handover `id`, from the owner index.
async fn owner(store: &RedisDurable, id: &str) -> Result<Option<UserKeys>, StoreError> {
    let tag: Option<String> = store
        .con()
        .hget(&store.global.handover_owner, id)
        .await
        .map_err(err)?;
    Ok(tag
        .as_deref()
        .and_then(keys::key_of)
        .map(|key| store.user(&key)))
}

/// The record's text as stored, and the record.
async fn read(
    store: &RedisDurable,
    keys: &UserKeys,
    id: &str,
) -> Result<Option<(String, Handover)>, StoreError> {
    let text: Option<String> = store.con().hget(keys.handovers(), id).await.map_err(err)?;
    Ok(text.and_then(|t| from_json(&t).map(|h| (t, h))))
}

pub(super) async fn create(store: &RedisDurable, h: &Handover) -> Result<(), StoreError> {
    let keys = store.user(&h.key);
    let mut con = store.con();
    let new: bool = con
        .hset_nx(&store.global.handover_owner, &h.id, &keys.tag)
        .await
        .map_err(err)?;
    if !new {
        return Err(StoreError(format!(
            "handover {} is already stored; nothing was written",
            h.id
        )));
    }
    let _: () = ::redis::pipe()
        .zadd(&store.global.handover_created, &h.id, h.created)
        .ignore()
        .hset(keys.handovers(), &h.id, to_json(h))
        .ignore()
        .query_async(&mut con)
        .await
        .map_err(err)?;
    Ok(())
}

pub(super) async fn get(store: &RedisDurable, id: &str) -> Result<Option<Handover>, StoreError> {
    let Some(keys) = owner(store, id).await? else {
        return Ok(None);
    };
    Ok(read(store, &keys, id).await?.map(|(_, h)| h))
}

pub(super) async fn messages(
    store: &RedisDurable,
    id: &str,
) -> Result<Vec<HandoverMessage>, StoreError> {
    let Some(keys) = owner(store, id).await? else {
        return Ok(Vec::new());
    };
    messages_of(store, &keys, id).await
}

async fn messages_of(
    store: &RedisDurable,
    keys: &UserKeys,
    id: &str,
) -> Result<Vec<HandoverMessage>, StoreError> {
    let texts: Vec<String> = store
        .con()
        .lrange(keys.handover_messages(id), 0, -1)
        .await
        .map_err(err)?;
    Ok(texts.iter().filter_map(|t| message_from_json(t)).collect())
}

pub(super) async fn list(
    store: &RedisDurable,
    filter: &HandoverFilter,
) -> Result<Vec<Handover>, StoreError> {
    let mut con = store.con();
    let mut out = Vec::new();
    let mut start: isize = 0;
    while out.len() < filter.limit {
        // Newest first; equal scores come in reverse id order, as `newest_first` wants.
        let ids: Vec<String> = con
            .zrevrange(
                &store.global.handover_created,
                start,
                start + LIST_BATCH - 1,
            )
            .await
            .map_err(err)?;
        if ids.is_empty() {
            break;
        }
        start += LIST_BATCH;
        let tags: Vec<Option<String>> = ::redis::cmd("HMGET")
            .arg(&store.global.handover_owner)
            .arg(&ids)
            .query_async(&mut con)
            .await
            .map_err(err)?;
        let mut pipe = ::redis::pipe();
        for (id, tag) in ids.iter().zip(&tags) {
            let user = tag.as_deref().and_then(keys::key_of);
            match user {
                Some(key) => pipe.hget(store.user(&key).handovers(), id),
                // Still one answer per id, so they line up.
                None => pipe.hget(&store.global.handover_owner, "\0none"),
            };
        }
        let texts: Vec<Option<String>> = pipe.query_async(&mut con).await.map_err(err)?;
        for h in texts.iter().flatten().filter_map(|t| from_json(t)) {
            if out.len() < filter.limit && filter.matches(&h) {
                out.push(h);
            }
        }
    }
    out.sort_by(newest_first);
    Ok(out)
}

pub(super) async fn of_user(
    store: &RedisDurable,
    key: &SessionKey,
) -> Result<Vec<Handover>, StoreError> {
    let texts: Vec<String> = store
        .con()
        .hvals(store.user(key).handovers())
        .await
        .map_err(err)?;
    let mut all: Vec<Handover> = texts.iter().filter_map(|t| from_json(t)).collect();
    all.sort_by(newest_first);
    Ok(all)
}

pub(super) async fn export(
    store: &RedisDurable,
    key: &SessionKey,
) -> Result<Vec<HandoverData>, StoreError> {
    let keys = store.user(key);
    let mut out = Vec::new();
    for handover in of_user(store, key).await? {
        let messages = messages_of(store, &keys, &handover.id).await?;
        out.push(HandoverData { handover, messages });
    }
    Ok(out)
}

pub(super) async fn change(
    store: &RedisDurable,
    id: &str,
    change: &HandoverChange,
) -> Result<Changed, StoreError> {
    let Some(keys) = owner(store, id).await? else {
        return Ok(Changed::NotFound);
    };
    for _ in 0..CAS_RETRIES {
        let Some((text, current)) = read(store, &keys, id).await? else {
            return Ok(Changed::NotFound);
        };
        let Some(next) = change.apply(&current) else {
            return Ok(Changed::Conflict(current));
        };
        let swapped: i64 = CAS
            .key(keys.handovers())
            .arg(id)
            .arg(&text)
            .arg(to_json(&next))
            .invoke_async(&mut store.con())
            .await
            .map_err(err)?;
        if swapped == 1 {
            return Ok(Changed::Done(next));
        }
    }
    Err(StoreError(format!(
        "handover {id} kept changing under a state change; nothing was written"
    )))
}

pub(super) async fn add_message(
    store: &RedisDurable,
    id: &str,
    message: &HandoverMessage,
) -> Result<bool, StoreError> {
    let Some(keys) = owner(store, id).await? else {
        return Ok(false);
    };
    let text = serde_json::to_string(&Message {
        from: message.from.as_str().to_string(),
        at: message.at,
        body: message.body.clone(),
    })
    .unwrap_or_default();
    let added: i64 = ADD_MESSAGE
        .key(keys.handovers())
        .key(keys.handover_messages(id))
        .arg(id)
        .arg(text)
        .invoke_async(&mut store.con())
        .await
        .map_err(err)?;
    Ok(added == 1)
}

/// Drops the global index entries of `user`'s handovers, before and after their
/// records go (`delete_user`): entries written before a record was (a create cut
/// short) are found in the owner map itself.
pub(super) async fn forget_user(store: &RedisDurable, user: &str) -> Result<(), StoreError> {
    let mut con = store.con();
    for (id, tag) in store.hscan_all(&store.global.handover_owner).await? {
        if keys::key_of(&tag).is_some_and(|k| k.user == user) {
            let _: () = ::redis::pipe()
                .hdel(&store.global.handover_owner, &id)
                .ignore()
                .zrem(&store.global.handover_created, &id)
                .ignore()
                .query_async(&mut con)
                .await
                .map_err(err)?;
        }
    }
    Ok(())
}
