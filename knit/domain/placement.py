"""The scheduler: a pure function from a read-only view of the cluster to a plan.

Layer: domain. Pure: imports the standard library and ``knit.domain.specs`` only.

Nomad style: the server builds a :class:`ClusterView` (its cache of nodes), a deployment asks
for ``count`` new instances with a :class:`PlacementRequest`, and :func:`place` answers with a
:class:`Plan`: the node of each new instance, how many could not be placed, and why each
rejected node was rejected. Nothing is changed or awaited; the caller applies the plan.

Feasibility: a node must be healthy, eligible (not draining), match the request's
``node_selector``, and allow host networking if the deployment is on a ``host`` network
(its agent runs with ``--allow-host-network``). Ranking: deployments do not declare
resources yet, so instances are spread by count: fewest instances of *this* deployment
first (so replicas land on different nodes), then fewest instances overall, then node id
(deterministic). Nodes in ``avoid_nodes`` (a task failed there) are used only when no other
node is feasible, so a one-node cluster does not leave an instance pending forever.

:func:`pick_surplus` is the reverse: which instances to stop when there are too many.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from knit.domain.specs import InstanceStatus, NodeStatus


@dataclass(frozen=True, slots=True)
class NodeView:
    """One node as the scheduler sees it.

    Attributes:
        id: the node id.
        hostname: its hostname (for messages).
        status: ``"healthy"`` or ``"unhealthy"`` (a ``NodeStatus`` or its value).
        eligible: False while the node is drained.
        labels: the node's labels, matched by ``node_selector``.
        cpus: CPUs reported by the node (not used for ranking yet).
        memory_bytes: memory reported by the node (not used for ranking yet).
        instance_count: live instances on the node, all deployments together.
        allow_host_network: its agent runs deployments on ``host`` networks.
        mesh_member: its agent is a member of the WireGuard mesh (it has a mesh address).
    """

    id: str
    hostname: str = ""
    status: str = NodeStatus.HEALTHY
    eligible: bool = True
    labels: Mapping[str, str] = field(default_factory=dict)
    cpus: float = 0
    memory_bytes: int = 0
    instance_count: int = 0
    allow_host_network: bool = False
    mesh_member: bool = False


@dataclass(frozen=True, slots=True)
class ClusterView:
    """A read-only snapshot of the nodes the scheduler may use."""

    nodes: Sequence[NodeView]


@dataclass(frozen=True, slots=True)
class PlacementRequest:
    """A request to place ``count`` new instances of one deployment.

    Attributes:
        deployment_id: the deployment.
        count: how many new instances to place.
        node_selector: labels a node must have, with these values.
        avoid_nodes: nodes to use only if no other fits (a task of this one failed there).
        existing: live instances of this deployment per node id, to spread replicas.
        host_network: the deployment is on a ``host`` network: only nodes that allow it.
        mesh: the deployment publishes a port on the mesh address: only mesh members.
    """

    deployment_id: str
    count: int
    node_selector: Mapping[str, str] = field(default_factory=dict)
    avoid_nodes: frozenset[str] = frozenset()
    existing: Mapping[str, int] = field(default_factory=dict)
    host_network: bool = False
    mesh: bool = False


@dataclass(frozen=True, slots=True)
class Plan:
    """What :func:`place` decided.

    Attributes:
        placements: the node id of each placed instance, in placement order.
        unplaced: how many instances found no node (``len(placements) + unplaced == count``).
        rejections: why each node that took nothing was rejected, by node id.
    """

    placements: list[str]
    unplaced: int
    rejections: dict[str, str]

    def describe_unplaced(self) -> str:
        """A readable reason why some instances could not be placed (the deployment's
        ``pending_reason``)."""
        if not self.rejections:
            return f"{self.unplaced} instance(s) not placed: no nodes registered"
        reasons = "; ".join(f"{node}: {why}" for node, why in sorted(self.rejections.items()))
        return f"{self.unplaced} instance(s) not placed: {reasons}"

    def by_node(self) -> dict[str, int]:
        """How many new instances go to each node."""
        counts: dict[str, int] = {}
        for node_id in self.placements:
            counts[node_id] = counts.get(node_id, 0) + 1
        return counts


HOST_NETWORK_REFUSED = "host networking not allowed (agent without --allow-host-network)"
"""The reason a node is rejected for a deployment on a ``host`` network."""

NOT_IN_MESH = "not a member of the mesh (agent without --mesh-endpoint)"
"""The reason a node is rejected for a deployment publishing on the mesh address."""


def rejection(
    node: NodeView,
    node_selector: Mapping[str, str],
    *,
    host_network: bool = False,
    mesh: bool = False,
) -> str | None:
    """Why ``node`` cannot take instances for ``node_selector`` (of a deployment on a
    ``host`` network if ``host_network``, publishing on the mesh address if ``mesh``), or
    None if it can.

    Every reason is given, joined by ``"; "``: ``unhealthy``, ``draining``,
    :data:`HOST_NETWORK_REFUSED`, ``missing label zone``, ``label zone=eu does not match
    (zone=us)``.
    """
    reasons: list[str] = []
    if node.status != NodeStatus.HEALTHY:
        reasons.append(str(node.status))
    if not node.eligible:
        reasons.append("draining")
    if host_network and not node.allow_host_network:
        reasons.append(HOST_NETWORK_REFUSED)
    if mesh and not node.mesh_member:
        reasons.append(NOT_IN_MESH)
    for key in sorted(node_selector):
        want = node_selector[key]
        have = node.labels.get(key)
        if have is None:
            reasons.append(f"missing label {key}")
        elif have != want:
            reasons.append(f"label {key}={want} does not match ({key}={have})")
    return "; ".join(reasons) or None


def place(view: ClusterView, request: PlacementRequest) -> Plan:
    """Choose a node for each of ``request.count`` new instances.

    Runs in O(nodes + count · log nodes): a heap of feasible nodes keyed by (instances of
    this deployment, instances overall, node id), each placement bumping both counts.

    Args:
        view: the nodes, as the server last saw them.
        request: what to place.

    Returns:
        The plan. Either every instance is placed, or none is and ``rejections`` says why.
    """
    rejections: dict[str, str] = {}
    preferred: list[tuple[int, int, str]] = []
    fallback: list[tuple[int, int, str]] = []
    selector = request.node_selector
    existing = request.existing
    avoid = request.avoid_nodes
    host_network = request.host_network
    mesh = request.mesh
    healthy = str(NodeStatus.HEALTHY)
    for node in view.nodes:
        # The common case inline (this loop runs over every node for every request); the
        # reasons are spelled out only for the nodes rejected.
        if (
            node.status == healthy
            and node.eligible
            and (node.allow_host_network or not host_network)
            and (node.mesh_member or not mesh)
            and (not selector or all(node.labels.get(k) == v for k, v in selector.items()))
        ):
            key = (existing.get(node.id, 0), node.instance_count, node.id)
            (fallback if node.id in avoid else preferred).append(key)
        else:
            reason = rejection(node, selector, host_network=host_network, mesh=mesh)
            rejections[node.id] = reason or "not feasible"
    candidates = preferred or fallback
    if candidates is preferred:
        for _, _, node_id in fallback:
            rejections[node_id] = "avoided: a task failed there"
    count = max(request.count, 0)
    if not candidates or count == 0:
        return Plan(placements=[], unplaced=count, rejections=rejections)
    heapq.heapify(candidates)
    placements: list[str] = []
    append = placements.append
    replace = heapq.heapreplace
    for _ in range(count):
        mine, total, node_id = candidates[0]
        append(node_id)
        replace(candidates, (mine + 1, total + 1, node_id))
    return Plan(placements=placements, unplaced=0, rejections=rejections)


@dataclass(frozen=True, slots=True)
class InstanceView:
    """An instance that :func:`pick_surplus` may choose to stop.

    Attributes:
        id: the instance id.
        created_at: when it was created (seconds since the epoch; newer is larger).
        status: its status; instances not running go before running ones.
    """

    id: str
    created_at: float
    status: str = InstanceStatus.RUNNING


def pick_surplus(
    instances_by_node: Mapping[str, Sequence[InstanceView]],
    count_to_remove: int,
    *,
    unplaced: Sequence[InstanceView] = (),
    newest_first: bool = True,
) -> list[str]:
    """Choose which instances to stop when a deployment has ``count_to_remove`` too many.

    Instances without a node (``unplaced``) go first, then instances taken one at a time from
    the node holding the most. On a node, and between equally loaded nodes, instances not
    running go before running ones and the newest before older ones, so the originals stay.

    Args:
        instances_by_node: the deployment's live instances by node id.
        count_to_remove: how many to stop.
        unplaced: the deployment's live instances that have no node yet.
        newest_first: False stops the oldest instances first instead.

    Returns:
        Instance ids, in the order they should be stopped (at most ``count_to_remove``).
    """
    if count_to_remove <= 0:
        return []
    sign = -1.0 if newest_first else 1.0

    def key(instance: InstanceView) -> tuple[bool, float, str]:
        # Ascending = first to stop: not running first, then by age, then id.
        return (instance.status == InstanceStatus.RUNNING, sign * instance.created_at, instance.id)

    chosen = [i.id for i in sorted(unplaced, key=key)][:count_to_remove]
    queues: dict[str, list[InstanceView]] = {}
    # (-instances left, key of the next to stop, node id): most loaded node first; between
    # equally loaded nodes, the one whose next instance is newest.
    heap: list[tuple[int, tuple[bool, float, str], str]] = []
    for node_id, instances in instances_by_node.items():
        if instances:
            queue = sorted(instances, key=key)
            queues[node_id] = queue
            heap.append((-len(queue), key(queue[0]), node_id))
    heapq.heapify(heap)
    taken = dict.fromkeys(queues, 0)
    while len(chosen) < count_to_remove and heap:
        negative, _, node_id = heap[0]
        queue = queues[node_id]
        chosen.append(queue[taken[node_id]].id)
        taken[node_id] += 1
        if -negative > 1:
            heapq.heapreplace(heap, (negative + 1, key(queue[taken[node_id]]), node_id))
        else:
            heapq.heappop(heap)
    return chosen


__all__ = [
    "HOST_NETWORK_REFUSED",
    "ClusterView",
    "InstanceView",
    "NodeView",
    "PlacementRequest",
    "Plan",
    "pick_surplus",
    "place",
    "rejection",
]
