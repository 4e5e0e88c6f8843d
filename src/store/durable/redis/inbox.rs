//! The inbox: accepting items (dedupe claim + the user's script), reading the next one,
//! and finding work: the users with work and the timers that fall due into the inbox.

use super::*;

impl RedisDurable {
    /// Claims a dedupe key for the user across the store: a `SET NX`, sent in a
    /// pipeline before the user's script; [`RedisDurable::claimed`] reads its answer.
    fn claim_cmd(&self, keys: &UserKeys, dedupe: &str, at: Millis) -> ::redis::Cmd {
        let mine = keys::fingerprint(&keys.tag);
        let mut set = ::redis::cmd("SET");
        set.arg(keys::dedupe_claim(&self.prefix, dedupe))
            .arg(format!("{mine} c {at}"))
            .arg("NX")
            .arg("PX")
            .arg(DEDUPE_TTL.as_millis() as u64);
        set
    }

    /// Whether a claim ([`RedisDurable::claim_cmd`]) lets the item through, given what
    /// its `SET NX` answered in the pipeline. `false`: it is a duplicate (another
    /// user's, or marked stored by an older build); `true`: it is this user's, so go on
    /// to the user's script, whose own dedupe record decides atomically (a copy already
    /// stored, a claim left by a crash between claim and store, a concurrent accept of
    /// the same item).
    async fn claimed(
        &self,
        keys: &UserKeys,
        dedupe: &str,
        answer: Option<::redis::Value>,
    ) -> Result<bool, StoreError> {
        let set: Option<String> = answer
            .and_then(|set| ::redis::from_redis_value(set).ok())
            .ok_or_else(|| corrupt("dedupe claim reply"))?;
        if set.is_some() {
            return Ok(true);
        }
        let claim = keys::dedupe_claim(&self.prefix, dedupe);
        let mine = keys::fingerprint(&keys.tag);
        let held: Option<String> = self.con().get(&claim).await.map_err(err)?;
        let Some(held) = held else {
            // Purged or expired in between: claim again next time; the user's record
            // still decides now.
            return Ok(true);
        };
        let mut parts = held.split(' ');
        Ok(parts.next() == Some(mine.as_str()) && parts.next() == Some("c"))
    }

    /// Stores one user's part of an accept; `None` when the ids raced. One answer per
    /// item: its id, or 0 for a duplicate.
    async fn accept_user(
        &self,
        keys: &UserKeys,
        items: &[(ItemId, &NewItem)],
    ) -> Result<Option<Vec<u64>>, StoreError> {
        let mut answers = vec![0; items.len()];
        // One round trip for every item's dedupe claim and the hint (see the module
        // docs); a batch of duplicates leaves a stale hint, checked once later.
        let oldest = items
            .iter()
            .map(|(_, i)| i.at)
            .min()
            .unwrap_or(ITEM_HINT)
            .min(ITEM_HINT);
        let mut claiming = Batch::new();
        for (_, item) in items {
            if let Some(d) = &item.dedupe {
                claiming.once(self.claim_cmd(keys, d, item.at));
            }
        }
        claiming.hint(self.hint_cmds(Index::Work, &keys.tag, oldest));
        let mut claims = self
            .pipelined(&claiming, &[])
            .await
            .map_err(err)?
            .into_iter();
        let mut part = Vec::new();
        for (n, (id, item)) in items.iter().enumerate() {
            let fresh = match &item.dedupe {
                Some(d) => self.claimed(keys, d, claims.next()).await?,
                None => true,
            };
            if fresh {
                part.push((n, *id, *item));
            }
        }
        let (Some(first), Some(last)) = (part.first(), part.last()) else {
            return Ok(Some(answers));
        };
        let mut call = self.scripts.accept.prepare_invoke();
        call.key(keys.last_id()).key(keys.inbox()).key(keys.items());
        for (_, _, item) in &part {
            if let Some(d) = &item.dedupe {
                call.key(keys.dedupe(d));
            }
        }
        call.arg(first.1.0)
            .arg(part.len())
            .arg(DEDUPE_TTL.as_millis() as u64)
            .arg(last.1.0);
        for (_, id, item) in &part {
            call.arg(id.0)
                .arg(if item.dedupe.is_some() { "1" } else { "0" })
                .arg(item.kind.as_str())
                .arg(&item.body)
                .arg(item.at);
        }
        // The hint again after the write, in the same round trip: a removal that raced
        // the write sees a new version.
        let mut batch = Batch::new();
        batch
            .once(script_cmd(&call))
            .hint(self.hint_cmds(Index::Work, &keys.tag, oldest));
        let reply = self
            .pipelined(&batch, &[&self.scripts.accept])
            .await
            .map_err(err)?
            .into_iter()
            .next()
            .unwrap_or(::redis::Value::Nil);
        if let ::redis::Value::Int(-1) = reply {
            return Ok(None);
        }
        let ids: Vec<String> = ::redis::from_redis_value(reply)
            .map_err(|e| StoreError(format!("redis: unreadable accept reply: {e}")))?;
        for ((n, _, _), id) in part.iter().zip(ids) {
            answers[*n] = parse_u64(&id, "accept reply")?;
        }
        Ok(Some(answers))
    }

