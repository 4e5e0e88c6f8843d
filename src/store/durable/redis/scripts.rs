//! The Lua scripts: each atomic step of the `Durable` contract is one script that
//! touches only one user's keys (one hash-tag slot), or only one global index.
//!
//! A script does all its checks before its first write: Redis does not roll a script
//! back when it fails half-way, so a script that can refuse must refuse before writing.
//! Numbers cross the boundary as decimal strings (Lua's numbers are doubles; ids,
//! tokens and times stay far below 2^53, and `%.0f` prints them whole).

/// Whether `lease` is held by holder ARGV-style arguments at `now`. Shared by every
/// script that writes under a lease.
const HELD: &str = r"
local function held(lease, holder, token, now)
  local l = redis.call('HMGET', lease, 'holder', 'token', 'until')
  return l[1] == holder and l[2] == token and tonumber(l[3] or '0') > tonumber(now)
end
";

/// KEYS: last, inbox, items, then one dedupe key per item that has one, in order.
/// ARGV: first id, item count, dedupe TTL (ms), largest id, then per item:
/// id, has dedupe ('1'/'0'), kind, body, at.
/// Returns -1 when the ids are not above the user's last one (another accept raced:
/// reserve new ids and call again; nothing was written), else one entry per item:
/// its id, or 0 for a duplicate.
pub(crate) const ACCEPT: &str = r"
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) <= last then return -1 end
local n = tonumber(ARGV[2])
local out = {}
local dk = 4
for i = 1, n do
  local a = 5 + (i - 1) * 5
  local id = ARGV[a]
  local fresh = true
  if ARGV[a + 1] == '1' then
    fresh = redis.call('SET', KEYS[dk], ARGV[a + 4], 'NX', 'PX', ARGV[3])
    dk = dk + 1
  end
  if fresh then
    redis.call('ZADD', KEYS[2], id, id)
    redis.call('HSET', KEYS[3], id .. ':k', ARGV[a + 2], id .. ':b', ARGV[a + 3], id .. ':a', ARGV[a + 4])
    out[i] = id
  else
    out[i] = '0'
  end
end
redis.call('SET', KEYS[1], ARGV[4])
return out
";

/// KEYS: inbox, items. Returns nil or {id, kind, body, at} (missing fields as '').
pub(crate) const NEXT_ITEM: &str = r"
local ids = redis.call('ZRANGE', KEYS[1], 0, 0)
if #ids == 0 then return false end
local id = ids[1]
local f = redis.call('HMGET', KEYS[2], id .. ':k', id .. ':b', id .. ':a')
return {id, f[1] or '', f[2] or '', f[3] or ''}
";

/// KEYS: inbox, items, aside. ARGV: id. Moves an unreadable item out of the inbox.
pub(crate) const MOVE_ASIDE: &str = r"
local id = ARGV[1]
local f = redis.call('HMGET', KEYS[2], id .. ':k', id .. ':b', id .. ':a')
redis.call('HSET', KEYS[3], id .. ':k', f[1] or '', id .. ':b', f[2] or '', id .. ':a', f[3] or '')
redis.call('ZREM', KEYS[1], id)
redis.call('HDEL', KEYS[2], id .. ':k', id .. ':b', id .. ':a')
return 1
";

/// KEYS: lease, inbox, items, aside. ARGV: holder, token, now, item id, why. Moves an
/// item the delivery side cannot read aside under the lease. Returns 0 when fenced
/// (lease lost, item gone), else 1.
pub(crate) fn move_aside_leased() -> String {
    format!(
        "{HELD}
if not held(KEYS[1], ARGV[1], ARGV[2], ARGV[3]) then return 0 end
local id = ARGV[4]
if not redis.call('ZSCORE', KEYS[2], id) then return 0 end
local f = redis.call('HMGET', KEYS[3], id .. ':k', id .. ':b', id .. ':a')
redis.call('HSET', KEYS[4], id .. ':k', f[1] or '', id .. ':b', f[2] or '', id .. ':a', f[3] or '', id .. ':why', ARGV[5])
redis.call('ZREM', KEYS[2], id)
redis.call('HDEL', KEYS[3], id .. ':k', id .. ':b', id .. ':a')
return 1
"
    )
}

