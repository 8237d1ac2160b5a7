"""The Scheduler actor: the cluster view that placement reads, and placement itself.

Layer: server. Holds one ``NodeView`` per node and the count of instances placed on each;
answers ``Place`` with a ``Plan`` from the pure ``knit.domain.placement.place``. Placement
is serialised here, so two deployments never both take the last free slot of a view that
is already out of date.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

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
    """An instance left this node (stopped, lost, moved)."""

    node_id: str


@dataclass(frozen=True)
class Place:
    """Place instances. Answers a ``Plan``."""

    request: PlacementRequest


@dataclass(frozen=True)
class SetCounts:
    """Reset the per-node instance counts (after a restart, from the store)."""

    counts: dict[str, int]


SchedulerMessage = UpdateNode | ForgetNode | Release | Place | SetCounts


class Scheduler(Actor[SchedulerMessage]):
    """Owns the cluster view used for placement."""

    def __init__(self) -> None:
        self.nodes: dict[str, NodeView] = {}
        self.counts: dict[str, int] = {}
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
            self.counted.pop(message.node_id, None)
        elif isinstance(message, Release):
            if self.counts.get(message.node_id, 0) > 0:
                self.counts[message.node_id] -= 1
                self.counted.pop(message.node_id, None)
        elif isinstance(message, SetCounts):
            self.counts = dict(message.counts)
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
                counted = dataclasses.replace(view, instance_count=self.counts.get(node_id, 0))
                self.counted[node_id] = counted
            views.append(counted)
        plan = place(ClusterView(nodes=views), request)
        for node_id in plan.placements:
            self.counts[node_id] = self.counts.get(node_id, 0) + 1
            self.counted.pop(node_id, None)
        return plan