    async fn read_item(&self, keys: &UserKeys) -> Result<Option<Vec<Vec<u8>>>, StoreError> {
        self.scripts
            .next_item
            .key(keys.inbox())
            .key(keys.items())
            .invoke_async(&mut self.con())
            .await
            .map_err(err)
    }

    /// Fires up to `limit` of one user's due timers: how many fired, and whether the
    /// user's hint left the due range.
    async fn fire_user(
        &self,
        tag: &str,
        now: Millis,
        limit: usize,
    ) -> Result<(usize, bool), StoreError> {
        let Some(key) = keys::key_of(tag) else {
            self.drop_hint(Index::Timers, tag).await?;
            return Ok((0, true));
        };
        let keys = self.user(&key);
        let version = self.hint_version(Index::Timers, tag).await?;
        let due: usize = self
            .con()
            .zcount(keys.timers(), "-inf", now)
            .await
            .map_err(err)?;
        let want = due.min(limit);
        let mut next_due: Millis = -1;
        let mut fired = 0;
        if want > 0 {
            self.hint(Index::Work, tag, ITEM_HINT).await?;
            let mut done = false;
            for _ in 0..ID_RACE_RETRIES {
                let first = self.reserve_ids(want).await?;
                let reply: Vec<String> = self
                    .scripts
                    .fire
                    .key(keys.timers())
                    .key(keys.timer_bodies())
                    .key(keys.last_id())
                    .key(keys.inbox())
                    .key(keys.items())
                    .arg(now)
                    .arg(want)
                    .arg(first)
                    .invoke_async(&mut self.con())
                    .await
                    .map_err(err)?;
                let n: i64 = reply
                    .first()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| corrupt("timer reply"))?;
                if n < 0 {
                    continue;
                }
                fired = n as usize;
                next_due = reply
                    .get(1)
                    .and_then(|s| s.parse::<f64>().ok())
                    .map(|f| f as Millis)
                    .unwrap_or(-1);
                done = true;
                break;
            }
            if !done {
                return Err(StoreError("redis: item ids kept racing; try again".into()));
            }
            self.hint(Index::Work, tag, ITEM_HINT).await?;
        } else {
            let first: Vec<(String, f64)> = self
                .con()
                .zrange_withscores(keys.timers(), 0, 0)
                .await
                .map_err(err)?;
            if let Some((_, due)) = first.first() {
                next_due = *due as Millis;
            }
        }
        let score = (next_due >= 0).then_some(next_due);
        let settled = self.settle(Index::Timers, tag, &version, score).await?;
        Ok((fired, settled && score.is_none_or(|due| due > now)))
    }
}

