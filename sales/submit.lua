-- Accept a sales request: check the day's limits, count it, write the record, index it by
-- the email's keyed hash and, when mail to sales is on, queue its notification. One atomic
-- step: a refused request writes nothing, an accepted one is whole.
--
-- KEYS[1] the record ({ocf}:req:<reference>), KEYS[2] its email index, KEYS[3] the queue
-- of notifications due. ARGV: prefix, visitor pseudonym, per-visitor limit, global limit,
-- record TTL (s), counter TTL (s), notify ('1' or '0'), then the record's field/value pairs.
-- Returns {1, created_at} | {0, reason, retry_after_s} | {-1} (reference taken: draw again).
if redis.call('EXISTS', KEYS[1]) == 1 then return {-1} end

local prefix, visitor = ARGV[1], ARGV[2]
local per_visitor, global = tonumber(ARGV[3]), tonumber(ARGV[4])
local ttl, counter_ttl = tonumber(ARGV[5]), tonumber(ARGV[6])

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local day = math.floor(now / 86400)
-- Buckets follow Redis' clock, like admission's, and carry the same hash tag.
local visitor_key = prefix .. 'rqv:' .. visitor .. ':' .. day
local global_key = prefix .. 'rqg:' .. day
local retry_after = math.max(1, math.ceil((day + 1) * 86400 - now))

if tonumber(redis.call('GET', visitor_key) or '0') >= per_visitor then
  return {0, 'visitor_daily', retry_after}
end
if tonumber(redis.call('GET', global_key) or '0') >= global then
  return {0, 'global_daily', retry_after}
end
for _, key in ipairs({visitor_key, global_key}) do
  if redis.call('INCR', key) == 1 then redis.call('EXPIRE', key, counter_ttl) end
end

local stamp = string.format('%.3f', now)
local fields = {}
for i = 8, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], 'created_at', stamp, 'updated_at', stamp, unpack(fields))
redis.call('EXPIRE', KEYS[1], ttl)

-- The index lives as long as its longest-lived request.
redis.call('SADD', KEYS[2], redis.call('HGET', KEYS[1], 'reference'))
if redis.call('TTL', KEYS[2]) < ttl then redis.call('EXPIRE', KEYS[2], ttl) end

if ARGV[7] == '1' then
  redis.call('HSET', KEYS[1], 'notify_status', 'pending', 'notify_attempts', '0')
  redis.call('ZADD', KEYS[3], stamp, redis.call('HGET', KEYS[1], 'reference'))
  redis.call('EXPIRE', KEYS[3], ttl)
end
return {1, stamp}
