"""Deployment versions: version 1 at creation, changes (new version, scale, nothing), rollback,
revert, stable versions, the rollout column, secrets per version."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import func, select

from knit.domain.update_policy import UpdatePolicy
from knit.errors import Conflict, NotFound, ValidationError
from knit.secrets import SecretBox
from knit.store import DeploymentRecord, Store, deployments, networks, versions
from knit.store.models import Deployment, DeploymentSecret, DeploymentVersion, JSONValue
from knit.store.versions import SecretsEqual

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

BOX = SecretBox.generate()


def encrypt(deployment_id: str, values: dict[str, str]) -> str:
    return BOX.encrypt(json.dumps(values), aad=deployment_id)


def same(deployment_id: str) -> SecretsEqual:
    """What the server passes: decrypt both, compare the values."""

    def plain(ciphertext: str | None) -> Any:
        return {} if ciphertext is None else json.loads(BOX.decrypt(ciphertext, deployment_id))

    return lambda a, b: bool(plain(a) == plain(b))


async def create(store: Store, **fields: Any) -> DeploymentRecord:
    deployment_id = "d" * 32
    secret = fields.pop("secret", None)
    encrypted = encrypt(deployment_id, secret) if secret else None
    return await store.write(
        deployments.create(
            "web",
            "web:1",
            deployment_id=deployment_id,
            secret_env_names=sorted(secret or ()),
            secret_env_encrypted=encrypted,
            at=100.0,
            **fields,
        )
    )


def spec(record: DeploymentRecord, **changes: Any) -> dict[str, Any]:
    """The record's spec with ``changes`` (what ``PUT /deployments/{id}`` gives the store)."""
    return {**deployments.spec_json(record), **changes}


async def change(
    store: Store, record: DeploymentRecord, secret: dict[str, str] | None = None, **changes: Any
) -> tuple[DeploymentRecord, bool]:
    body = spec(record, **changes)
    encrypted = None
    if secret:
        body["secret_env"] = sorted(secret)
        encrypted = encrypt(record.id, secret)
    return await store.write(
        versions.change(record.id, body, encrypted, same_secrets=same(record.id), at=200.0)
    )


async def count(store: Store, model: Any) -> int:
    async with store.db.read() as conn:
        return int(await conn.scalar(select(func.count()).select_from(model)) or 0)


async def test_a_new_deployment_is_version_1_with_its_spec(store: Store) -> None:
    created = await create(store, replicas=2, health_check={"command": ["true"]})
    assert created.version == 1
    (first,) = await store.read(versions.list_versions, created.id)
    assert (first.version, first.stable, first.created_at) == (1, False, 100.0)
    assert first.spec == deployments.spec_json(created)
    assert first.spec["replicas"] == 2 and first.spec["health_check"] == {"command": ["true"]}
    assert await store.read(deployments.get_deployment, created.id) == created


def test_the_update_defaults_are_the_domains() -> None:
    assert UpdatePolicy().model_dump(mode="json") == deployments.UPDATE_POLICY_DEFAULTS


async def test_records_have_the_whole_update_policy(store: Store) -> None:
    created = await create(store, update_policy={"max_parallel": 3})
    stored = await store.read(deployments.get_deployment, created.id)
    assert stored.update == {**UpdatePolicy().model_dump(mode="json"), "max_parallel": 3}
    assert stored.health_check is None and stored.rollout is None


async def test_an_identical_spec_writes_nothing(store: Store) -> None:
    created = await create(store, secret={"TOKEN": "s3cret"})
    before = await count(store, DeploymentVersion)
    record, changed = await change(store, created, secret={"TOKEN": "s3cret"})
    assert not changed
    assert record == created  # updated_at, generation: untouched
    assert await store.read(deployments.get_deployment, created.id) == created
    assert await count(store, DeploymentVersion) == before


async def test_only_replicas_is_a_scale_without_a_version(store: Store) -> None:
    created = await create(store)
    record, changed = await change(store, created, replicas=5)
    assert changed
    assert (record.replicas, record.version, record.generation) == (5, 1, 1)
    assert record.updated_at == 200.0
    assert [v.version for v in await store.read(versions.list_versions, created.id)] == [1]


