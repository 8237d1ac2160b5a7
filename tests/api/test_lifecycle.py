"""The lifecycle routes (``PUT /deployments/{id}``, ``/scale``, ``/rollback``, ``/versions``)
through the real control plane and a real store; the DeploymentDirectory is a recorder of
what it is told."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from quart import typing as quart_typing

from actors import Actor, open_actor_system
from knit.api.app import create_app
from knit.bus import Bus
from knit.domain.auth import Role
from knit.domain.tokens import TokenSpec
from knit.domain.update_policy import UpdatePolicy
from knit.secrets import SecretBox
from knit.server.access import TokenKeeper
from knit.server.bridge import BridgeStats
from knit.server.context import ServerContext
from knit.server.leadership import SoleLeader
from knit.server.messages import DeploymentUpdated
from knit.server.plane import ServerPlane
from knit.server.repo import Repo, open_repo
from knit.server.term import LeaderTerm
from knit.server.trust import BusTrust
from knit.store import InstanceRecord, deployments, instances, networks, versions

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

MAX_REPLICAS = 10


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Recorder(Actor[Any]):
    """Stands for the directories: remembers what it is told, answers None."""

    def __init__(self, seen: list[object]) -> None:
        self.seen = seen

    async def handle(self, message: Any) -> object:
        self.seen.append(message)
        return None


@dataclass
class Api:
    client: quart_typing.TestClientProtocol
    repo: Repo
    ctx: ServerContext
    told: list[object]
    tokens: dict[str, str] = field(default_factory=dict)

    async def call(
        self, method: str, path: str, body: Any = None, *, role: str = "deploy"
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"}
        send = {
            "GET": self.client.get,
            "PUT": self.client.put,
            "POST": self.client.post,
            "DELETE": self.client.delete,
        }[method]
        if body is None:  # no body at all
            response = await send(path, headers=headers)
        else:
            response = await send(path, json=body, headers=headers)
        return response.status_code, await response.get_json()

    async def create(self, **spec: Any) -> dict[str, Any]:
        status, body = await self.call("POST", "/deployments", {"name": "web", **spec})
        assert status == 201, body
        self.told.clear()
        return cast(dict[str, Any], body)

    def updates(self) -> list[DeploymentUpdated]:
        return [m for m in self.told if isinstance(m, DeploymentUpdated)]


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with open_repo(str(tmp_path / "knit.db")) as repo, open_actor_system("test") as system:
        told: list[object] = []
        directory = await system.spawn(lambda: Recorder(told), name="directory")
        ctx = ServerContext(
            repo=repo,
            bus=cast(Bus, None),  # nothing here publishes
            secrets=SecretBox.generate(),
            trust=cast(BusTrust, None),
            node_ttl=10.0,
            restart_grace=0.0,
            max_replicas=MAX_REPLICAS,
        )
        access = TokenKeeper(repo.store)
        plane = ServerPlane(ctx, access, SoleLeader("test"), BridgeStats())
        plane.term = LeaderTerm(ctx, system, directory, directory, plane.bridge)
        api = Api(create_app(plane).test_client(), repo, ctx, told)
        for role in Role:
            made = await access.create_token(TokenSpec(name=role.value, role=role))
            api.tokens[role.value] = made["token"]
        yield api


async def test_a_changed_spec_is_a_new_version_told_to_the_actor(api: Api) -> None:
    created = await api.create(image="web:1", replicas=2)
    assert created["version"] == 1 and created["rollout"] is None
    assert created["update"] == UpdatePolicy().model_dump(mode="json")
    assert created["health_check"] is None
    spec = {
        "name": "web",
        "image": "web:2",
        "replicas": 2,
        "health_check": {"command": ["CMD", "true"]},
        "update": {"order": "start_first", "max_parallel": 2},
    }
    status, body = await api.call("PUT", f"/deployments/{created['id']}", spec)
    assert status == 200, body
    assert (body["image"], body["version"], body["replicas"]) == ("web:2", 2, 2)
    assert body["update"]["order"] == "start_first" and body["update"]["healthy_deadline"] == 300
    assert body["health_check"]["command"] == ["CMD", "true"]
    assert body["health_check"]["interval"] == 10
    (told,) = api.updates()
    assert told.deployment_id == created["id"] and told.record.version == 2
    assert told.record.image == "web:2"
    status, listed = await api.call("GET", f"/deployments/{created['id']}/versions", role="read")
    assert status == 200
    assert [(v["version"], v["stable"]) for v in listed] == [(2, False), (1, False)]
    assert listed[0]["spec"]["image"] == "web:2" and listed[1]["spec"]["image"] == "web:1"
    assert listed[0]["created_at"].endswith("Z")
    assert set(listed[0]) == {"version", "spec", "created_at", "stable"}
    status, shown = await api.call("GET", f"/deployments/{created['id']}", role="read")
    assert status == 200 and shown["version"] == 2


async def test_an_identical_spec_changes_and_tells_nothing(api: Api) -> None:
    created = await api.create(image="web:1", secret_env={"TOKEN": "s3cret"}, env={"A": "1"})
    same = {"name": "web", "image": "web:1", "env": {"A": "1"}, "secret_env": {"TOKEN": "s3cret"}}
    status, body = await api.call("PUT", f"/deployments/{created['id']}", same)
    assert status == 200, body
    assert body["version"] == 1 and body["updated_at"] == created["updated_at"]
    assert api.told == []
    status, listed = await api.call("GET", f"/deployments/{created['id']}/versions")
    assert [v["version"] for v in listed] == [1]


async def test_a_new_secret_value_is_a_new_version_and_forgets_the_cached_one(api: Api) -> None:
    created = await api.create(image="web:1", secret_env={"TOKEN": "s3cret"})
    api.ctx._secret_envs[created["id"]] = "the old ciphertext"
    spec = {"name": "web", "image": "web:1", "secret_env": {"TOKEN": "n3w"}}
    status, body = await api.call("PUT", f"/deployments/{created['id']}", spec)
    assert status == 200 and body["version"] == 2 and body["secret_env"] == ["TOKEN"]
    assert created["id"] not in api.ctx._secret_envs
    stored = await api.repo.secret_env_of(created["id"])
    assert stored is not None
    assert json.loads(api.ctx.secrets.decrypt(stored, created["id"])) == {"TOKEN": "n3w"}
    status, listed = await api.call("GET", f"/deployments/{created['id']}/versions")
    text = json.dumps(listed)
    assert "s3cret" not in text and "n3w" not in text
    assert [v["spec"]["secret_env"] for v in listed] == [["TOKEN"], ["TOKEN"]]


async def test_only_replicas_in_a_put_is_a_scale(api: Api) -> None:
    created = await api.create(image="web:1")
    status, body = await api.call(
        "PUT", f"/deployments/{created['id']}", {"name": "web", "image": "web:1", "replicas": 4}
    )
    assert status == 200 and (body["replicas"], body["version"]) == (4, 1)
    (told,) = api.updates()
    assert told.record.replicas == 4


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"name": "other", "image": "web:1"}, "name"),
        ({"name": "web"}, "image"),
        ({"name": "web", "image": "web:1", "replicas": MAX_REPLICAS + 1}, "replicas"),
        (
            {"name": "web", "image": "web:1", "network_attachments": ["back"]},
            "network_attachments.0",
        ),
        (
            {"name": "web", "image": "web:1", "registry_credentials_id": "r"},
            "registry_credentials_id",
        ),
        (
            {
                "name": "web",
                "image": "web:1",
                "templates": [{"content": "{{", "destination": "/x"}],
            },
            "templates.0.content",
        ),
        ({"name": "web", "image": "web:1", "update": {"max_parallel": 0}}, "update.max_parallel"),
        (
            {
                "name": "web",
                "image": "web:1",
                "update": {"order": "start_first"},
                "ports": [{"container_port": 80, "host_port": 8080}],
            },
            "ports.0.host_port",
        ),
        ({"name": "web", "image": "web:1", "surprise": 1}, "surprise"),
    ],
)
async def test_a_put_is_validated_as_a_post(api: Api, spec: dict[str, Any], field: str) -> None:
    created = await api.create(image="web:1")
    status, body = await api.call("PUT", f"/deployments/{created['id']}", spec)
    assert status == 422, body
    assert field in [e["field"] for e in body["errors"]], body
    assert api.told == []
    assert (await api.repo.get_deployment_record(created["id"])).version == 1  # type: ignore[union-attr]


async def test_a_put_may_name_a_network_that_exists(api: Api) -> None:
    await api.repo.store.write(networks.create("front"))
    created = await api.create(image="web:1")
    spec = {"name": "web", "image": "web:1", "network_attachments": ["front"]}
    status, body = await api.call("PUT", f"/deployments/{created['id']}", spec)
    assert status == 200 and body["network_attachments"] == ["front"] and body["version"] == 2


async def test_scale_sets_replicas_without_a_version(api: Api) -> None:
    created = await api.create(image="web:1")
    status, body = await api.call("POST", f"/deployments/{created['id']}/scale", {"replicas": 5})
    assert status == 200 and (body["replicas"], body["version"]) == (5, 1)
    (told,) = api.updates()
    assert told.record.replicas == 5
    api.told.clear()
    status, body = await api.call("POST", f"/deployments/{created['id']}/scale", {"replicas": 5})
    assert status == 200 and api.told == []
    status, body = await api.call("POST", f"/deployments/{created['id']}/scale", {"replicas": 0})
    assert status == 200 and body["replicas"] == 0


@pytest.mark.parametrize(
    "body",
    [{}, {"replicas": -1}, {"replicas": "3"}, {"replicas": 1.5}, {"replicas": MAX_REPLICAS + 1}],
)
async def test_scale_refuses_bad_replicas(api: Api, body: dict[str, Any]) -> None:
    created = await api.create(image="web:1")
    status, answer = await api.call("POST", f"/deployments/{created['id']}/scale", body)
    assert status == 422, answer
    assert [e["field"] for e in answer["errors"]] == ["replicas"]
    assert api.told == []


async def test_rollback_goes_back_to_the_last_stable_version(api: Api) -> None:
    created = await api.create(image="web:1", replicas=2)
    deployment = f"/deployments/{created['id']}"
    status, body = await api.call("POST", f"{deployment}/rollback")
    assert status == 409 and "no stable version before version 1" in body["error"]
    await api.repo.store.write(versions.mark_stable(created["id"], 1))
    await api.call("PUT", deployment, {"name": "web", "image": "web:2", "replicas": 3})
    api.told.clear()
    status, body = await api.call("POST", f"{deployment}/rollback")  # no body at all
    assert status == 200, body
    assert (body["image"], body["version"], body["replicas"]) == ("web:1", 3, 3)
    (told,) = api.updates()
    assert told.record.version == 3
    status, listed = await api.call("GET", f"{deployment}/versions")
    assert [(v["version"], v["spec"]["image"]) for v in listed] == [
        (3, "web:1"),
        (2, "web:2"),
        (1, "web:1"),
    ]
    # By number, with an empty object or a version.
    status, body = await api.call("POST", f"{deployment}/rollback", {"version": 2})
    assert status == 200 and (body["image"], body["version"]) == ("web:2", 4)
    status, body = await api.call("POST", f"{deployment}/rollback", {})
    assert status == 200 and (body["image"], body["version"]) == ("web:1", 5)


async def test_rollback_refusals(api: Api) -> None:
    created = await api.create(image="web:1")
    deployment = f"/deployments/{created['id']}"
    status, body = await api.call("POST", f"{deployment}/rollback", {"version": 1})
    assert status == 409 and body["error"] == "deployment 'web' is already at version 1"
    status, body = await api.call("POST", f"{deployment}/rollback", {"version": 7})
    assert status == 404 and "'7'" in body["error"]
    for bad in ({"version": 0}, {"version": "1"}, {"version": 1, "other": True}):
        status, body = await api.call("POST", f"{deployment}/rollback", bad)
        assert status == 422, (bad, body)
    assert api.told == []


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("PUT", "", {"name": "web", "image": "web:2"}),
        ("POST", "/scale", {"replicas": 2}),
        ("POST", "/rollback", {"version": 1}),
        ("GET", "/versions", None),
    ],
)
async def test_unknown_and_deleted_deployments(
    api: Api, method: str, suffix: str, body: Any
) -> None:
    status, answer = await api.call(method, f"/deployments/nope{suffix}", body)
    assert status == 404 and answer["error"] == "deployment 'nope' not found"
    created = await api.create(image="web:1")
    await api.repo.mark_deployment_deleted(created["id"])
    status, answer = await api.call(method, f"/deployments/{created['id']}{suffix}", body)
    assert status == 409 and answer["error"] == "deployment 'web' is being deleted"
    assert api.told == []


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("PUT", "", {"name": "web", "image": "web:2"}),
        ("POST", "/scale", {"replicas": 2}),
        ("POST", "/rollback", {}),
    ],
)
async def test_a_read_token_may_not_change_a_deployment(
    api: Api, method: str, suffix: str, body: Any
) -> None:
    created = await api.create(image="web:1")
    status, answer = await api.call(
        method, f"/deployments/{created['id']}{suffix}", body, role="read"
    )
    assert status == 403 and "deploy" in answer["error"]


async def test_instances_show_their_version_health_and_restarts(api: Api) -> None:
    created = await api.create(image="web:1")
    inst = InstanceRecord.new(created["id"], 0, at=1.0)
    inst = dataclasses.replace(inst, version=2, health="healthy", restarts=1)
    await api.repo.store.write(instances.insert_many([inst]))
    status, shown = await api.call("GET", f"/deployments/{created['id']}", role="read")
    assert status == 200
    (one,) = shown["instances"]
    assert (one["version"], one["health"], one["restarts"]) == (2, "healthy", 1)
    status, listed = await api.call("GET", "/instances", role="read")
    assert [(i["version"], i["health"], i["restarts"]) for i in listed] == [(2, "healthy", 1)]
    record = await api.repo.store.read(deployments.get_deployment, created["id"])
    assert record.version == 1
