//! Leases: acquire (the token taken by the script, see `scripts::ACQUIRE`), renew,
//! release.

use super::*;

pub(super) async fn acquire(
    store: &RedisDurable,
    key: &SessionKey,
    holder: &str,
    now: Millis,
    ttl: Duration,
) -> Result<Option<Lease>, StoreError> {
    let taken = take(store, key, holder, now, ttl, Reading::Nothing).await?;
    Ok(taken.map(|(lease, _)| lease))
}

/// `acquire` with the user's session read by the same script: one round trip fewer
/// for a turn about to run.
pub(super) async fn acquire_reading(
    store: &RedisDurable,
    key: &SessionKey,
    holder: &str,
    now: Millis,
    ttl: Duration,
) -> Result<Option<(Lease, Option<Session>)>, StoreError> {
    take(store, key, holder, now, ttl, Reading::Session).await
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Reading {
    Nothing,
    Session,
}

async fn take(
    store: &RedisDurable,
    key: &SessionKey,
    holder: &str,
    now: Millis,
    ttl: Duration,
    reading: Reading,
) -> Result<Option<(Lease, Option<Session>)>, StoreError> {
    let keys = store.user(key);
    let until = now.saturating_add(ttl.as_millis() as Millis);
    let mut script = store.scripts.acquire.key(keys.lease());
    script.key(keys.fence());
    if reading == Reading::Session {
        script.key(keys.session());
    }
    let reply: ::redis::Value = script
        .arg(holder)
        .arg(now)
        .arg(until)
        .invoke_async(&mut store.con())
        .await
        .map_err(err)?;
    let (token, session) = match reply {
        ::redis::Value::Nil => return Ok(None),
        ::redis::Value::Array(fields) => {
            let mut fields = fields.into_iter();
            let token = fields.next().map(bytes_of).unwrap_or_default();
            let version = fields.next().and_then(bytes_of);
            let data = fields.next().and_then(bytes_of);
            (token, turns::session_from(key, version, data))
        }
        other => (bytes_of(other), None),
    };
    let token = token
        .as_deref()
        .and_then(|t| std::str::from_utf8(t).ok())
        .ok_or_else(|| corrupt("lease token"))?;
    let lease = Lease {
        key: key.clone(),
        holder: holder.to_string(),
        token: parse_u64(token, "lease token")?,
        until,
    };
    Ok(Some((lease, session)))
}

/// A script answer's text, as bytes (`None`: nil or not text).
fn bytes_of(v: ::redis::Value) -> Option<Vec<u8>> {
    match v {
        ::redis::Value::BulkString(b) => Some(b),
        ::redis::Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    }
}

pub(super) async fn renew(
    store: &RedisDurable,
    lease: &Lease,
    now: Millis,
    ttl: Duration,
) -> Result<Option<Lease>, StoreError> {
    let keys = store.user(&lease.key);
    let until = now.saturating_add(ttl.as_millis() as Millis);
    let renewed: i64 = store
        .scripts
        .renew
        .key(keys.lease())
        .arg(&lease.holder)
        .arg(lease.token)
        .arg(now)
        .arg(until)
        .invoke_async(&mut store.con())
        .await
        .map_err(err)?;
    Ok((renewed == 1).then(|| Lease {
        until,
        ..lease.clone()
    }))
}

/// Gives the lease up; with `look`, answers in the same script whether the user's inbox
/// holds items (else `false`).
pub(super) async fn release(
    store: &RedisDurable,
    lease: &Lease,
    look: bool,
) -> Result<bool, StoreError> {
    let keys = store.user(&lease.key);
    let mut script = store.scripts.release.key(keys.lease());
    if look {
        script.key(keys.inbox());
    }
    let items: i64 = script
        .arg(&lease.holder)
        .arg(lease.token)
        .invoke_async(&mut store.con())
        .await
        .map_err(err)?;
    Ok(items > 0)
}
