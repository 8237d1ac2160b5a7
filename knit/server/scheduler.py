"""The Scheduler actor: the cluster view that placement reads, and placement itself.

Layer: server. Holds one ``NodeView`` per node, the count of instances placed on each and
the CPU and memory they reserve; answers ``Place`` with a ``Plan`` from the pure
``knit.domain.placement.place``, and reserves what it placed at once. Placement is
serialised here, so two deployments never both take the last free slot of a view that is
already out of date.

An instance's reservation is returned by ``Release`` when it leaves its node, with the
amounts it was placed with (its DeploymentActor keeps them); after a server start the
counts and reservations are rebuilt from the store (``SetCounts``). The reservations are
also written to a dict shared with the API (``GET /nodes/{id}``: reserved and free), which
only this actor changes.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

from actors import Actor
from knit.domain.placement import ClusterView, NodeView, PlacementRequest, Plan, place

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UpdateNode:
    """A node's view changed (registration, health, labels, eligibility)."""

    view: NodeView


@dataclass(frozen=True)
class ForgetNode:
    """A node was removed from the cluster: never place anything there again."""

    node_id: str


@dataclass(frozen=True)
class Release:
    """An instance left this node (stopped, lost, moved), and what it reserved there."""

    node_id: str
    cpu: float = 0.0
    memory_bytes: int = 0


@dataclass(frozen=True)
class Place:
    """Place instances. Answers a ``Plan``."""

    request: PlacementRequest


@dataclass(frozen=True)
class SetCounts:
    """Reset the per-node instance counts and reservations (after a restart, from the
    store): ``reserved[node] = (cores, bytes)``."""

    counts: dict[str, int]
    reserved: dict[str, tuple[float, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class Reserve:
    """An instance holds ``cpu`` and ``memory_bytes`` on this node without having been
    placed there now (it came back with its node, or was found running there)."""

    node_id: str
    cpu: float
    memory_bytes: int


SchedulerMessage = UpdateNode | ForgetNode | Release | Reserve | Place | SetCounts


class Scheduler(Actor[SchedulerMessage]):
    """Owns the cluster view used for placement."""

    def __init__(self, reserved: dict[str, tuple[float, int]] | None = None) -> None:
        """A Scheduler with an empty view.

        Args:
            reserved: where to keep the cores and bytes reserved on each node (a dict the
                API reads; emptied here: a restarted Scheduler is told again).
        """
        self.nodes: dict[str, NodeView] = {}
        self.counts: dict[str, int] = {}
        self.reserved: dict[str, tuple[float, int]] = {} if reserved is None else reserved
        self.reserved.clear()
        # Each node's view with its count, kept until either changes: a placement reads
        # every node, so rebuilding them all per request cost O(nodes) allocations.
        self.counted: dict[str, NodeView] = {}

    async def handle(self, message: SchedulerMessage) -> object:
        """Update the view, or answer a placement."""
        if isinstance(message, UpdateNode):
            self.nodes[message.view.id] = message.view
            self.counted.pop(message.view.id, None)
        elif isinstance(message, ForgetNode):
            self.nodes.pop(message.node_id, None)
            self.counts.pop(message.node_id, None)
            self.reserved.pop(message.node_id, None)
            self.counted.pop(message.node_id, None)
        elif isinstance(message, Release):
            self.release(message)
        elif isinstance(message, Reserve):
            cpu, memory = self.reserved.get(message.node_id, (0.0, 0))
            self.reserved[message.node_id] = (cpu + message.cpu, memory + message.memory_bytes)
            self.counted.pop(message.node_id, None)
        elif isinstance(message, SetCounts):
            self.counts = dict(message.counts)
            self.reserved.clear()
            self.reserved.update(message.reserved)
            self.counted.clear()
        else:
            return self.place(message.request)
        return None

    def place(self, request: PlacementRequest) -> Plan:
        """Run placement on the current view and count what it placed."""
        views = []
        for node_id, view in self.nodes.items():
            counted = self.counted.get(node_id)
            if counted is None:
                cpu, memory = self.reserved.get(node_id, (0.0, 0))
                counted = dataclasses.replace(
                    view,
                    instance_count=self.counts.get(node_id, 0),
                    reserved_cpu=cpu,
                    reserved_memory=memory,
                )
                self.counted[node_id] = counted
            views.append(counted)
        plan = place(ClusterView(nodes=views), request)
        sized = request.sized
        for node_id in plan.placements:
            self.counts[node_id] = self.counts.get(node_id, 0) + 1
            if sized:
                cpu, memory = self.reserved.get(node_id, (0.0, 0))
                self.reserved[node_id] = (cpu + request.cpu, memory + request.memory_bytes)
            self.counted.pop(node_id, None)
        return plan

    def release(self, message: Release) -> None:
        """Take an instance's count and reservation off its node (never below zero)."""
        node_id = message.node_id
        if self.counts.get(node_id, 0) > 0:
            self.counts[node_id] -= 1
            self.counted.pop(node_id, None)
        held = self.reserved.get(node_id)
        if held is not None and (message.cpu > 0 or message.memory_bytes > 0):
            cpu = max(held[0] - message.cpu, 0.0)
            memory = max(held[1] - message.memory_bytes, 0)
            if cpu < 1e-9 and memory == 0:
                del self.reserved[node_id]
            else:
                self.reserved[node_id] = (cpu, memory)
            self.counted.pop(node_id, None)
