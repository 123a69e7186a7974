-- Move one dead letter back to its stream, if it is still there, so that
-- concurrent redrives move it once.
--
-- KEYS[1] the dead-letter stream, KEYS[2] the stream
-- ARGV[1] the dead letter's full id ("ms-seq")
-- ARGV[2] the most original fields a dead letter may hold to be redriven
--
-- The original fields are those whose names do not start with "dl_"; a name
-- starting with "orig_" loses that prefix once (dead-lettering added it to
-- names starting with "dl_" or "orig_"), so every name comes back as the
-- producer wrote it, in its order.
--
-- Returns the new entry's id, or false when the dead letter is gone. A dead
-- letter that cannot be redriven gets an error reply starting NOTREDRIVABLE
-- that says why; nothing is written then.
if not string.match(ARGV[1], '^%d+%-%d+$') then
  return redis.error_reply('ERR dead letter id ' .. ARGV[1] .. ' is not a full stream id (ms-seq)')
end
local e = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #e == 0 or e[1][1] ~= ARGV[1] then return false end
local f = e[1][2]
local args = {'XADD', KEYS[2], '*'}
local oversize = false
for i = 1, #f, 2 do
  local name = f[i]
  if string.sub(name, 1, 5) == 'orig_' then
    name = string.sub(name, 6)
  elseif string.sub(name, 1, 3) == 'dl_' then
    if name == 'dl_excerpt' then oversize = true end
    name = nil
  end
  if name then
    args[#args + 1] = name; args[#args + 1] = f[i + 1]
  end
end
if #args == 3 then
  if oversize then
    return redis.error_reply('NOTREDRIVABLE dead letter ' .. ARGV[1] .. ' is of an oversize entry and holds only an excerpt of it')
  end
  return redis.error_reply('NOTREDRIVABLE dead letter ' .. ARGV[1] .. ' holds no original fields')
end
if (#args - 3) / 2 > tonumber(ARGV[2]) then
  return redis.error_reply('NOTREDRIVABLE dead letter ' .. ARGV[1] .. ' holds ' .. ((#args - 3) / 2) .. ' fields, over the limit of ' .. ARGV[2])
end
local id = redis.call(unpack(args))
redis.call('XDEL', KEYS[1], ARGV[1])
return id
