-- Terminate, pause or resume a workflow (DESIGN section 3, rule 7).
-- KEYS[1] meta
-- ARGV[1] action (terminate | pause | resume)   ARGV[2] now_iso   ARGV[3] extra fields (JSON object)
-- Returns {'ok', new status}, {'refused', status} or {'missing', ''}.
local meta = KEYS[1]
local status = redis.call('HGET', meta, 'runtime_status')
if not status then return {'missing', ''} end
local action = ARGV[1]
local allowed = {
  terminate = {PENDING = 1, RUNNING = 1, SUSPENDED = 1},
  pause = {RUNNING = 1, PENDING = 1},
  resume = {SUSPENDED = 1},
}
if not allowed[action][status] then return {'refused', status} end
local target = ({terminate = 'TERMINATED', pause = 'SUSPENDED'})[action]
if action == 'resume' then target = redis.call('HGET', meta, 'resume_status') or 'RUNNING' end
if action == 'pause' then redis.call('HSET', meta, 'resume_status', status) end
redis.call('HSET', meta, 'runtime_status', target, 'last_updated_at', ARGV[2])
for name, value in pairs(cjson.decode(ARGV[3])) do redis.call('HSET', meta, name, value) end
if action == 'terminate' then redis.call('HSET', meta, 'ended_at', ARGV[2]) end
if action == 'resume' then redis.call('HDEL', meta, 'resume_status') end
return {'ok', target}
