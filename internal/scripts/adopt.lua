-- Move a batch of the group's pending entries of stream KEYS[1], whoever
-- holds them, to consumer ARGV[2] without counting a delivery (JUSTID): the
-- read of the own pending list that follows counts it.
--
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] cursor, ARGV[4] count.
-- Returns {next cursor, how many it moved, ids deleted from the stream while
-- pending (Redis drops those from the pending list)}.
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'COUNT', ARGV[4], 'JUSTID')
return {r[1], #r[2], r[3] or {}}
