//! Leases: acquire (with a token from the global counter), renew, release.

use super::*;

pub(super) async fn acquire(
    store: &RedisDurable,
    key: &SessionKey,
    holder: &str,
    now: Millis,
    ttl: Duration,
) -> Result<Option<Lease>, StoreError> {
    let keys = store.user(key);
    let until = now.saturating_add(ttl.as_millis() as Millis);
    for _ in 0..ID_RACE_RETRIES {
        // Tokens come from one counter, so they keep growing after an erasure
        // removed the user's own record of the last one.
        let token: u64 = store
            .con()
            .incr(&store.global.fence, 1)
            .await
            .map_err(err)?;
        let reply: Option<String> = store
            .scripts
            .acquire
            .key(keys.lease())
            .key(keys.fence())
            .arg(holder)
            .arg(now)
            .arg(until)
            .arg(token)
            .invoke_async(&mut store.con())
            .await
            .map_err(err)?;
        match reply.as_deref() {
            None => return Ok(None),
            Some("-1") => continue,
            Some(token) => {
                return Ok(Some(Lease {
                    key: key.clone(),
                    holder: holder.to_string(),
                    token: parse_u64(token, "lease token")?,
                    until,
                }));
            }
        }
    }
    Err(StoreError(
        "redis: lease tokens kept racing; try again".into(),
    ))
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

pub(super) async fn release(store: &RedisDurable, lease: &Lease) -> Result<(), StoreError> {
    let keys = store.user(&lease.key);
    let _: i64 = store
        .scripts
        .release
        .key(keys.lease())
        .arg(&lease.holder)
        .arg(lease.token)
        .invoke_async(&mut store.con())
        .await
        .map_err(err)?;
    Ok(())
}
