"""The reconciler's plan: the actions it decides, which ``DeploymentActor`` applies in order.

Layer: domain. Pure: the standard library and ``knit.domain.rollout`` only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from knit.domain.rollout import Rollout

# --- the plan ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Create:
    """A new instance of ``version`` at ``index`` (pending, to be placed)."""

    index: int
    version: int


@dataclass(frozen=True, slots=True)
class Retire:
    """The instance is no longer wanted (``desired`` False); ``kind`` is the event's."""

    instance_id: str
    kind: str
    message: str


@dataclass(frozen=True, slots=True)
class Lose:
    """The instance is ``lost``: its slot is free, its container stopped if it comes back."""

    instance_id: str
    message: str


@dataclass(frozen=True, slots=True)
class MarkUnknown:
    """The instance's node is unreachable: ``unknown`` until ``lost_after`` has passed."""

    instance_id: str
    message: str


@dataclass(frozen=True, slots=True)
class Abandon:
    """The task in flight for the instance can never complete: end it with ``reason``."""

    instance_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class NoteStopped:
    """Remember ``now`` as when the instance stopped (or turned unhealthy): its backoff
    counts from there."""

    instance_id: str


@dataclass(frozen=True, slots=True)
class Restart:
    """Start the instance again (one more restart); ``running``: its container runs (it is
    unhealthy) and must be restarted, not just started."""

    instance_id: str
    message: str
    running: bool = False


@dataclass(frozen=True, slots=True)
class Deploy:
    """Send the deploy task of a placed instance that waits for it."""

    instance_id: str


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop and remove the instance's container."""

    instance_id: str


@dataclass(frozen=True, slots=True)
class Forget:
    """Remove the instance from the table: nothing runs it (any more)."""

    instance_id: str
    message: str


Action = (
    Create | Retire | Lose | MarkUnknown | Abandon | NoteStopped | Restart | Deploy | Stop | Forget
)


@dataclass(slots=True)
class Plan:
    """What to do, in order, and what to remember.

    Attributes:
        actions: applied in order.
        place: some wanted instances are unplaced (those created by this plan included):
            ask the scheduler.
        wake_at: when to reconcile again at the latest (server clock), if a rule waits.
        rollout: the rollout's new value, when it changed.
        stable: a version that became stable.
        revert_to: roll the deployment's spec back to this (stable) version now.
        events: ``(kind, message)`` of the deployment.
        purge: a deleted deployment has no instances left: remove it.
    """

    actions: list[Action] = field(default_factory=list)
    place: bool = False
    wake_at: float | None = None
    rollout: Rollout | None = None
    stable: int | None = None
    revert_to: int | None = None
    events: list[tuple[str, str]] = field(default_factory=list)
    purge: bool = False

    def wake(self, at: float) -> None:
        """Reconcile again at ``at`` at the latest."""
        if self.wake_at is None or at < self.wake_at:
            self.wake_at = at


__all__ = [
    "Abandon",
    "Action",
    "Create",
    "Deploy",
    "Forget",
    "Lose",
    "MarkUnknown",
    "NoteStopped",
    "Plan",
    "Restart",
    "Retire",
    "Stop",
]
