-- Renew this consumer's claim on entries it still owns: for each id, when
-- XPENDING says this consumer holds it, XCLAIM ... JUSTID resets its idle
-- time without counting a delivery, so that XAUTOCLAIM elsewhere leaves it
-- alone. Entries another consumer holds are not touched: their ids are
-- returned. Entries no longer pending at all (acknowledged, or trimmed and
-- reclaimed) are skipped.
--
-- KEYS[1] the stream; ARGV[1] group, ARGV[2] consumer, ARGV[3 ..] ids.
-- Returns the ids held by another consumer.
local lost = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p == 1 then
    if p[1][2] == ARGV[2] then
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    else
      lost[#lost + 1] = ARGV[i]
    end
  end
end
return lost