pub(super) async fn accept(
    store: &RedisDurable,
    items: Vec<NewItem>,
) -> Result<Vec<Accepted>, StoreError> {
    let mut answers = vec![Accepted::Duplicate; items.len()];
    // Each user's items, in order: one script per user (one slot each), users in
    // the order they first appear (the first copy of a dedupe key wins).
    let mut pending: Vec<(SessionKey, Vec<usize>)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match pending.iter_mut().find(|(k, _)| *k == item.key) {
            Some((_, group)) => group.push(i),
            None => pending.push((item.key.clone(), vec![i])),
        }
    }
    for _ in 0..ID_RACE_RETRIES {
        if pending.is_empty() {
            return Ok(answers);
        }
        // Ids in the order of the batch, reserved for every item still pending.
        let mut order: Vec<usize> = pending.iter().flat_map(|(_, g)| g.clone()).collect();
        order.sort_unstable();
        let first = store.reserve_ids(order.len()).await?;
        let id_of = |i: usize| {
            let pos = order.iter().position(|&j| j == i).unwrap_or(0);
            ItemId(first + pos as u64)
        };
        let mut raced = Vec::new();
        for (key, group) in pending {
            let keys = store.user(&key);
            let part: Vec<(ItemId, &NewItem)> =
                group.iter().map(|&i| (id_of(i), &items[i])).collect();
            match store.accept_user(&keys, &part).await? {
                None => raced.push((key, group)),
                Some(ids) => {
                    for (&i, id) in group.iter().zip(ids) {
                        answers[i] = if id == 0 {
                            Accepted::Duplicate
                        } else {
                            Accepted::Stored(ItemId(id))
                        };
                    }
                }
            }
        }
        pending = raced;
    }
    if pending.is_empty() {
        Ok(answers)
    } else {
        Err(StoreError("redis: item ids kept racing; try again".into()))
    }
}

/// The direct path ([`Durable::accept_turn`]): the dedupe claim, then one script on the
/// user's keys that checks the lease and the empty inbox, records the user's dedupe
/// record, saves the session and queues the messages. Hints and claims as for
/// `accept` and `commit_turn` (see the module docs).
pub(super) async fn accept_turn(
    store: &RedisDurable,
    lease: &Lease,
    now: Millis,
    turn: DirectTurn,
) -> Result<Direct, CommitError> {
    let keys = store.user(&lease.key);
    let DirectTurn {
        item,
        session,
        outgoing,
    } = turn;
    let data = encode(&session)?;
    // One round trip before the user's script: the dedupe claim, the hint (see the
    // module docs) and the item's id. A duplicate wastes the hint (one check later)
    // and the id (ids need only increase).
    let mut first = Batch::new();
    if let Some(d) = &item.dedupe {
        first.once(store.claim_cmd(&keys, d, item.at));
    }
    if !outgoing.is_empty() {
        first.hint(store.hint_cmds(Index::Work, &keys.tag, now));
    }
    first.again(redis::Cmd::incr(&store.global.ids, 1));
    let mut answers = store.pipelined(&first, &[]).await.map_err(err)?;
    let reserved = answers.pop();
    let mut reserved: u64 = reserved
        .and_then(|id| redis::from_redis_value(id).ok())
        .ok_or_else(|| corrupt("item id reply"))?;
    if let Some(d) = &item.dedupe
        && !store.claimed(&keys, d, answers.into_iter().next()).await?
    {
        return Ok(Direct::Duplicate);
    }
    for _ in 0..ID_RACE_RETRIES {
        let id = std::mem::take(&mut reserved);
        let id = match id {
            0 => store.reserve_ids(1).await?,
            id => id,
        };
        let mut call = store.scripts.accept_turn.prepare_invoke();
        call.key(keys.lease())
            .key(keys.last_id())
            .key(keys.inbox())
            .key(keys.session())
            .key(keys.outbox())
            .key(keys.outbox_seq())
            .key(keys.outgoing());
        if let Some(d) = &item.dedupe {
            call.key(keys.dedupe(d));
        }
        call.arg(&lease.holder)
            .arg(lease.token)
            .arg(now)
            .arg(id)
            .arg(if item.dedupe.is_some() { "1" } else { "0" })
            .arg(DEDUPE_TTL.as_millis() as u64)
            .arg(item.at)
            .arg(SESSION_VERSION)
            .arg(&data)
            .arg(session.updated_at)
            .arg(outgoing.len());
        for (index, o) in (0u32..).zip(&outgoing) {
            call.arg(member(OutKey { turn: id, index }))
                .arg(&o.body)
                .arg(o.not_before.max(now));
        }
        // The hint again after the write (see the module docs), in the same round
        // trip; when nothing was written it is a stale hint, checked once later.
        let mut batch = Batch::new();
        batch.once(script_cmd(&call));
        if !outgoing.is_empty() {
            batch.hint(store.hint_cmds(Index::Work, &keys.tag, now));
        }
        let reply = store
            .pipelined(&batch, &[&store.scripts.accept_turn])
            .await
            .map_err(err)?
            .into_iter()
            .next()
            .unwrap_or(redis::Value::Nil);
        let Some((done, peek)) = super::outbox::code_and_peek(&lease.key, &reply) else {
            return Err(CommitError::Store(corrupt("accept_turn reply")));
        };
        match done {
            1 => return Ok(Direct::Committed(ItemId(id), peek)),
            2 => return Ok(Direct::Duplicate),
            0 => return Err(CommitError::Fenced),
            -3 => return Ok(Direct::Declined),
            -1 => {}
            _ => return Err(CommitError::Store(corrupt("accept_turn reply"))),
        }
    }
    Err(CommitError::Store(StoreError(
        "redis: item ids kept racing; try again".into(),
    )))
}

