//! The per-number send pace shared by every instance on one Redis: a GCRA (generic cell
//! rate algorithm) in one Lua script, on Redis's own clock so instances' clocks need not
//! agree. One key per number (`<prefix>pace:<number>`, its own cluster slot) holds the
//! theoretical arrival time of the next send. One call takes the slots of every send
//! of an instance waiting at that moment (`delivery::pace`): one round trip for many.

use crate::store::StoreError;
use crate::store::durable::{Millis, Pace};
use ::redis::Script;
use ::redis::aio::ConnectionManager;
use std::num::NonZeroU32;
use std::sync::LazyLock;

/// KEYS: the pace key. ARGV: interval (ms between sends), burst (ms of sends that may
/// go at once), wanted. Returns `{n, 0}` when n sends (1 to wanted) may go now (and
/// takes their slots: the ones that conform now, each an interval after the last, as
/// n single takes at this instant would), else `{0, ms}`: how long to wait before
/// asking again.
const TAKE_SLOTS: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - now - burst
if wait > 0 then return {0, wait} end
local n = math.floor((burst - (tat - now)) / interval) + 1
if n > wanted then n = wanted end
redis.call('SET', KEYS[1], tat + n * interval, 'PX', burst + interval + 1000)
return {n, 0}
";

static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(TAKE_SLOTS));

/// Takes up to `wanted` send slots of `number`'s pace of `per_second` (a burst of up
/// to `per_second` sends may go at once, as Meta's per-second limit allows).
pub(super) async fn take_slots(
    mut con: ConnectionManager,
    prefix: &str,
    number: &str,
    per_second: u32,
    wanted: NonZeroU32,
) -> Result<Pace, StoreError> {
    let per_second = Millis::from(per_second.max(1));
    let interval = (1000 / per_second).max(1);
    let burst = interval * (per_second - 1);
    let (granted, wait): (u32, Millis) = SCRIPT
        .key(format!("{prefix}pace:{number}"))
        .arg(interval)
        .arg(burst)
        .arg(wanted.get())
        .invoke_async(&mut con)
        .await
        .map_err(|e| StoreError(format!("redis: {e}")))?;
    Ok(match NonZeroU32::new(granted) {
        Some(n) => Pace::Go(n.min(wanted)),
        None => Pace::Wait(wait.max(1)),
    })
}
