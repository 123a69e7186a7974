-- Take the simulated operations' steps that are due from the sorted set
-- KEYS[1] (score: due time in ms, member: the step), atomically, so that
-- each step is taken once, by whichever pod runs this first.
-- With KEYS[2], a completion stream: each step is a completion's JSON,
-- which is appended to it here (one script: a completion is never lost
-- between the two). Without: the steps are returned, for the caller.
-- ARGV[1] now in ms, ARGV[2] the most to take.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, step in ipairs(due) do
  if KEYS[2] then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', 10000, '*', 'data', step)
  end
  redis.call('ZREM', KEYS[1], step)
end
if KEYS[2] then
  return #due
end
return due
