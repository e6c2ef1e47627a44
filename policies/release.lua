-- Release a session's concurrency slot and refund the minutes it did not use.
-- Idempotent: the first call releases, every later call (worker retry, duplicate webhook)
-- changes nothing and says so.
--
-- KEYS[1] session record  KEYS[2] global active leases
-- ARGV: prefix, session_id, used_s, reason, then extra record field/value pairs to set
local prefix, session_id = ARGV[1], ARGV[2]
local used = math.max(0, tonumber(ARGV[3]))

if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 'unknown'} end
local rec = redis.call('HMGET', KEYS[1], 'visitor', 'day', 'reserved_s', 'released_at',
                      'release_reason')
if rec[4] then return {0, 'already_released', rec[5] or ''} end

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local visitor, day, reserved = rec[1], rec[2], tonumber(rec[3] or '0')

redis.call('ZREM', prefix .. 'vact:' .. visitor, session_id)
redis.call('ZREM', KEYS[2], session_id)

local refund = math.max(0, reserved - math.ceil(used))
-- Only refund a counter that still exists: a day already over has expired on its own.
for _, key in ipairs({prefix .. 'vm:' .. visitor .. ':' .. day, prefix .. 'gm:' .. day}) do
  if refund > 0 and redis.call('EXISTS', key) == 1 then
    local left = redis.call('DECRBY', key, refund)
    if left < 0 then redis.call('SET', key, 0, 'KEEPTTL') end
  end
end

local fields = {'released_at', string.format('%.3f', now), 'used_s', tostring(math.ceil(used)),
                'refunded_s', tostring(refund), 'release_reason', ARGV[4]}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
return {1, tostring(refund)}
