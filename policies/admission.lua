-- Admission: decide and record in one atomic step (one round trip, exact under any
-- concurrency because Redis runs a script alone).
--
-- KEYS[1] session record       KEYS[2] visitor's active leases (zset)
-- KEYS[3] global active leases KEYS[4] visitor's block      KEYS[5] visitor's session index
-- KEYS[6] visitor's unjoined tokens (zset: session id -> join deadline)
-- KEYS[7] everyone's unjoined tokens (the same; also the never-joined sweeper's index)
-- KEYS[8..] two per prefix aggregate (limits.yaml `networks`), narrowest first: the
--           network's active leases, then its unjoined tokens
-- KEYS[8 + 2n] (only while the previous salt period's salt lives) the visitor's block under
--         that period's pseudonym: a salt rotation must not lift a block, nor reset the
--         refusals that lead to one
-- ARGV: prefix, visitor, session_id, persona, duration_s, lease_s,
--       v_concurrent, v_per_hour, v_per_day, v_seconds_per_day, v_unjoined,
--       g_concurrent, g_seconds_per_day, g_unjoined,
--       session_ttl_s, pseudonym_ttl_s, stats_ttl_s, unjoined_index_ttl_s,
--       n (prefix aggregates), then per aggregate: pseudonym, concurrent, per_hour, per_day,
--       unjoined; then record field/value pairs (static fields computed by the caller)
--
-- lease_s is the join window + margin: a token holds its slots only until the worker claims
-- the session (claim.lua then raises the leases to cover the call).
-- Time buckets come from the Redis clock so every token-server process agrees on them.
-- Bucket keys are built here with the same `{ocf}` hash tag as KEYS, so they live in the
-- same Cluster slot.

local prefix = ARGV[1]
local visitor, session_id, persona = ARGV[2], ARGV[3], ARGV[4]
local duration = tonumber(ARGV[5])
local lease = tonumber(ARGV[6])
local v_conc, v_hour, v_day, v_secs = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local v_unjoined = tonumber(ARGV[11])
local g_conc, g_secs, g_unjoined = tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[14])
local session_ttl, pseudonym_ttl = tonumber(ARGV[15]), tonumber(ARGV[16])
local stats_ttl, index_ttl = tonumber(ARGV[17]), tonumber(ARGV[18])
local n_nets = tonumber(ARGV[19])

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local hour = math.floor(now / 3600)
local day = math.floor(now / 86400)
local next_hour = (hour + 1) * 3600 - now
local next_day = (day + 1) * 86400 - now

local nets, net_ids = {}, {}
for i = 1, n_nets do
  local a = 19 + (i - 1) * 5
  local id = ARGV[a + 1]
  nets[i] = {
    conc = tonumber(ARGV[a + 2]), per_hour = tonumber(ARGV[a + 3]),
    per_day = tonumber(ARGV[a + 4]), unjoined = tonumber(ARGV[a + 5]),
    active = KEYS[6 + 2 * i], pending = KEYS[7 + 2 * i],
    k_hour = prefix .. 'nh:' .. id .. ':' .. hour, k_day = prefix .. 'nd:' .. id .. ':' .. day,
  }
  net_ids[i] = id
end
local first_field = 20 + n_nets * 5
local prev_block = KEYS[8 + 2 * n_nets]

local k_vh = prefix .. 'vh:' .. visitor .. ':' .. hour
local k_vd = prefix .. 'vd:' .. visitor .. ':' .. day
local k_vm = prefix .. 'vm:' .. visitor .. ':' .. day
local k_vr = prefix .. 'vr:' .. visitor .. ':' .. day
local k_gm = prefix .. 'gm:' .. day
local k_stats = prefix .. 'stats:' .. hour
-- The previous pseudonym is the tail of its block key (prefix .. 'block:' .. it).
local k_vr_prev = prev_block and (prefix .. 'vr:' .. string.sub(prev_block, #prefix + 7) .. ':' .. day)

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
if prev_block then block_ttl = math.max(block_ttl, block_left(prev_block)) end
if block_ttl > 0 then
  return refuse('blocked', block_ttl)
end

-- Leases that ran out (crashed worker, never joined) free their slot here. The global
-- unjoined index (KEYS[7]) is only counted from now on, never pruned here: the sweeper
-- finds the tokens whose window ran out in it, to close them and refund their minutes.
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now)
for _, net in ipairs(nets) do
  redis.call('ZREMRANGEBYSCORE', net.active, '-inf', now)
  redis.call('ZREMRANGEBYSCORE', net.pending, '-inf', now)
end

-- Seconds until the earliest lease (or join deadline) still running ends.
local function first_end(key)
  local first = redis.call('ZRANGEBYSCORE', key, '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  return tonumber(first[2]) - now
end

if redis.call('ZCARD', KEYS[2]) >= v_conc then
  return refuse('visitor_concurrent', first_end(KEYS[2]))
end
if redis.call('ZCARD', KEYS[6]) >= v_unjoined then
  return refuse('visitor_unjoined', first_end(KEYS[6]))
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
for _, net in ipairs(nets) do
  if redis.call('ZCARD', net.active) >= net.conc then
    return refuse('network_concurrent', first_end(net.active))
  end
  if redis.call('ZCARD', net.pending) >= net.unjoined then
    return refuse('network_unjoined', first_end(net.pending))
  end
  if tonumber(redis.call('GET', net.k_hour) or '0') >= net.per_hour then
    return refuse('network_hourly', next_hour)
  end
  if tonumber(redis.call('GET', net.k_day) or '0') >= net.per_day then
    return refuse('network_daily', next_day)
  end
end
if redis.call('ZCARD', KEYS[3]) >= g_conc then
  return refuse('global_concurrent', first_end(KEYS[3]))
end
if redis.call('ZCOUNT', KEYS[7], '(' .. now, '+inf') >= g_unjoined then
  return refuse('global_unjoined', first_end(KEYS[7]))
end
if tonumber(redis.call('GET', k_gm) or '0') + duration > g_secs then
  return refuse('global_minutes', next_day)
end

-- Admitted: take the slots until the join deadline, count the token as unjoined until
-- then, reserve the minutes.
local lease_end = now + lease
local function hold(key, ttl)
  redis.call('ZADD', key, lease_end, session_id)
  extend(key, ttl)
end
hold(KEYS[2], lease + 1)
hold(KEYS[3], lease + 1)
hold(KEYS[6], lease + 1)
hold(KEYS[7], index_ttl)
for _, net in ipairs(nets) do
  hold(net.active, lease + 1)
  hold(net.pending, lease + 1)
  count(net.k_hour, 1, 3600 + 60)
  count(net.k_day, 1, 86400 + 60)
end
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
-- Release and claim find the session's network leases through this.
if n_nets > 0 then
  record[#record + 1] = 'nets'
  record[#record + 1] = table.concat(net_ids, ' ')
end
for i = first_field, #ARGV do record[#record + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(record))
redis.call('EXPIRE', KEYS[1], session_ttl)
redis.call('SADD', KEYS[5], session_id)
extend(KEYS[5], pseudonym_ttl)

touch_stats('issued')
touch_stats('persona:' .. persona)
return {1, string.format('%.3f', now), string.format('%.3f', lease_end)}
