"""The Repo's side of deployment versions, as the control plane and the DeploymentActor use it:
specs from the API, secrets compared by value, the actor's writes, instances' new fields."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from knit.domain.specs import DeploymentSpec
from knit.errors import Conflict, NotFound, ValidationError
from knit.secrets import SecretBox
from knit.server.records import InstanceState
from knit.server.repo import Repo, deployment_json, instance_state, open_repo, version_json
from knit.store import deployments, instances

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

BOX = SecretBox.generate()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def repo(tmp_path: Path) -> AsyncIterator[Repo]:
    async with open_repo(str(tmp_path / "knit.db")) as opened:
        yield opened


def spec(**fields: Any) -> DeploymentSpec:
    return DeploymentSpec.model_validate({"name": "web", "image": "web:1", **fields})


async def flush(repo: Repo) -> None:
    """Wait until the writes queued before are committed (the writer keeps their order)."""
    await repo.store.write(deployments.set_pending_reason("none", None))


async def test_update_compares_secret_values_not_ciphertexts(repo: Repo) -> None:
    created = await repo.insert_deployment(spec(secret_env={"TOKEN": "a"}), BOX)
    (first,) = await repo.deployment_versions(created.id)
    assert first.secrets_encrypted == await repo.secret_env_of(created.id)
    # Encrypting again makes another ciphertext: still the same values, so nothing changes.
    record, changed = await repo.update_deployment(created.id, spec(secret_env={"TOKEN": "a"}), BOX)
    assert not changed and record == created
    record, changed = await repo.update_deployment(created.id, spec(secret_env={"TOKEN": "b"}), BOX)
    assert changed and record.version == 2
    second, _ = await repo.deployment_versions(created.id)
    assert second.secrets_encrypted is not None
    assert json.loads(BOX.decrypt(second.secrets_encrypted, created.id)) == {"TOKEN": "b"}


async def test_update_errors(repo: Repo) -> None:
    created = await repo.insert_deployment(spec(), BOX)
    with pytest.raises(ValidationError):
        await repo.update_deployment(created.id, spec(name="api"), BOX)
    with pytest.raises(NotFound):
        await repo.update_deployment("nope", spec(), BOX)
    with pytest.raises(NotFound):
        await repo.deployment_versions("nope")
    await repo.mark_deployment_deleted(created.id)
    with pytest.raises(Conflict):
        await repo.update_deployment(created.id, spec(image="web:2"), BOX)


async def test_the_actors_writes(repo: Repo) -> None:
    created = await repo.insert_deployment(spec(secret_env={"TOKEN": "a"}, replicas=2), BOX)
    v2, _ = await repo.update_deployment(
        created.id, spec(image="web:2", secret_env={"TOKEN": "b"}, replicas=2), BOX
    )
    repo.mark_stable(created.id, 1)
    rollout = {"version": 2, "state": "rolling_back", "desired": 2, "message": "unhealthy"}
    repo.set_rollout(created.id, rollout)
    await flush(repo)
    second, first = await repo.deployment_versions(created.id)
    assert first.stable and not second.stable
    await repo.scale_deployment(created.id, 3)
    reverted = await repo.revert(created.id, 1)
    assert (reverted.version, reverted.image, reverted.replicas) == (1, "web:1", 3)
    assert reverted.rollout == rollout
    assert reverted.generation == v2.generation + 1
    stored = await repo.secret_env_of(created.id)
    assert stored is not None and json.loads(BOX.decrypt(stored, created.id)) == {"TOKEN": "a"}
    assert (await repo.get_version(created.id, 2)) == second
    assert await repo.get_version(created.id, 3) is None
    with pytest.raises(NotFound):
        await repo.revert(created.id, 3)


async def test_rollback_without_a_version_takes_the_last_stable_one(repo: Repo) -> None:
    created = await repo.insert_deployment(spec(), BOX)
    await repo.update_deployment(created.id, spec(image="web:2"), BOX)
    with pytest.raises(Conflict, match="no stable version"):
        await repo.rollback_deployment(created.id, None, BOX)
    repo.mark_stable(created.id, 1)
    await flush(repo)
    record, changed = await repo.rollback_deployment(created.id, None, BOX)
    assert changed and (record.version, record.image) == (3, "web:1")


async def test_instances_keep_version_health_and_restarts(repo: Repo) -> None:
    created = await repo.insert_deployment(spec(), BOX)
    inst = InstanceState(
        id="i" * 32, deployment_id=created.id, index=0, status="running", created_at=1.0
    )
    inst.version, inst.health, inst.restarts = 2, "unhealthy", 4
    repo.save_instance(inst)
    await flush(repo)
    (row,) = await repo.store.read(instances.list_instances)
    back = instance_state(row)
    assert (back.version, back.health, back.restarts) == (2, "unhealthy", 4)
    (listed,) = await repo.list_instances()
    assert (listed["version"], listed["health"], listed["restarts"]) == (2, "unhealthy", 4)


async def test_the_deployments_json_has_its_version_policy_and_rollout(repo: Repo) -> None:
    created = await repo.insert_deployment(
        spec(update={"on_failure": "rollback"}, health_check={"command": ["CMD", "true"]}),
        BOX,
    )
    data = deployment_json(created)
    assert data["version"] == 1 and data["rollout"] is None
    assert data["update"]["on_failure"] == "rollback" and data["update"]["max_parallel"] == 1
    assert data["health_check"] == {
        "command": ["CMD", "true"],
        "interval": 10.0,
        "timeout": 5.0,
        "retries": 3,
        "start_period": 0.0,
    }
    assert (await repo.deployment_json(created.id))["update"] == data["update"]
    (first,) = await repo.deployment_versions(created.id)
    shown = version_json(first)
    assert shown["spec"]["update"] == data["update"]
    assert shown["created_at"] == data["created_at"]
