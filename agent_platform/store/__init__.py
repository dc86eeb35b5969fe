"""Stores: workflow state with fenced checkpoints (Redis)."""

from .workflows import CheckpointResult, WorkflowStore

__all__ = ["CheckpointResult", "WorkflowStore"]
