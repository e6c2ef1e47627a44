-- Admission: decide and record in one atomic step (one round trip, exact under any
-- concurrency because Redis runs a script alone).
--
-- KEYS[1] session record      KEYS[2] visitor's active leases (zset)
-- KEYS[3] global active leases KEYS[4] visitor's block      KEYS[5] visitor's session index
-- KEYS[6] (only while the previous salt period's salt lives) the visitor's block under that
--         period's pseudonym: a salt rotation must not lift a block, nor reset the refusals
--         that lead to one
-- ARGV: prefix, visitor, session_id, persona, duration_s, lease_s,
--       v_concurrent, v_per_hour, v_per_day, v_seconds_per_day,
--       g_concurrent, g_seconds_per_day, session_ttl_s, pseudonym_ttl_s, stats_ttl_s,
--       then record field/value pairs (static fields computed by the caller)
--
-- Time buckets come from the Redis clock so every token-server process agrees on them.
-- Bucket keys are built here with the same `{ocf}` hash tag as KEYS, so they live in the
-- same Cluster slot.

local prefix = ARGV[1]
local visitor, session_id, persona = ARGV[2], ARGV[3], ARGV[4]
local duration = tonumber(ARGV[5])
local lease = tonumber(ARGV[6])
local v_conc, v_hour, v_day, v_secs = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local g_conc, g_secs = tonumber(ARGV[11]), tonumber(ARGV[12])
local session_ttl, pseudonym_ttl, stats_ttl = tonumber(ARGV[13]), tonumber(ARGV[14]), tonumber(ARGV[15])

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local hour = math.floor(now / 3600)
local day = math.floor(now / 86400)
local next_hour = (hour + 1) * 3600 - now
local next_day = (day + 1) * 86400 - now

local k_vh = prefix .. 'vh:' .. visitor .. ':' .. hour
local k_vd = prefix .. 'vd:' .. visitor .. ':' .. day
local k_vm = prefix .. 'vm:' .. visitor .. ':' .. day
local k_vr = prefix .. 'vr:' .. visitor .. ':' .. day
local k_gm = prefix .. 'gm:' .. day
local k_stats = prefix .. 'stats:' .. hour
-- The previous pseudonym is the tail of its block key (KEYS[6] = prefix .. 'block:' .. it).
local k_vr_prev = KEYS[6] and (prefix .. 'vr:' .. string.sub(KEYS[6], #prefix + 7) .. ':' .. day)

-- Counters get their TTL when created (first increment), not on every write: fewer
-- commands per admission, and a bucket never outlives its policy TTL from creation.
local function touch_stats(field)
  if redis.call('HINCRBY', k_stats, field, 1) == 1 then
    redis.call('EXPIRE', k_stats, stats_ttl)
  end
end

local function count(key, by, ttl)
  if redis.call('INCRBY', key, by) == by then redis.call('EXPIRE', key, ttl) end
end

local function refuse(reason, retry_after)
  touch_stats('refused:' .. reason)
  local refusals = redis.call('INCR', k_vr)
  if refusals == 1 then redis.call('EXPIRE', k_vr, 86400 + 60) end
  if k_vr_prev then refusals = refusals + tonumber(redis.call('GET', k_vr_prev) or '0') end
  return {0, reason, tostring(math.max(1, math.ceil(retry_after))), tostring(refusals)}
end

-- Keep a key alive as long as its longest-lived content, never longer.
local function extend(key, ttl)
  if redis.call('TTL', key) < ttl then redis.call('EXPIRE', key, ttl) end
end

-- Seconds a block has left; one without a TTL (never written so) still blocks.
local function block_left(key)
  local ttl = redis.call('TTL', key)
  if ttl == -1 then return 1 end
  return ttl
end
local block_ttl = block_left(KEYS[4])
if KEYS[6] then block_ttl = math.max(block_ttl, block_left(KEYS[6])) end
if block_ttl > 0 then
  return refuse('blocked', block_ttl)
end

-- Leases that ran out (crashed worker, never joined) free their slot here.
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)

local function first_lease_end(key)
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return tonumber(first[2]) - now
end

if redis.call('ZCARD', KEYS[2]) >= v_conc then
  return refuse('visitor_concurrent', first_lease_end(KEYS[2]))
end
if tonumber(redis.call('GET', k_vh) or '0') >= v_hour then
  return refuse('visitor_hourly', next_hour)
end
if tonumber(redis.call('GET', k_vd) or '0') >= v_day then
  return refuse('visitor_daily', next_day)
end
if tonumber(redis.call('GET', k_vm) or '0') + duration > v_secs then
  return refuse('visitor_minutes', next_day)
end
if redis.call('ZCARD', KEYS[3]) >= g_conc then
  return refuse('global_concurrent', first_lease_end(KEYS[3]))
end
if tonumber(redis.call('GET', k_gm) or '0') + duration > g_secs then
  return refuse('global_minutes', next_day)
end

-- Admitted: take the slots and reserve the minutes.
local lease_end = now + lease
redis.call('ZADD', KEYS[2], lease_end, session_id)
extend(KEYS[2], lease + 1)
redis.call('ZADD', KEYS[3], lease_end, session_id)
extend(KEYS[3], lease + 1)
count(k_vh, 1, 3600 + 60)
count(k_vd, 1, 86400 + 60)
count(k_vm, duration, 86400 + 60)
count(k_gm, duration, 86400 + 60)

local record = {
  'issued_at', string.format('%.3f', now),
  'lease_expires_at', string.format('%.3f', lease_end),
  'day', tostring(day),
  'reserved_s', tostring(duration),
}
for i = 16, #ARGV do record[#record + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(record))
redis.call('EXPIRE', KEYS[1], session_ttl)
redis.call('SADD', KEYS[5], session_id)
extend(KEYS[5], pseudonym_ttl)

touch_stats('issued')
touch_stats('persona:' .. persona)
return {1, string.format('%.3f', now), string.format('%.3f', lease_end)}
