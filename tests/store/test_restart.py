"""Restart durability: close the store, open the file again, everything is still there."""

from __future__ import annotations

import pytest

from knit.store import (
    EventRecord,
    HeartbeatUpsert,
    InstanceRecord,
    credentials,
    deployments,
    events,
    instances,
    networks,
    nodes,
    open_store,
    tasks,
)

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def test_everything_written_is_there_after_reopening(db_url: str) -> None:
    async with open_store(db_url) as store:
        # Fire-and-forget writes queued just before closing must be committed too.
        store.write_nowait(nodes.record_heartbeat(HeartbeatUpsert("n1", "h1", at=1.0)))
        creds = await store.write(credentials.create("registry.local", "u", "ct"))
        net = await store.write(networks.create("front"))
        web = await store.write(
            deployments.create(
                "web", "nginx", registry_credentials_id=creds.id, network_attachments=["front"]
            )
        )
        gone = await store.write(deployments.create("old", "nginx"))
        await store.write(deployments.mark_deleted(gone.id))
        inst = InstanceRecord.new(web.id, 0, at=2.0, node_id="n1")
        await store.write(instances.insert_many([inst]))
        task = await store.write(tasks.create("deploy", inst.id, web.id, node_id="n1"))
        store.write_nowait(events.append_many([EventRecord.new("instance.created", "i0", at=3.0)]))
        store.write_nowait(instances.update_status(inst.id, "running", container_id="c1"))

    async with open_store(db_url) as store:
        assert (await store.read(nodes.get_node, "n1")).hostname == "h1"
        assert await store.read(credentials.get_credentials, creds.id) == creds
        assert await store.read(networks.get_network, net.id) == net
        assert await store.read(deployments.get_deployment, web.id) == web
        assert (await store.read(deployments.get_deployment, gone.id)).deleted
        assert await store.read(deployments.list_deployment_ids) == [web.id, gone.id]
        restored = await store.read(instances.get_instance, inst.id)
        assert (restored.status, restored.container_id) == ("running", "c1")
        assert [t.id for t in await store.read(tasks.list_unfinished)] == [task.id]
        assert [e.kind for e in await store.read(events.list_events)] == ["instance.created"]
