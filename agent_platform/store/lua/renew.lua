-- Extend a step lease, only while it is ours.
-- KEYS[1] lease   ARGV[1] token   ARGV[2] ttl_ms
-- Returns 1 when renewed, 0 when the lease is gone or someone else's.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
