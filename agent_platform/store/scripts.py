"""The workflow store's Lua scripts, kept in ``store/lua/*.lua`` (package data) with a
header naming each KEYS and ARGV slot, as Dramatiq keeps ``dispatch.lua``.

Each script is atomic and touches only keys of one workflow (one hash tag), so it also
runs on Redis Cluster; the sweeper's index (``<base>:active``) is written beside a script,
never inside one (see :class:`~agent_platform.store.workflows.WorkflowStore`).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

#: Scripts that call ``open_step``: ``_open.lua`` is prepended to them.
_USES_OPEN = frozenset({"open_step", "checkpoint"})


@cache
def source(name: str) -> str:
    """The Lua source of script ``name`` (e.g. ``"checkpoint"``), with its library prepended.

    Raises:
        FileNotFoundError: no ``lua/<name>.lua`` in the package.
    """
    folder = resources.files(__package__).joinpath("lua")
    text = folder.joinpath(f"{name}.lua").read_text(encoding="utf-8")
    if name in _USES_OPEN:
        text = folder.joinpath("_open.lua").read_text(encoding="utf-8") + "\n" + text
    return text
