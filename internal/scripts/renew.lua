-- Extend the ownership of a partition (owner key KEYS[1]) by ARGV[2] ms if
-- consumer ARGV[1] still owns it (returns 1). A key that has become free is
-- never taken here (returns 0): a lost partition must be taken again from
-- scratch.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
