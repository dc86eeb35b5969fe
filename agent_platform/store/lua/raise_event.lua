-- Store a raised event (kept even if nobody waits yet, as Dapr buffers events), log its
-- record, and wake the workflow when it waits for that event.
-- KEYS[1] meta   KEYS[2] steps
-- ARGV[1] event name   ARGV[2] payload (JSON)   ARGV[3] record (JSON)   ARGV[4] now_iso
-- Returns {'ok', '1' woke | '0'}, {'refused', status} or {'missing', ''}.
local meta = KEYS[1]
local status = redis.call('HGET', meta, 'runtime_status')
if not status then return {'missing', ''} end
if status == 'TERMINATED' or status == 'COMPLETED' or status == 'FAILED' then return {'refused', status} end
redis.call('HSET', meta, 'event:' .. ARGV[1], ARGV[2])
local woke = 0
local pending = redis.call('HGET', meta, 'pending_event')
if status == 'SUSPENDED' and pending and cjson.decode(pending)['name'] == ARGV[1] then
  redis.call('HDEL', meta, 'pending_event')
  redis.call('HSET', meta, 'runtime_status', 'RUNNING')
  woke = 1
end
local seq = redis.call('HINCRBY', meta, 'log_seq', 1) - 1
redis.call('XADD', KEYS[2], '0-' .. (seq + 1), 'seq', seq, 'r', ARGV[3])
redis.call('HSET', meta, 'last_updated_at', ARGV[4])
return {'ok', tostring(woke)}
