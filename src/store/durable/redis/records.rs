//! Records and whole-store operations: statuses, sent records, counting sessions,
//! erasure, purge and ping.

use super::*;

pub(super) async fn record_status(
    store: &RedisDurable,
    status: &StatusRecord,
) -> Result<(), StoreError> {
    let key = keys::statuses(&store.prefix, &status.message_id);
    // The first record of a (message, status) pair stays, as on SQLite. The key
    // expires STATUS_TTL after the last status, so one `purge` never reaches
    // (or an erasure that missed it) does not stay forever.
    let _: (bool, bool) = ::redis::pipe()
        .atomic()
        .hset_nx(&key, &status.status, status_json(status))
        .pexpire(&key, STATUS_TTL.as_millis() as i64)
        .query_async(&mut store.con())
        .await
        .map_err(err)?;
    Ok(())
}

pub(super) async fn sent(
    store: &RedisDurable,
    message_id: &str,
) -> Result<Option<SentRecord>, StoreError> {
    let mut con = store.con();
    let tag: Option<String> = con
        .hget(&store.global.sent_owner, message_id)
        .await
        .map_err(err)?;
    let Some(key) = tag.as_deref().and_then(keys::key_of) else {
        return Ok(None);
    };
    let text: Option<String> = con
        .hget(store.user(&key).sent(), message_id)
        .await
        .map_err(err)?;
    Ok(text.as_deref().and_then(sent_from_json))
}

pub(super) async fn statuses(
    store: &RedisDurable,
    message_id: &str,
) -> Result<Vec<StatusRecord>, StoreError> {
    let key = keys::statuses(&store.prefix, message_id);
    let texts: Vec<String> = store.con().hvals(key).await.map_err(err)?;
    let mut all: Vec<StatusRecord> = texts.iter().filter_map(|t| status_from_json(t)).collect();
    all.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.status.cmp(&b.status)));
    Ok(all)
}

pub(super) async fn count_sessions(store: &RedisDurable, since: i64) -> Result<usize, StoreError> {
    let mut con = store.con();
    let mut count = 0;
    let found = store.scan(&keys::sessions_pattern(&store.prefix)).await?;
    // One round trip per thousand sessions, not per session.
    for batch in found.chunks(1000) {
        let mut pipe = ::redis::pipe();
        for key in batch {
            pipe.hget(key, "at");
        }
        // As bytes: one damaged `at` must not fail the count forever.
        let ats: Vec<Option<Vec<u8>>> = pipe.query_async(&mut con).await.map_err(err)?;
        count += ats
            .iter()
            .filter_map(|at| text(at.as_deref()?)?.parse::<i64>().ok())
            .filter(|at| *at >= since)
            .count();
    }
    Ok(count)
}

pub(super) async fn delete_user(store: &RedisDurable, user: &str) -> Result<usize, StoreError> {
    let mut con = store.con();
    handovers::forget_user(store, user).await?;
    let found = store.scan(&keys::user_pattern(&store.prefix, user)).await?;
    let mut by_tag: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for key in found {
        // The user's dedupe records stay (see the trait): forgetting one would let
        // a redelivery run again. They expire with DEDUPE_TTL.
        if keys::is_user_dedupe(&store.prefix, &key) {
            continue;
        }
        if let Some(tag) = keys::tag_in(&store.prefix, &key) {
            by_tag.entry(tag).or_default().push(key);
        }
    }
    let mut sessions = 0;
    for (tag, mut scanned) in by_tag {
        let Some(key) = keys::key_of(&tag) else {
            continue;
        };
        if key.user != user {
            continue;
        }
        let keys = store.user(&key);
        // Read before the keys go: work stored while the user is erased adds a
        // hint after its write, and that hint must survive the removal below.
        let work_version = store.hint_version(Index::Work, &tag).await?;
        let timers_version = store.hint_version(Index::Timers, &tag).await?;
        let had: bool = con.exists(keys.session()).await.map_err(err)?;
        if had {
            sessions += 1;
        }
        let wamids: Vec<String> = con.hkeys(keys.sent()).await.map_err(err)?;
        for wamid in &wamids {
            let _: i64 = con
                .del(keys::statuses(&store.prefix, wamid))
                .await
                .map_err(err)?;
            let _: i64 = con
                .hdel(&store.global.sent_owner, wamid)
                .await
                .map_err(err)?;
        }
        let dead: Vec<String> = con.hkeys(keys.dead()).await.map_err(err)?;
        for field in dead {
            if let Some(id) = field.strip_suffix(":m") {
                store.drop_dead_index(id).await?;
            }
        }
        scanned.extend(keys.all_fixed());
        let _: i64 = con.del(scanned).await.map_err(err)?;
        store.settle(Index::Work, &tag, &work_version, None).await?;
        store
            .settle(Index::Timers, &tag, &timers_version, None)
            .await?;
    }
    // Owner entries naming the user without a record behind them (written before
    // a write that was fenced or cut short) are found in the maps themselves.
    let theirs = |tag: &str| keys::key_of(tag).is_some_and(|k| k.user == user);
    for (wamid, tag) in store.hscan_all(&store.global.sent_owner).await? {
        if theirs(&tag) {
            let _: i64 = con
                .hdel(&store.global.sent_owner, &wamid)
                .await
                .map_err(err)?;
        }
    }
    for (id, tag) in store.hscan_all(&store.global.dead_owner).await? {
        if theirs(&tag) {
            store.drop_dead_index(&id).await?;
        }
    }
    // A handover created while the user was erased left an index entry after the
    // first sweep.
    handovers::forget_user(store, user).await?;
    // Statuses of messages to the user with no sent record here (purged, or sent
    // by another tool): found by their recipient.
    let status_keys = store.scan(&keys::statuses_pattern(&store.prefix)).await?;
    for batch in status_keys.chunks(1000) {
        let mut pipe = ::redis::pipe();
        for key in batch {
            pipe.hvals(key);
        }
        let all: Vec<Vec<Vec<u8>>> = pipe.query_async(&mut con).await.map_err(err)?;
        for (key, records) in batch.iter().zip(all) {
            let to_user = records.iter().any(|r| {
                text(r)
                    .as_deref()
                    .and_then(status_from_json)
                    .is_some_and(|s| s.recipient.as_deref() == Some(user))
            });
            if to_user {
                let _: i64 = con.del(key).await.map_err(err)?;
            }
        }
    }
    Ok(sessions)
}

