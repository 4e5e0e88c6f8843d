//! The per-number send pace shared by every instance on one Redis: a GCRA (generic cell
//! rate algorithm) in one Lua script, on Redis's own clock so instances' clocks need not
//! agree. One key per number (`<prefix>pace:<number>`, its own cluster slot) holds the
//! theoretical arrival time of the next send.

use crate::store::StoreError;
use crate::store::durable::Millis;
use ::redis::Script;
use ::redis::aio::ConnectionManager;
use std::sync::LazyLock;

/// KEYS: the pace key. ARGV: interval (ms between sends), burst (ms of sends that may
/// go at once). Returns 0 when the send may go now (and takes its slot), else how many
/// ms to wait before asking again.
const TAKE_SLOT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - now - burst
if wait > 0 then return wait end
redis.call('SET', KEYS[1], tat + interval, 'PX', burst + interval + 1000)
return 0
";

static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(TAKE_SLOT));

/// Takes a send slot of `number`'s pace of `per_second` (a burst of up to `per_second`
/// sends may go at once, as Meta's per-second limit allows): `0` = go now, else the ms
/// to wait before asking again.
pub(super) async fn take_slot(
    mut con: ConnectionManager,
    prefix: &str,
    number: &str,
    per_second: u32,
) -> Result<Millis, StoreError> {
    let per_second = Millis::from(per_second.max(1));
    let interval = (1000 / per_second).max(1);
    let burst = interval * (per_second - 1);
    SCRIPT
        .key(format!("{prefix}pace:{number}"))
        .arg(interval)
        .arg(burst)
        .invoke_async(&mut con)
        .await
        .map_err(|e| StoreError(format!("redis: {e}")))
}
