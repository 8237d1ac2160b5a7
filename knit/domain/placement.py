"""The scheduler: a pure function from a read-only view of the cluster to a plan.

Layer: domain. Pure: imports the standard library and ``knit.domain.specs`` only.

Nomad style: the server builds a :class:`ClusterView` (its cache of nodes), a deployment asks
for ``count`` new instances with a :class:`PlacementRequest`, and :func:`place` answers with a
:class:`Plan`: the node of each new instance, how many could not be placed, and why each
rejected node was rejected. Nothing is changed or awaited; the caller applies the plan.

Feasibility: a node must be healthy, eligible (not draining), match the request's
``node_selector``, allow host networking if the deployment is on a ``host`` network (its
agent runs with ``--allow-host-network``), and have room: what its instances reserve plus
the request's ``cpu`` and ``memory_bytes`` must fit in the capacity it reports (a request
without resources always fits). Each placed instance reserves its share, so a node fills up
within one plan too; instances that find no room stay unplaced, and the reason counts the
nodes (``insufficient memory on 3 nodes``).

Ranking, ``spread`` (the default): fewest instances of *this* deployment first (so replicas
land on different nodes), then fewest instances overall, then node id (deterministic).
``binpack``: the node with the least free memory (as a fraction of its capacity) first,
then the least free CPU, then the most instances, then node id: nodes fill one after the
other and the others stay empty for large requests. Nodes in ``avoid_nodes`` (a task failed
there) are used only when no other node has room, so a one-node cluster does not leave an
instance pending forever.

:func:`pick_surplus` is the reverse: which instances to stop when there are too many.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from knit.domain.specs import InstanceStatus, NodeStatus, PlacementStrategy

CPU_SLACK = 1e-9
"""Cores forgiven when comparing sums of float CPU shares (``0.1 + 0.2 > 0.3``)."""


@dataclass(frozen=True, slots=True)
class NodeView:
    """One node as the scheduler sees it.

    Attributes:
        id: the node id.
        hostname: its hostname (for messages).
        status: ``"healthy"`` or ``"unhealthy"`` (a ``NodeStatus`` or its value).
        eligible: False while the node is drained.
        labels: the node's labels, matched by ``node_selector``.
        cpus: CPUs reported by the node (its capacity).
        memory_bytes: memory reported by the node (its capacity).
        instance_count: live instances on the node, all deployments together.
        reserved_cpu: cores its live instances reserve (their deployments' ``resources``).
        reserved_memory: bytes its live instances reserve.
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
    reserved_cpu: float = 0.0
    reserved_memory: int = 0
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
        cpu: cores each instance reserves (0: none).
        memory_bytes: bytes each instance reserves (0: none).
        strategy: ``spread`` or ``binpack`` (a ``PlacementStrategy`` or its value).
    """

    deployment_id: str
    count: int
    node_selector: Mapping[str, str] = field(default_factory=dict)
    avoid_nodes: frozenset[str] = frozenset()
    existing: Mapping[str, int] = field(default_factory=dict)
    host_network: bool = False
    mesh: bool = False
    cpu: float = 0.0
    memory_bytes: int = 0
    strategy: str = PlacementStrategy.SPREAD

    @property
    def sized(self) -> bool:
        """Whether each instance reserves CPU or memory."""
        return self.cpu > 0 or self.memory_bytes > 0


@dataclass(frozen=True, slots=True)
class Plan:
    """What :func:`place` decided.

    Attributes:
        placements: the node id of each placed instance, in placement order.
        unplaced: how many instances found no node (``len(placements) + unplaced == count``).
        rejections: why each node that took nothing was rejected, by node id.
        exhausted: the nodes that took instances until they had no room left, and what
            ran out (``insufficient memory``).
    """

    placements: list[str]
    unplaced: int
    rejections: dict[str, str]
    exhausted: dict[str, str] = field(default_factory=dict)

    def describe_unplaced(self) -> str:
        """A readable reason why some instances could not be placed (the deployment's
        ``pending_reason``): nodes without room counted by what they lack
        (``insufficient memory on 3 nodes``), the other rejections node by node."""
        if not self.rejections and not self.exhausted:
            return f"{self.unplaced} instance(s) not placed: no nodes registered"
        short: dict[str, int] = {}
        others = []
        for node, why in sorted({**self.rejections, **self.exhausted}.items()):
            if why.startswith(INSUFFICIENT):
                short[why] = short.get(why, 0) + 1
            else:
                others.append(f"{node}: {why}")
        counted = [f"{why} on {n} node{'s' if n > 1 else ''}" for why, n in sorted(short.items())]
        return f"{self.unplaced} instance(s) not placed: {'; '.join(counted + others)}"

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

INSUFFICIENT = "insufficient "
"""How the reasons of nodes without room start (``insufficient cpu``, ``insufficient
memory``, ``insufficient cpu and memory``)."""


def shortage(free_cpu: float, free_memory: int, cpu: float, memory_bytes: int) -> str | None:
    """What a node with ``free_cpu`` cores and ``free_memory`` bytes left lacks for an
    instance reserving ``cpu`` and ``memory_bytes`` (None: it fits)."""
    lacks = []
    if cpu > 0 and cpu > free_cpu + CPU_SLACK:
        lacks.append("cpu")
    if memory_bytes > 0 and memory_bytes > free_memory:
        lacks.append("memory")
    return INSUFFICIENT + " and ".join(lacks) if lacks else None


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

    Runs in O(nodes + count · log nodes): a heap of feasible nodes keyed by their rank
    (spread: instances of this deployment, instances overall, node id), each placement
    updating its node's key, or taking it out once it has no room left.

    Args:
        view: the nodes, as the server last saw them.
        request: what to place.

    Returns:
        The plan. Every instance is placed, or those that found no room are ``unplaced``
        and ``rejections`` and ``exhausted`` say why.
    """
    if request.sized or request.strategy != PlacementStrategy.SPREAD:
        return _place_with_room(view, request)
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


@dataclass(slots=True)
class _Room:
    """One feasible node during :func:`_place_with_room` (changes as instances land)."""

    node_id: str
    mine: int
    total: int
    free_cpu: float
    free_memory: int
    cpus: float
    memory_bytes: int

    def spread_key(self) -> tuple[int, int, str]:
        return (self.mine, self.total, self.node_id)

    def binpack_key(self) -> tuple[float, float, int, str]:
        # Least free share first (a node reporting no capacity counts as empty).
        memory = self.free_memory / self.memory_bytes if self.memory_bytes > 0 else 1.0
        cpu = self.free_cpu / self.cpus if self.cpus > 0 else 1.0
        return (memory, cpu, -self.total, self.node_id)


def _place_with_room(view: ClusterView, request: PlacementRequest) -> Plan:
    """:func:`place` for a request that reserves resources or bin-packs: each node's room
    is tracked as instances land on it."""
    rejections: dict[str, str] = {}
    exhausted: dict[str, str] = {}
    preferred: list[_Room] = []
    fallback: list[_Room] = []
    cpu, memory = request.cpu, request.memory_bytes
    for node in view.nodes:
        reason = rejection(
            node, request.node_selector, host_network=request.host_network, mesh=request.mesh
        )
        free_cpu = node.cpus - node.reserved_cpu
        free_memory = node.memory_bytes - node.reserved_memory
        reason = reason or shortage(free_cpu, free_memory, cpu, memory)
        if reason is not None:
            rejections[node.id] = reason
            continue
        room = _Room(
            node_id=node.id,
            mine=request.existing.get(node.id, 0),
            total=node.instance_count,
            free_cpu=free_cpu,
            free_memory=free_memory,
            cpus=node.cpus,
            memory_bytes=node.memory_bytes,
        )
        (fallback if node.id in request.avoid_nodes else preferred).append(room)
    binpack = request.strategy == PlacementStrategy.BINPACK
    placements: list[str] = []
    count = max(request.count, 0)
    for group in (preferred, fallback):
        if len(placements) == count:
            break
        rooms = {room.node_id: room for room in group}
        heap = [(r.binpack_key() if binpack else r.spread_key(), r.node_id) for r in group]
        heapq.heapify(heap)
        while heap and len(placements) < count:
            node_id = heap[0][1]
            room = rooms[node_id]
            placements.append(node_id)
            room.mine, room.total = room.mine + 1, room.total + 1
            room.free_cpu -= cpu
            room.free_memory -= memory
            short = shortage(room.free_cpu, room.free_memory, cpu, memory)
            if short is None:
                key = room.binpack_key() if binpack else room.spread_key()
                heapq.heapreplace(heap, (key, node_id))
            else:
                heapq.heappop(heap)
                exhausted[node_id] = short
    used = set(placements)
    for room in fallback:
        if room.node_id not in used:
            rejections[room.node_id] = "avoided: a task failed there"
    return Plan(
        placements=placements,
        unplaced=count - len(placements),
        rejections=rejections,
        exhausted=exhausted,
    )


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
    "INSUFFICIENT",
    "ClusterView",
    "InstanceView",
    "NodeView",
    "PlacementRequest",
    "Plan",
    "pick_surplus",
    "place",
    "rejection",
    "shortage",
]
