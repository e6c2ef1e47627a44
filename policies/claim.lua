-- Claim: the one job that runs a session's call takes it, atomically, once.
-- A token is a ticket for one call: a second dispatch for the same session (the visitor
-- rejoined with the same token, or with a refreshed one LiveKit sent) must find it taken.
--
-- KEYS[1] session record  KEYS[2] global active leases  KEYS[3] global unjoined tokens
-- ARGV: prefix, session_id, job_id, lease_margin_s
-- Returns {answer, status, release_reason}; answer is one of
--   claimed  this job now holds the session (issued -> started)
--   yours    this job already held it (the entrypoint after the request; a resumed job)
--   taken    another job holds it
--   closed   released already (ended, abandoned, never_joined): a call never restarts
--   unknown  no record (never issued, expired or erased): nothing is created
local prefix, session_id, job_id = ARGV[1], ARGV[2], ARGV[3]
local margin = tonumber(ARGV[4])

if redis.call('EXISTS', KEYS[1]) == 0 then return {'unknown', '', ''} end
local rec = redis.call('HMGET', KEYS[1], 'status', 'claimed_by', 'released_at',
                      'release_reason', 'visitor', 'reserved_s', 'lease_expires_at', 'nets')
local status, owner, released, release_reason = rec[1] or '', rec[2], rec[3], rec[4] or ''

if released then return {'closed', status, release_reason} end
if owner then
  if owner == job_id then return {'yours', status, ''} end
  return {'taken', status, ''}
end
-- Only a record admission issued can be claimed; any other status moved on already.
if status ~= 'issued' then return {'taken', status, ''} end

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
-- Admission held the slots for the join window only. The call may last what admission
-- reserved: its slots (the visitor's, its networks', everyone's) must hold that long from
-- now on (a late join would otherwise outlive its lease and go uncounted). GT: never
-- shorten. And the token is no longer unjoined.
local lease_end = now + tonumber(rec[6] or '0') + margin
local leases, pending = {KEYS[2]}, {KEYS[3]}
if rec[5] then
  leases[#leases + 1] = prefix .. 'vact:' .. rec[5]
  pending[#pending + 1] = prefix .. 'vun:' .. rec[5]
end
for net in string.gmatch(rec[8] or '', '%S+') do
  leases[#leases + 1] = prefix .. 'nact:' .. net
  pending[#pending + 1] = prefix .. 'nun:' .. net
end
for _, key in ipairs(pending) do redis.call('ZREM', key, session_id) end
for _, key in ipairs(leases) do
  redis.call('ZADD', key, 'GT', lease_end, session_id)
  if redis.call('TTL', key) < math.ceil(lease_end - now) + 1 then
    redis.call('EXPIRE', key, math.ceil(lease_end - now) + 1)
  end
end

local fields = {'status', 'started', 'claimed_by', job_id,
                'claimed_at', string.format('%.3f', now)}
if lease_end > tonumber(rec[7] or '0') then
  fields[#fields + 1] = 'lease_expires_at'
  fields[#fields + 1] = string.format('%.3f', lease_end)
end
-- HSET keeps the record's TTL: a claim never extends what the retention policy set.
redis.call('HSET', KEYS[1], unpack(fields))
return {'claimed', 'started', ''}
