"""Tests of knit.domain.placement: the scheduler, as a pure function (with hypothesis)."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from knit.domain.placement import (
    HOST_NETWORK_REFUSED,
    NOT_IN_MESH,
    ClusterView,
    InstanceView,
    NodeView,
    PlacementRequest,
    Plan,
    pick_surplus,
    place,
)

pytestmark = pytest.mark.unit


def request(count: int, **fields: object) -> PlacementRequest:
    return PlacementRequest(deployment_id="d1", count=count, **fields)  # type: ignore[arg-type]


def nodes(*counts: int) -> ClusterView:
    return ClusterView([NodeView(id=f"n{i}", instance_count=c) for i, c in enumerate(counts)])


# --- examples ------------------------------------------------------------------------------


def test_spreads_by_count_and_breaks_ties_by_node_id() -> None:
    plan = place(nodes(0, 0, 0), request(4))
    assert plan.placements == ["n0", "n1", "n2", "n0"]
    assert plan.unplaced == 0 and plan.rejections == {}


def test_each_node_takes_one_replica_before_any_takes_two_emptiest_first() -> None:
    plan = place(nodes(5, 0, 2), request(5))
    assert plan.placements == ["n1", "n2", "n0", "n1", "n2"]


def test_a_new_empty_node_does_not_take_every_replica() -> None:
    # Spreading by total count alone would put all three on n3: one failure, no replica left.
    plan = place(nodes(30, 30, 30, 0), request(3))
    assert len(set(plan.placements)) == 3
    assert "n3" in plan.placements


def test_replicas_of_one_deployment_go_to_different_nodes_first() -> None:
    # n0 is the least loaded overall but already runs this deployment.
    view = nodes(0, 3, 3)
    plan = place(view, request(2, existing={"n0": 1}))
    assert sorted(plan.placements) == ["n1", "n2"]


def test_rejections_say_why() -> None:
    view = ClusterView(
        [
            NodeView(id="sick", status="unhealthy", labels={"zone": "eu"}),
            NodeView(id="drained", eligible=False, labels={"zone": "eu"}),
            NodeView(id="us", labels={"zone": "us"}),
            NodeView(id="bare"),
            NodeView(id="eu", labels={"zone": "eu", "disk": "ssd"}),
        ]
    )
    plan = place(view, request(2, node_selector={"zone": "eu"}))
    assert plan.placements == ["eu", "eu"]
    assert plan.rejections == {
        "sick": "unhealthy",
        "drained": "draining",
        "us": "label zone=eu does not match (zone=us)",
        "bare": "missing label zone",
    }


def test_every_reason_is_given() -> None:
    view = ClusterView([NodeView(id="n", status="unhealthy", eligible=False)])
    plan = place(view, request(1, node_selector={"zone": "eu"}))
    assert plan == Plan(
        placements=[], unplaced=1, rejections={"n": "unhealthy; draining; missing label zone"}
    )


def test_a_host_network_deployment_goes_only_where_the_agent_allows_it() -> None:
    view = ClusterView(
        [
            NodeView(id="open", allow_host_network=True, instance_count=9),
            NodeView(id="closed"),
            NodeView(id="sick", status="unhealthy"),
        ]
    )
    plan = place(view, request(2, host_network=True))
    assert plan.placements == ["open", "open"]
    assert plan.rejections == {
        "closed": HOST_NETWORK_REFUSED,
        "sick": "unhealthy; " + HOST_NETWORK_REFUSED,
    }
    assert sorted(place(view, request(2)).placements) == ["closed", "open"]  # others: anywhere
    nowhere = place(ClusterView([NodeView(id="closed")]), request(1, host_network=True))
    assert nowhere.unplaced == 1
    assert HOST_NETWORK_REFUSED in nowhere.describe_unplaced()


def test_a_deployment_publishing_on_the_mesh_goes_only_to_mesh_members() -> None:
    view = ClusterView([NodeView(id="member", mesh_member=True), NodeView(id="outside")])
    plan = place(view, request(2, mesh=True))
    assert plan.placements == ["member", "member"]
    assert plan.rejections == {"outside": NOT_IN_MESH}
    assert sorted(place(view, request(2)).placements) == ["member", "outside"]


def test_nothing_placed_without_nodes() -> None:
    assert place(ClusterView([]), request(3)) == Plan(placements=[], unplaced=3, rejections={})


def test_zero_count_places_nothing() -> None:
    assert place(nodes(0), request(0)).placements == []


def test_avoided_nodes_are_used_only_as_a_last_resort() -> None:
    plan = place(nodes(0, 9), request(2, avoid_nodes=frozenset({"n0"})))
    assert plan.placements == ["n1", "n1"]
    assert plan.rejections == {"n0": "avoided: a task failed there"}
    alone = place(nodes(0), request(1, avoid_nodes=frozenset({"n0"})))
    assert alone.placements == ["n0"] and alone.unplaced == 0


def test_place_is_fast_at_scale() -> None:
    view = ClusterView([NodeView(id=f"node-{i:04d}", instance_count=i % 7) for i in range(1000)])
    started = time.perf_counter()
    plan = place(view, request(100_000))
    elapsed = time.perf_counter() - started
    assert len(plan.placements) == 100_000
    counts = plan.by_node()
    assert max(counts.values()) - min(counts.values()) <= 1
    assert elapsed < 1.0, f"placing 100,000 instances took {elapsed:.2f}s"


# --- resources and strategies ----------------------------------------------------------------

MiB = 1024 * 1024
GiB = 1024 * MiB


def sized(*nodes: tuple[str, float, int], **reserved: tuple[float, int]) -> ClusterView:
    """Nodes ``(id, cpus, memory_bytes)``, with ``reserved[id] = (cpu, memory)``."""
    return ClusterView(
        [
            NodeView(
                id=node_id,
                cpus=cpus,
                memory_bytes=memory,
                reserved_cpu=reserved.get(node_id, (0.0, 0))[0],
                reserved_memory=reserved.get(node_id, (0.0, 0))[1],
            )
            for node_id, cpus, memory in nodes
        ]
    )


@pytest.mark.parametrize(
    ("reserved", "cpu", "memory", "placements", "reason"),
    [
        # (reserved on a, reserved on b), asked per instance, count 2 → where, pending reason
        (((0, 0), (0, 0)), 1.0, 512 * MiB, ["a", "b"], None),
        (((0, 0), (0, 0)), 0.0, GiB, ["a", "b"], None),  # exactly full is full, not over
        (((0, 512 * MiB), (0, 0)), 0.0, GiB, ["b"], "insufficient memory on 2 nodes"),
        (((0, 600 * MiB), (0, 600 * MiB)), 0.0, 512 * MiB, [], "insufficient memory on 2 nodes"),
        (((1.5, 0), (1.5, 0)), 1.0, 0, [], "insufficient cpu on 2 nodes"),
        (((1.5, GiB), (0, 0)), 1.0, 512 * MiB, ["b", "b"], None),
        (((1.5, GiB), (1.5, 0)), 1.0, 512 * MiB, [], "insufficient cpu and memory on 1 node"),
    ],
)
def test_a_node_takes_only_what_fits_in_its_free_capacity(
    reserved: tuple[tuple[float, int], tuple[float, int]],
    cpu: float,
    memory: int,
    placements: list[str],
    reason: str | None,
) -> None:
    view = sized(("a", 2.0, GiB), ("b", 2.0, GiB), a=reserved[0], b=reserved[1])
    plan = place(view, request(2, cpu=cpu, memory_bytes=memory))
    assert plan.placements == placements
    assert plan.unplaced == 2 - len(placements)
    if reason is None:
        assert plan.unplaced == 0
    else:
        assert reason in plan.describe_unplaced()


def test_three_deployments_fill_two_nodes_exactly_and_a_fourth_waits() -> None:
    view = sized(("a", 2.0, GiB), ("b", 2.0, GiB))
    reserved = {"a": (0.0, 0), "b": (0.0, 0)}
    asks = [("web", 2, 1.0, 512 * MiB), ("api", 1, 0.5, 512 * MiB), ("db", 1, 0.5, 512 * MiB)]
    for deployment_id, count, cpu, memory in asks:
        view = sized(("a", 2.0, GiB), ("b", 2.0, GiB), **reserved)
        plan = place(view, PlacementRequest(deployment_id, count, cpu=cpu, memory_bytes=memory))
        assert plan.unplaced == 0, plan.describe_unplaced()
        for node_id in plan.placements:
            used_cpu, used_memory = reserved[node_id]
            reserved[node_id] = (used_cpu + cpu, used_memory + memory)
    assert reserved == {"a": (1.5, GiB), "b": (1.5, GiB)}
    view = sized(("a", 2.0, GiB), ("b", 2.0, GiB), **reserved)
    fourth = place(view, PlacementRequest("cache", 1, cpu=0.25, memory_bytes=64 * MiB))
    assert fourth.placements == [] and fourth.unplaced == 1
    assert fourth.describe_unplaced() == "1 instance(s) not placed: insufficient memory on 2 nodes"


def test_a_node_filled_within_one_plan_is_counted_in_the_reason() -> None:
    view = sized(("a", 4.0, GiB), ("b", 4.0, 256 * MiB))
    plan = place(view, request(5, memory_bytes=256 * MiB))
    assert sorted(plan.placements) == ["a", "a", "a", "a", "b"]
    assert plan.unplaced == 0
    more = place(view, request(6, memory_bytes=256 * MiB))
    assert more.unplaced == 1 and more.exhausted == {
        "a": "insufficient memory",
        "b": "insufficient memory",
    }
    assert more.describe_unplaced() == "1 instance(s) not placed: insufficient memory on 2 nodes"


def test_cpu_shares_that_add_up_to_the_capacity_fit() -> None:
    plan = place(sized(("a", 1.0, GiB)), request(10, cpu=0.1))
    assert plan.unplaced == 0  # 0.1 * 10 is not quite 1.0 in floating point


def test_other_reasons_are_listed_by_node_beside_the_counted_ones() -> None:
    view = ClusterView(
        [
            NodeView(id="full", cpus=1.0, memory_bytes=GiB, reserved_memory=GiB),
            NodeView(id="sick", status="unhealthy", cpus=1.0, memory_bytes=GiB),
        ]
    )
    plan = place(view, request(1, memory_bytes=MiB))
    assert plan.describe_unplaced() == (
        "1 instance(s) not placed: insufficient memory on 1 node; sick: unhealthy"
    )


def test_spread_puts_replicas_on_different_nodes_binpack_fills_one_first() -> None:
    view = sized(("a", 4.0, 4 * GiB), ("b", 4.0, 4 * GiB), ("c", 4.0, 4 * GiB))
    spread = place(view, request(3, cpu=1.0, memory_bytes=GiB))
    assert sorted(spread.placements) == ["a", "b", "c"]
    binpack = place(view, request(6, cpu=1.0, memory_bytes=GiB, strategy="binpack"))
    assert binpack.placements == ["a", "a", "a", "a", "b", "b"]


def test_binpack_prefers_the_fullest_node_that_still_fits() -> None:
    view = sized(
        ("a", 4.0, 4 * GiB),
        ("b", 4.0, 4 * GiB),
        ("c", 4.0, 4 * GiB),
        a=(1.0, GiB),
        b=(3.0, 3 * GiB),
        c=(3.5, 3 * GiB + 512 * MiB),
    )
    plan = place(view, request(2, cpu=0.5, memory_bytes=512 * MiB, strategy="binpack"))
    # c has the least room and takes one; then b (a full c is out).
    assert plan.placements == ["c", "b"]
    assert plan.exhausted == {"c": "insufficient cpu and memory"}


def test_binpack_without_resources_packs_by_instance_count() -> None:
    plan = place(nodes(1, 3, 0), request(2, strategy="binpack"))
    assert plan.placements == ["n1", "n1"]


def test_an_avoided_node_is_used_once_the_others_are_full() -> None:
    view = sized(("a", 1.0, GiB), ("b", 1.0, GiB))
    plan = place(view, request(3, memory_bytes=512 * MiB, avoid_nodes=frozenset({"a"})))
    assert plan.placements == ["b", "b", "a"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 8), st.integers(0, 8), st.integers(0, 8)), max_size=8),
    st.integers(0, 4),
    st.integers(0, 4),
    st.integers(0, 30),
    st.sampled_from(["spread", "binpack"]),
)
def test_never_reserves_more_than_a_node_has(
    node_fields: list[tuple[int, int, int]],
    cpu_quarters: int,
    memory_units: int,
    count: int,
    strategy: str,
) -> None:
    view = ClusterView(
        [
            NodeView(id=f"n{i}", cpus=cpus, memory_bytes=memory * MiB, reserved_memory=used * MiB)
            for i, (cpus, memory, used) in enumerate(node_fields)
        ]
    )
    req = request(count, cpu=cpu_quarters / 4, memory_bytes=memory_units * MiB, strategy=strategy)
    plan = place(view, req)
    assert len(plan.placements) + plan.unplaced == count
    by_id = {n.id: n for n in view.nodes}
    for node_id, taken in plan.by_node().items():
        node = by_id[node_id]
        if req.cpu:
            assert node.reserved_cpu + taken * req.cpu <= node.cpus + 1e-9
        if req.memory_bytes:
            assert node.reserved_memory + taken * req.memory_bytes <= node.memory_bytes
    if plan.unplaced:  # and nothing left had room for one more
        for node in view.nodes:
            taken = plan.by_node().get(node.id, 0)
            fits_cpu = not req.cpu or node.reserved_cpu + (taken + 1) * req.cpu <= node.cpus + 1e-9
            fits_memory = (
                not req.memory_bytes
                or node.reserved_memory + (taken + 1) * req.memory_bytes <= node.memory_bytes
            )
            assert not (fits_cpu and fits_memory)


@pytest.mark.parametrize("strategy", ["spread", "binpack"])
def test_placing_with_resources_is_fast_at_scale(strategy: str) -> None:
    view = ClusterView(
        [
            NodeView(id=f"node-{i:04d}", instance_count=i % 7, cpus=64, memory_bytes=2**40)
            for i in range(1000)
        ]
    )
    req = request(100_000, cpu=0.1, memory_bytes=MiB, strategy=strategy)
    started = time.perf_counter()
    plan = place(view, req)
    elapsed = time.perf_counter() - started
    assert len(plan.placements) == 100_000
    assert elapsed < 2.0, f"placing 100,000 sized instances took {elapsed:.2f}s"


# --- properties ----------------------------------------------------------------------------

ZONES = st.sampled_from(["eu", "us", "ap"])


NODE_FIELDS = st.tuples(
    st.sampled_from(["healthy", "healthy", "unhealthy"]),
    st.sampled_from([True, True, False]),
    st.dictionaries(st.sampled_from(["zone", "disk"]), ZONES, max_size=2),
    st.integers(0, 20),
    st.booleans(),
)


@st.composite
def clusters(draw: st.DrawFn) -> ClusterView:
    fields = draw(st.lists(NODE_FIELDS, max_size=16))
    return ClusterView(
        [
            NodeView(
                id=f"n{i:02d}",
                status=status,
                eligible=eligible,
                labels=labels,
                instance_count=c,
                allow_host_network=host,
            )
            for i, (status, eligible, labels, c, host) in enumerate(fields)
        ]
    )


@st.composite
def requests(draw: st.DrawFn, view: ClusterView) -> PlacementRequest:
    ids = [n.id for n in view.nodes]
    return PlacementRequest(
        deployment_id="d",
        count=draw(st.integers(0, 200)),
        node_selector=draw(st.dictionaries(st.sampled_from(["zone", "disk"]), ZONES, max_size=1)),
        avoid_nodes=frozenset(draw(st.lists(st.sampled_from(ids), max_size=3)))
        if ids
        else frozenset(),
        existing=draw(st.dictionaries(st.sampled_from(ids), st.integers(0, 5))) if ids else {},
        host_network=draw(st.sampled_from([False, False, True])),
    )


def feasible(node: NodeView, req: PlacementRequest) -> bool:
    selector = req.node_selector
    return (
        node.status == "healthy"
        and node.eligible
        and (node.allow_host_network or not req.host_network)
        and all(node.labels.get(k) == v for k, v in selector.items())
    )


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_never_places_on_an_infeasible_node(data: st.DataObject) -> None:
    view = data.draw(clusters())
    req = data.draw(requests(view))
    plan = place(view, req)
    by_id = {n.id: n for n in view.nodes}
    for node_id in plan.placements:
        assert feasible(by_id[node_id], req)
    for node_id in plan.rejections:
        assert node_id not in plan.placements


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_placed_plus_unplaced_is_the_count(data: st.DataObject) -> None:
    view = data.draw(clusters())
    req = data.draw(requests(view))
    plan = place(view, req)
    assert len(plan.placements) + plan.unplaced == req.count
    any_feasible = any(feasible(n, req) for n in view.nodes)
    assert plan.unplaced == (0 if any_feasible else req.count)
    assert (plan.unplaced > 0) <= (len(plan.rejections) == len(view.nodes))


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 40), st.integers(0, 50), st.integers(0, 500))
def test_balanced_nodes_stay_balanced(node_count: int, start: int, count: int) -> None:
    view = ClusterView([NodeView(id=f"n{i}", instance_count=start) for i in range(node_count)])
    plan = place(view, request(count))
    totals = {n.id: start for n in view.nodes}
    for node_id in plan.placements:
        totals[node_id] += 1
    assert max(totals.values()) - min(totals.values()) <= 1


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_replicas_are_water_filled_across_feasible_nodes(data: st.DataObject) -> None:
    # After placing, a node that took an instance holds at most one more instance of the
    # deployment than the feasible node holding fewest.
    view = data.draw(clusters())
    req = data.draw(requests(view))
    plan = place(view, req)
    usable = [n.id for n in view.nodes if feasible(n, req)]
    preferred = [n for n in usable if n not in req.avoid_nodes] or usable
    mine = {n: req.existing.get(n, 0) for n in preferred}
    for node_id in plan.placements:
        mine[node_id] += 1
    if mine:
        lowest = min(mine.values())
        for node_id in set(plan.placements):
            assert mine[node_id] <= lowest + 1


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_place_is_deterministic(data: st.DataObject) -> None:
    view = data.draw(clusters())
    req = data.draw(requests(view))
    shuffled = ClusterView(list(reversed(view.nodes)))
    assert place(view, req) == place(view, req)
    assert place(shuffled, req).placements == place(view, req).placements


# --- pick_surplus --------------------------------------------------------------------------


def inst(instance_id: str, created_at: float, status: str = "running") -> InstanceView:
    return InstanceView(id=instance_id, created_at=created_at, status=status)


def test_surplus_comes_from_the_most_loaded_node_newest_first() -> None:
    by_node = {
        "a": [inst("a1", 1), inst("a2", 5), inst("a3", 9)],
        "b": [inst("b1", 2)],
    }
    assert pick_surplus(by_node, 2) == ["a3", "a2"]
    # a and b then hold one each: b1 (created at 2) is newer than a1, so it goes first.
    assert pick_surplus(by_node, 3) == ["a3", "a2", "b1"]
    assert pick_surplus(by_node, 4) == ["a3", "a2", "b1", "a1"]


def test_surplus_takes_unplaced_and_failed_instances_first() -> None:
    by_node = {"a": [inst("a1", 1), inst("a2", 2, "error")], "b": [inst("b1", 3)]}
    assert pick_surplus(by_node, 2, unplaced=[inst("p1", 10, "pending")]) == ["p1", "a2"]


def test_surplus_can_take_oldest_first() -> None:
    by_node = {"a": [inst("a1", 1), inst("a2", 5)]}
    assert pick_surplus(by_node, 1, newest_first=False) == ["a1"]


def test_surplus_of_nothing() -> None:
    assert pick_surplus({"a": [inst("a1", 1)]}, 0) == []
    assert pick_surplus({}, 3) == []


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["a", "b", "c", "d"]),
        st.lists(st.floats(0, 1000, allow_nan=False), max_size=8),
    ),
    st.integers(0, 40),
)
def test_surplus_keeps_the_rest_balanced(created: dict[str, list[float]], remove: int) -> None:
    by_node = {
        node: [inst(f"{node}{i}", t) for i, t in enumerate(times)]
        for node, times in created.items()
    }
    total = sum(len(v) for v in by_node.values())
    chosen = pick_surplus(by_node, remove)
    assert len(chosen) == min(remove, total)
    assert len(set(chosen)) == len(chosen)
    left = {node: [i for i in items if i.id not in chosen] for node, items in by_node.items()}
    removed_from = {node for node, items in by_node.items() if any(i.id in chosen for i in items)}
    most_left = max((len(v) for v in left.values()), default=0)
    for node in removed_from:
        # A node lost instances only while it was among the most loaded.
        assert len(left[node]) >= most_left - 1
        # On each node, what went was newer than what stayed.
        gone = [i.created_at for i in by_node[node] if i.id in chosen]
        kept = [i.created_at for i in left[node]]
        if gone and kept:
            assert min(gone) >= max(kept)
