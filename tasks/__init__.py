"""The Celery app of agent-platform: ``celery -A tasks worker``.

The app is built by :func:`create_celery` the first time ``tasks.app`` (or
``tasks.celery``) is read, so importing this package reads no environment variable.
"""

from __future__ import annotations

import threading
from typing import Any

from .app import create_celery
from .dispatch import CeleryDispatcher

__all__ = ["CeleryDispatcher", "create_celery", "get_app"]

_app: Any = None
_lock = threading.Lock()


def get_app() -> Any:
    """The process's Celery app, built from the environment on first use."""
    global _app
    with _lock:
        if _app is None:
            _app = create_celery()
        return _app


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        return get_app()
    raise AttributeError(f"module 'tasks' has no attribute {name!r}")
