"""gunicorn settings of the web process: ``gunicorn --config web/gunicorn.conf.py "web:create_app()"``.

A gunicorn configuration file (read by path, so the master imports nothing of the app
before gevent patches the worker). Command-line flags win over it (``--bind``...).

Why gevent workers: a client that sends its body slowly holds what serves it. A gthread
worker serves each request on one of ``--threads`` threads and accepts at most
``--worker-connections``, so a few hundred slow clients (or open event streams) took
every thread and ``/health`` stopped answering (C16). gunicorn's documentation says to
put a buffering proxy in front of sync/threaded workers or to use an async worker for
clients that are not buffered; on a gevent worker every connection is a greenlet, so
slow bodies and open SSE streams cost memory, not threads. The body itself must arrive
within ``AGENT_PLATFORM_BODY_TIMEOUT`` (``web/body.py``); request headers within
``keepalive`` seconds (gevent workers bound the wait for a request with it).

Environment: ``PORT`` (8000), ``WEB_CONCURRENCY`` (worker processes, 2),
``WEB_CONNECTIONS`` (connections per process, 1000).
"""

import os

bind = f"0.0.0.0:{os.environ.get('PORT') or '8000'}"
workers = int(os.environ.get("WEB_CONCURRENCY") or 2)
worker_class = "gevent"
worker_connections = int(os.environ.get("WEB_CONNECTIONS") or 1000)
# Seconds to wait for the next request on a connection, and for a request's headers.
keepalive = 5
# Seconds a worker may stay silent (busy without yielding) before the master restarts it.
timeout = 30
