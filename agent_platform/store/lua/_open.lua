-- Shared by open_step.lua and checkpoint.lua (prepended when they are loaded).
--
-- open_step(k, p) opens one step of a workflow: takes its lease, fences it, records its
-- run, and returns what the step needs, all in one round trip.
--   k.meta, k.lease, k.done, k.runs, k.steps, k.messages: the workflow's keys (one hash tag)
--   p.token    the lease token (owner) ; p.ttl_ms: the lease's TTL
--   p.step_seq the step's position (text) ; p.call_index: the tool call's index ('' for none)
--   p.worker   the Celery hostname ; p.now_iso, p.now_ms: the time
--   p.with_messages '1': also return the turn's messages and the records not folded yet
--   p.have     messages the caller holds already ('' or 0: none): the messages are returned
--              from index have - 1 on (the caller checks that one against its copy), so a
--              long turn's model call reads what the last checkpoint added, not the whole list
-- A run entry still there when a step is opened belonged to a worker that died before its
-- checkpoint (the checkpoint deletes it): it becomes a `lost` record (DESIGN rule 11).
-- Returns {'open', '', state (HGETALL), lost runs, attempt, messages?, records?, from?}
-- (from: the index of the first message returned) or
-- {verdict, lease owner or ''} with verdict leased|missing|finished|suspended|stale|duplicate.
local TERMINAL = {COMPLETED = true, FAILED = true, TERMINATED = true}

local function append_record(meta, steps, record, now_iso)
  local seq = redis.call('HINCRBY', meta, 'log_seq', 1) - 1
  redis.call('XADD', steps, '0-' .. (seq + 1), 'seq', seq, 'r', record)
  redis.call('HSET', meta, 'last_updated_at', now_iso)
  return seq
end

local function lost_record(k, p, run, kind, attempt)
  local data = {error = 'the worker running this step was lost (' .. tostring(run.worker) .. ')'}
  if kind == 'tool' then
    local next_step = cjson.decode(redis.call('HGET', k.meta, 'next'))
    local call = next_step.calls[tonumber(p.call_index) + 1]
    data.index, data.call_id, data.name, data.arguments = call.index, call.id, call.name, call.arguments
  end
  return cjson.encode({
    kind = kind, status = 'lost', attempt = attempt, worker = run.worker,
    started_at = run.started_at, finished_at = p.now_iso,
    duration_ms = tonumber(p.now_ms) - (tonumber(run.started_ms) or tonumber(p.now_ms)), data = data,
  })
end

local function open_step(k, p)
  if not redis.call('SET', k.lease, p.token, 'NX', 'PX', p.ttl_ms) then
    return {'leased', redis.call('GET', k.lease) or ''}
  end
  local status = redis.call('HGET', k.meta, 'runtime_status')
  local verdict = nil
  if not status then verdict = 'missing'
  elseif TERMINAL[status] then verdict = 'finished'
  elseif status == 'SUSPENDED' then verdict = 'suspended'
  elseif redis.call('HGET', k.meta, 'step_seq') ~= p.step_seq then verdict = 'stale'
  elseif p.call_index ~= '' and redis.call('HEXISTS', k.done, p.step_seq .. ':' .. p.call_index) == 1 then
    verdict = 'duplicate'
  end
  if verdict then
    redis.call('DEL', k.lease)
    return {verdict, ''}
  end
  local kind = cjson.decode(redis.call('HGET', k.meta, 'next')).kind
  -- attempt: 1 + failed attempts (a tool call counts its own) + lost runs
  local base = tonumber(redis.call('HGET', k.meta, 'attempt')) or 1
  if kind == 'tool' then
    base = 1 + (tonumber(redis.call('HGET', k.meta, 'retries:' .. p.step_seq .. ':' .. p.call_index)) or 0)
  end
  local field = p.step_seq .. ':' .. p.call_index
  local lost = 0
  local previous = redis.call('HGET', k.runs, field)
  if previous then
    local run = cjson.decode(previous)
    lost = (tonumber(run.lost) or 0) + 1
    append_record(k.meta, k.steps, lost_record(k, p, run, kind, base + lost - 1), p.now_iso)
  end
  redis.call('HSET', k.runs, field, cjson.encode({
    token = p.token, worker = p.worker, started_at = p.now_iso, started_ms = tonumber(p.now_ms), lost = lost,
  }))
  local reply = {'open', '', redis.call('HGETALL', k.meta), lost, base + lost}
  if p.with_messages == '1' then
    local folded = tonumber(redis.call('HGET', k.meta, 'folded_seq')) or -1
    local from = math.max(0, (tonumber(p.have) or 0) - 1)
    if from >= redis.call('LLEN', k.messages) then from = 0 end
    reply[6] = redis.call('LRANGE', k.messages, from, -1)
    reply[7] = redis.call('XRANGE', k.steps, '(0-' .. (folded + 1), '+')
    reply[8] = from
  end
  return reply
end
