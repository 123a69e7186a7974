-- Append events to a task's stream, refresh the stream's time to live, and
-- announce each event on the task's pub/sub channel, in the layout of the
-- Python service: one entry per event, the event's JSON in field "data",
-- XADD MAXLEN ~, then PUBLISH of the same JSON. The PUBLISHes come after
-- every write, so a write that fails (out of memory, WRONGTYPE) announces
-- nothing, and an event that was written is always announced: a listener
-- never waits for an event that is already in the stream.
--
-- KEYS[1]  the task's stream
-- ARGV[1]  MAXLEN ~ of the stream
-- ARGV[2]  time to live of the stream, in milliseconds
-- ARGV[3]  the task's pub/sub channel
-- ARGV[4 ..] the events' JSON, one entry each, in order
--
-- Returns the new entries' ids, in order.
local stream, maxlen, channel = KEYS[1], ARGV[1], ARGV[3]
local ids = {}
for i = 4, #ARGV do
  ids[#ids + 1] = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'data', ARGV[i])
end
redis.call('PEXPIRE', stream, ARGV[2])
for i = 4, #ARGV do
  redis.call('PUBLISH', channel, ARGV[i])
end
return ids
