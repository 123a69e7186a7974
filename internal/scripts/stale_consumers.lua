-- Delete the group's consumers that hold no pending entries, have been idle
-- for at least ARGV[2] ms, and are not named in ARGV[3..] (this consumer and
-- those known to be alive: an idle reader on Redis 7.0 looks idle, since
-- its idle time counts from its last read that returned entries). Checking
-- and deleting in one script means a consumer that holds entries is never
-- deleted (XGROUP DELCONSUMER would drop them).
--
-- KEYS[1] the stream; ARGV[1] group, ARGV[2] min idle ms, ARGV[3 ..] names
-- to keep. Returns the names deleted.
local keep = {}
for i = 3, #ARGV do keep[ARGV[i]] = true end
local deleted = {}
local minIdle = tonumber(ARGV[2])
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local f = {}
  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
  local name = f['name']
  if name and not keep[name] and f['pending'] == 0 and f['idle'] and f['idle'] >= minIdle then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
    deleted[#deleted + 1] = name
  end
end
return deleted
