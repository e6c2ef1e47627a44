-- Release a session's concurrency slot and refund the minutes it did not use.
-- Idempotent: the first call releases, every later call (worker retry, duplicate webhook)
-- changes nothing and says so.
--
-- KEYS[1] session record  KEYS[2] global active leases  KEYS[3] global unjoined tokens
-- ARGV: prefix, session_id, used_s, reason, only_if_status ('' for any), then extra record
--       field/value pairs to set
-- only_if_status lets the never-joined sweeper close a session only while it is still
-- `issued`, in the same atomic step: a worker claiming it at that instant (claim.lua)
-- either comes first and the sweeper leaves it, or finds it closed.
local prefix, session_id = ARGV[1], ARGV[2]
local used = math.max(0, tonumber(ARGV[3]))
local only_if_status = ARGV[5]

if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 'unknown'} end
local rec = redis.call('HMGET', KEYS[1], 'visitor', 'day', 'reserved_s', 'released_at',
                      'release_reason', 'status', 'nets')
if rec[4] then return {0, 'already_released', rec[5] or ''} end
if only_if_status ~= '' and rec[6] ~= only_if_status then
  return {0, 'status_changed', rec[6] or ''}
end

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local visitor, day, reserved = rec[1], rec[2], tonumber(rec[3] or '0')

-- Every slot the session holds, and its place among the unjoined tokens if never claimed:
-- the visitor's, its networks' (their pseudonyms are in the record) and everyone's.
local held = {KEYS[2], KEYS[3]}
if visitor then
  held[#held + 1] = prefix .. 'vact:' .. visitor
  held[#held + 1] = prefix .. 'vun:' .. visitor
end
for net in string.gmatch(rec[7] or '', '%S+') do
  held[#held + 1] = prefix .. 'nact:' .. net
  held[#held + 1] = prefix .. 'nun:' .. net
end
for _, key in ipairs(held) do redis.call('ZREM', key, session_id) end

local refund = math.max(0, reserved - math.ceil(used))
-- Only refund a counter that still exists: a day already over has expired on its own.
local counters = {prefix .. 'gm:' .. day}
if visitor then counters[2] = prefix .. 'vm:' .. visitor .. ':' .. day end
for _, key in ipairs(counters) do
  if refund > 0 and redis.call('EXISTS', key) == 1 then
    local left = redis.call('DECRBY', key, refund)
    if left < 0 then redis.call('SET', key, 0, 'KEEPTTL') end
  end
end

local fields = {'released_at', string.format('%.3f', now), 'used_s', tostring(math.ceil(used)),
                'refunded_s', tostring(refund), 'release_reason', ARGV[4]}
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
return {1, tostring(refund)}