/// KEYS: lease, fence, and the session when it is to be read. ARGV: holder, now,
/// until. Returns nil while another holder's lease runs; else the new token, or with a
/// session key `{token, v, data}` (the session's fields, nil when it has none).
///
/// The token is Redis's clock in microseconds, or one more than the user's last token
/// when that is larger: it grows with every acquisition, and after an erasure (which
/// deletes the user's `fence`) it still starts above every token the user had, unless
/// Redis's clock went back. Taken in the script, with no counter of its own to ask
/// first: one round trip per acquisition. (`TIME` before a write needs scripts
/// replicated by their effects, Redis's default since 5.0.)
pub(crate) const ACQUIRE: &str = r"
local l = redis.call('HMGET', KEYS[1], 'holder', 'until')
if l[1] and l[1] ~= ARGV[1] and tonumber(l[2] or '0') > tonumber(ARGV[2]) then return false end
local t = redis.call('TIME')
local token = tonumber(t[1]) * 1000000 + tonumber(t[2])
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
if token <= last then token = last + 1 end
token = string.format('%.0f', token)
redis.call('SET', KEYS[2], token)
redis.call('HSET', KEYS[1], 'holder', ARGV[1], 'token', token, 'until', ARGV[3])
if KEYS[3] then
  local s = redis.call('HMGET', KEYS[3], 'v', 'data')
  return {token, s[1], s[2]}
end
return token
";

/// KEYS: lease. ARGV: holder, token, now, until. 1 when renewed, 0 when lost.
pub(crate) fn renew() -> String {
    format!(
        "{HELD}
if not held(KEYS[1], ARGV[1], ARGV[2], ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], 'until', ARGV[4])
return 1
"
    )
}

/// KEYS: lease, and the inbox when it is to be looked at. ARGV: holder, token.
/// Deletes the lease if it is still this one (the user's `fence` stays, so the next
/// token is larger). Returns how many items the inbox holds (at the release: one
/// stored later finds the lease free), or 0 without an inbox key.
pub(crate) const RELEASE: &str = r"
local l = redis.call('HMGET', KEYS[1], 'holder', 'token')
if l[1] == ARGV[1] and l[2] == ARGV[2] then redis.call('DEL', KEYS[1]) end
if KEYS[2] then return redis.call('ZCARD', KEYS[2]) end
return 0
";

/// KEYS: lease, inbox, items, session, out, outseq, outmsg, timers, timerbody.
/// ARGV: holder, token, now, item id (0: none), session version, session data, session at,
/// outgoing count, (member, body, not_before)*, timer count, (name, due, body)*, cancel count,
/// name*: timers are set, then the named ones cancelled. Returns 0 when fenced (lease
/// lost or item gone), -2 - n when the n-th outgoing message's place (0-based) is
/// already queued (nothing written: a queued message is never overwritten), else 1.
pub(crate) fn commit_turn() -> String {
    format!(
        "{HELD}
if not held(KEYS[1], ARGV[1], ARGV[2], ARGV[3]) then return 0 end
local id = ARGV[4]
if id ~= '0' and not redis.call('ZSCORE', KEYS[2], id) then return 0 end
for j = 0, tonumber(ARGV[8]) - 1 do
  if redis.call('ZSCORE', KEYS[5], ARGV[9 + j * 3]) then return -2 - j end
end
if id ~= '0' then
  redis.call('ZREM', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id .. ':k', id .. ':b', id .. ':a')
end
redis.call('HSET', KEYS[4], 'v', ARGV[5], 'data', ARGV[6], 'at', ARGV[7])
local i = 9
local n = tonumber(ARGV[8])
for _ = 1, n do
  local m = ARGV[i]
  local seq = redis.call('INCR', KEYS[6])
  redis.call('ZADD', KEYS[5], seq, m)
  redis.call('HSET', KEYS[7], m .. ':b', ARGV[i + 1], m .. ':n', '0', m .. ':a', '0', m .. ':t', ARGV[i + 2])
  i = i + 3
end
n = tonumber(ARGV[i])
i = i + 1
for _ = 1, n do
  redis.call('ZADD', KEYS[8], ARGV[i + 1], ARGV[i])
  redis.call('HSET', KEYS[9], ARGV[i], ARGV[i + 2])
  i = i + 3
end
n = tonumber(ARGV[i])
i = i + 1
for _ = 1, n do
  redis.call('ZREM', KEYS[8], ARGV[i])
  redis.call('HDEL', KEYS[9], ARGV[i])
  i = i + 1
end
return 1
"
    )
}

