"""An attacker who reaches the API: without a token, with an unknown, revoked or expired
one, or with a role too weak, every route refuses; tokens never show up in clear.

Against a real ``knit server`` (no agent needed: nothing here places a container).
"""

from __future__ import annotations

import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.security.api_support import (
    NOT_API_TOKEN_ROUTES,
    ROLES,
    ROUTES,
    Route,
    api_server,
    call,
    make_token,
)
from tests.support.knit import KnitCluster, unique_name

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def knit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KnitCluster]:
    with api_server(tmp_path_factory.mktemp("api-tokens")) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def tokens(knit: KnitCluster) -> dict[str, str]:
    """A token of each role."""
    made = {role: make_token(knit, role, f"role-{role}") for role in ("read", "deploy")}
    return {**made, "admin": knit.server.admin_token}


def refused_401(response_status: int, headers: dict[str, str], body: object) -> bool:
    return (
        response_status == 401
        and headers.get("www-authenticate") == "Bearer"
        and isinstance(body, dict)
        and bool(body.get("error"))
    )


@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_every_route_refuses_a_caller_without_a_valid_token(
    knit: KnitCluster, route: Route
) -> None:
    for authorization in (
        None,
        "Bearer",
        "Bearer knit_" + "A" * 43,
        "Bearer not-even-a-knit-token",
        f"Basic {knit.server.admin_token}",
        knit.server.admin_token,
    ):
        response = call(knit, route, None, authorization=authorization)
        assert refused_401(response.status_code, dict(response.headers), response.json()), (
            route,
            (authorization or "")[:12],
            response.status_code,
            response.text,
        )
    # A session cookie is not an API credential, even one holding a real token.
    cookie = call(knit, route, None, headers={"Cookie": f"knit_session={knit.server.admin_token}"})
    assert cookie.status_code == 401


@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_every_route_wants_its_role(
    knit: KnitCluster, tokens: dict[str, str], route: Route
) -> None:
    needed = ROLES.index(route.role)
    for rank, role in enumerate(ROLES):
        response = call(knit, route, tokens[role])
        if rank < needed:
            assert response.status_code == 403, (route, role, response.text)
            assert role in response.json()["error"]
        else:
            assert response.status_code not in (401, 403), (route, role, response.text)
            assert response.status_code < 500, (route, role, response.text)


def test_the_route_table_covers_every_route_of_the_openapi_document(knit: KnitCluster) -> None:
    document = knit.api.ok(knit.api.get("/openapi.json"), 200)
    table = {
        (r.method.lower(), re.sub(r"/nope$|/nope/", "/{id}/", r.path).rstrip("/")) for r in ROUTES
    }
    for path, item in document["paths"].items():
        for method in item:
            if method == "parameters" or (method, path) in NOT_API_TOKEN_ROUTES:
                continue
            assert (method, path) in table, f"{method.upper()} {path} is not in ROUTES"
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert document["paths"]["/healthz"]["get"]["security"] == []


def test_healthz_needs_nothing(knit: KnitCluster) -> None:
    response = call(knit, Route("GET", "/healthz", "none"), None)
    assert response.status_code == 200 and response.json() == {"ok": True}


def test_a_revoked_token_is_refused_at_once_on_every_path(knit: KnitCluster) -> None:
    secret = make_token(knit, "deploy", unique_name("revoked"))
    created = [t for t in knit.api.ok(knit.api.get("/tokens")) if t["name"].startswith("revoked")]
    fast, slow = Route("GET", "/nodes/nope", "read"), Route("GET", "/nodes", "read")
    assert call(knit, fast, secret).status_code == 404
    assert call(knit, slow, secret).status_code == 200
    for token in created:
        knit.api.ok(knit.api.delete(f"/tokens/{token['id']}"), 200)
    for route in (fast, slow, Route("POST", "/deployments", "deploy", {})):
        assert call(knit, route, secret).status_code == 401, route
    assert knit.api.delete(f"/tokens/{created[0]['id']}").status_code == 404
    assert secret not in str(knit.api.ok(knit.api.get("/tokens")))


