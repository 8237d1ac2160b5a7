"""Deployments: create, unique live names, references, optimistic updates, delete, purge."""

from __future__ import annotations

import dataclasses

import pytest

from knit.errors import Conflict, NotFound
from knit.store import InstanceRecord, Store, credentials, deployments, instances, networks, tasks

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def test_create_then_read_back_every_field(store: Store) -> None:
    creds = await store.write(credentials.create("registry.local:5000", "bob", "ciphertext"))
    await store.write(networks.create("front"))
    created = await store.write(
        deployments.create(
            "web",
            "registry.local:5000/web:1",
            registry_credentials_id=creds.id,
            network_attachments=["front"],
            templates=[{"content": "port={{ port }}", "destination": "/etc/web.conf"}],
            env={"MODE": "prod"},
            command=["web", "--port", "80"],
            replicas=3,
            ports=[{"container_port": 80, "host_port": 8080, "protocol": "tcp"}],
            node_selector={"zone": "a"},
            lost_after=30.0,
            restart_policy={"mode": "on-failure", "backoff": 2.5, "max_restarts": None},
            at=1000.0,
        )
    )
    stored = await store.read(deployments.get_deployment, created.id)
    assert stored == created
    assert stored.generation == 1
    assert stored.created_at == stored.updated_at == 1000.0
    assert stored.command == ("web", "--port", "80")
    assert stored.ports[0]["host_port"] == 8080
    assert stored.restart_policy["max_restarts"] is None
    assert stored.status == "active"
    assert stored.to_json()["network_attachments"] == ["front"]
    assert await store.read(deployments.get_deployment_by_name, "web") == stored
    assert await store.read(deployments.resolve_deployment, "web") == stored
    assert await store.read(deployments.resolve_deployment, created.id) == stored


async def test_defaults_and_a_null_command(store: Store) -> None:
    created = await store.write(deployments.create("api", "api:2"))
    stored = await store.read(deployments.get_deployment, created.id)
    assert stored.command is None
    assert stored.replicas == 1
    assert stored.network_attachments == ()
    assert stored.registry_credentials_id is None


async def test_live_names_are_unique(store: Store) -> None:
    await store.write(deployments.create("web", "nginx"))
    with pytest.raises(Conflict, match="'web' already exists"):
        await store.write(deployments.create("web", "other"))


async def test_a_deleted_deployments_name_can_be_reused_at_once(store: Store) -> None:
    old = await store.write(deployments.create("web", "nginx:1"))
    deleted = await store.write(deployments.mark_deleted(old.id))
    assert deleted.deleted and deleted.generation == 2 and deleted.status == "deleting"
    assert await store.write(deployments.mark_deleted(old.id)) == deleted  # idempotent
    new = await store.write(deployments.create("web", "nginx:2"))
    assert (await store.read(deployments.get_deployment_by_name, "web")).id == new.id
    listed = await store.read(deployments.list_deployments)
    assert {d.id for d in listed} == {old.id, new.id}
    live = await store.read(deployments.list_deployments, include_deleted=False)
    assert [d.id for d in live] == [new.id]
    assert await store.read(deployments.list_deployment_ids, include_deleted=False) == [new.id]


async def test_references_must_exist(store: Store) -> None:
    with pytest.raises(NotFound, match="registry_credentials"):
        await store.write(deployments.create("web", "nginx", registry_credentials_id="nope"))
    with pytest.raises(NotFound, match="network 'back'"):
        await store.write(deployments.create("web", "nginx", network_attachments=["back"]))
    assert await store.read(deployments.list_deployments) == []


async def test_update_spec_bumps_the_generation_and_refuses_stale_copies(store: Store) -> None:
    created = await store.write(deployments.create("web", "nginx:1"))
    updated = await store.write(
        deployments.update_spec(dataclasses.replace(created, image="nginx:2", replicas=5))
    )
    assert (updated.image, updated.replicas, updated.generation) == ("nginx:2", 5, 2)
    with pytest.raises(Conflict, match="changed meanwhile"):
        await store.write(deployments.update_spec(dataclasses.replace(created, replicas=9)))
    other = await store.write(deployments.create("api", "api"))
    with pytest.raises(Conflict, match="already exists"):
        await store.write(deployments.update_spec(dataclasses.replace(other, name="web")))
    renamed = await store.write(deployments.update_spec(dataclasses.replace(other, name="api2")))
    assert renamed.name == "api2"
    await store.write(deployments.mark_deleted(created.id))
    with pytest.raises(Conflict, match="being deleted"):
        await store.write(deployments.update_spec(dataclasses.replace(updated, generation=3)))


async def test_pending_reason_is_not_a_spec_change(store: Store) -> None:
    created = await store.write(deployments.create("web", "nginx"))
    assert await store.write(deployments.set_pending_reason(created.id, "node-1: no capacity"))
    stored = await store.read(deployments.get_deployment, created.id)
    assert stored.pending_reason == "node-1: no capacity"
    assert stored.status == "pending"
    assert stored.generation == 1
    assert not await store.write(deployments.set_pending_reason("gone", None))


async def test_purge_needs_deleted_and_no_instances(store: Store) -> None:
    web = await store.write(deployments.create("web", "nginx"))
    inst = InstanceRecord.new(web.id, 0, at=1.0)
    await store.write(instances.insert_many([inst]))
    await store.write(tasks.create("deploy", inst.id, web.id))
    with pytest.raises(Conflict, match="not deleted"):
        await store.write(deployments.purge(web.id))
    await store.write(deployments.mark_deleted(web.id))
    with pytest.raises(Conflict, match="still has 1 instance"):
        await store.write(deployments.purge(web.id))
    await store.write(instances.delete_one(inst.id))
    assert await store.write(deployments.purge(web.id)) is True
    assert await store.write(deployments.purge(web.id)) is False
    assert await store.read(deployments.find_deployment, web.id) is None
    assert await store.read(tasks.list_tasks, deployment_id=web.id) == []


async def test_unknown_deployments_are_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.read(deployments.get_deployment, "nope")
    with pytest.raises(NotFound):
        await store.read(deployments.get_deployment_by_name, "nope")
    with pytest.raises(NotFound):
        await store.read(deployments.resolve_deployment, "nope")
    with pytest.raises(NotFound):
        await store.write(deployments.mark_deleted("nope"))
