-- Give a step back without a checkpoint (it did not run): delete our lease and our run
-- entry, so the next run of the step is not counted as a lost one.
-- KEYS[1] lease   KEYS[2] runs   ARGV[1] token   ARGV[2] run field (<step_seq>:<index>)
local run = redis.call('HGET', KEYS[2], ARGV[2])
if run and cjson.decode(run).token == ARGV[1] then redis.call('HDEL', KEYS[2], ARGV[2]) end
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
