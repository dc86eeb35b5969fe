-- A run whose model call failed after publishing: a 'retry' entry (clients clear the
-- partial text), and the run gives up the channel.
-- KEYS[1] tokens   KEYS[2] run   KEYS[3] meta
-- ARGV[1] run   ARGV[2] step_seq (the entry's 'stage' field)   ARGV[3] attempt
-- ARGV[4] ttl_ms   ARGV[5] maxlen
-- Returns 1, or 0 when the run does not own the channel.
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2])
local after = tonumber(redis.call('HGET', KEYS[3], 'log_seq') or '0') - 1
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[5], '*',
  'type', 'retry', 'stage', ARGV[2], 'attempt', ARGV[3], 'after', after)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
