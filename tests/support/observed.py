"""Instances as the reconciler observes them, as plain values: for the reconciler's table
tests and its benchmark (the server gives it its ``InstanceState`` objects)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Inst:
    """An instance as observed (``knit.domain.rollout.Observed``); by default running
    and healthy on node ``n1``, without a health check."""

    id: str
    index: int = 0
    version: int = 1
    status: str = "running"
    desired: bool = True
    node_id: str | None = "n1"
    health: str = "none"
    created_at: float = 0.0
    running_since: float = 0.0
    ever_healthy: bool = True
    restarts: int = 0
    stopped_at: float = 0.0
    unknown_since: float = 0.0
    exit_code: int | None = None
