"""Nodes: heartbeat upserts (single, bulk, merged), health, drain."""

from __future__ import annotations

import dataclasses

import anyio
import pytest

from knit.errors import NotFound
from knit.store import HeartbeatUpsert, Store, nodes

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def beat(i: int, at: float, **changes: object) -> HeartbeatUpsert:
    base = HeartbeatUpsert(
        node_id=f"node-{i}",
        hostname=f"host-{i}",
        at=at,
        labels={"zone": "a" if i % 2 else "b"},
        cpus=4,
        memory_bytes=8 << 30,
        docker_version="27.0",
        agent_version="0.1.0",
        public_key=f"key-{i}",
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


async def test_a_first_heartbeat_registers_a_healthy_eligible_node(store: Store) -> None:
    assert await store.write(nodes.record_heartbeat(beat(1, at=100.0))) == 1
    node = await store.read(nodes.get_node, "node-1")
    assert node.hostname == "host-1"
    assert node.status == "healthy"
    assert node.eligible is True
    assert node.registered_at == node.last_heartbeat == 100.0
    assert node.labels == {"zone": "a"}
    assert node.cpus == 4.0
    assert node.memory_bytes == 8 << 30
    assert node.public_key == "key-1"
    assert node.address is None


async def test_later_heartbeats_update_but_keep_registration_drain_and_address(
    store: Store,
) -> None:
    await store.write(nodes.record_heartbeat(beat(1, at=100.0, address="10.9.0.1")))
    await store.write(nodes.set_eligible("node-1", False))
    await store.write(nodes.mark_unhealthy(["node-1"]))
    await store.write(nodes.record_heartbeat(beat(1, at=105.0, hostname="renamed", cpus=8)))
    node = await store.read(nodes.get_node, "node-1")
    assert (node.hostname, node.cpus, node.last_heartbeat) == ("renamed", 8.0, 105.0)
    assert node.status == "healthy"
    assert node.eligible is False
    assert node.registered_at == 100.0
    assert node.address == "10.9.0.1"


async def test_bulk_heartbeat_upsert_of_10000_nodes(store: Store) -> None:
    first = [beat(i, at=1.0) for i in range(10_000)]
    assert await store.write(nodes.record_heartbeats(first)) == 10_000
    again = [beat(i, at=2.0, cpus=2) for i in range(0, 10_000, 2)]
    assert await store.write(nodes.record_heartbeats(again)) == 5_000
    listed = await store.read(nodes.list_nodes)
    assert len(listed) == 10_000
    by_id = {n.id: n for n in listed}
    assert by_id["node-0"].last_heartbeat == 2.0
    assert by_id["node-0"].cpus == 2.0
    assert by_id["node-1"].last_heartbeat == 1.0
    assert by_id["node-1"].registered_at == 1.0


async def test_the_newest_heartbeat_of_a_node_wins_within_one_bulk(store: Store) -> None:
    beats = [beat(1, at=3.0, hostname="new"), beat(1, at=1.0, hostname="old")]
    assert await store.write(nodes.record_heartbeats(beats)) == 1
    assert (await store.read(nodes.get_node, "node-1")).hostname == "new"


async def test_single_heartbeats_from_many_tasks_are_merged_into_few_statements(
    store: Store,
) -> None:
    async with anyio.create_task_group() as tg:
        for i in range(500):
            tg.start_soon(store.write, nodes.record_heartbeat(beat(i, at=1.0)))
    assert len(await store.read(nodes.list_nodes)) == 500
    assert store.writer.stats.statements_saved > 0


async def test_stale_nodes_are_marked_unhealthy(store: Store) -> None:
    await store.write(nodes.record_heartbeats([beat(1, at=10.0), beat(2, at=50.0)]))
    assert await store.write(nodes.mark_stale_unhealthy(before=30.0)) == ["node-1"]
    assert await store.write(nodes.mark_stale_unhealthy(before=30.0)) == []
    unhealthy = await store.read(nodes.list_nodes, status="unhealthy")
    assert [n.id for n in unhealthy] == ["node-1"]
    assert await store.write(nodes.mark_unhealthy(["node-1", "node-2", "ghost"])) == 1


async def test_drain_and_address_of_unknown_nodes_are_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.write(nodes.set_eligible("ghost", False))
    with pytest.raises(NotFound):
        await store.write(nodes.set_address("ghost", "10.0.0.1"))
    with pytest.raises(NotFound):
        await store.read(nodes.get_node, "ghost")
    assert await store.read(nodes.find_node, "ghost") is None


async def test_set_address_and_filters(store: Store) -> None:
    await store.write(nodes.record_heartbeats([beat(1, at=1.0), beat(2, at=1.0)]))
    node = await store.write(nodes.set_address("node-2", "10.9.0.2"))
    assert node.address == "10.9.0.2"
    await store.write(nodes.set_eligible("node-1", False))
    assert [n.id for n in await store.read(nodes.list_nodes, eligible=True)] == ["node-2"]


async def test_upsert_node_stores_a_whole_record(store: Store) -> None:
    await store.write(nodes.record_heartbeat(beat(1, at=1.0)))
    node = await store.read(nodes.get_node, "node-1")
    changed = dataclasses.replace(node, status="unhealthy", eligible=False, labels={"x": "y"})
    await store.write(nodes.upsert_node(changed))
    assert await store.read(nodes.get_node, "node-1") == changed
    assert changed.to_json()["labels"] == {"x": "y"}


async def test_unknown_statuses_are_refused_at_once() -> None:
    with pytest.raises(ValueError, match="status"):
        nodes.set_status(["n"], "sleepy")


async def test_overlong_reported_names_and_versions_are_cut_to_their_columns(
    store: Store,
) -> None:
    # An agent reports these freely; PostgreSQL enforces VARCHAR lengths (SQLite does not):
    # a heartbeat must not fail on either backend for a long hostname or version string.
    beat = HeartbeatUpsert(
        "n1", "h" * 300, at=1.0, docker_version="2" * 100, agent_version="3" * 100
    )
    await store.write(nodes.record_heartbeat(beat))
    node = await store.read(nodes.get_node, "n1")
    assert node.hostname == "h" * 255
    assert node.docker_version == "2" * 64
    assert node.agent_version == "3" * 64
