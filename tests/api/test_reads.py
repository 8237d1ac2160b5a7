"""The per-entity reads served ahead of Quart answer exactly as Quart's routes do, refusals
of the gate included."""

from __future__ import annotations

from typing import Any

import pytest

from knit.api.app import KnitApp, create_app
from knit.api.reads import ReadRoutes
from knit.errors import StoreError
from tests.dashboard.fakes import ADMIN_TOKEN, AUTH, READ_TOKEN, FakeControl

pytestmark = [pytest.mark.unit, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def cluster() -> FakeControl:
    return FakeControl(
        nodes=[{"id": "n1", "hostname": "h1", "status": "healthy"}],
        deployments=[{"id": "d1", "name": "web"}],
        instances=[{"instance_id": "i1", "deployment_id": "d1", "status": "running"}],
        events=[
            {"id": f"e{k}", "deployment_id": "d1" if k % 2 else "d2", "node_id": "n1"}
            for k in range(6)
        ],
    )


async def get(
    app: KnitApp, path: str, *, fast: bool, headers: dict[str, str] | None = None
) -> tuple[int, str, Any]:
    routes = app.reads
    app.reads = routes if fast else None
    try:
        response = await app.test_client().get(path, headers=AUTH if headers is None else headers)
    finally:
        app.reads = routes
    return response.status_code, response.content_type, await response.get_json()


@pytest.mark.parametrize(
    "path",
    [
        "/nodes/n1",
        "/nodes/ghost",
        "/nodes/n1/",
        "/deployments/d1",
        "/deployments/nope",
        "/events",
        "/events?deployment_id=d1&limit=2",
        "/events?deployment=d1&node=n1",
        "/events?node_id=n1&node_id=other",
        "/events?limit=abc",
        "/events?limit=0",
        "/events?limit=10001",
    ],
)
async def test_the_fast_path_answers_as_quart_does(path: str) -> None:
    app = create_app(cluster())
    fast = await get(app, path, fast=True)
    assert fast == await get(app, path, fast=False)
    assert fast[1] == "application/json"


@pytest.mark.parametrize(
    ("error", "status"), [(StoreError("database is locked"), 503), (RuntimeError("bug"), 500)]
)
async def test_failures_answer_as_quart_does(error: Exception, status: int) -> None:
    control = cluster()
    control.fail = error
    app = create_app(control)
    fast = await get(app, "/events", fast=True)
    assert fast == await get(app, "/events", fast=False)
    assert fast[0] == status


def scope(method: str, path: str, root_path: str = "") -> Any:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": root_path,
        "query_string": b"",
    }


def test_only_the_per_entity_gets_take_the_fast_path() -> None:
    routes = ReadRoutes(cluster())
    for path in ("/nodes/n1", "/deployments/d1", "/events"):
        assert routes.route(scope("GET", path)) is not None
    for method, path, root in [
        ("HEAD", "/nodes/n1", ""),
        ("POST", "/deployments/d1", ""),
        ("DELETE", "/deployments/d1", ""),
        ("GET", "/nodes", ""),
        ("GET", "/nodes/n1/drain", ""),
        ("GET", "/deployments//d1", ""),
        ("GET", "/events/", ""),
        ("GET", "/nodes/n1", "/api"),
    ]:
        assert routes.route(scope(method, path, root)) is None, (method, path, root)


@pytest.mark.parametrize("path", ["/nodes/n1", "/deployments/d1", "/events", "/nodes/ghost"])
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer knit_not-a-token"},
        {"Authorization": f"Basic {ADMIN_TOKEN}"},
        {"Authorization": "Bearer"},
        {"Cookie": f"knit_session={ADMIN_TOKEN}"},
    ],
)
async def test_the_fast_path_refuses_as_quart_does(path: str, headers: dict[str, str]) -> None:
    app = create_app(cluster())
    fast = await get(app, path, fast=True, headers=headers)
    assert fast == await get(app, path, fast=False, headers=headers)
    assert fast[0] == 401


async def test_a_read_token_reads_on_both_paths() -> None:
    app = create_app(cluster())
    headers = {"Authorization": f"Bearer {READ_TOKEN}"}
    fast = await get(app, "/nodes/n1", fast=True, headers=headers)
    assert fast == await get(app, "/nodes/n1", fast=False, headers=headers)
    assert fast[0] == 200
