"""Lua scripts of the workflow store: each one is atomic, and touches only keys of one
workflow (one hash tag), so it also runs on Redis Cluster."""

# KEYS: meta, lease, done   ARGV: token, ttl_ms, done field ('' for none)
# Takes the step lease; when taken, returns {1, done flag, the status hash}.
OPEN_STEP = """
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {0} end
local done = 0
if ARGV[3] ~= '' then done = redis.call('HEXISTS', KEYS[3], ARGV[3]) end
return {1, done, redis.call('HGETALL', KEYS[1])}
"""

# KEYS: meta, steps, done, active, lease   ARGV: see WorkflowStore.checkpoint
# The step's lease (KEYS[5], when ARGV[11] is our token) is released whatever the outcome.
CHECKPOINT = """
local meta = KEYS[1]
if ARGV[11] ~= '' and redis.call('GET', KEYS[5]) == ARGV[11] then redis.call('DEL', KEYS[5]) end
local status = redis.call('HGET', meta, 'runtime_status')
if not status then return {-4, ''} end
if status == 'TERMINATED' or status == 'COMPLETED' or status == 'FAILED' then return {-1, status} end
if redis.call('HGET', meta, 'cursor') ~= ARGV[1] then return {-2, status} end
local mode = ARGV[4]
if ARGV[2] ~= '' and mode == 'tool' then
  if redis.call('HSETNX', KEYS[3], ARGV[1] .. ':' .. ARGV[2], '1') == 0 then return {-3, status} end
end
local seq = redis.call('HINCRBY', meta, 'log_seq', 1) - 1
redis.call('XADD', KEYS[2], '0-' .. (seq + 1), 'seq', seq, 'r', ARGV[3])
for k, v in pairs(cjson.decode(ARGV[5])) do redis.call('HSET', meta, k, v) end
for k, v in pairs(cjson.decode(ARGV[6])) do redis.call('HINCRBY', meta, k, v) end
redis.call('HSET', meta, 'last_updated_at', ARGV[10])
local advanced = 0
if mode == 'tool' then
  if redis.call('HINCRBY', meta, 'tools_remaining', -1) <= 0 then advanced = 1 end
elseif mode == 'advance' or mode == 'end' then
  advanced = 1
end
if advanced == 1 then
  redis.call('HINCRBY', meta, 'cursor', 1)
  redis.call('HSET', meta, 'attempt', 1)
  if ARGV[7] ~= '' then redis.call('HSET', meta, 'next', ARGV[7]) end
end
-- An ended workflow stays in the sweeper's set until finish_workflow has run (memory,
-- session, hooks), so a crash in between is finished by the sweeper.
redis.call('ZADD', KEYS[4], ARGV[8], ARGV[9])
return {seq, redis.call('HGET', meta, 'runtime_status'), advanced}
"""

# KEYS: lease   ARGV: token, ttl_ms
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

# KEYS: lease   ARGV: token
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: meta, active   ARGV: action, now_iso, wf_id, now_ms, extra fields json
CONTROL = """
local status = redis.call('HGET', KEYS[1], 'runtime_status')
if not status then return {'missing', ''} end
local action = ARGV[1]
local allowed = {
  terminate = {PENDING = 1, RUNNING = 1, SUSPENDED = 1},
  pause = {RUNNING = 1, PENDING = 1},
  resume = {SUSPENDED = 1},
}
if not allowed[action][status] then return {'refused', status} end
local target = ({terminate = 'TERMINATED', pause = 'SUSPENDED'})[action]
if action == 'resume' then target = redis.call('HGET', KEYS[1], 'resume_status') or 'RUNNING' end
if action == 'pause' then redis.call('HSET', KEYS[1], 'resume_status', status) end
redis.call('HSET', KEYS[1], 'runtime_status', target, 'last_updated_at', ARGV[2])
for k, v in pairs(cjson.decode(ARGV[5])) do redis.call('HSET', KEYS[1], k, v) end
if action == 'terminate' then
  redis.call('HSET', KEYS[1], 'ended_at', ARGV[2])
  -- stays in the sweeper's set until finish_workflow has run (session, hooks)
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
elseif action == 'resume' then
  redis.call('HDEL', KEYS[1], 'resume_status')
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
end
return {'ok', target}
"""

# KEYS: meta, steps, active
# ARGV: name, payload json, record json, now_iso, now_ms, wf_id,
#       max events not waited for (0: no limit; counted in 'unawaited_events')
RAISE_EVENT = """
local meta = KEYS[1]
local status = redis.call('HGET', meta, 'runtime_status')
if not status then return {'missing', ''} end
if status == 'TERMINATED' or status == 'COMPLETED' or status == 'FAILED' then return {'refused', status} end
local pending = redis.call('HGET', meta, 'pending_event')
local awaited = status == 'SUSPENDED' and pending and cjson.decode(pending)['name'] == ARGV[1]
if not awaited and tonumber(ARGV[7]) > 0 then
  local held = tonumber(redis.call('HGET', meta, 'unawaited_events') or '0')
  if held >= tonumber(ARGV[7]) then return {'limit', tostring(held)} end
  redis.call('HINCRBY', meta, 'unawaited_events', 1)
end
redis.call('HSET', meta, 'event:' .. ARGV[1], ARGV[2])
local woke = 0
if awaited then
  redis.call('HDEL', meta, 'pending_event')
  redis.call('HSET', meta, 'runtime_status', 'RUNNING')
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[6])
  woke = 1
end
local seq = redis.call('HINCRBY', meta, 'log_seq', 1) - 1
redis.call('XADD', KEYS[2], '0-' .. (seq + 1), 'seq', seq, 'r', ARGV[3])
redis.call('HSET', meta, 'last_updated_at', ARGV[4])
return {'ok', tostring(woke)}
"""
