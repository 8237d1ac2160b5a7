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