def test_an_expired_token_is_refused(knit: KnitCluster) -> None:
    name = unique_name("short")
    secret = make_token(knit, "read", name, ttl=1.5)
    listed = {t["name"]: t for t in knit.api.ok(knit.api.get("/tokens"))}
    assert listed[name]["expires_at"] and listed[name]["expired"] is False
    assert call(knit, Route("GET", "/nodes", "read"), secret).status_code == 200
    time.sleep(1.6)
    for route in (Route("GET", "/nodes", "read"), Route("GET", "/events", "read")):
        assert call(knit, route, secret).status_code == 401, route
    listed = {t["name"]: t for t in knit.api.ok(knit.api.get("/tokens"))}
    assert listed[name]["expired"] is True


def test_token_requests_are_validated_field_by_field(knit: KnitCluster) -> None:
    bad = knit.api.ok(
        knit.api.post("/tokens", {"name": "Bad Name", "role": "root", "ttl": -1}), 422
    )
    assert {e["field"] for e in bad["errors"]} == {"name", "role", "ttl"}
    name = unique_name("dup")
    make_token(knit, "read", name)
    assert knit.api.post("/tokens", {"name": name, "role": "read"}).status_code == 409
    join = knit.api.ok(knit.api.post("/join-tokens", {"uses": 0, "ttl": "x"}), 422)
    assert {e["field"] for e in join["errors"]} == {"uses", "ttl"}


def test_join_tokens_are_made_listed_and_revoked_without_showing_secrets(
    knit: KnitCluster,
) -> None:
    created = knit.api.ok(knit.api.post("/join-tokens", {"ttl": 600, "uses": 3}), 201)
    assert set(created) >= {"id", "token", "expires_at", "uses"} and created["uses"] == 3
    assert re.fullmatch(r"knitjoin_[A-Za-z0-9_-]{43}", created["token"])
    default = knit.api.ok(knit.api.post("/join-tokens", {}), 201)
    assert default["uses"] == 1
    listed = knit.api.ok(knit.api.get("/join-tokens"))
    assert created["token"] not in str(listed) and default["token"] not in str(listed)
    mine = {t["id"]: t for t in listed}[created["id"]]
    assert (mine["uses"], mine["used"], mine["revoked"]) == (3, 0, False)
    revoked = knit.api.ok(knit.api.delete(f"/join-tokens/{created['id']}"), 200)
    assert revoked["revoked"] is True
    assert knit.api.delete("/join-tokens/nope").status_code == 404


def test_the_first_admin_token_is_written_alone_0600_and_never_logged(
    knit: KnitCluster, tokens: dict[str, str]
) -> None:
    path = knit.server.token_file
    assert path == knit.server.data_dir / "admin.token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert re.fullmatch(r"knit_[A-Za-z0-9_-]{43}\n", text), text
    listed = knit.api.ok(knit.api.get("/tokens"))
    admin = [t for t in listed if t["name"] == "admin"]
    assert admin and admin[0]["role"] == "admin" and admin[0]["expires_at"] is None
    assert str(path) in knit.log_text()


def test_no_token_secret_appears_in_logs_the_database_events_or_answers(
    knit: KnitCluster, tokens: dict[str, str]
) -> None:
    join = knit.api.ok(knit.api.post("/join-tokens", {}), 201)["token"]
    secrets = [*tokens.values(), join]
    for token in secrets:  # use them all, and fail with them, so they go through the server
        call(knit, Route("GET", "/nodes", "read"), token)
        call(knit, Route("POST", "/no/such/route", "admin", {}), token)
    answers = "".join(
        knit.api.get(path).text
        for path in ("/tokens", "/join-tokens", "/events?limit=1000", "/status", "/nodes")
    )
    logs = knit.log_text()
    for token in secrets:
        assert token not in logs
        assert token not in answers
        found = knit.files_containing(token)
        expected = [knit.server.token_file] if token == tokens["admin"] else []
        assert found == expected, (token[:9], found)


def test_a_restart_keeps_the_tokens_and_writes_no_new_admin_token(
    tmp_path: Path,
) -> None:
    with api_server(tmp_path) as cluster:
        first = cluster.server.admin_token
        ci = make_token(cluster, "deploy", "ci")
        before = cluster.server.token_file.stat().st_mtime_ns
        cluster.server.stop()
        cluster.server.start_and_wait()
        assert cluster.server.token_file.stat().st_mtime_ns == before
        assert cluster.server.admin_token == first
        for token in (first, ci):
            assert call(cluster, Route("GET", "/nodes", "read"), token).status_code == 200