/// The direct path: a turn run before its item was stored, committed with the item's
/// dedupe record. KEYS: lease, last, inbox, session, outbox, outbox seq, outgoing, then
/// the user's dedupe record when ARGV[5] is '1'. ARGV: holder, token, now, id, has
/// dedupe ('1'/'0'), dedupe TTL (ms), at, session version, session data, session at,
/// outgoing count, (member, body, not_before)*. Returns 0 when fenced, -3 when the user
/// has items waiting (declined), -1 when the id is not above the user's last (reserve
/// another), 2 for a duplicate, all with nothing written; else what [`NEXT`] returns:
/// the user's inbox and first unsent message after the write, saving the worker two
/// round trips.
pub(crate) fn accept_turn() -> String {
    format!(
        "{HELD}
if not held(KEYS[1], ARGV[1], ARGV[2], ARGV[3]) then return 0 end
if redis.call('ZCARD', KEYS[3]) > 0 then return -3 end
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[4]) <= last then return -1 end
if ARGV[5] == '1' then
  if not redis.call('SET', KEYS[8], ARGV[7], 'NX', 'PX', ARGV[6]) then return 2 end
end
redis.call('SET', KEYS[2], ARGV[4])
redis.call('HSET', KEYS[4], 'v', ARGV[8], 'data', ARGV[9], 'at', ARGV[10])
local i = 12
for _ = 1, tonumber(ARGV[11]) do
  local m = ARGV[i]
  local seq = redis.call('INCR', KEYS[6])
  redis.call('ZADD', KEYS[5], seq, m)
  redis.call('HSET', KEYS[7], m .. ':b', ARGV[i + 1], m .. ':n', '0', m .. ':a', '0', m .. ':t', ARGV[i + 2])
  i = i + 3
end
local inbox, out, outmsg = KEYS[3], KEYS[5], KEYS[7]
{NEXT}"
    )
}

/// KEYS: out, outmsg. Returns nil or {member, body, attempts, ambiguous, not_before}.
pub(crate) const NEXT_OUTGOING: &str = r"
local m = redis.call('ZRANGE', KEYS[1], 0, 0)
if #m == 0 then return false end
m = m[1]
local f = redis.call('HMGET', KEYS[2], m .. ':b', m .. ':n', m .. ':a', m .. ':t')
return {m, f[1] or '', f[2] or '0', f[3] or '0', f[4] or '0'}
";

/// KEYS: out, outmsg, aside. ARGV: member. Moves an outbox entry this build cannot
/// read out of the outbox (into the aside hash, as `o:<member>:b|n|a|t`).
pub(crate) const MOVE_OUT_ASIDE: &str = r"
local m = ARGV[1]
local f = redis.call('HMGET', KEYS[2], m .. ':b', m .. ':n', m .. ':a', m .. ':t')
redis.call('HSET', KEYS[3], 'o:' .. m .. ':b', f[1] or '', 'o:' .. m .. ':n', f[2] or '', 'o:' .. m .. ':a', f[3] or '', 'o:' .. m .. ':t', f[4] or '')
redis.call('ZREM', KEYS[1], m)
redis.call('HDEL', KEYS[2], m .. ':b', m .. ':n', m .. ':a', m .. ':t')
return 1
";

