"""The restart policy: whether, and when, an exited or failed instance starts again.

Layer: server. Pure: the standard library and ``knit.server.records`` only.

Modes as in Docker and Nomad: ``always``, ``on-failure`` (not after a clean exit, code 0),
``never``; ``max_restarts`` bounds the count; the wait doubles from ``backoff`` with each
restart, up to :data:`MAX_RESTART_DELAY`. An instance whose deploy task failed (``error``: a
pull, a start refused by an Engine that was restarting...) is tried again the same way
unless the mode is ``never``: a passing failure must not leave it broken for good.
"""

from __future__ import annotations

from collections.abc import Mapping

from knit.server.records import InstanceState

MAX_RESTART_DELAY = 300.0
"""The longest wait before a restart (seconds)."""


def restart_wait(inst: InstanceState, policy: Mapping[str, object], now: float) -> float | None:
    """Seconds until ``inst`` (``stopped`` or ``error``) is due to start again: 0 or less
    means now, None never. Notes when it stopped (``stopped_at``) the first time it is asked.
    """
    mode = str(policy.get("mode", "always"))
    backoff = float(policy.get("backoff", 1.0) or 0.0)  # type: ignore[arg-type]
    limit = policy.get("max_restarts")
    clean_exit = inst.status == "stopped" and inst.exit_code == 0
    if mode == "never" or (mode == "on-failure" and clean_exit):
        return None
    if isinstance(limit, int) and inst.restarts >= limit:
        return None
    if inst.stopped_at == 0.0:
        inst.stopped_at = now
    return inst.stopped_at + min(backoff * 2.0**inst.restarts, MAX_RESTART_DELAY) - now


__all__ = ["MAX_RESTART_DELAY", "restart_wait"]
