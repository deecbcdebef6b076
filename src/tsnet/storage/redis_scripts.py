"""The Lua scripts of the Redis backend.

A script runs atomically on its shard, so each is one step that cannot be seen
half done: a batch's part on a shard, a compaction, a catalog change.  Scripts
build key names from the prefix they are given (see `tsnet.storage.redis_keys`);
they are meant for standalone Redis servers, not Redis Cluster (which txredisapi
does not speak), so keys travel in ARGV.
"""

#: ARGV: marker key, marker ttl (s), prefix, then ops:
#:   G SOL                      the solution the following ops belong to
#:   S METRIC SID KEYJSON BLOB  append a sample blob to a series (indexed)
#:   L LIST BLOB                append a blob to one of the solution's lists
#: Returns {1, length of each S op's list...}, or {0} when the marker says this
#: part was committed already (a retry after a lost reply).
WRITE = """
local marker = ARGV[1]
if redis.call('EXISTS', marker) == 1 then return {0} end
local p = ARGV[3]
local sp = ''
local lens = {1}
local i = 4
local n = #ARGV
while i <= n do
  local op = ARGV[i]
  if op == 'S' then
    local metric = ARGV[i + 1]
    local sid = ARGV[i + 2]
    redis.call('HSETNX', sp .. 'm:' .. metric, sid, ARGV[i + 3])
    redis.call('SADD', sp .. 'metrics', metric)
    lens[#lens + 1] = redis.call('RPUSH', sp .. 'd:' .. sid, ARGV[i + 4])
    i = i + 5
  elseif op == 'L' then
    redis.call('RPUSH', sp .. ARGV[i + 1], ARGV[i + 2])
    i = i + 3
  elseif op == 'G' then
    sp = p .. 's:' .. ARGV[i + 1] .. ':'
    redis.call('SADD', p .. 'data', ARGV[i + 1])
    i = i + 2
  else
    return redis.error_reply('bad op ' .. op)
  end
end
redis.call('SET', marker, '1', 'EX', ARGV[2])
return lens
"""

#: ARGV: solution prefix (PREFIX s:SOL:), '1' and a metric, or '0' for every
#: metric.  Returns a flat list: sid, key JSON, sid, key JSON, ...
SERIES_INDEX = """
local sp = ARGV[1]
local metrics
if ARGV[2] == '1' then
  metrics = {ARGV[3]}
else
  metrics = redis.call('SMEMBERS', sp .. 'metrics')
end
local out = {}
for _, m in ipairs(metrics) do
  local h = redis.call('HGETALL', sp .. 'm:' .. m)
  for j = 1, #h do out[#out + 1] = h[j] end
end
return out
"""

#: KEYS: lists.  Returns each list whole, in KEYS order.
READ_LISTS = """
local out = {}
for i, k in ipairs(KEYS) do
  out[i] = redis.call('LRANGE', k, 0, -1)
end
return out
"""

#: ARGV: prefix, solution.  Removes every data key of the solution on this shard.
DELETE_SOLUTION_DATA = """
local p = ARGV[1]
local sol = ARGV[2]
local sp = p .. 's:' .. sol .. ':'
local metrics = redis.call('SMEMBERS', sp .. 'metrics')
for _, m in ipairs(metrics) do
  local ids = redis.call('HKEYS', sp .. 'm:' .. m)
  for _, sid in ipairs(ids) do redis.call('DEL', sp .. 'd:' .. sid) end
  redis.call('DEL', sp .. 'm:' .. m)
end
redis.call('DEL', sp .. 'metrics', sp .. 'props', sp .. 'msgs', sp .. 'meta', sp .. 'recs')
redis.call('SREM', p .. 'data', sol)
return #metrics
"""

