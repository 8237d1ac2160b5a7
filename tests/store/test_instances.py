"""Container instances: bulk insert, lookups by deployment and node, status changes."""

from __future__ import annotations

import dataclasses

import pytest

from knit.errors import Conflict, NotFound
from knit.store import (
    DeploymentRecord,
    HeartbeatUpsert,
    InstanceRecord,
    InstanceStatusUpdate,
    Store,
    deployments,
    instances,
    nodes,
)

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def setup(store: Store) -> tuple[DeploymentRecord, DeploymentRecord]:
    await store.write(
        nodes.record_heartbeats([HeartbeatUpsert(f"n{i}", f"h{i}", at=1.0) for i in range(2)])
    )
    web = await store.write(deployments.create("web", "nginx", replicas=3))
    api = await store.write(deployments.create("api", "api", replicas=1))
    return web, api


async def test_bulk_insert_and_list_by_deployment_and_node(store: Store) -> None:
    web, api = await setup(store)
    made = [InstanceRecord.new(web.id, i, at=1.0, node_id=f"n{i % 2}") for i in range(3)]
    made.append(InstanceRecord.new(api.id, 0, at=1.0))
    assert await store.write(instances.insert_many(made)) == 4
    of_web = await store.read(instances.list_instances, deployment_id=web.id)
    assert [i.index for i in of_web] == [0, 1, 2]
    on_n0 = await store.read(instances.list_instances, node_id="n0")
    assert {i.index for i in on_n0} == {0, 2}
    assert await store.read(instances.get_instance, made[3].id) == made[3]
    assert len(await store.read(instances.list_instances)) == 4
    pending = await store.read(instances.list_instances, statuses=["pending"], desired=True)
    assert len(pending) == 4


async def test_duplicate_ids_and_dangling_references_conflict(store: Store) -> None:
    web, _ = await setup(store)
    inst = InstanceRecord.new(web.id, 0, at=1.0)
    await store.write(instances.insert_many([inst]))
    with pytest.raises(Conflict):
        await store.write(instances.insert_many([inst]))
    with pytest.raises(Conflict):
        await store.write(
            instances.insert_many([InstanceRecord.new(web.id, 1, at=1.0, node_id="x")])
        )


async def test_update_status_changes_only_what_is_given(store: Store) -> None:
    web, _ = await setup(store)
    inst = InstanceRecord.new(web.id, 0, at=1.0, node_id="n0")
    await store.write(instances.insert_many([inst]))
    running = await store.write(
        instances.update_status(inst.id, "running", container_id="c0ffee", at=2.0)
    )
    assert (running.status, running.container_id, running.updated_at) == ("running", "c0ffee", 2.0)
    assert running.node_id == "n0"
    exited = await store.write(instances.update_status(inst.id, "stopped", exit_code=3))
    assert (exited.container_id, exited.exit_code) == ("c0ffee", 3)
    errored = await store.write(
        instances.update_status(inst.id, "error", error="pull failed", node_id=None, desired=False)
    )
    assert (errored.error, errored.node_id, errored.desired) == ("pull failed", None, False)
    assert await store.read(instances.find_by_container, "c0ffee") == errored
    with pytest.raises(NotFound):
        await store.write(instances.update_status("nope", "running"))
    with pytest.raises(ValueError, match="status"):
        instances.update_status(inst.id, "exploded")


async def test_bulk_status_updates_keep_container_ids_and_skip_unknown_ones(store: Store) -> None:
    web, _ = await setup(store)
    made = [InstanceRecord.new(web.id, i, at=1.0, node_id="n0") for i in range(3)]
    await store.write(instances.insert_many(made))
    await store.write(instances.update_status(made[0].id, "running", container_id="c0"))
    updates = [
        InstanceStatusUpdate(made[0].id, "stopped", at=5.0, exit_code=0),
        InstanceStatusUpdate(made[1].id, "running", at=5.0, container_id="c1"),
        InstanceStatusUpdate(made[2].id, "error", at=5.0, error="boom"),
        InstanceStatusUpdate("ghost", "running", at=5.0),
    ]
    await store.write(instances.update_statuses(updates))
    got = {i.id: i for i in await store.read(instances.list_instances, deployment_id=web.id)}
    assert (got[made[0].id].status, got[made[0].id].container_id) == ("stopped", "c0")
    assert (got[made[1].id].status, got[made[1].id].container_id) == ("running", "c1")
    assert (got[made[2].id].status, got[made[2].id].error) == ("error", "boom")
    assert all(i.updated_at == 5.0 for i in got.values())


