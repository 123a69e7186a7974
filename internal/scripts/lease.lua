-- Renew this consumer's claim on entries it still owns: for each id, when
-- XPENDING says this consumer holds it, XCLAIM ... JUSTID resets its idle
-- time without counting a delivery, so that XAUTOCLAIM elsewhere leaves it
-- alone. Nothing else is touched. Entries another consumer holds are
-- returned (taken), and so are entries no longer pending that the stream
-- still has (acked: another consumer took them over and finished them, or
-- someone acknowledged them). Entries neither pending nor in the stream
-- (trimmed, and their pending entry cleared by an XAUTOCLAIM) are left out:
-- the engine's copy is all that is left of them.
--
-- KEYS[1] the stream; ARGV[1] group, ARGV[2] consumer, ARGV[3 ..] ids.
-- Returns {taken ids, acked ids}.
local taken, acked = {}, {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  if #p == 1 then
    if p[1][2] == ARGV[2] then
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'JUSTID')
    else
      taken[#taken + 1] = id
    end
  elseif #redis.call('XRANGE', KEYS[1], id, id) == 1 then
    acked[#acked + 1] = id
  end
end
return {taken, acked}
