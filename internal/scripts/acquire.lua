-- Take or renew the ownership of a partition: the owner key KEYS[1] is set to
-- consumer ARGV[1] with a time-to-live of ARGV[2] ms if it is free or already
-- that consumer's. Returns 1 when the consumer owns the partition, 0 when
-- another one does.
local v = redis.call('GET', KEYS[1])
if v == false or v == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
