-- Publish one batch of a model call's deltas on the workflow's token stream (DESIGN rule 12).
-- KEYS[1] tokens   the token stream        KEYS[2] run   the run that may publish
-- KEYS[3] meta     the status hash (log_seq: entries record the step they follow)
-- ARGV[1] run      ARGV[2] first ('1': this run claims the channel, '0')
-- ARGV[3] step_seq (the entry's 'stage' field)   ARGV[4] attempt   ARGV[5] delta (JSON)
-- ARGV[6] ttl_ms   ARGV[7] maxlen (XADD MAXLEN ~)
-- Returns 1 (published), 0 (another run owns the channel), -1 (no such workflow).
if redis.call('EXISTS', KEYS[3]) == 0 then return -1 end
local after = tonumber(redis.call('HGET', KEYS[3], 'log_seq') or '0') - 1
if ARGV[2] == '1' then
  local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
  if last then
    local f = {}
    for i = 1, #last[2], 2 do f[last[2][i]] = last[2][i + 1] end
    if f['type'] == 'delta' and f['stage'] == ARGV[3] then
      redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[7], '*',
        'type', 'retry', 'stage', ARGV[3], 'attempt', f['attempt'], 'after', after)
    end
  end
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[6])
elseif redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return 0
end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[7], '*',
  'type', 'delta', 'stage', ARGV[3], 'attempt', ARGV[4], 'after', after, 'd', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
return 1