async def test_a_changed_spec_is_a_new_version(store: Store) -> None:
    await store.write(networks.create("front"))
    created = await create(store, secret={"TOKEN": "a"})
    record, changed = await change(
        store,
        created,
        secret={"TOKEN": "a"},
        image="web:2",
        replicas=3,
        network_attachments=["front"],
        update={**created.update, "order": "start_first"},
    )
    assert changed
    assert (record.image, record.replicas, record.version, record.generation) == (
        "web:2",
        3,
        2,
        2,
    )
    assert record.network_attachments == ("front",)
    assert record.update["order"] == "start_first"
    assert record.updated_at == 200.0 and record.created_at == 100.0
    second, first = await store.read(versions.list_versions, created.id)
    assert (second.version, first.version) == (2, 1)
    assert second.spec == deployments.spec_json(record)
    assert first.spec["image"] == "web:1"
    assert not second.stable


async def test_a_changed_secret_value_is_a_new_version(store: Store) -> None:
    created = await create(store, secret={"TOKEN": "a"})
    record, changed = await change(store, created, secret={"TOKEN": "b"})
    assert changed and record.version == 2
    stored = await store.read(deployments.secret_env_of, created.id)
    assert stored is not None
    assert json.loads(BOX.decrypt(stored, created.id)) == {"TOKEN": "b"}
    second, first = await store.read(versions.list_versions, created.id)
    assert second.secrets_encrypted == stored
    assert first.secrets_encrypted is not None
    assert json.loads(BOX.decrypt(first.secrets_encrypted, created.id)) == {"TOKEN": "a"}
    # Dropping every secret variable is a change too, and leaves no secrets row.
    record, changed = await change(store, record, secret_env=[])
    assert changed and record.version == 3 and record.secret_env == ()
    assert await store.read(deployments.secret_env_of, created.id) is None


async def test_secret_values_are_never_in_a_versions_json(store: Store) -> None:
    created = await create(store, secret={"TOKEN": "s3cret"})
    await change(store, created, secret={"TOKEN": "other"}, image="web:2")
    for version in await store.read(versions.list_versions, created.id):
        text = json.dumps(version.to_json())
        assert "s3cret" not in text and "other" not in text
        assert "secrets_encrypted" not in version.to_json()
        assert "deployment_id" not in version.to_json()
        assert version.spec["secret_env"] == ["TOKEN"]


async def test_a_change_refuses_a_new_name_unknown_and_deleted_deployments(store: Store) -> None:
    created = await create(store)
    with pytest.raises(ValidationError) as caught:
        await change(store, created, name="other")
    assert caught.value.field == "name"
    with pytest.raises(NotFound):
        await store.write(versions.change("nope", spec(created), None, same_secrets=same("nope")))
    with pytest.raises(NotFound, match="network 'back'"):
        await change(store, created, network_attachments=["back"])
    await store.write(deployments.mark_deleted(created.id))
    with pytest.raises(Conflict, match="being deleted"):
        await change(store, created, image="web:2")
    with pytest.raises(Conflict, match="being deleted"):
        await store.write(versions.scale(created.id, 2))


async def test_scale_writes_replicas_only(store: Store) -> None:
    created = await create(store)
    record, changed = await store.write(versions.scale(created.id, 4, at=300.0))
    assert changed and (record.replicas, record.version, record.generation) == (4, 1, 1)
    assert await store.write(versions.scale(created.id, 4)) == (record, False)
    with pytest.raises(NotFound):
        await store.write(versions.scale("nope", 1))


async def test_mark_stable_and_set_rollout(store: Store) -> None:
    created = await create(store)
    assert await store.write(versions.mark_stable(created.id, 1))
    assert not await store.write(versions.mark_stable(created.id, 9))
    (first,) = await store.read(versions.list_versions, created.id)
    assert first.stable
    rollout: dict[str, JSONValue] = {
        "version": 1,
        "state": "complete",
        "desired": 1,
        "message": None,
    }
    assert await store.write(versions.set_rollout(created.id, rollout))
    stored = await store.read(deployments.get_deployment, created.id)
    assert stored.rollout == rollout
    assert (stored.generation, stored.updated_at) == (created.generation, created.updated_at)
    assert await store.write(versions.set_rollout(created.id, None))
    assert (await store.read(deployments.get_deployment, created.id)).rollout is None
    assert not await store.write(versions.set_rollout("nope", rollout))


