"""The messages the server's actors send each other (commands and past-tense facts).

Layer: server. Plain frozen dataclasses; imports knit.wire and knit.domain only.
"""

from __future__ import annotations

from dataclasses import dataclass

from knit.wire.messages import Heartbeat, InstanceReport, TaskStatus

# --- nodes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeartbeatReceived:
    """An agent's heartbeat arrived (routed to its NodeActor)."""

    heartbeat: Heartbeat
    received_at: float


@dataclass(frozen=True)
class DeadlineMissed:
    """A NodeActor's heartbeat deadline expired."""


@dataclass(frozen=True)
class SetEligible:
    """Drain (``False``) or un-drain (``True``) a node. Answers the node's JSON."""

    eligible: bool


@dataclass(frozen=True)
class ForwardReports:
    """A task ended on this node: forward its next reports even when they look unchanged.

    A container may have crashed again between two heartbeats, so a report identical to the
    last one forwarded can still be news. Reports taken (agent's clock) up to ``after`` are
    stale for the deployment; forwarding goes on until one taken later has been sent.
    """

    after: float


# --- cluster facts, told to the scheduler and to deployments ------------------------------


@dataclass(frozen=True)
class NodeUp:
    """A node is healthy and eligible (again): pending work may be placed on it."""

    node_id: str


@dataclass(frozen=True)
class NodeDown:
    """A node missed its deadline."""

    node_id: str
    since: float


@dataclass(frozen=True)
class NodeDrained:
    """A node was drained: move its instances elsewhere."""

    node_id: str


@dataclass(frozen=True)
class InstancesObserved:
    """A node's full report of what runs on it, for one deployment.

    ``taken_at`` is when the agent took it, on the agent's clock (the heartbeat's
    ``sent_at``); 0 when unknown.
    """

    node_id: str
    reports: tuple[InstanceReport, ...]
    taken_at: float = 0.0


# --- deployments --------------------------------------------------------------------------


@dataclass(frozen=True)
class DeploymentCreated:
    """A new deployment was stored: start its actor. Answers None once it runs."""

    deployment_id: str


@dataclass(frozen=True)
class DeleteDeployment:
    """Delete a deployment: stop its containers, then forget it. Answers its JSON."""

    deployment_id: str


@dataclass(frozen=True)
class DeploymentGone:
    """A deleted deployment has no instances left and was purged: stop its actor."""

    deployment_id: str


@dataclass(frozen=True)
class Reconcile:
    """Compare desired with actual again."""


@dataclass(frozen=True)
class TaskEnded:
    """A task reached an end: succeeded, failed, or given up (never accepted)."""

    task_id: str
    instance_id: str
    node_id: str | None
    kind: str
    succeeded: bool
    container_id: str | None = None
    error: str | None = None
    unaccepted: bool = False
    at: float | None = None
    """When the agent sent the final status, on its own clock (None: the server gave up)."""


# --- tasks --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusReceived:
    """A ``knit.task.status`` message for this task."""

    status: TaskStatus


@dataclass(frozen=True)
class AckDeadline:
    """The task was not accepted (or not finished) in time."""


@dataclass(frozen=True)
class AbandonTask:
    """Its deployment no longer waits for this task (its node was lost): end it as failed."""

    reason: str