/// The end of a script that wrote the user's outbox (`inbox`, `out` and `outmsg` its
/// keys): returns `{1, waiting}` when the outbox is empty, else `{1, waiting, member,
/// body, attempts, ambiguous, not_before}` of its first message, read as
/// [`NEXT_OUTGOING`] reads it; `waiting` is how many items the user's inbox holds.
const NEXT: &str = r"
local w = redis.call('ZCARD', inbox)
local n = redis.call('ZRANGE', out, 0, 0)
if #n == 0 then return {1, w} end
n = n[1]
local f = redis.call('HMGET', outmsg, n .. ':b', n .. ':n', n .. ':a', n .. ':t')
return {1, w, n, f[1] or '', f[2] or '0', f[3] or '0', f[4] or '0'}
";

/// The checks every outbox write under a lease starts with: KEYS[1] lease, KEYS[2]
/// out; ARGV 1-3 holder, token, now; ARGV[4] the message. Fenced (0) when the lease
/// is lost or the message is not in the outbox.
const OUTBOX_CHECK: &str = r"
if not held(KEYS[1], ARGV[1], ARGV[2], ARGV[3]) then return 0 end
local m = ARGV[4]
if not redis.call('ZSCORE', KEYS[2], m) then return 0 end
";

/// KEYS: lease, out, outmsg, sent, inbox. ARGV: holder, token, now, member, wamid,
/// record, release when idle ('1'/'0'). Returns 0 when fenced; 2 when asked to release
/// and the outbox and inbox were empty after the write: the lease is deleted (as
/// [`RELEASE`] does), the worker's release round trip saved; else what [`NEXT`]
/// returns: the user's inbox and next message, so the worker's next step needs no read
/// of either.
pub(crate) fn mark_sent() -> String {
    format!(
        "{HELD}{OUTBOX_CHECK}
redis.call('ZREM', KEYS[2], m)
redis.call('HDEL', KEYS[3], m .. ':b', m .. ':n', m .. ':a', m .. ':t')
redis.call('HSET', KEYS[4], ARGV[5], ARGV[6])
if ARGV[7] == '1' and redis.call('ZCARD', KEYS[2]) == 0 and redis.call('ZCARD', KEYS[5]) == 0 then
  redis.call('DEL', KEYS[1])
  return 2
end
local inbox, out, outmsg = KEYS[5], KEYS[2], KEYS[3]
{NEXT}"
    )
}

/// KEYS: lease, out, outmsg. ARGV: holder, token, now, member, ambiguous ('1'/'0'),
/// not_before.
pub(crate) fn mark_attempt() -> String {
    format!(
        "{HELD}{OUTBOX_CHECK}
redis.call('HINCRBY', KEYS[3], m .. ':n', 1)
if ARGV[5] == '1' then redis.call('HINCRBY', KEYS[3], m .. ':a', 1) end
redis.call('HSET', KEYS[3], m .. ':t', ARGV[6])
return 1
"
    )
}

/// KEYS: lease, out, outmsg, dead. ARGV: holder, token, now, member, dead letter id,
/// reason.
pub(crate) fn dead_letter() -> String {
    format!(
        "{HELD}{OUTBOX_CHECK}
local f = redis.call('HMGET', KEYS[3], m .. ':b', m .. ':n')
local d = ARGV[5]
redis.call('HSET', KEYS[4], d .. ':m', m, d .. ':b', f[1] or '', d .. ':n', f[2] or '0', d .. ':r', ARGV[6], d .. ':s', ARGV[3])
redis.call('ZREM', KEYS[2], m)
redis.call('HDEL', KEYS[3], m .. ':b', m .. ':n', m .. ':a', m .. ':t')
return 1
"
    )
}

/// KEYS: dead. ARGV: id. Returns nil or {member, body, attempts, reason, since}.
pub(crate) const READ_DEAD: &str = r"
local d = ARGV[1]
local f = redis.call('HMGET', KEYS[1], d .. ':m', d .. ':b', d .. ':n', d .. ':r', d .. ':s')
if not f[1] then return false end
return {f[1], f[2] or '', f[3] or '0', f[4] or '', f[5] or '0'}
";

