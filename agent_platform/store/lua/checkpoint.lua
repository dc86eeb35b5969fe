-- Checkpoint one step, atomically and fenced (DESIGN section 3, rule 1); optionally open
-- the next step in the same round trip (open_step in _open.lua, prepended to this script).
-- KEYS[1] meta      the status hash
-- KEYS[2] steps     the step log
-- KEYS[3] done      tool calls checkpointed (<step_seq>:<index>)
-- KEYS[4] runs      runs in progress (this step's entry is deleted)
-- KEYS[5] messages  the turn's messages (plan.messages are appended)
-- KEYS[6] lease     this step's lease (released when it is ours)
-- KEYS[7] next_lease  the lease of the step to open when plan.chain is set
-- ARGV[1] step_seq  the position the step started from (the fence)
-- ARGV[2] call_index  the tool call's index ('' for none)
-- ARGV[3] token     this step's lease token
-- ARGV[4] record    the step record (JSON; its seq is assigned here)
-- ARGV[5] plan      JSON: mode (advance | tool | stay | end), updates {field: text},
--                   incr {field: n}, next (JSON text of the next step), advance_by (how far
--                   step_seq moves, default 1), extra_records [JSON text] (appended after
--                   the record), messages [JSON text] (appended to the turn's messages;
--                   folded_seq becomes the last record's seq), suspend {name, pending}
--                   (SUSPENDED waiting for event `name`, unless it was raised already),
--                   chain {token, ttl_ms, call_index, worker, with_messages, have} (open the next step)
-- ARGV[6] now_iso   ARGV[7] now_ms
-- ARGV[8] incarnation  the status hash's `incarnation` when the step was opened ('' : not
--                   checked): a workflow purged and created again under the same id has a
--                   new one, so a step of the old run is refused as missing
-- Mode `tool`: one call of a parallel group; the call is written once (done), and the last
-- one to checkpoint (tools_remaining reaches 0) advances the workflow.
-- Returns {seq, status, advanced (0/1), woke_early (0/1), opened (see _open.lua) or nil},
-- or {code, status} refused: -1 finished, -2 stale, -3 duplicate, -4 missing.
local meta, steps, done, runs = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local step_seq, call_index, token = ARGV[1], ARGV[2], ARGV[3]
local plan = cjson.decode(ARGV[5])
local now_iso = ARGV[6]
if redis.call('GET', KEYS[6]) == token then redis.call('DEL', KEYS[6]) end
local field = step_seq .. ':' .. call_index
local run = redis.call('HGET', runs, field)
local function refuse(code, status)
  if run and cjson.decode(run).token == token then redis.call('HDEL', runs, field) end
  return {code, status or ''}
end
local status = redis.call('HGET', meta, 'runtime_status')
if not status then return refuse(-4) end
if (ARGV[8] or '') ~= '' and redis.call('HGET', meta, 'incarnation') ~= ARGV[8] then return refuse(-4) end
if TERMINAL[status] then return refuse(-1, status) end
if redis.call('HGET', meta, 'step_seq') ~= step_seq then return refuse(-2, status) end
local mode = plan.mode
if mode == 'tool' and call_index ~= '' and redis.call('HSETNX', done, field, '1') == 0 then
  return refuse(-3, status)
end
redis.call('HDEL', runs, field)
local seq = append_record(meta, steps, ARGV[4], now_iso)
local last = seq
for _, record in ipairs(plan.extra_records or {}) do last = append_record(meta, steps, record, now_iso) end
for name, value in pairs(plan.updates or {}) do redis.call('HSET', meta, name, value) end
for name, value in pairs(plan.incr or {}) do redis.call('HINCRBY', meta, name, value) end
local woke_early = 0
if plan.suspend then
  if redis.call('HEXISTS', meta, 'event:' .. plan.suspend.name) == 1 then
    woke_early = 1 -- raised between the step's look and now: do not wait (it is read on the re-run)
  else
    redis.call('HSET', meta, 'runtime_status', 'SUSPENDED', 'pending_event', plan.suspend.pending)
  end
end
local advanced = 0
if mode == 'tool' then
  if redis.call('HINCRBY', meta, 'tools_remaining', -1) <= 0 then advanced = 1 end
elseif mode == 'advance' or mode == 'end' then
  advanced = 1
end
if advanced == 1 then
  redis.call('HINCRBY', meta, 'step_seq', plan.advance_by or 1)
  redis.call('HSET', meta, 'attempt', 1)
  if plan.next then redis.call('HSET', meta, 'next', plan.next) end
end
if plan.messages then
  for _, message in ipairs(plan.messages) do redis.call('RPUSH', KEYS[5], message) end
  redis.call('HSET', meta, 'folded_seq', last)
end
status = redis.call('HGET', meta, 'runtime_status')
local reply = {seq, status, advanced, woke_early}
if plan.chain and advanced == 1 and status == 'RUNNING' then
  local c = plan.chain
  reply[5] = open_step(
    {meta = meta, lease = KEYS[7], done = done, runs = runs, steps = steps, messages = KEYS[5]},
    {token = c.token, ttl_ms = c.ttl_ms, step_seq = redis.call('HGET', meta, 'step_seq'),
     call_index = c.call_index, worker = c.worker, now_iso = now_iso, now_ms = ARGV[7],
     with_messages = c.with_messages, have = c.have})
end
return reply
