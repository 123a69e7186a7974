-- Move one pending entry to the dead-letter stream and acknowledge it, in
-- that order: the acknowledgement is the last write, so a script that fails
-- part way (out of memory, a refused XADD) acknowledges nothing and the entry
-- stays pending. Used when the stream and the dead-letter stream share a node.
--
-- KEYS[1]  the stream
-- KEYS[2]  the dead-letter stream
-- ARGV[1]  group
-- ARGV[2]  entry id
-- ARGV[3]  MAXLEN ~ of the dead-letter stream, 0 for none
-- ARGV[4]  the most fields an entry may have to be copied whole
-- ARGV[5]  the most bytes (names and values) an entry may hold to be copied whole
-- ARGV[6]  mode: "copy" copies the entry's fields from the stream, here, so
--          that no body travels through the client; "given" takes them from
--          the arguments after the metadata (an entry already deleted from the
--          stream, or one dead-lettered as oversize, with none)
-- ARGV[7]  n, the number of metadata arguments that follow (name, value, ...)
-- ARGV[8 .. 7+n]  metadata: dl_reason and dl_error first, then the other dl_ fields
-- ARGV[8+n ..]    mode "given": the original fields, names already escaped
--
-- Original field names that start with "dl_" or "orig_" get the prefix
-- "orig_", which a redrive strips once: names round-trip whatever they are.
--
-- Returns 1 when the entry was moved whole, 2 when it was moved as oversize
-- (too many fields or bytes to copy: the dead letter then holds its size,
-- field count and the start of its data field instead of its fields), 0 when
-- it was no longer pending (nothing written), -1 in mode "copy" when the
-- stream no longer holds the entry (nothing written: give the fields).
local stream, dead = KEYS[1], KEYS[2]
local group, id = ARGV[1], ARGV[2]
if #redis.call('XPENDING', stream, group, id, id, 1) == 0 then
  return 0
end
local n = tonumber(ARGV[7])
local meta = {}
for i = 8, 7 + n do meta[#meta + 1] = ARGV[i] end

local fields = {}
local result = 1
if ARGV[6] == 'copy' then
  local e = redis.call('XRANGE', stream, id, id)
  if #e == 0 or e[1][1] ~= id then
    return -1
  end
  local f = e[1][2]
  local maxFields, maxBytes = tonumber(ARGV[4]), tonumber(ARGV[5])
  local bytes, data = 0, ''
  for i = 1, #f, 2 do
    -- Counted as the consumer counts them: every value, and the names of
    -- the fields other than data.
    bytes = bytes + #f[i + 1]
    if f[i] == 'data' then data = f[i + 1] else bytes = bytes + #f[i] end
  end
  if #f / 2 > maxFields or bytes > maxBytes then
    -- Too big to copy (and, in Lua, to unpack): record what it was.
    meta[2] = 'oversize'
    meta[4] = 'the entry has ' .. (#f / 2) .. ' fields and ' .. bytes ..
      ' bytes, over the limit of ' .. maxFields .. ' fields or ' .. maxBytes .. ' bytes'
    meta[#meta + 1] = 'dl_size';    meta[#meta + 1] = tostring(bytes)
    meta[#meta + 1] = 'dl_fields';  meta[#meta + 1] = tostring(#f / 2)
    meta[#meta + 1] = 'dl_excerpt'; meta[#meta + 1] = string.sub(data, 1, 256)
    result = 2
  else
    for i = 1, #f, 2 do
      local name = f[i]
      if string.sub(name, 1, 3) == 'dl_' or string.sub(name, 1, 5) == 'orig_' then
        name = 'orig_' .. name
      end
      fields[#fields + 1] = name
      fields[#fields + 1] = f[i + 1]
    end
  end
else
  for i = 8 + n, #ARGV do fields[#fields + 1] = ARGV[i] end
end

local args = {'XADD', dead}
local maxlen = tonumber(ARGV[3])
if maxlen > 0 then
  args[#args + 1] = 'MAXLEN'; args[#args + 1] = '~'; args[#args + 1] = maxlen
end
args[#args + 1] = '*'
for i = 1, #fields do args[#args + 1] = fields[i] end
for i = 1, #meta do args[#args + 1] = meta[i] end
redis.call(unpack(args))
redis.call('XACK', stream, group, id)
return result