/// KEYS: dead, out, outseq, outmsg. ARGV: id, now. Puts the dead letter at the end
/// of the outbox; 0 when there is no such dead letter.
pub(crate) const REPLAY: &str = r"
local d = ARGV[1]
local f = redis.call('HMGET', KEYS[1], d .. ':m', d .. ':b')
if not f[1] then return 0 end
local m = f[1]
local seq = redis.call('INCR', KEYS[3])
redis.call('ZADD', KEYS[2], seq, m)
redis.call('HSET', KEYS[4], m .. ':b', f[2] or '', m .. ':n', '0', m .. ':a', '0', m .. ':t', ARGV[2])
redis.call('HDEL', KEYS[1], d .. ':m', d .. ':b', d .. ':n', d .. ':r', d .. ':s')
return 1
";

/// KEYS: inbox, items, outmsg, lease. ARGV: now. The truth behind the work index:
/// {has items (1/0), the oldest item's `at` or '', the smallest `not_before` in the
/// outbox or '', the smallest one due at now or '', lease free at now (1/0)}.
pub(crate) const WORK: &str = r"
local now = tonumber(ARGV[1])
local function smallest(hash, suffix, upto)
  local best = nil
  local f = redis.call('HGETALL', hash)
  for j = 1, #f, 2 do
    if string.sub(f[j], -2) == suffix then
      local v = tonumber(f[j + 1])
      if v and ((not upto) or v <= upto) and ((not best) or v < best) then best = v end
    end
  end
  if best then return string.format('%.0f', best) end
  return ''
end
local has = '0'
local oldest = ''
if redis.call('ZCARD', KEYS[1]) > 0 then
  has = '1'
  oldest = smallest(KEYS[2], ':a', nil)
end
local any = smallest(KEYS[3], ':t', nil)
local due = smallest(KEYS[3], ':t', now)
local u = redis.call('HGET', KEYS[4], 'until')
local free = '1'
if u and tonumber(u) > now then free = '0' end
return {has, oldest, any, due, free}
";

/// KEYS: timers, timerbody, last, inbox, items. ARGV: now, most to fire, first id.
/// Moves due timers into the inbox. Returns {-1, ...} when the ids raced (nothing
/// written), else {fired, next due or -1}.
pub(crate) const FIRE: &str = r"
local last = tonumber(redis.call('GET', KEYS[3]) or '0')
local first = tonumber(ARGV[3])
if first <= last then return {'-1', '-1'} end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
local fired = 0
for j = 1, #due, 2 do
  local name = due[j]
  local body = redis.call('HGET', KEYS[2], name) or ''
  local id = string.format('%.0f', first + fired)
  redis.call('ZADD', KEYS[4], id, id)
  redis.call('HSET', KEYS[5], id .. ':k', 'timer', id .. ':b', body, id .. ':a', due[j + 1])
  redis.call('ZREM', KEYS[1], name)
  redis.call('HDEL', KEYS[2], name)
  fired = fired + 1
end
if fired > 0 then redis.call('SET', KEYS[3], string.format('%.0f', first + fired - 1)) end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local nd = '-1'
if #nxt > 0 then nd = nxt[2] end
return {tostring(fired), nd}
";

/// KEYS: timers, timerbody. Returns a flat list: name, due, body, ...
pub(crate) const TIMERS: &str = r"
local t = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local out = {}
for j = 1, #t, 2 do
  out[#out + 1] = t[j]
  out[#out + 1] = t[j + 1]
  out[#out + 1] = redis.call('HGET', KEYS[2], t[j]) or ''
end
return out
";

/// KEYS: index, versions. ARGV: member, the version read before the user's keys were
/// checked, new score ('' = remove). Does nothing when a hint was added since.
pub(crate) const HINT_SETTLE: &str = r"
if (redis.call('HGET', KEYS[2], ARGV[1]) or '') ~= ARGV[2] then return 0 end
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
else
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
end
return 1
";

/// KEYS: a dedupe key (a user's record: `at`; a global claim: `fingerprint state at`).
/// ARGV: before. Deletes it when its item's `at` is before `before`.
pub(crate) const PURGE_DEDUPE: &str = r"
local text = redis.call('GET', KEYS[1]) or ''
local v = tonumber(string.match(text, '(-?%d+)$') or '')
if v and v < tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
";
