-- Append one turn's messages to a session's memory, once per workflow (DESIGN rule 8).
-- KEYS[1] the session's list   KEYS[2] its writers set (same hash tag)
-- ARGV[1] workflow id   ARGV[2..] the messages (JSON)
-- Returns 1 when appended, 0 when this workflow had appended already.
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then return 0 end
for i = 2, #ARGV do redis.call('RPUSH', KEYS[1], ARGV[i]) end
return 1