async def test_revert_puts_a_version_back_without_a_new_one(store: Store) -> None:
    created = await create(store, secret={"TOKEN": "a"})
    v2, _ = await change(store, created, secret={"TOKEN": "b"}, image="web:2")
    v2, _ = await change(store, v2, secret={"TOKEN": "b"}, replicas=4)  # a scale
    reverted = await store.write(versions.revert(created.id, 1, at=300.0))
    assert (reverted.image, reverted.version, reverted.replicas) == ("web:1", 1, 4)
    assert reverted.generation == v2.generation + 1
    stored = await store.read(deployments.secret_env_of, created.id)
    assert stored is not None and json.loads(BOX.decrypt(stored, created.id)) == {"TOKEN": "a"}
    assert [v.version for v in await store.read(versions.list_versions, created.id)] == [2, 1]
    # The next change is version 3: versions are never reused.
    v3, changed = await change(store, reverted, image="web:3", secret={"TOKEN": "a"})
    assert changed and v3.version == 3
    with pytest.raises(NotFound, match="deployment version '7'"):
        await store.write(versions.revert(created.id, 7))


async def test_rollback_makes_a_new_version_of_an_old_spec(store: Store) -> None:
    created = await create(store, secret={"TOKEN": "a"})
    await store.write(versions.mark_stable(created.id, 1))
    await change(store, created, secret={"TOKEN": "b"}, image="web:2", replicas=3)
    with pytest.raises(Conflict, match="already at version 2"):
        await store.write(versions.rollback(created.id, 2, same_secrets=same(created.id)))
    with pytest.raises(NotFound, match="deployment version '5'"):
        await store.write(versions.rollback(created.id, 5, same_secrets=same(created.id)))
    record, changed = await store.write(
        versions.rollback(created.id, None, same_secrets=same(created.id))
    )
    assert changed
    assert (record.image, record.version, record.replicas) == ("web:1", 3, 3)
    stored = await store.read(deployments.secret_env_of, created.id)
    assert stored is not None and json.loads(BOX.decrypt(stored, created.id)) == {"TOKEN": "a"}
    third = (await store.read(versions.list_versions, created.id))[0]
    assert third.version == 3 and third.spec["image"] == "web:1" and not third.stable
    # Back to version 2 by number: its spec again, as version 4.
    record, changed = await store.write(
        versions.rollback(created.id, 2, same_secrets=same(created.id))
    )
    assert changed and (record.image, record.version) == ("web:2", 4)


async def test_rollback_without_a_stable_version_is_refused(store: Store) -> None:
    created = await create(store)
    await change(store, created, image="web:2")
    with pytest.raises(Conflict, match="no stable version before version 2"):
        await store.write(versions.rollback(created.id, None, same_secrets=same(created.id)))


async def test_rollback_to_a_version_naming_a_deleted_network_is_refused(store: Store) -> None:
    front = await store.write(networks.create("front"))
    created = await create(store, network_attachments=["front"])
    await change(store, created, network_attachments=[])
    await store.write(networks.delete_network(front.id))
    with pytest.raises(Conflict, match="network 'front', which no longer exists"):
        await store.write(versions.rollback(created.id, 1, same_secrets=same(created.id)))


async def test_deletion_drops_the_versions_secrets_and_purge_the_versions(store: Store) -> None:
    created = await create(store, secret={"TOKEN": "a"})
    await store.write(deployments.mark_deleted(created.id))
    (first,) = await store.read(versions.list_versions, created.id)
    assert first.secrets_encrypted is None
    with pytest.raises(Conflict, match="being deleted"):
        await store.read(versions.deployment_versions, created.id)
    await store.write(deployments.purge(created.id))
    assert await count(store, DeploymentVersion) == 0
    assert await count(store, DeploymentSecret) == 0
    assert await count(store, Deployment) == 0
