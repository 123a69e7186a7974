-- Delete the group's consumers that hold no pending entries, have been idle
-- for at least ARGV[2] ms, and are not known to be alive: not ARGV[3] (this
-- consumer) and not a member of the live set KEYS[2] (when given) with a
-- score newer than ARGV[4] ms (server time) ago. Checking and deleting in one
-- script means a consumer that holds entries is never deleted (XGROUP
-- DELCONSUMER would drop them).
--
-- KEYS[1] the stream, KEYS[2] (optional) the live set
-- ARGV[1] group, ARGV[2] min idle ms, ARGV[3] this consumer, ARGV[4] (with
-- KEYS[2]) how long a live-set score counts, in ms.
-- Returns the names deleted.
local deleted = {}
local minIdle = tonumber(ARGV[2])
local now = nil
if KEYS[2] then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local f = {}
  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
  local name = f['name']
  if name and name ~= ARGV[3] and f['pending'] == 0 and f['idle'] and f['idle'] >= minIdle then
    local alive = false
    if now then
      local score = redis.call('ZSCORE', KEYS[2], name)
      alive = score and tonumber(score) > now - tonumber(ARGV[4])
    end
    if not alive then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
      deleted[#deleted + 1] = name
    end
  end
end
return deleted
