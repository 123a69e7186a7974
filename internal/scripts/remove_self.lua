-- Delete consumer ARGV[2] from group ARGV[1] of stream KEYS[1] if it holds no
-- pending entries. Returns 1 or 0 as XGROUP DELCONSUMER does (the number of
-- entries it held, here none), or -1 when it holds entries and stays.
local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #p == 0 then
  return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
end
return -1
