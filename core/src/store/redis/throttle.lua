-- The login throttle's rule (`store::throttle::decide`), atomically, and the reservation of
-- an admitted attempt. Keep it in step with `decide`: the conformance suite runs both.
-- KEYS: the counters of the user at the address, the address, the user (hashes n, last).
-- A counter lives `window` ms from its first failure, longer while its delay (or lock) runs.
-- ARGV: now ms, window ms, reserve (1/0), then each counter's schedule as its length
-- followed by its delays in ms (entry n = the wait after n failures; the last repeats).
-- Returns {open (1/0), scope (1..3, 0 when open), wait ms, n1, n2, n3}.
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local reserve = ARGV[3] == '1'
local sched = {}
local pos = 4
for i = 1, 3 do
  local len = tonumber(ARGV[pos])
  local s = {}
  for j = 1, len do s[j] = tonumber(ARGV[pos + j]) end
  sched[i] = s
  pos = pos + len + 1
end
local function delay(s, n)
  if n < 1 or #s == 0 then return 0 end
  if n > #s then n = #s end
  return s[n]
end
local n, last = {}, {}
for i = 1, 3 do
  local v = redis.call('HMGET', KEYS[i], 'n', 'last')
  n[i] = tonumber(v[1]) or 0
  last[i] = tonumber(v[2]) or 0
end
local own = delay(sched[1], n[1])
local spread = 0
if n[1] >= 1 then spread = delay(sched[3], n[3]) end
local wait_ua = math.max(0, last[1] + math.max(own, spread) - now)
local wait_a = math.max(0, last[2] + delay(sched[2], n[2]) - now)
if wait_ua > 0 or wait_a > 0 then
  local scope, wait = 1, wait_ua
  if wait_a > wait_ua then
    scope, wait = 2, wait_a
  elseif spread > own then
    scope = 3
  end
  return {0, scope, wait, n[1], n[2], n[3]}
end
if reserve then
  for i = 1, 3 do
    local c = redis.call('HINCRBY', KEYS[i], 'n', 1)
    redis.call('HSET', KEYS[i], 'last', now)
    n[i] = c
    local ttl = redis.call('PTTL', KEYS[i])
    if ttl < 0 then
      ttl = window
      redis.call('PEXPIRE', KEYS[i], window)
    end
    local d = delay(sched[i], c)
    if d > 0 and ttl < d + 1000 then redis.call('PEXPIRE', KEYS[i], d + 1000) end
  end
end
return {1, 0, 0, n[1], n[2], n[3]}
