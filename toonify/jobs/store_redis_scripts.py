"""The Redis store's changes of state, each one Lua script run atomically by Redis
(store_redis.py says which keys and arguments each takes)."""

# KEYS: queued, running, held_bytes, job, the client's waiting jobs, arrived
# ARGV: now, options, photo, max_jobs, max_bytes, id, webhook, max_per_client, client
SUBMIT = """
local count = redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[2])
local bytes = tonumber(redis.call('GET', KEYS[3]) or '0')
if count >= tonumber(ARGV[4]) or bytes + string.len(ARGV[3]) > tonumber(ARGV[5]) then
  return 0
end
if redis.call('ZCARD', KEYS[5]) >= tonumber(ARGV[8]) then return -1 end
-- Its turn: one round past the client's last waiting job, never before the line's first.
local turn = 0
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #first > 0 then turn = tonumber(first[2]) end
local last = redis.call('ZRANGE', KEYS[5], -1, -1, 'WITHSCORES')
if #last > 0 then turn = math.max(turn, tonumber(last[2]) + 1) end
redis.call('HSET', KEYS[4], 'status', 'queued', 'submitted', ARGV[1], 'options', ARGV[2],
           'photo', ARGV[3], 'webhook', ARGV[7], 'client', ARGV[9], 'client_key', KEYS[5],
           'round', turn)
redis.call('ZADD', KEYS[5], turn, ARGV[6])
redis.call('ZADD', KEYS[1], turn, ARGV[6])
redis.call('ZADD', KEYS[6], ARGV[1], ARGV[6])
redis.call('INCRBY', KEYS[3], string.len(ARGV[3]))
return 1
"""

# KEYS: queued, running, arrived   ARGV: now, claim lapses at, token, prefix
CLAIM = """
while true do
  local popped = redis.call('ZPOPMIN', KEYS[1])
  if #popped == 0 then return false end
  local id = popped[1]
  redis.call('ZREM', KEYS[3], id)
  local key = ARGV[4] .. 'job:' .. id
  if redis.call('EXISTS', key) == 1 then
    redis.call('ZADD', KEYS[2], ARGV[2], id)
    redis.call('HSET', key, 'status', 'running', 'started', ARGV[1], 'claim', ARGV[3])
    local attempt = redis.call('HINCRBY', key, 'attempts', 1)
    return {id, attempt, unpack(redis.call('HMGET', key, 'submitted', 'options', 'photo',
                                           'webhook', 'client'))}
  end
end
"""

# KEYS: running, job   ARGV: claim lapses at, token, id
RENEW = """
if redis.call('HGET', KEYS[2], 'claim') ~= ARGV[2] then return 0 end
redis.call('ZADD', KEYS[1], 'XX', ARGV[1], ARGV[3])
return 1
"""

# KEYS: running, queued, job, arrived   ARGV: token, id
RELEASE = """
if redis.call('HGET', KEYS[3], 'claim') ~= ARGV[1] then return 0 end
redis.call('ZREM', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[3], 'status', 'queued')
redis.call('HDEL', KEYS[3], 'started', 'claim')
redis.call('ZADD', KEYS[2], redis.call('HGET', KEYS[3], 'round'), ARGV[2])
redis.call('ZADD', KEYS[4], redis.call('HGET', KEYS[3], 'submitted'), ARGV[2])
return 1
"""

# KEYS: running, queued, arrived   ARGV: now, prefix
RECLAIM = """
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for _, id in ipairs(lapsed) do
  redis.call('ZREM', KEYS[1], id)
  local key = ARGV[2] .. 'job:' .. id
  local place = redis.call('HMGET', key, 'round', 'submitted')
  if place[1] then
    redis.call('HSET', key, 'status', 'queued')
    redis.call('HDEL', key, 'started', 'claim')
    redis.call('ZADD', KEYS[2], place[1], id)
    redis.call('ZADD', KEYS[3], place[2], id)
  end
end
return #lapsed
"""

# KEYS: running, held_bytes, job, outcome, finished, answers_kept, expiring
# ARGV: id, token, now, expires, status, level, error, outcome, result, tombstone s, window s
FINISH = """
if redis.call('HGET', KEYS[3], 'claim') ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
local client_key = redis.call('HGET', KEYS[3], 'client_key')
if client_key then redis.call('ZREM', client_key, ARGV[1]) end
redis.call('DECRBY', KEYS[2], redis.call('HSTRLEN', KEYS[3], 'photo'))
redis.call('INCRBY', KEYS[2], string.len(ARGV[9]))
redis.call('HDEL', KEYS[3], 'photo', 'options', 'claim', 'webhook')
redis.call('HSET', KEYS[3], 'status', ARGV[5], 'finished', ARGV[3], 'expires', ARGV[4],
           'level', ARGV[6], 'error', ARGV[7])
redis.call('HSET', KEYS[4], 'outcome', ARGV[8], 'result', ARGV[9])
redis.call('ZADD', KEYS[7], ARGV[4], ARGV[1])
local expires_ms = math.floor(tonumber(ARGV[4]) * 1000)
redis.call('PEXPIREAT', KEYS[3], expires_ms + tonumber(ARGV[10]) * 1000)
redis.call('ZADD', KEYS[5], ARGV[3], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', tonumber(ARGV[3]) - tonumber(ARGV[11]))
redis.call('INCR', KEYS[6])
return 1
"""

# KEYS: queued, running, held_bytes, job, outcome, expiring, arrived   ARGV: id
DELETE = """
if redis.call('EXISTS', KEYS[4]) == 0 then return 0 end
local client_key = redis.call('HGET', KEYS[4], 'client_key')
if client_key then redis.call('ZREM', client_key, ARGV[1]) end
redis.call('DECRBY', KEYS[3], redis.call('HSTRLEN', KEYS[4], 'photo'))
redis.call('DECRBY', KEYS[3], redis.call('HSTRLEN', KEYS[5], 'result'))
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[6], ARGV[1])
redis.call('ZREM', KEYS[7], ARGV[1])
redis.call('DEL', KEYS[4], KEYS[5])
return 1
"""

# KEYS: expiring, held_bytes   ARGV: now, prefix
EXPIRE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 1000)
for _, id in ipairs(due) do
  local key = ARGV[2] .. 'outcome:' .. id
  redis.call('DECRBY', KEYS[2], redis.call('HSTRLEN', key, 'result'))
  redis.call('DEL', key)
  redis.call('ZREM', KEYS[1], id)
end
return #due
"""