pub(super) async fn next_item(
    store: &RedisDurable,
    key: &SessionKey,
) -> Result<Option<Item>, StoreError> {
    let keys = store.user(key);
    loop {
        let Some(fields) = store.read_item(&keys).await? else {
            return Ok(None);
        };
        let [id, kind, body, at] = fields.as_slice() else {
            return Err(corrupt("inbox reply"));
        };
        let id = String::from_utf8_lossy(id).into_owned();
        let kind = String::from_utf8_lossy(kind).into_owned();
        let parsed = (
            id.parse::<u64>().ok(),
            ItemKind::parse(&kind),
            text(body),
            text(at).and_then(|at| at.parse::<Millis>().ok()),
        );
        if let (Some(id), Some(kind), Some(body), Some(at)) = parsed {
            return Ok(Some(Item {
                id: ItemId(id),
                key: key.clone(),
                kind,
                body,
                at,
            }));
        }
        // Written by a newer version, or damaged: out of the way, so the user's
        // later items still run.
        tracing::warn!(
            item = %id,
            kind = %kind,
            "an inbox item this build cannot read was moved aside"
        );
        let _: i64 = store
            .scripts
            .move_aside
            .key(keys.inbox())
            .key(keys.items())
            .key(keys.aside())
            .arg(id)
            .invoke_async(&mut store.con())
            .await
            .map_err(err)?;
    }
}

