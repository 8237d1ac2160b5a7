"""Request bodies an attacker may send: a cross-site ``text/plain`` POST (the forgery a web
page can make), forms, bodies over 1 MiB, malformed and deeply nested JSON. Each is
refused with its 4xx and a JSON error, nothing is stored, and the server stays healthy.

Against a real ``knit server``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.security.api_support import ROUTES, Route, api_server, call
from tests.support.knit import KnitCluster, unique_name

pytestmark = [pytest.mark.integration]

WRITES = [r for r in ROUTES if r.method in ("POST", "DELETE") and "no/such" not in r.path]
BODY_WRITES = [r for r in WRITES if r.body is not None]
MIB = 1 << 20


@pytest.fixture(scope="module")
def knit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KnitCluster]:
    with api_server(tmp_path_factory.mktemp("api-hygiene")) as cluster:
        yield cluster


def raw(
    knit: KnitCluster, method: str, path: str, content: bytes, headers: dict[str, str]
) -> httpx.Response:
    with httpx.Client(base_url=knit.server.api_url, timeout=30) as http:
        return http.request(method, path, content=content, headers=headers)


def admin(knit: KnitCluster, content_type: str | None = "application/json") -> dict[str, str]:
    headers = {"Authorization": f"Bearer {knit.server.admin_token}"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    return headers


def names(knit: KnitCluster) -> set[str]:
    return {d["name"] for d in knit.api.ok(knit.api.get("/deployments"), 200)}


def test_a_cross_site_text_plain_post_is_refused_and_creates_nothing(knit: KnitCluster) -> None:
    name = unique_name("csrf")
    body = json.dumps({"name": name, "image": "busybox:1"}).encode()
    # What a foreign web page's <form enctype="text/plain"> or fetch() without preflight
    # sends: no token (the browser has none to add), and with one for good measure.
    page = {"Origin": "http://evil.example", "Referer": "http://evil.example/"}
    for headers in (
        {"Content-Type": "text/plain", **page},
        {"Content-Type": "text/plain;charset=UTF-8", **page},
        {**admin(knit, "text/plain"), **page},
        {**admin(knit, "application/x-www-form-urlencoded"), **page},
        {**admin(knit, "multipart/form-data; boundary=xyz"), **page},
        admin(knit, None),  # a body without any Content-Type
    ):
        response = raw(knit, "POST", "/deployments", body, headers)
        assert response.status_code == 415, (headers, response.text)
        assert "application/json" in response.json()["error"]
    assert name not in names(knit)
    assert not [e for e in knit.api.ok(knit.api.get("/events?limit=1000")) if name in str(e)]


@pytest.mark.parametrize("route", BODY_WRITES, ids=str)
def test_every_write_wants_json(knit: KnitCluster, route: Route) -> None:
    response = raw(knit, route.method, route.path, b"{}", admin(knit, "text/plain"))
    assert response.status_code == 415, response.text


@pytest.mark.parametrize("route", [r for r in WRITES if r.body is None], ids=str)
def test_writes_without_a_body_need_no_content_type(knit: KnitCluster, route: Route) -> None:
    response = call(knit, route, knit.server.admin_token)
    assert response.status_code not in (400, 413, 415), response.text


@pytest.mark.parametrize("route", BODY_WRITES, ids=str)
def test_bodies_over_one_mebibyte_get_413(knit: KnitCluster, route: Route) -> None:
    big = b'{"pad": "' + b"x" * MIB + b'"}'
    announced = raw(knit, route.method, route.path, big, admin(knit))
    assert announced.status_code == 413, announced.text
    assert announced.json()["error"]

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(big), 64 * 1024):
            yield big[start : start + 64 * 1024]

    with httpx.Client(base_url=knit.server.api_url, timeout=30) as http:
        streamed = http.request(route.method, route.path, content=chunks(), headers=admin(knit))
    assert streamed.status_code == 413, streamed.text
    assert streamed.json()["error"]


@pytest.mark.parametrize("route", BODY_WRITES, ids=str)
def test_malformed_and_deeply_nested_json_get_400_never_500(
    knit: KnitCluster, route: Route
) -> None:
    for body in (
        b"[" * 100_000,
        b'{"a":' * 100_000,
        b'{"name": "x", "env": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        b"{",
        b"\xff\xfe",
        b"NaN",
        b"[1, 2]",
    ):
        response = raw(knit, route.method, route.path, body, admin(knit))
        assert response.status_code == 400, (route, body[:20], response.text)
        assert response.json()["error"]
    assert "Traceback" not in knit.log_text()


def test_the_server_is_still_healthy_and_stored_nothing(knit: KnitCluster) -> None:
    assert call(knit, Route("GET", "/healthz", "none"), None).status_code == 200
    assert knit.api.ok(knit.api.get("/deployments"), 200) == []
    assert knit.api.ok(knit.api.get("/networks"), 200) == []
    assert knit.api.ok(knit.api.get("/registries"), 200) == []
    assert [t["name"] for t in knit.api.ok(knit.api.get("/tokens"), 200)] == ["admin"]


def test_the_dashboard_sign_in_refuses_oversize_and_foreign_bodies(knit: KnitCluster) -> None:
    origin = {"Origin": knit.server.api_url}
    form = "application/x-www-form-urlencoded"
    big = b"token=" + b"x" * (MIB + 10)
    response = raw(knit, "POST", "/ui/sign-in", big, {**origin, "Content-Type": form})
    assert response.status_code == 413
    for content_type in ("text/plain", "application/json"):
        body = b'{"token": "x"}'
        refused = raw(knit, "POST", "/ui/sign-in", body, {**origin, "Content-Type": content_type})
        assert refused.status_code == 415, content_type
    garbage = raw(knit, "POST", "/ui/sign-in", b"\xff%%%&&==", {**origin, "Content-Type": form})
    assert garbage.status_code == 401  # read as a form without a valid token