#: KEYS[1]: a list.  ARGV: n, SHA-1 of its first n elements joined, the folded
#: blob.  Replaces those n elements by the one blob unless another compaction
#: got there first; appends at the tail meanwhile are untouched.
COMPACT_LIST = """
local n = tonumber(ARGV[1])
local head = redis.call('LRANGE', KEYS[1], 0, n - 1)
if #head ~= n or redis.sha1hex(table.concat(head)) ~= ARGV[2] then return 0 end
redis.call('LTRIM', KEYS[1], n, -1)
redis.call('LPUSH', KEYS[1], ARGV[3])
return 1
"""

# -- the catalog (all on one shard) ------------------------------------------

#: ARGV: prefix, name, record JSON.  1 created, 0 the name exists.
CREATE_SOLUTION = """
local p = ARGV[1]
if not redis.call('SET', p .. 'c:sol:' .. ARGV[2], ARGV[3], 'NX') then return 0 end
redis.call('SADD', p .. 'c:sols', ARGV[2])
redis.call('INCR', p .. 'c:gen')
return 1
"""

#: ARGV: prefix, name, record JSON.  1 replaced, 0 no such solution.
UPDATE_SOLUTION = """
local p = ARGV[1]
if not redis.call('SET', p .. 'c:sol:' .. ARGV[2], ARGV[3], 'XX') then return 0 end
redis.call('INCR', p .. 'c:gen')
return 1
"""

#: ARGV: prefix, name.  The solution and its tokens; 1 done, 0 no such solution.
DELETE_SOLUTION = """
local p = ARGV[1]
local name = ARGV[2]
if redis.call('DEL', p .. 'c:sol:' .. name) == 0 then return 0 end
redis.call('SREM', p .. 'c:sols', name)
for _, tid in ipairs(redis.call('SMEMBERS', p .. 'c:toks:' .. name)) do
  local rec = redis.call('GET', p .. 'c:tok:' .. tid)
  if rec then
    for _, c in ipairs(cjson.decode(rec).credentials) do
      redis.call('DEL', p .. 'c:cred:' .. c.id, p .. 'c:hash:' .. c.hash)
    end
  end
  redis.call('DEL', p .. 'c:tok:' .. tid)
end
redis.call('DEL', p .. 'c:toks:' .. name)
redis.call('INCR', p .. 'c:gen')
return 1
"""

#: ARGV: prefix, token id, solution, token JSON, then credential id and secret
#: hash pairs.  'ok', 'nosolution', or 'conflict' (a credential id or hash
#: belongs to another token).  Replaces the token's old credentials.
SAVE_TOKEN = """
local p = ARGV[1]
local tid = ARGV[2]
local sol = ARGV[3]
if redis.call('EXISTS', p .. 'c:sol:' .. sol) == 0 then return 'nosolution' end
for i = 5, #ARGV, 2 do
  local owner = redis.call('GET', p .. 'c:cred:' .. ARGV[i])
  if owner and owner ~= tid then return 'conflict' end
  local cid = redis.call('GET', p .. 'c:hash:' .. ARGV[i + 1])
  if cid and redis.call('GET', p .. 'c:cred:' .. cid) ~= tid then return 'conflict' end
end
local old = redis.call('GET', p .. 'c:tok:' .. tid)
if old then
  local o = cjson.decode(old)
  for _, c in ipairs(o.credentials) do
    redis.call('DEL', p .. 'c:cred:' .. c.id, p .. 'c:hash:' .. c.hash)
  end
  redis.call('SREM', p .. 'c:toks:' .. o.solution, tid)
end
redis.call('SET', p .. 'c:tok:' .. tid, ARGV[4])
redis.call('SADD', p .. 'c:toks:' .. sol, tid)
for i = 5, #ARGV, 2 do
  redis.call('SET', p .. 'c:cred:' .. ARGV[i], tid)
  redis.call('SET', p .. 'c:hash:' .. ARGV[i + 1], ARGV[i])
end
redis.call('INCR', p .. 'c:gen')
return 'ok'
"""