pub(super) async fn users_with_work(
    store: &RedisDurable,
    now: Millis,
    limit: usize,
    only: Option<&[String]>,
) -> Result<Vec<SessionKey>, StoreError> {
    // Candidates come from the index in score order; a score is never later than
    // the user's true oldest work (hints keep the smallest), so once `limit` users
    // are found and the index has passed the last of them, nothing later can rank
    // before them.
    if limit == 0 {
        return Ok(Vec::new());
    }
    let mut found: Vec<(Millis, SessionKey)> = Vec::new();
    let mut offset = 0;
    loop {
        let batch = store.due_in(Index::Work, now, offset).await?;
        let Some(&(_, last_score)) = batch.last() else {
            break;
        };
        let read = batch.len();
        let mut moved = 0;
        for (tag, score) in batch {
            let Some(key) = keys::key_of(&tag) else {
                store.drop_hint(Index::Work, &tag).await?;
                moved += 1;
                continue;
            };
            // Another number's user: stepped over, its hint left to whoever serves it.
            if only.is_some_and(|numbers| !numbers.contains(&key.phone_number_id)) {
                continue;
            }
            let keys = store.user(&key);
            let version = store.hint_version(Index::Work, &tag).await?;
            let truth: Vec<String> = store
                .scripts
                .work
                .key(keys.inbox())
                .key(keys.items())
                .key(keys.outgoing())
                .key(keys.lease())
                .arg(now)
                .invoke_async(&mut store.con())
                .await
                .map_err(err)?;
            let [has_items, oldest, any, due, free] = truth.as_slice() else {
                return Err(corrupt("work reply"));
            };
            // Items are work whatever their `at`; an item without a readable one
            // counts from now.
            let items = (has_items == "1").then(|| oldest.parse::<Millis>().unwrap_or(now));
            let any = any.parse::<Millis>().ok();
            let due = due.parse::<Millis>().ok();
            // The user's rank among those with work now, as the trait orders them.
            let rank = match (items, due) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            // Where the hint belongs: never after the rank (see the module docs),
            // no later than now while there are items, else at the soonest
            // message, due or not.
            let place = match items {
                Some(at) => Some(at.min(now).min(any.unwrap_or(Millis::MAX))),
                None => any,
            };
            let Some(place) = place else {
                // Nothing left: the hint goes (unless one was added meanwhile).
                if store.settle(Index::Work, &tag, &version, None).await? {
                    moved += 1;
                }
                continue;
            };
            let mut settled = false;
            if place != score as Millis {
                settled = store
                    .settle(Index::Work, &tag, &version, Some(place))
                    .await?;
            }
            // A settled entry changed place (out of the range, or further on):
            // not stepping over it may visit it twice (hence the check below),
            // but never skips another.
            moved += usize::from(settled);
            if let Some(rank) = rank
                && free == "1"
                && !found.iter().any(|(_, k)| *k == key)
            {
                found.push((rank, key));
            }
        }
        found.sort();
        if let Some((kth, _)) = found.get(limit.saturating_sub(1))
            && found.len() >= limit
            && last_score as Millis > *kth
        {
            break;
        }
        offset += read - moved;
    }
    found.truncate(limit);
    Ok(found.into_iter().map(|(_, key)| key).collect())
}

pub(super) async fn fire_due_timers(
    store: &RedisDurable,
    now: Millis,
    limit: usize,
) -> Result<usize, StoreError> {
    let mut fired = 0;
    let mut offset = 0;
    while fired < limit {
        let batch = store.due_in(Index::Timers, now, offset).await?;
        if batch.is_empty() {
            break;
        }
        let read = batch.len();
        let mut left = 0;
        for (tag, _) in batch {
            if fired >= limit {
                break;
            }
            let (n, gone) = store.fire_user(&tag, now, limit - fired).await?;
            fired += n;
            left += usize::from(gone);
        }
        // Entries that left the due range shift the rest down; the others (a new
        // hint raced the settle: the next call sees them) are stepped over.
        offset += read - left;
    }
    Ok(fired)
}

pub(super) async fn timers(
    store: &RedisDurable,
    key: &SessionKey,
) -> Result<Vec<NewTimer>, StoreError> {
    let keys = store.user(key);
    let flat: Vec<String> = store
        .scripts
        .timers
        .key(keys.timers())
        .key(keys.timer_bodies())
        .invoke_async(&mut store.con())
        .await
        .map_err(err)?;
    flat.chunks(3)
        .map(|t| match t {
            [name, due, body] => Ok(NewTimer {
                name: name.clone(),
                due: due
                    .parse::<f64>()
                    .map(|d| d as Millis)
                    .map_err(|_| corrupt("timer"))?,
                body: body.clone(),
            }),
            _ => Err(corrupt("timers reply")),
        })
        .collect()
}
