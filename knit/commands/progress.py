"""What ``knit deploy``, ``scale`` and ``rollback`` print while they follow a deployment.

Layer: cli, pure: imports the standard library only. :func:`progress` is given the
deployment's JSON (``GET /deployments/{id}``) as last seen and as seen now, and says which
lines to print and whether the wait is over, and how; :mod:`knit.commands.follow` polls and
prints. Two waits:

- a **rollout** (a new deployment, an update, a rollback): until the rollout of the target
  version completes (exit 0), pauses or rolls back (exit 1, with the rollout's message); a
  version 1 without a rollout (a server that does not roll creations out) is awaited as
  instances;
- **instances** (a scale, which makes no rollout): until ``replicas`` desired instances run.

Either way the pending reason, if any, and instances in error or unhealthy are printed.

Either ends when the deployment is deleted or a newer version replaces the target.
A line is printed when it differs from the one the previous reading gave, so a rollout that
does not move prints nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

JSON = Mapping[str, Any]

RUNNING = "running"
"""``InstanceStatus.RUNNING`` (``knit.domain.specs``; not imported: this module is pure and
starts fast)."""
ERROR = "error"
UNHEALTHY = "unhealthy"


class Outcome(StrEnum):
    """How a wait ended."""

    COMPLETE = "complete"
    """The rollout completed, or every desired instance runs."""
    PAUSED = "paused"
    ROLLED_BACK = "rolled_back"
    SUPERSEDED = "superseded"
    """A newer version replaced the one followed."""
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class Target:
    """What is awaited.

    Attributes:
        version: the deployment's version the command made (or, for a scale, kept).
        rollout: wait for that version's rollout (version 1 without one: as instances);
            else for ``replicas`` running instances.
    """

    version: int
    rollout: bool


@dataclass(frozen=True, slots=True)
class Progress:
    """What to print after one reading, and whether the wait is over.

    Attributes:
        lines: what changed since the previous reading (nothing: empty).
        outcome: None while the wait goes on.
        message: why it failed (the rollout's message, say); empty on success.
        summary: where things stand, changed or not (for a timeout's message).
    """

    lines: tuple[str, ...] = ()
    outcome: Outcome | None = None
    message: str = ""
    summary: str = ""

    @property
    def finished(self) -> bool:
        """Whether the wait is over."""
        return self.outcome is not None

    @property
    def succeeded(self) -> bool:
        """Whether it ended as hoped."""
        return self.outcome is Outcome.COMPLETE


@dataclass(frozen=True, slots=True)
class Reading:
    """What one reading of the deployment says, before comparing it with the previous one.

    Attributes:
        status: where the wait stands, in a line (None: nothing to say yet).
        pending: why instances cannot be placed (the deployment's ``pending_reason``).
        note: the rollout's message while it goes on.
        problems: a line per instance in error or unhealthy.
        outcome: how the wait ended (None: it goes on); ``message`` says why on failure.
    """

    status: str | None = None
    pending: str | None = None
    note: str | None = None
    problems: frozenset[str] = frozenset()
    outcome: Outcome | None = None
    message: str = ""


def progress(previous: JSON | None, current: JSON | None, target: Target) -> Progress:
    """The lines to print after reading ``current``, and whether the wait is over.

    Args:
        previous: the deployment as read last time (None: this is the first reading).
        current: the deployment as read now (None: it no longer exists).
        target: what is awaited.
    """
    now = read(current, target)
    before = read(previous, target) if previous is not None else Reading()
    lines = sorted(now.problems - before.problems)
    if now.outcome is None and now.pending and now.pending != before.pending:
        lines.append(f"pending: {now.pending}")
    if now.outcome is None and now.note and now.note != before.note:
        lines.append(now.note)
    if now.status is not None and now.status != before.status:
        lines.append(now.status)
    summary = "; ".join(x for x in (now.status, now.pending and f"pending: {now.pending}") if x)
    summary = summary or f"the rollout of version {target.version} has not started"
    return Progress(tuple(lines), now.outcome, now.message, summary)


def read(deployment: JSON | None, target: Target) -> Reading:
    """What ``deployment`` says about ``target`` (None: it no longer exists)."""
    if deployment is None:
        return Reading(outcome=Outcome.DELETED, message="the deployment was deleted")
    name = str(deployment.get("name", "?"))
    if deployment.get("status") == "deleting":
        return Reading(outcome=Outcome.DELETED, message=f"deployment {name} is being deleted")
    if target.rollout:
        return _rollout(deployment, target)
    return _instances(deployment, target)


def _number(value: object, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _instances_of(deployment: JSON) -> Sequence[JSON]:
    found = deployment.get("instances")
    return [i for i in found if isinstance(i, Mapping)] if isinstance(found, list) else []


def problems(instances: Sequence[JSON], version: int | None = None) -> frozenset[str]:
    """A line per desired instance in error or unhealthy (of ``version`` only, if given)."""
    found = set()
    for inst in instances:
        if not inst.get("desired", True):
            continue
        if version is not None and _number(inst.get("version"), version) != version:
            continue
        where = f"instance {inst.get('index', '?')}"
        if inst.get("status") == ERROR:
            found.add(f"{where}: error: {inst.get('error') or 'no reason given'}")
        elif inst.get("status") == RUNNING and inst.get("health") == UNHEALTHY:
            found.add(f"{where}: unhealthy (version {_number(inst.get('version'), 0)})")
    return frozenset(found)


def _superseded(current: int, target: Target) -> Reading:
    return Reading(
        outcome=Outcome.SUPERSEDED,
        message=f"version {target.version} was replaced by version {current} meanwhile",
    )


def _instances(deployment: JSON, target: Target) -> Reading:
    version = _number(deployment.get("version"), target.version)
    if version > target.version:
        return _superseded(version, target)
    name = str(deployment.get("name", "?"))
    replicas = _number(deployment.get("replicas"))
    instances = _instances_of(deployment)
    up = [i.get("desired", True) for i in instances if i.get("status") == RUNNING]
    running, stopping = sum(up), len(up) - sum(up)
    if running == replicas:
        return Reading(
            status=f"deployment {name} running: {running}/{replicas} (version {version})",
            outcome=Outcome.COMPLETE,
        )
    status = f"version {version}: {running}/{replicas} running"
    if stopping:
        status += f", {stopping} stopping"
    return Reading(
        status=status,
        pending=deployment.get("pending_reason") or None,
        problems=problems(instances),
    )


def _rollout(deployment: JSON, target: Target) -> Reading:
    rollout = deployment.get("rollout")
    if not isinstance(rollout, Mapping):
        if target.version == 1:
            # A server that does not roll a new deployment out: its instances tell.
            return _instances(deployment, target)
        return Reading(pending=deployment.get("pending_reason") or None)
    v = target.version
    followed = _number(rollout.get("version"))
    # An automatic rollback goes on as a rollout of the stable version, naming the one that
    # failed (``knit.domain.rollout.Rollout.failed_version``).
    back = _number(rollout.get("failed_version"), 0) == v
    if followed < v and not back:
        # Not started yet (the actor takes the new version after the store has it).
        return Reading(pending=deployment.get("pending_reason") or None)
    if followed > v and not back:
        return _superseded(followed, target)
    state = str(rollout.get("state"))
    counts = (
        f"{_number(rollout.get('updated'))}/{_number(rollout.get('desired'))} updated, "
        f"{_number(rollout.get('healthy'))} healthy"
    )
    why = str(rollout.get("message") or "") or "no reason given"
    if state == "complete":
        return Reading(status=f"rollout complete: version {v}", outcome=Outcome.COMPLETE)
    if state == "paused":
        return Reading(
            status=f"rollout paused: version {v}: {counts}",
            problems=problems(_instances_of(deployment), v),
            outcome=Outcome.PAUSED,
            message=f"the rollout of version {v} paused: {why}",
        )
    if state == "rolled_back":
        return Reading(
            status=f"rolled back to version {followed}" if back else f"rolled back: version {v}",
            outcome=Outcome.ROLLED_BACK,
            message=f"the rollout of version {v} was rolled back: {why}",
        )
    if state == "rolling_back":
        status = f"rolling back to version {followed}: {counts}"
        if not back:
            status = f"rolling back version {v}: {counts}"
    elif state == "running":
        status = f"version {v}: {counts}"
    else:  # a state this client does not know: say it, keep waiting
        status = f"version {v}: {state}: {counts}"
    return Reading(
        status=status,
        pending=deployment.get("pending_reason") or None,
        problems=problems(_instances_of(deployment), followed),
        note=str(rollout.get("message") or "") or None,
    )


__all__ = ["Outcome", "Progress", "Reading", "Target", "problems", "progress", "read"]
