-- Void the lease of a process that died (the sweeper or a new run found its owner gone):
-- delete it only while that owner still holds it.
-- KEYS[1] lease   ARGV[1] the dead owner's token
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
