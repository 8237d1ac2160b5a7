"""Rollouts: the record of a deployment's move to a version, and when an instance is healthy.

Layer: domain. Pure: the standard library, ``knit.domain.specs`` and
``knit.domain.update_policy`` only.

A rollout replaces the instances of older versions with instances of ``version`` in batches
(``knit.domain.reconcile``); the deployment's actor stores it as JSON on the deployment's row
after every change, so a restarted server resumes it where it was.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from knit.domain.specs import Health, InstanceStatus, RolloutState
from knit.domain.update_policy import OnFailure, UpdateOrder

ACTIVE = frozenset({RolloutState.RUNNING, RolloutState.ROLLING_BACK})
"""States in which a rollout still replaces instances."""


@dataclass(frozen=True, slots=True)
class Rollout:
    """A deployment's current (or last) rollout.

    Attributes:
        version: the version being rolled out (after an automatic rollback: the stable
            version rolled back to).
        state: ``running``, ``complete``, ``paused``, ``rolling_back`` or ``rolled_back``.
        desired: the instances wanted (the deployment's ``replicas``).
        updated: instances of ``version`` that hold a slot.
        healthy: how many of those are healthy.
        message: what happened last, in words (the reason of a pause or rollback).
        started_at: the server's clock when it started.
        failed_version: the version whose failure caused the rollback (None otherwise).
        reason: why it paused or rolled back ("" otherwise).
    """

    version: int
    state: RolloutState
    desired: int = 0
    updated: int = 0
    healthy: int = 0
    message: str = ""
    started_at: float = 0.0
    failed_version: int | None = None
    reason: str = ""

    @property
    def active(self) -> bool:
        """Whether it still replaces instances."""
        return self.state in ACTIVE

    def to_json(self) -> dict[str, int | float | str | None]:
        """The API's (and the store's) form."""
        return {
            "version": self.version,
            "state": str(self.state),
            "desired": self.desired,
            "updated": self.updated,
            "healthy": self.healthy,
            "message": self.message,
            "started_at": self.started_at,
            "failed_version": self.failed_version,
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object] | None) -> Rollout | None:
        """The rollout stored as ``data`` (None stays None; unknown keys are ignored)."""
        if not data:
            return None
        failed = data.get("failed_version")
        return cls(
            version=int(data.get("version", 1)),  # type: ignore[call-overload]
            state=RolloutState(str(data.get("state", RolloutState.COMPLETE))),
            desired=int(data.get("desired", 0)),  # type: ignore[call-overload]
            updated=int(data.get("updated", 0)),  # type: ignore[call-overload]
            healthy=int(data.get("healthy", 0)),  # type: ignore[call-overload]
            message=str(data.get("message", "")),
            started_at=float(data.get("started_at", 0.0)),  # type: ignore[arg-type]
            failed_version=int(failed) if isinstance(failed, int) else None,
            reason=str(data.get("reason", "")),
        )

    def with_counts(self, desired: int, updated: int, healthy: int) -> Rollout:
        """This rollout with new counts (itself when they are the same)."""
        if (desired, updated, healthy) == (self.desired, self.updated, self.healthy):
            return self
        return dataclasses.replace(self, desired=desired, updated=updated, healthy=healthy)


@dataclass(frozen=True, slots=True)
class Update:
    """The update policy as the reconciler reads it (``knit.domain.update_policy.UpdatePolicy``)."""

    max_parallel: int = 1
    order: UpdateOrder = UpdateOrder.STOP_FIRST
    min_healthy_time: float = 10.0
    healthy_deadline: float = 300.0
    on_failure: OnFailure = OnFailure.PAUSE

    @classmethod
    def from_json(cls, data: Mapping[str, object] | None) -> Update:
        """The policy stored as ``data`` (missing keys take their defaults)."""
        data = data or {}
        default = cls()
        return cls(
            max_parallel=int(data.get("max_parallel", default.max_parallel)),  # type: ignore[call-overload]
            order=UpdateOrder(str(data.get("order", default.order))),
            min_healthy_time=float(data.get("min_healthy_time", default.min_healthy_time)),  # type: ignore[arg-type]
            healthy_deadline=float(data.get("healthy_deadline", default.healthy_deadline)),  # type: ignore[arg-type]
            on_failure=OnFailure(str(data.get("on_failure", default.on_failure))),
        )


class Observed(Protocol):
    """What the reconciler reads of an instance (``knit.server.records.InstanceState`` is one)."""

    @property
    def id(self) -> str: ...
    @property
    def index(self) -> int: ...
    @property
    def version(self) -> int: ...
    @property
    def status(self) -> str: ...
    @property
    def desired(self) -> bool: ...
    @property
    def node_id(self) -> str | None: ...
    @property
    def health(self) -> str: ...
    @property
    def created_at(self) -> float: ...
    @property
    def running_since(self) -> float: ...
    @property
    def ever_healthy(self) -> bool: ...
    @property
    def restarts(self) -> int: ...
    @property
    def stopped_at(self) -> float: ...
    @property
    def unknown_since(self) -> float: ...
    @property
    def exit_code(self) -> int | None: ...


def healthy_at(inst: Observed, checked: bool, min_healthy_time: float) -> float | None:
    """When ``inst`` is (or will be) healthy if nothing changes: a time on the server's clock,
    or None when it is not on its way (not running, or its check does not pass).

    It runs and its health check passes; or, without a health check (``checked``: the spec
    has one; else the image's own counts once Docker reports it), it has run for
    ``min_healthy_time``.
    """
    if inst.status != InstanceStatus.RUNNING:
        return None
    if inst.health == Health.HEALTHY:
        return inst.running_since
    if inst.health != Health.NONE or checked:
        return None  # starting or unhealthy, or a check whose first result is awaited
    return inst.running_since + min_healthy_time


def is_healthy(inst: Observed, checked: bool, min_healthy_time: float, now: float) -> bool:
    """Whether ``inst`` is healthy at ``now`` (see :func:`healthy_at`)."""
    at = healthy_at(inst, checked, min_healthy_time)
    return at is not None and at <= now


__all__ = ["ACTIVE", "Observed", "Rollout", "Update", "healthy_at", "is_healthy"]
