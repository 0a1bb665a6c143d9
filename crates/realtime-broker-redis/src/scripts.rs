//! The Lua scripts: one atomic publish, one atomic read of a stream's position and history,
//! and one revocation. Run with EVALSHA ([`redis::Script`] loads them again after a
//! `NOSCRIPT`, as after a Redis restart).
//!
//! Times come from Redis (`TIME`), one clock for every node; scripts replicate their effects
//! (Redis 7), so reading the clock before a write is allowed.

/// Publishes one frame.
///
/// KEYS: 1 meta, 2 history, 3 (optional) idempotency key.
/// ARGV: 1 mode (`h` history, `n` none), 2 a fresh epoch (used when the stream has none),
/// 3 history length (0 keeps none), 4 history TTL (ms), 5 meta TTL (ms), 6 idempotency TTL
/// (s), 7 channel, 8 the encoded envelope, 9 the receipt tag (`""` for none).
/// Returns `{duplicate (0|1), result, receivers}` where result is `<epoch>:<offset>`
/// (history) or `""`, and receivers the number of nodes PUBLISH reached.
pub(crate) const PUBLISH: &str = r"
local idem = KEYS[3]
if idem then
  local first = redis.call('GET', idem)
  if first then return {1, first, 0} end
end
if ARGV[1] == 'n' then
  local receivers = redis.call('PUBLISH', ARGV[7], 'e:' .. ARGV[9] .. ':' .. ARGV[8])
  if idem then redis.call('SET', idem, '', 'EX', ARGV[6]) end
  return {0, '', receivers}
end
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[2]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
  redis.call('DEL', KEYS[2])
end
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
local offset_text = string.format('%d', offset)
local time = redis.call('TIME')
local now = string.format('%d', tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000))
if tonumber(ARGV[3]) > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], offset_text .. '-0',
    'o', offset_text, 't', now, 'd', ARGV[8])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
local result = epoch .. ':' .. offset_text
local receivers = redis.call('PUBLISH', ARGV[7],
  'p:' .. result .. ':' .. now .. ':' .. ARGV[9] .. ':' .. ARGV[8])
if idem then redis.call('SET', idem, result, 'EX', ARGV[6]) end
return {0, result, receivers}
";

/// Reads a stream's position and the history after `since`, atomically.
///
/// KEYS: 1 meta, 2 history.
/// ARGV: 1 a fresh epoch (used when the stream has none), 2 meta TTL (ms), 3 since's offset
/// (`""` for none), 4 since's epoch, 5 max.
/// Returns `{epoch, top, now (ms), entries}`; entries (XRANGE replies) only when the epoch
/// matches and 0 < top - since <= max. The caller applies the full recovery rule.
pub(crate) const RECOVER: &str = r"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local top = '0'
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
  redis.call('DEL', KEYS[2])
else
  top = redis.call('HGET', KEYS[1], 'offset') or '0'
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local time = redis.call('TIME')
local now = string.format('%d', tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000))
local entries = {}
if ARGV[3] ~= '' and ARGV[4] == epoch then
  local since = tonumber(ARGV[3])
  local missed = tonumber(top) - since
  if missed > 0 and missed <= tonumber(ARGV[5]) then
    entries = redis.call('XRANGE', KEYS[2], string.format('%d', since + 1) .. '-0', '+',
      'COUNT', string.format('%d', missed))
  end
end
return {epoch, top, now, entries}
";

/// Records a revocation (the latest `issued_before` and `keep_until` win) and tells the other
/// nodes on the control channel.
///
/// KEYS: 1 the revocation key. ARGV: 1 issued_before (ms), 2 keep_until (ms, absolute),
/// 3 the control channel, 4 the control message.
/// Returns 1 when recorded, 0 when it had already expired (nothing recorded or sent).
pub(crate) const REVOKE: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local issued = tonumber(ARGV[1])
local keep = tonumber(ARGV[2])
local current = redis.call('GET', KEYS[1])
if current and tonumber(current) > issued then issued = tonumber(current) end
local expires = redis.call('PEXPIRETIME', KEYS[1])
if expires > keep then keep = expires end
if keep <= now then return 0 end
redis.call('SET', KEYS[1], string.format('%d', issued), 'PXAT', string.format('%d', keep))
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
";

/// Gives a stream whose offsets went back (an old snapshot restored) a new epoch, so that
/// no client takes the restored offsets for the ones it saw: each then gets
/// `recovered: false` instead of publications that are not the ones it missed.
///
/// KEYS: 1 meta, 2 history. ARGV: 1 the epoch seen, 2 the offset seen, 3 a fresh epoch.
/// Returns 1 when rotated, 0 when the stream moved on meanwhile (nothing changed).
pub(crate) const ROTATE: &str = r"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local offset = tonumber(redis.call('HGET', KEYS[1], 'offset') or '0')
if epoch ~= ARGV[1] or offset >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'epoch', ARGV[3], 'offset', 0)
redis.call('DEL', KEYS[2])
return 1
";
