"""The Redis store's changes of state, each one Lua script run atomically by Redis
(store_redis.py says which keys and arguments each takes)."""

SUBMIT = """
local count = redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[2])
local bytes = tonumber(redis.call('GET', KEYS[3]) or '0')
if count >= tonumber(ARGV[6]) or bytes + string.len(ARGV[5]) > tonumber(ARGV[7]) then
  return 0
end
-- KEYS[5]: the client's waiting jobs (queued or running), bounded by ARGV[10]
if redis.call('ZCARD', KEYS[5]) >= tonumber(ARGV[10]) then return -1 end
redis.call('HSET', KEYS[4], 'status', 'queued', 'submitted', ARGV[1], 'path', ARGV[2],
           'query', ARGV[3], 'content_type', ARGV[4], 'photo', ARGV[5], 'webhook', ARGV[9],
           'client_key', KEYS[5])
redis.call('ZADD', KEYS[5], ARGV[1], ARGV[8])
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[8])
redis.call('INCRBY', KEYS[3], string.len(ARGV[5]))
return 1
"""

CLAIM = """
while true do
  local popped = redis.call('ZPOPMIN', KEYS[1])
  if #popped == 0 then return false end
  local id = popped[1]
  local key = ARGV[4] .. 'job:' .. id
  if redis.call('EXISTS', key) == 1 then
    redis.call('ZADD', KEYS[2], ARGV[2], id)
    redis.call('HSET', key, 'status', 'running', 'started', ARGV[1], 'claim', ARGV[3])
    local attempt = redis.call('HINCRBY', key, 'attempts', 1)
    return {id, attempt, unpack(redis.call('HMGET', key, 'submitted', 'path', 'query',
                                           'content_type', 'photo', 'webhook'))}
  end
end
"""

RENEW = """
if redis.call('HGET', KEYS[2], 'claim') ~= ARGV[2] then return 0 end
redis.call('ZADD', KEYS[1], 'XX', ARGV[1], ARGV[3])
return 1
"""

RELEASE = """
if redis.call('HGET', KEYS[3], 'claim') ~= ARGV[1] then return 0 end
redis.call('ZREM', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[3], 'status', 'queued')
redis.call('HDEL', KEYS[3], 'started', 'claim')
redis.call('ZADD', KEYS[2], redis.call('HGET', KEYS[3], 'submitted'), ARGV[2])
return 1
"""

RECLAIM = """
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for _, id in ipairs(lapsed) do
  redis.call('ZREM', KEYS[1], id)
  local key = ARGV[2] .. 'job:' .. id
  local submitted = redis.call('HGET', key, 'submitted')
  if submitted then
    redis.call('HSET', key, 'status', 'queued')
    redis.call('HDEL', key, 'started', 'claim')
    redis.call('ZADD', KEYS[2], submitted, id)
  end
end
return #lapsed
"""

FINISH = """
if redis.call('HGET', KEYS[3], 'claim') ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
local client_key = redis.call('HGET', KEYS[3], 'client_key')
if client_key then redis.call('ZREM', client_key, ARGV[1]) end
redis.call('DECRBY', KEYS[2], redis.call('HSTRLEN', KEYS[3], 'photo'))
redis.call('INCRBY', KEYS[2], string.len(ARGV[10]))
redis.call('HDEL', KEYS[3], 'photo', 'query', 'claim', 'webhook')
redis.call('HSET', KEYS[3], 'status', ARGV[5], 'finished', ARGV[3], 'expires', ARGV[4],
           'level', ARGV[6], 'error', ARGV[7])
redis.call('HSET', KEYS[4], 'status', ARGV[8], 'headers', ARGV[9], 'body', ARGV[10])
redis.call('ZADD', KEYS[7], ARGV[4], ARGV[1])
local expires_ms = math.floor(tonumber(ARGV[4]) * 1000)
redis.call('PEXPIREAT', KEYS[3], expires_ms + tonumber(ARGV[11]) * 1000)
redis.call('ZADD', KEYS[5], ARGV[3], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', tonumber(ARGV[3]) - tonumber(ARGV[12]))
redis.call('INCR', KEYS[6])
return 1
"""

DELETE = """
if redis.call('EXISTS', KEYS[4]) == 0 then return 0 end
local client_key = redis.call('HGET', KEYS[4], 'client_key')
if client_key then redis.call('ZREM', client_key, ARGV[1]) end
redis.call('DECRBY', KEYS[3], redis.call('HSTRLEN', KEYS[4], 'photo'))
redis.call('DECRBY', KEYS[3], redis.call('HSTRLEN', KEYS[5], 'body'))
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[6], ARGV[1])
redis.call('DEL', KEYS[4], KEYS[5])
return 1
"""

EXPIRE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 1000)
for _, id in ipairs(due) do
  local key = ARGV[2] .. 'answer:' .. id
  redis.call('DECRBY', KEYS[2], redis.call('HSTRLEN', key, 'body'))
  redis.call('DEL', key)
  redis.call('ZREM', KEYS[1], id)
end
return #due
"""
