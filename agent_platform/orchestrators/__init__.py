"""Orchestrators: agents that coordinate other agents over the bus (DESIGN section 5)."""

from .agents import LLMOrchestrator, PolicyOrchestrator, RandomOrchestrator, RoundRobinOrchestrator
from .policies import Policy, RandomPolicy, RoundRobinPolicy, read_turn

__all__ = [
    "LLMOrchestrator",
    "Policy",
    "PolicyOrchestrator",
    "RandomOrchestrator",
    "RandomPolicy",
    "RoundRobinOrchestrator",
    "RoundRobinPolicy",
    "read_turn",
]
