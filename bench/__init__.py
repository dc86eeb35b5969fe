"""Benchmarks of agent-platform: ``python -m bench.<name>`` prints a table and ratios.

- ``bench.steps``: one agent turn on agent-platform, a raw Celery chain, DBOS and LangGraph.
- ``bench.checkpoint_growth``: Redis bytes written per checkpoint as the session grows.
- ``bench.throughput``: turns per second with 1 and 2 worker processes, and worker memory.
- ``bench.recovery``: seconds from a whole-worker SIGKILL to COMPLETED; duplicate checkpoints.
- ``bench.http``: ``POST /start-workflow`` requests per second and latency through gunicorn.
- ``bench.profile_steps``: where a turn's time goes (Redis commands, a py-spy profile), vs the raw chain.

Helpers: ``common`` (Redis, model process, workers, tables), ``agent`` (the agents),
``model`` (the scripted model's process), ``turn`` (the un-durable work of a turn),
``raw_chain`` (the Celery floor), ``peers`` (DBOS and LangGraph).

Benchmarks print figures; they never assert a time. See BENCHMARKS.md.
"""
