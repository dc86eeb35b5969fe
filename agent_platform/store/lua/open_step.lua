-- Open one step (see open_step in _open.lua, prepended to this script).
-- KEYS[1] meta      the status hash
-- KEYS[2] lease     the step's lease
-- KEYS[3] done      tool calls checkpointed
-- KEYS[4] runs      runs in progress
-- KEYS[5] steps     the step log
-- KEYS[6] messages  the turn's messages
-- ARGV[1] token     ARGV[2] ttl_ms       ARGV[3] step_seq   ARGV[4] call_index ('' for none)
-- ARGV[5] worker    ARGV[6] now_iso      ARGV[7] now_ms     ARGV[8] with_messages ('1' or '')
-- ARGV[9] have      messages the caller holds already (see _open.lua)
return open_step(
  {meta = KEYS[1], lease = KEYS[2], done = KEYS[3], runs = KEYS[4], steps = KEYS[5], messages = KEYS[6]},
  {token = ARGV[1], ttl_ms = ARGV[2], step_seq = ARGV[3], call_index = ARGV[4], worker = ARGV[5],
   now_iso = ARGV[6], now_ms = ARGV[7], with_messages = ARGV[8], have = ARGV[9]})
