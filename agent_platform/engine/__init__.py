"""The engine: a workflow (one turn) as a chain of checkpointed steps (DESIGN section 3)."""

from .dispatch import Dispatcher, StepMessage
from .runner import run_step
from .sweeper import sweep_once

__all__ = ["Dispatcher", "StepMessage", "run_step", "sweep_once"]