#: ARGV: prefix, '1' and a credential id, or '0' and a secret hash.  The token
#: record (JSON) owning the credential, or false.
FIND_CREDENTIAL = """
local p = ARGV[1]
local cid = ARGV[3]
if ARGV[2] == '0' then
  cid = redis.call('GET', p .. 'c:hash:' .. ARGV[3])
  if not cid then return false end
end
local tid = redis.call('GET', p .. 'c:cred:' .. cid)
if not tid then return false end
return {cid, redis.call('GET', p .. 'c:tok:' .. tid)}
"""

#: ARGV: prefix, a set's key after it, its members' record keys before the
#: member.  Every record.
RECORDS_OF_SET = """
local out = {}
for _, m in ipairs(redis.call('SMEMBERS', ARGV[1] .. ARGV[2])) do
  local rec = redis.call('GET', ARGV[1] .. ARGV[3] .. m)
  if rec then out[#out + 1] = rec end
end
return out
"""

# -- rebalancing ----------------------------------------------------------------

#: ARGV: solution prefix, the data set's key, solution, metric, sid, key JSON,
#: then the series' blobs from its old shard.  They go BEFORE what the new
#: shard holds (written later), and the series is indexed here.
MOVE_SERIES_IN = """
local sp = ARGV[1]
local sid = ARGV[5]
for i = #ARGV, 7, -1 do redis.call('LPUSH', sp .. 'd:' .. sid, ARGV[i]) end
redis.call('HSETNX', sp .. 'm:' .. ARGV[4], sid, ARGV[6])
redis.call('SADD', sp .. 'metrics', ARGV[4])
redis.call('SADD', ARGV[2], ARGV[3])
return 1
"""

#: ARGV: the list's key, the data set's key, solution, then the list's blobs
#: from its old shard, put before what this shard holds.
MOVE_LIST_IN = """
for i = #ARGV, 4, -1 do redis.call('LPUSH', ARGV[1], ARGV[i]) end
redis.call('SADD', ARGV[2], ARGV[3])
return 1
"""

#: ARGV: solution prefix, the data set's key, solution, metric, sid.  The
#: series gone from its old shard, and its index entries with it.
MOVE_SERIES_OUT = """
local sp = ARGV[1]
redis.call('DEL', sp .. 'd:' .. ARGV[5])
redis.call('HDEL', sp .. 'm:' .. ARGV[4], ARGV[5])
if redis.call('EXISTS', sp .. 'm:' .. ARGV[4]) == 0 then
  redis.call('SREM', sp .. 'metrics', ARGV[4])
end
return 1
"""

#: ARGV: solution prefix, the data set's key, solution.  Drops the solution
#: from this shard's data set when nothing of it is left here.
FORGET_IF_EMPTY = """
local sp = ARGV[1]
if redis.call('EXISTS', sp .. 'metrics', sp .. 'props', sp .. 'msgs', sp .. 'meta',
              sp .. 'recs') == 0 then
  redis.call('SREM', ARGV[2], ARGV[3])
  return 1
end
return 0
"""

# -- retention ----------------------------------------------------------------

#: KEYS: lists.  ARGV: n.  The first n elements of each list, in KEYS order.
READ_HEADS = """
local n = tonumber(ARGV[1])
local out = {}
for i, k in ipairs(KEYS) do
  out[i] = redis.call('LRANGE', k, 0, n - 1)
end
return out
"""

#: KEYS: lists.  ARGV, three per list: m, SHA-1 of its first m elements joined,
#: a blob or ''.  Removes those m elements (and puts the blob in their place)
#: unless they changed since they were read (another node's removal or
#: compaction got there first); appends at the tail meanwhile are untouched.
#: Returns 1 or 0 per list.
TRIM_HEADS = """
local out = {}
for i, k in ipairs(KEYS) do
  local a = 3 * i - 2
  local m = tonumber(ARGV[a])
  local head = redis.call('LRANGE', k, 0, m - 1)
  if #head == m and redis.sha1hex(table.concat(head)) == ARGV[a + 1] then
    redis.call('LTRIM', k, m, -1)
    if ARGV[a + 2] ~= '' then redis.call('LPUSH', k, ARGV[a + 2]) end
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""
