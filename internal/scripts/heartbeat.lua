-- Refresh consumer ARGV[1] in the member set KEYS[1], scored with the Redis
-- server's clock (so skewed clocks across pods do not matter), drop members
-- silent for ARGV[2] ms, and return the names left: the consumers alive. The
-- set expires when every consumer has gone.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
redis.call('PEXPIRE', KEYS[1], ttl * 2)
return redis.call('ZRANGE', KEYS[1], 0, -1)
