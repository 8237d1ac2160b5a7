"""The restart policy's decision: never, now, or after a doubling backoff."""

from __future__ import annotations

import pytest

from knit.server.records import InstanceState
from knit.server.restarts import MAX_RESTART_DELAY, restart_wait

pytestmark = pytest.mark.unit


def exited(code: int | None, restarts: int = 0, status: str = "stopped") -> InstanceState:
    inst = InstanceState(id="i", deployment_id="d", index=0, status=status, created_at=0.0)
    inst.exit_code, inst.restarts = code, restarts
    return inst


def test_the_wait_doubles_from_the_backoff_and_is_capped() -> None:
    policy = {"mode": "always", "backoff": 2.0}
    assert restart_wait(exited(1), policy, now=100.0) == 2.0  # stopped_at noted at 100
    assert restart_wait(exited(1, restarts=3), policy, now=100.0) == 16.0
    assert restart_wait(exited(1, restarts=20), policy, now=100.0) == MAX_RESTART_DELAY
    inst = exited(1)
    restart_wait(inst, policy, now=100.0)
    assert restart_wait(inst, policy, now=103.0) == -1.0  # due since a second


def test_modes_and_the_limit_say_never() -> None:
    assert restart_wait(exited(1), {"mode": "never"}, now=0.0) is None
    assert restart_wait(exited(0), {"mode": "on-failure"}, now=0.0) is None
    assert restart_wait(exited(2), {"mode": "on-failure"}, now=0.0) is not None
    assert restart_wait(exited(None, status="error"), {"mode": "on-failure"}, 0.0) is not None
    assert restart_wait(exited(1, restarts=3), {"max_restarts": 3}, now=0.0) is None
