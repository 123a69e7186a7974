-- Write the outcome of an operation to its task's stream once: the outcome
-- event, then the finish event, each an entry with the event's JSON in field
-- "data" and the operation id in field "operation_id"; refresh the stream's
-- time to live; announce both events on the task's pub/sub channel. With the
-- task's meta hash, also move the task's status from "running" to the given
-- one; with the completion stream, also acknowledge the completion's entry.
--
-- Writing is idempotent per operation: when one of the stream's last 16
-- entries carries the operation id, the events are already there and are not
-- written again (a redelivery after a crash, or a second delivery of the same
-- completion). A stream whose last entry is a finish event is finished: no
-- outcome is added to it.
--
-- The acknowledgement is the last write, so a script that fails part way
-- (out of memory, say) acknowledges nothing; its redelivery finds the events
-- by operation id and completes the rest.
--
-- KEYS[1]  the task's stream
-- KEYS[2]  optional: the task's meta hash (field "status")
-- KEYS[3]  optional: the completion stream, whose entry ARGV[9] of group
--          ARGV[8] is acknowledged (only with KEYS[2])
-- ARGV[1]  MAXLEN ~ of the task's stream
-- ARGV[2]  time to live of the task's stream, in milliseconds
-- ARGV[3]  the task's pub/sub channel
-- ARGV[4]  operation id
-- ARGV[5]  the outcome event's JSON
-- ARGV[6]  the finish event's JSON
-- ARGV[7]  the status to set: "completed" or "failed" (with KEYS[2])
-- ARGV[8]  group (with KEYS[3])
-- ARGV[9]  entry id (with KEYS[3])
--
-- Returns {code, outcome id, finish id}:
--   1  written (the ids are the new entries')
--   0  already written for this operation (the ids are the entries found;
--      the finish id is "" when only the outcome was found)
--   4  the stream is already finished (by another writer): no event written;
--      with KEYS[2] the status is still set, as the task is over
--   2  with KEYS[2]: the task is not running (ids "", its status instead of
--      the outcome id): nothing written, the status left as it is
--   3  with KEYS[2]: the task's meta hash does not exist: nothing written
-- With KEYS[3] the completion's entry is acknowledged in every case.
local stream, meta, completions = KEYS[1], KEYS[2], KEYS[3]
local maxlen, ttl, channel, op = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

local function ack()
  if completions then
    redis.call('XACK', completions, ARGV[8], ARGV[9])
  end
end

if meta then
  local status = redis.call('HGET', meta, 'status')
  if not status then
    if redis.call('EXISTS', meta) == 0 then
      ack()
      return {3, '', ''}
    end
    status = ''
  end
  if status ~= 'running' then
    ack()
    return {2, status, ''}
  end
end

local function field(fields, name)
  for i = 1, #fields, 2 do
    if fields[i] == name then return fields[i + 1] end
  end
  return nil
end

local function isFinish(data)
  if not data then return false end
  local ok, ev = pcall(cjson.decode, data)
  return ok and type(ev) == 'table' and ev['type'] == 'finish'
end

local code, outcomeID, finishID = 1, '', ''
local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 16)
for i = #last, 1, -1 do -- oldest first: the outcome precedes its finish
  local id, fields = last[i][1], last[i][2]
  if field(fields, 'operation_id') == op then
    if code == 1 then
      code, outcomeID = 0, id
    elseif isFinish(field(fields, 'data')) then
      finishID = id
    end
  end
end
if code == 1 and #last > 0 and isFinish(field(last[1][2], 'data')) then
  code = 4
end

if code == 1 then
  outcomeID = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'data', ARGV[5], 'operation_id', op)
  finishID = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'data', ARGV[6], 'operation_id', op)
  redis.call('PEXPIRE', stream, ttl)
end
if meta then
  redis.call('HSET', meta, 'status', ARGV[7])
end
if code == 1 then
  redis.call('PUBLISH', channel, ARGV[5])
  redis.call('PUBLISH', channel, ARGV[6])
end
ack()
return {code, outcomeID, finishID}