async def test_upsert_saves_a_whole_record(store: Store) -> None:
    web, _ = await setup(store)
    inst = InstanceRecord.new(web.id, 0, at=1.0)
    await store.write(instances.upsert_one(inst))
    moved = dataclasses.replace(
        inst, node_id="n1", status="running", container_id="c", updated_at=9.0
    )
    await store.write(instances.upsert_one(moved))
    assert await store.read(instances.get_instance, inst.id) == moved


async def test_counts_by_node_and_desired_and_delete(store: Store) -> None:
    web, _ = await setup(store)
    made = [InstanceRecord.new(web.id, i, at=1.0, node_id="n0") for i in range(3)]
    made.append(InstanceRecord.new(web.id, 3, at=1.0, node_id="n1"))
    await store.write(instances.insert_many(made))
    await store.write(instances.update_status(made[0].id, "stopped"))
    assert await store.read(instances.count_by_node) == {"n0": 2, "n1": 1}
    assert await store.write(instances.set_desired([made[1].id, made[1].id], False)) == 1
    undesired = await store.read(instances.list_instances, desired=False)
    assert [i.id for i in undesired] == [made[1].id]
    assert await store.write(instances.delete_many([m.id for m in made] + ["ghost"])) == 4
    assert await store.read(instances.list_instances) == []


async def test_version_health_and_restarts_are_stored(store: Store) -> None:
    web, _ = await setup(store)
    inst = dataclasses.replace(
        InstanceRecord.new(web.id, 0, at=1.0), version=3, health="healthy", restarts=2
    )
    await store.write(instances.insert_many([inst]))
    assert await store.read(instances.get_instance, inst.id) == inst
    changed = dataclasses.replace(inst, health="unhealthy", restarts=3, updated_at=2.0)
    await store.write(instances.upsert_one(changed))
    assert await store.read(instances.get_instance, inst.id) == changed
    fresh = InstanceRecord.new(web.id, 1, at=1.0)
    await store.write(instances.insert_many([fresh]))
    stored = await store.read(instances.get_instance, fresh.id)
    assert (stored.version, stored.health, stored.restarts) == (1, "none", 0)


async def test_reserved_by_node_sums_what_each_deployment_asks(store: Store) -> None:
    await store.write(
        nodes.record_heartbeats([HeartbeatUpsert(f"n{i}", f"h{i}", at=1.0) for i in range(3)])
    )
    web = await store.write(
        deployments.create("web", "web", resources={"cpu": 0.5, "memory": 256 * 2**20})
    )
    api = await store.write(deployments.create("api", "api", resources={"memory": 64 * 2**20}))
    plain = await store.write(deployments.create("plain", "plain"))
    made = [
        InstanceRecord.new(web.id, 0, at=1.0, node_id="n0"),
        InstanceRecord.new(web.id, 1, at=1.0, node_id="n0"),
        InstanceRecord.new(api.id, 0, at=1.0, node_id="n0"),
        InstanceRecord.new(web.id, 2, at=1.0, node_id="n1"),
        InstanceRecord.new(web.id, 3, at=1.0),  # not placed
        InstanceRecord.new(plain.id, 0, at=1.0, node_id="n2"),
    ]
    await store.write(instances.insert_many(made))
    assert await store.read(instances.reserved_by_node) == {
        "n0": (1.0, 576 * 2**20),
        "n1": (0.5, 256 * 2**20),
    }
    await store.write(instances.update_status(made[3].id, "lost"))
    assert "n1" not in await store.read(instances.reserved_by_node)
