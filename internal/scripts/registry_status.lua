-- Set field "status" of the task meta hash KEYS[1] to ARGV[2] if it is
-- ARGV[1] now. Returns 1 when it did, 0 when the status differs (or is
-- absent), -1 when the hash does not exist. HSET keeps the key's TTL.
local cur = redis.call('HGET', KEYS[1], 'status')
if cur == ARGV[1] then
  redis.call('HSET', KEYS[1], 'status', ARGV[2])
  return 1
end
if not cur and redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
return 0
