-- Delete the owner key KEYS[1] if consumer ARGV[1] still owns it. Returns the
-- number of keys deleted.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
