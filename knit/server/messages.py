"""The messages the server's actors send each other (commands and past-tense facts).

Layer: server. Plain frozen dataclasses; imports knit.wire and knit.store's records only.
"""

from __future__ import annotations

from dataclasses import dataclass

from knit.store.records import DeploymentRecord
from knit.wire.messages import Heartbeat, InstanceReport, TaskStatus

# --- nodes -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HeartbeatReceived:
    """An agent's heartbeat arrived (routed to its NodeActor)."""

    heartbeat: Heartbeat
    received_at: float


@dataclass(frozen=True, slots=True)
class DeadlineMissed:
    """A NodeActor's heartbeat deadline expired."""


@dataclass(frozen=True, slots=True)
class SetEligible:
    """Drain (``False``) or un-drain (``True``) a node. Answers the node's JSON."""

    eligible: bool


@dataclass(frozen=True, slots=True)
class ForwardReports:
    """A task ended on this node: forward its instance's next reports even when unchanged.

    A container may have crashed again between two heartbeats, so a report identical to the
    last one forwarded can still be news. Reports taken (agent's clock) up to ``after`` are
    stale for the deployment; the instance's report (or its absence) is forwarded until one
    taken later has been sent.
    """

    after: float
    instance_id: str
    deployment_id: str


@dataclass(frozen=True, slots=True)
class RemoveNode:
    """Forget a node that was removed from the cluster (told to the NodeDirectory)."""

    node_id: str


# --- cluster facts, told to the scheduler and to deployments ------------------------------


@dataclass(frozen=True, slots=True)
class NodeUp:
    """A node is healthy and eligible (again): pending work may be placed on it."""

    node_id: str


@dataclass(frozen=True, slots=True)
class NodeDown:
    """A node missed its deadline, or was removed (``removed``: its instances are lost at
    once, not after their ``lost_after``)."""

    node_id: str
    since: float
    removed: bool = False


@dataclass(frozen=True, slots=True)
class NodeDrained:
    """A node was drained: move its instances elsewhere."""

    node_id: str


@dataclass(frozen=True, slots=True)
class InstancesObserved:
    """What changed in a node's report: instances new or changed since the last report
    forwarded, and instances it no longer lists (``gone``: instance and deployment ids).

    The NodeActor sends the differences only; the whole of each node's last report is in
    ``ServerContext.node_reports``, which DeploymentActors audit now and then.
    ``taken_at`` is when the agent took it, on the agent's clock (the heartbeat's
    ``sent_at``); 0 when unknown.
    """

    node_id: str
    reports: tuple[InstanceReport, ...]
    taken_at: float = 0.0
    gone: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class NodeReport:
    """A node's last full report, as the NodeActor received it (shared, read-only).

    ``taken_at`` is the agent's clock when taken; ``instances`` by instance id.
    """

    taken_at: float
    instances: dict[str, InstanceReport]


# --- deployments --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeploymentCreated:
    """A new deployment was stored: start its actor. Answers None once it runs.

    ``record`` is the stored row, when the sender has it: the new actor then need not read
    it back (a new deployment has no instances either).
    """

    deployment_id: str
    record: DeploymentRecord | None = None


@dataclass(frozen=True, slots=True)
class DeploymentUpdated:
    """A deployment's row was changed (a new version, or a new ``replicas``) and stored:
    its actor takes ``record`` as the desired state and reconciles. Answers None.

    The API stores first (the writer serialises it with everything else), then tells.
    """

    deployment_id: str
    record: DeploymentRecord


@dataclass(frozen=True, slots=True)
class DeleteDeployment:
    """Delete a deployment: stop its containers, then forget it. Answers its JSON.

    ``stored``: another server marked it deleted in the store already (the directory only
    tells its actor).
    """

    deployment_id: str
    stored: bool = False


@dataclass(frozen=True, slots=True)
class DeploymentGone:
    """A deleted deployment has no instances left and was purged: stop its actor."""

    deployment_id: str


@dataclass(frozen=True, slots=True)
class Reconcile:
    """Compare desired with actual again."""


@dataclass(frozen=True, slots=True)
class Audit:
    """Periodic: check the instances against their nodes' last reports, then reconcile."""


@dataclass(frozen=True, slots=True)
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
    health: str | None = None
    """The container's health when a deploy succeeded (None: not reported)."""


# --- tasks --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatusReceived:
    """A ``knit.task.status`` message for this task."""

    status: TaskStatus


@dataclass(frozen=True, slots=True)
class TaskDeadline:
    """The deadline of a task of this deployment passed (see ``TaskRun.deadline_passed``)."""

    task_id: str
    instance_id: str
