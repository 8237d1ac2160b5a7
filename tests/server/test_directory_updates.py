"""The DeploymentDirectory hands a stored change (``DeploymentUpdated``) to the deployment's
actor and answers the actor's rollout, or None when the actor is slow, gone or never existed."""

from __future__ import annotations

from typing import Any, cast

import anyio
import pytest

from actors import Actor, open_actor_system
from knit.server import directories
from knit.server.context import ServerContext
from knit.server.directories import DeploymentDirectory
from knit.server.messages import DeploymentUpdated
from knit.store import DeploymentRecord

pytestmark = [pytest.mark.unit, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


RECORD = DeploymentRecord(
    id="d1",
    name="web",
    image="web:2",
    registry_credentials_id=None,
    network_attachments=(),
    templates=(),
    env={},
    command=None,
    replicas=3,
    ports=(),
    node_selector={},
    lost_after=0.0,
    restart_policy={},
    pending_reason=None,
    created_at=1.0,
    updated_at=2.0,
    generation=2,
    deleted=False,
    version=2,
)


class Quiet(DeploymentDirectory):
    """The directory without its start (no store, no scheduler here)."""

    async def started(self) -> None:
        pass


class Taker(Actor[Any]):
    """A deployment's actor that takes its message (after ``delay`` seconds)."""

    def __init__(self, seen: list[object], delay: float = 0.0) -> None:
        self.seen = seen
        self.delay = delay

    async def handle(self, message: Any) -> object:
        await anyio.sleep(self.delay)
        self.seen.append(message)
        return {"version": 2, "state": "running"}


async def test_an_update_reaches_the_deployments_actor_and_answers_its_rollout(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(directories, "UPDATE_TIMEOUT", 0.2)
    async with open_actor_system("test") as system:
        made: list[Quiet] = []
        supervisor = await system.spawn_supervisor("deployments")

        def make() -> Quiet:
            made.append(Quiet(cast(ServerContext, None), supervisor))
            return made[-1]

        ref = await system.spawn(make, name="directory")
        seen: list[object] = []
        taker = await system.spawn(lambda: Taker(seen), name="d1")
        slow = await system.spawn(lambda: Taker(seen, delay=1.0), name="d2")
        gone = await system.spawn(lambda: Taker(seen), name="d3")
        await system.stop(gone)
        (directory,) = made
        for key, actor in (("d1", taker), ("d2", slow), ("d3", gone)):
            directory.actors[key] = actor

        update = DeploymentUpdated("d1", RECORD)
        assert await ref.ask(update, timeout=5) == {"version": 2, "state": "running"}
        assert seen == [update]
        with anyio.fail_after(5):  # the slow actor, the stopped one, an unknown deployment
            for deployment_id in ("d2", "d3", "nope"):
                assert await ref.ask(DeploymentUpdated(deployment_id, RECORD)) is None
        assert ref.alive
    late = [r.getMessage() for r in caplog.records if "did not take its update" in r.getMessage()]
    assert late == [
        "deployment d2 did not take its update in time: AskTimeout",
        "deployment d3 did not take its update in time: ActorStopped",
    ]
