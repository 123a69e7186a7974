-- Read the operation index KEYS[1] and the task meta hash it points to
-- (ARGV[1] .. task id); when that hash is missing, fall back to KEYS[2], the
-- meta hash of the message's own task id, if given. Returns the HGETALL
-- reply, empty when neither is known. It computes a key, so it runs on
-- single-node clients only.
local id = redis.call('GET', KEYS[1])
if id and id ~= '' then
  local key = ARGV[1] .. id
  local h = redis.call('HGETALL', key)
  if #h > 0 or key == KEYS[2] then
    return h
  end
end
if KEYS[2] then
  return redis.call('HGETALL', KEYS[2])
end
return {}
