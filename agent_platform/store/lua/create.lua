-- Create a workflow's status hash only if the workflow does not exist yet (no status
-- hash, no step log), so a start that names an existing instance id cannot rewrite it.
-- KEYS[1] meta   KEYS[2] steps   ARGV field, value, field, value, ...
-- Returns 1 when created; else the existing workflow's runtime_status (or '' when only
-- its step log is left).
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then
  return redis.call('HGET', KEYS[1], 'runtime_status') or ''
end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
