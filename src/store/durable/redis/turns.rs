//! Turns: the session and the atomic commit of one turn.

use super::*;

pub(super) async fn load_session(
    store: &RedisDurable,
    key: &SessionKey,
) -> Result<Option<Session>, StoreError> {
    let keys = store.user(key);
    let (version, data): (Option<Vec<u8>>, Option<Vec<u8>>) = store
        .con()
        .hmget(keys.session(), &["v", "data"])
        .await
        .map_err(err)?;
    Ok(session_from(key, version, data))
}

/// The session in a session hash's `v` and `data` fields, read as bytes: a damaged
/// field (a `v` that is no number, data that is not UTF-8) is "no session" with a
/// warning, as an older format is, never an error that would stop the user forever.
pub(super) fn session_from(
    key: &SessionKey,
    version: Option<Vec<u8>>,
    data: Option<Vec<u8>>,
) -> Option<Session> {
    let (Some(version), Some(data)) = (version, data) else {
        return None;
    };
    let readable = text(&version)
        .and_then(|v| v.trim().parse::<i64>().ok())
        .zip(text(&data));
    match readable {
        Some((version, data)) => decode(version, &data),
        None => {
            tracing::warn!(
                number = %key.phone_number_id,
                "a stored session this build cannot read is treated as none"
            );
            None
        }
    }
}

pub(super) async fn commit_turn(
    store: &RedisDurable,
    lease: &Lease,
    now: Millis,
    commit: TurnCommit,
) -> Result<(), CommitError> {
    let keys = store.user(&lease.key);
    let data = encode(&commit.session)?;
    let soonest_timer = commit.timers.iter().map(|t| t.due).min();
    let mut outgoing = commit.outgoing;
    outgoing.sort_by_key(|o| o.at);
    if let Some(twice) = outgoing.windows(2).find(|w| w[0].at == w[1].at) {
        return Err(CommitError::Store(crate::store::durable::taken(
            twice[0].at,
        )));
    }
    let mut call = store.scripts.commit_turn.prepare_invoke();
    call.key(keys.lease())
        .key(keys.inbox())
        .key(keys.items())
        .key(keys.session())
        .key(keys.outbox())
        .key(keys.outbox_seq())
        .key(keys.outgoing())
        .key(keys.timers())
        .key(keys.timer_bodies());
    call.arg(&lease.holder)
        .arg(lease.token)
        .arg(now)
        // 0 is no item: ids start at 1.
        .arg(commit.item.map_or(0, |id| id.0))
        .arg(SESSION_VERSION)
        .arg(data)
        .arg(commit.session.updated_at)
        .arg(outgoing.len());
    for out in &outgoing {
        call.arg(member(out.at))
            .arg(&out.body)
            .arg(out.not_before.max(now));
    }
    call.arg(commit.timers.len());
    for timer in &commit.timers {
        call.arg(&timer.name).arg(timer.due).arg(&timer.body);
    }
    call.arg(commit.cancel_timers.len());
    for name in &commit.cancel_timers {
        call.arg(name);
    }
    // One round trip: the hints before the write and again after it, each addition
    // with a version of its own (see the module docs); a fenced commit leaves them
    // stale, which costs one check later.
    let hints = || {
        let timers = soonest_timer.map(|due| store.hint_cmds(Index::Timers, &keys.tag, due));
        let work = (!outgoing.is_empty()).then(|| store.hint_cmds(Index::Work, &keys.tag, now));
        timers.into_iter().chain(work).collect::<Vec<_>>()
    };
    let (before, after) = (hints(), hints());
    let mut batch = Batch::new();
    for hint in before {
        batch.hint(hint);
    }
    let ahead = batch.len();
    batch.once(script_cmd(&call));
    for hint in after {
        batch.hint(hint);
    }
    let answers = store
        .pipelined(&batch, &[&store.scripts.commit_turn])
        .await
        .map_err(err)?;
    let done: i64 = answers
        .into_iter()
        .nth(ahead)
        .and_then(|v| redis::from_redis_value(v).ok())
        .ok_or_else(|| corrupt("commit reply"))?;
    match done {
        1 => {}
        0 => return Err(CommitError::Fenced),
        taken => {
            let n = usize::try_from(-2 - taken).unwrap_or(usize::MAX);
            let at = outgoing
                .get(n)
                .map(|o| o.at)
                .ok_or_else(|| corrupt("commit reply"))?;
            return Err(CommitError::Store(crate::store::durable::taken(at)));
        }
    }
    Ok(())
}

static MOVE_ASIDE_LEASED: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::new(&scripts::move_aside_leased()));

/// See `Durable::move_aside`: into the user's `aside` hash, with why.
pub(super) async fn move_aside(
    store: &RedisDurable,
    lease: &Lease,
    now: Millis,
    item: ItemId,
    why: &str,
) -> Result<(), CommitError> {
    let keys = store.user(&lease.key);
    let mut call = MOVE_ASIDE_LEASED.prepare_invoke();
    call.key(keys.lease())
        .key(keys.inbox())
        .key(keys.items())
        .key(keys.aside());
    call.arg(&lease.holder)
        .arg(lease.token)
        .arg(now)
        .arg(item.0)
        .arg(why);
    store.fenced_write(&mut call).await
}
