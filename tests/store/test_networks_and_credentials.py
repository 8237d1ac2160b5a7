"""Networks (with Docker ids per node) and registry credentials: CRUD, refusals in use."""

from __future__ import annotations

import pytest

from knit.errors import Conflict, NotFound
from knit.store import HeartbeatUpsert, Store, credentials, deployments, networks, new_id, nodes

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def test_network_crud(store: Store) -> None:
    front = await store.write(networks.create("front", subnet="10.1.0.0/24", at=5.0))
    host = await store.write(networks.create("hostnet", driver="host"))
    assert await store.read(networks.get_network, front.id) == front
    assert await store.read(networks.get_network_by_name, "hostnet") == host
    assert await store.read(networks.list_networks) == [front, host]
    assert await store.read(networks.list_networks, names=["hostnet", "nope"]) == [host]
    await store.write(networks.delete_network(front.id))
    assert await store.read(networks.find_network, front.id) is None
    with pytest.raises(NotFound):
        await store.write(networks.delete_network(front.id))
    with pytest.raises(NotFound):
        await store.read(networks.get_network_by_name, "front")


async def test_network_names_are_unique(store: Store) -> None:
    await store.write(networks.create("front"))
    with pytest.raises(Conflict, match="already exists"):
        await store.write(networks.create("front"))


async def test_a_network_in_use_cannot_be_deleted_until_its_deployment_is_purged(
    store: Store,
) -> None:
    front = await store.write(networks.create("front"))
    web = await store.write(deployments.create("web", "nginx", network_attachments=["front"]))
    with pytest.raises(Conflict, match="used by deployment"):
        await store.write(networks.delete_network(front.id))
    await store.write(deployments.mark_deleted(web.id))
    with pytest.raises(Conflict, match="web"):  # its containers may still be attached
        await store.write(networks.delete_network(front.id))
    await store.write(deployments.purge(web.id))
    await store.write(networks.delete_network(front.id))


async def test_docker_ids_per_node(store: Store) -> None:
    await store.write(nodes.record_heartbeat(HeartbeatUpsert("n1", "h1", at=1.0)))
    front = await store.write(networks.create("front"))
    await store.write(networks.set_node_network("n1", front.id, "docker-a"))
    await store.write(networks.set_node_network("n1", front.id, "docker-b"))
    listed = await store.read(networks.list_node_networks, network_id=front.id)
    assert [(n.node_id, n.docker_id) for n in listed] == [("n1", "docker-b")]
    assert await store.read(networks.list_node_networks, node_id="n2") == []
    with pytest.raises(Conflict):
        await store.write(networks.set_node_network("ghost", front.id, "docker-c"))
    assert await store.write(networks.forget_node_network("n1", front.id))
    assert not await store.write(networks.forget_node_network("n1", front.id))
    await store.write(networks.set_node_network("n1", front.id, "docker-d"))
    await store.write(networks.delete_network(front.id))  # takes its Docker ids along
    assert await store.read(networks.list_node_networks) == []


async def test_credentials_crud_and_the_ciphertext_stays_out_of_json(store: Store) -> None:
    chosen = new_id()  # chosen first, so the ciphertext can be bound to it
    creds = await store.write(
        credentials.create("registry.local", "alice", "v1:ciphertext", credentials_id=chosen)
    )
    assert creds.id == chosen
    assert await store.read(credentials.get_credentials, chosen) == creds
    assert "password_encrypted" not in creds.to_json()
    assert await store.read(credentials.list_credentials_ids) == {chosen}
    updated = await store.write(
        credentials.update_credentials(chosen, password_encrypted="v1:other", at=99.0)
    )
    assert (updated.username, updated.password_encrypted, updated.updated_at) == (
        "alice",
        "v1:other",
        99.0,
    )
    with pytest.raises(Conflict):
        await store.write(credentials.create("r", "u", "p", credentials_id=chosen))
    await store.write(credentials.delete_credentials(chosen))
    assert await store.read(credentials.list_credentials) == []
    with pytest.raises(NotFound):
        await store.write(credentials.delete_credentials(chosen))
    with pytest.raises(NotFound):
        await store.write(credentials.update_credentials(chosen, username="x"))


async def test_credentials_in_use_cannot_be_deleted(store: Store) -> None:
    creds = await store.write(credentials.create("registry.local", "alice", "ct"))
    web = await store.write(deployments.create("web", "nginx", registry_credentials_id=creds.id))
    with pytest.raises(Conflict, match="used by deployment"):
        await store.write(credentials.delete_credentials(creds.id))
    await store.write(deployments.mark_deleted(web.id))
    await store.write(deployments.purge(web.id))
    await store.write(credentials.delete_credentials(creds.id))
