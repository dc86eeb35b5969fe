-- Append one turn's messages to a session's memory, once per workflow (DESIGN rule 8);
-- with KEYS[3], the workflow also leaves its session's queue of turns, in the same script.
-- KEYS[1] the session's list   KEYS[2] its writers set
-- KEYS[3] (optional) the session's queue of unfinished turns (the same hash tag {<agent>:<session>})
-- ARGV[1] workflow id   ARGV[2..] the messages (JSON)
-- Returns 1 when appended, 0 when this workflow had appended already; with KEYS[3],
-- {1 or 0, the queue's new head or false}.
local appended = 0
if redis.call('SADD', KEYS[2], ARGV[1]) == 1 then
  for i = 2, #ARGV do redis.call('RPUSH', KEYS[1], ARGV[i]) end
  appended = 1
end
if KEYS[3] == nil then return appended end
redis.call('LREM', KEYS[3], 0, ARGV[1])
return {appended, redis.call('LINDEX', KEYS[3], 0)}
