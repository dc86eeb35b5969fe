-- Store a raised event (kept even if nobody waits yet, as Dapr buffers events), log its
-- record, and wake the workflow when it waits for that event.
-- KEYS[1] meta   KEYS[2] steps
-- ARGV[1] event name   ARGV[2] payload (JSON)   ARGV[3] record (JSON)   ARGV[4] now_iso
-- ARGV[5] max events held that nobody waited for (0: no limit; counted in 'unawaited_events')
-- Returns {'ok', '1' woke | '0'}, {'refused', status}, {'limit', events held} or {'missing', ''}.
local meta = KEYS[1]
local status = redis.call('HGET', meta, 'runtime_status')
if not status then return {'missing', ''} end
if status == 'TERMINATED' or status == 'COMPLETED' or status == 'FAILED' then return {'refused', status} end
local pending = redis.call('HGET', meta, 'pending_event')
local awaited = status == 'SUSPENDED' and pending and cjson.decode(pending)['name'] == ARGV[1]
if not awaited and tonumber(ARGV[5]) > 0 then
  local held = tonumber(redis.call('HGET', meta, 'unawaited_events') or '0')
  if held >= tonumber(ARGV[5]) then return {'limit', tostring(held)} end
  redis.call('HINCRBY', meta, 'unawaited_events', 1)
end
redis.call('HSET', meta, 'event:' .. ARGV[1], ARGV[2])
local woke = 0
if awaited then
  redis.call('HDEL', meta, 'pending_event')
  redis.call('HSET', meta, 'runtime_status', 'RUNNING')
  woke = 1
end
local seq = redis.call('HINCRBY', meta, 'log_seq', 1) - 1
redis.call('XADD', KEYS[2], '0-' .. (seq + 1), 'seq', seq, 'r', ARGV[3])
redis.call('HSET', meta, 'last_updated_at', ARGV[4])
return {'ok', tostring(woke)}