/// Deletes the dedupe keys (claims or users' records) matching `pattern` dated before
/// `before` (`PURGE_DEDUPE`): how many went.
async fn purge_dated(
    store: &RedisDurable,
    pattern: &str,
    before: Millis,
) -> Result<usize, StoreError> {
    let mut gone = 0;
    for key in store.scan(pattern).await? {
        let n: i64 = store
            .scripts
            .purge_dedupe
            .key(&key)
            .arg(before)
            .invoke_async(&mut store.con())
            .await
            .map_err(err)?;
        gone += n as usize;
    }
    Ok(gone)
}

pub(super) async fn purge(store: &RedisDurable, before: Millis) -> Result<usize, StoreError> {
    let mut con = store.con();
    // The claims first, then the users' own records: a purge cut short between the
    // two leaves records whose key is claimed again by the next copy and refused by
    // the record; the other way round it would leave claims that let a copy through
    // to a user with no record. The users' records go silently: each stands for the
    // same key as a claim, which is what is counted.
    let mut gone = purge_dated(store, &keys::claims_pattern(&store.prefix), before).await?;
    purge_dated(store, &keys::dedupe_pattern(&store.prefix), before).await?;
    // Statuses are dated in Unix seconds; an unreadable one goes too.
    let first = crate::store::durable::first_status_second(before);
    for key in store.scan(&keys::statuses_pattern(&store.prefix)).await? {
        let all: Vec<(String, Vec<u8>)> = con.hgetall(&key).await.map_err(err)?;
        for (status, record) in all {
            let old = text(&record)
                .as_deref()
                .and_then(status_from_json)
                .is_none_or(|s| s.at < first);
            if old {
                let n: i64 = con.hdel(&key, &status).await.map_err(err)?;
                gone += n as usize;
            }
        }
    }
    for key in store.scan(&keys::sent_pattern(&store.prefix)).await? {
        let all: Vec<(String, String)> = con.hgetall(&key).await.map_err(err)?;
        for (wamid, text) in all {
            let old = sent_from_json(&text).is_none_or(|record| record.at < before);
            if old {
                let n: i64 = con.hdel(&key, &wamid).await.map_err(err)?;
                let _: i64 = con
                    .hdel(&store.global.sent_owner, &wamid)
                    .await
                    .map_err(err)?;
                gone += n as usize;
            }
        }
    }
    Ok(gone)
}

pub(super) async fn ping(store: &RedisDurable) -> Result<(), StoreError> {
    let _: String = ::redis::cmd("PING")
        .query_async(&mut store.con())
        .await
        .map_err(err)?;
    Ok(())
}

pub(super) fn sent_json(sent: &SentRecord) -> String {
    serde_json::json!({
        "message_id": sent.message_id,
        "phone_number_id": sent.key.phone_number_id,
        "user": sent.key.user,
        "flow": sent.flow,
        "node": sent.node,
        "at": sent.at,
    })
    .to_string()
}

pub(super) fn sent_from_json(text: &str) -> Option<SentRecord> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let s = |name: &str| v.get(name)?.as_str().map(str::to_string);
    let record = SentRecord {
        message_id: s("message_id")?,
        key: SessionKey {
            phone_number_id: s("phone_number_id")?,
            user: s("user")?,
        },
        flow: s("flow")?,
        node: s("node")?,
        at: v.get("at")?.as_i64()?,
    };
    Some(record)
}

pub(super) fn status_json(s: &StatusRecord) -> String {
    serde_json::json!({
        "message_id": s.message_id,
        "status": s.status,
        "at": s.at,
        "recipient": s.recipient,
        "error_code": s.error_code,
        "error_title": s.error_title,
    })
    .to_string()
}

pub(super) fn status_from_json(text: &str) -> Option<StatusRecord> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let opt = |name: &str| v.get(name).and_then(|x| x.as_str()).map(str::to_string);
    Some(StatusRecord {
        message_id: opt("message_id")?,
        status: opt("status")?,
        at: v.get("at")?.as_i64()?,
        recipient: opt("recipient"),
        error_code: v.get("error_code").and_then(|x| x.as_i64()),
        error_title: opt("error_title"),
    })
}

type Hash = HashMap<String, Vec<u8>>;

/// What [`export_user`] reads of the user's keys: inbox ids, items, outbox members,
/// outgoing messages, dead letters, timers (name, due), timer bodies, sent records.
type UserKeysRead = (
    Vec<String>,
    Hash,
    Vec<String>,
    Hash,
    Hash,
    Vec<(String, i64)>,
    Hash,
    Hash,
);

/// Everything kept about one user on one number: the user's own keys (one slot), read
/// in one MULTI so the parts agree, then the session and each sent message's statuses.
/// Fields this build cannot read are left out, as the lists elsewhere skip them.
pub(super) async fn export_user(
    store: &RedisDurable,
    key: &SessionKey,
) -> Result<UserData, StoreError> {
    let keys = store.user(key);
    let (inbox, items, outbox, outgoing, dead, timers, timer_bodies, sent): UserKeysRead =
        ::redis::pipe()
            .atomic()
            .zrange(keys.inbox(), 0, -1)
            .hgetall(keys.items())
            .zrange(keys.outbox(), 0, -1)
            .hgetall(keys.outgoing())
            .hgetall(keys.dead())
            .zrange_withscores(keys.timers(), 0, -1)
            .hgetall(keys.timer_bodies())
            .hgetall(keys.sent())
            .query_async(&mut store.con())
            .await
            .map_err(err)?;
    let field =
        |hash: &Hash, id: &str, f: &str| hash.get(&format!("{id}:{f}")).and_then(|v| text(v));
    let mut data = UserData {
        session: turns::load_session(store, key).await?,
        ..UserData::default()
    };
    for id in inbox {
        let item = || -> Option<Item> {
            Some(Item {
                id: ItemId(id.parse().ok()?),
                key: key.clone(),
                kind: ItemKind::parse(&field(&items, &id, "k")?)?,
                body: field(&items, &id, "b")?,
                at: field(&items, &id, "a")?.parse().ok()?,
            })
        };
        data.items.extend(item());
    }
    for m in outbox {
        let out = || -> Option<Outgoing> {
            Some(Outgoing {
                key: key.clone(),
                at: out_key(&m).ok()?,
                body: field(&outgoing, &m, "b")?,
                attempts: field(&outgoing, &m, "n")?.parse().ok()?,
                ambiguous: field(&outgoing, &m, "a")?.parse().ok()?,
                not_before: field(&outgoing, &m, "t")?.parse().ok()?,
            })
        };
        data.outgoing.extend(out());
    }
    let mut dead_ids: Vec<u64> = dead
        .keys()
        .filter_map(|f| f.strip_suffix(":m")?.parse().ok())
        .collect();
    dead_ids.sort_unstable();
    for id in dead_ids {
        let n = id.to_string();
        let letter = || -> Option<DeadLetter> {
            Some(DeadLetter {
                id,
                key: key.clone(),
                at: out_key(&field(&dead, &n, "m")?).ok()?,
                body: field(&dead, &n, "b")?,
                attempts: field(&dead, &n, "n")?.parse().ok()?,
                reason: field(&dead, &n, "r")?,
                since: field(&dead, &n, "s")?.parse().ok()?,
            })
        };
        data.dead_letters.extend(letter());
    }
    let mut timers: Vec<NewTimer> = timers
        .into_iter()
        .filter_map(|(name, due)| {
            let body = timer_bodies.get(&name).and_then(|v| text(v))?;
            Some(NewTimer { name, due, body })
        })
        .collect();
    timers.sort_by(|a, b| (a.due, &a.name).cmp(&(b.due, &b.name)));
    data.timers = timers;
    let mut records: Vec<SentRecord> = sent
        .values()
        .filter_map(|v| sent_from_json(&text(v)?))
        .collect();
    records.sort_by(|a, b| (a.at, &a.message_id).cmp(&(b.at, &b.message_id)));
    for r in &records {
        data.statuses.extend(statuses(store, &r.message_id).await?);
    }
    data.sent = records;
    data.handovers = handovers::export(store, key).await?;
    Ok(data)
}
