"""The gate in front of every route (knit.api.gate) and the dashboard's session cookies
(knit.api.sessions), over a fake control plane."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest

from knit.api.app import create_app
from knit.api.gate import Gate, body_problem, media_type, same_origin
from knit.api.sessions import (
    COOKIE_NAME,
    Sessions,
    clear_cookie_header,
    cookie_value,
    set_cookie_header,
)
from knit.dashboard.signin import safe_next
from knit.domain.auth import Guard, Principal, Role, required_access
from tests.dashboard.fakes import (
    ADMIN_TOKEN,
    AUTH,
    ORIGIN,
    READ_TOKEN,
    SESSIONS,
    FakeControl,
    session_headers,
)

pytestmark = [pytest.mark.unit, pytest.mark.anyio]

ADMIN = Principal("t-admin", "admin", Role.ADMIN)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def scope(
    method: str = "POST", path: str = "/deployments", headers: dict[str, str] | None = None
) -> Any:
    return {
        "type": "http",
        "method": method,
        "scheme": "http",
        "path": path,
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }


async def test_every_route_of_the_app_needs_a_credential() -> None:
    app = create_app(FakeControl())
    public = {("GET", "/healthz"), ("GET", "/ui/sign-in"), ("POST", "/ui/sign-in")}
    seen = set()
    for rule in app.url_map.iter_rules():
        path = rule.rule.replace("<path:filename>", "x.css")
        path = path.replace("<path:rest>", "x").replace("<", "").replace(">", "")
        for method in rule.methods or ():
            access = required_access(method, path)
            if method in ("HEAD", "OPTIONS"):
                continue
            seen.add((method, rule.rule))
            if (method, path) in public or rule.rule == "/ui/static/<path:filename>":
                continue
            if (method, path) == ("POST", "/join"):  # a join token, checked by the route
                assert access.guard is Guard.JOIN
                continue
            assert access.guard in (Guard.BEARER, Guard.SESSION), (method, rule.rule)
    assert ("POST", "/tokens") in seen and ("DELETE", "/join-tokens/<token_id>") in seen
    assert ("POST", "/join") in seen and ("DELETE", "/nodes/<node_id>") in seen


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/nodes"), ("GET", "/status"), ("POST", "/deployments"), ("GET", "/nope")],
)
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer knit_nope"}, {"Cookie": f"{COOKIE_NAME}=x.1.y.z"}],
)
async def test_without_a_valid_token_the_api_answers_401(
    method: str, path: str, headers: dict[str, str]
) -> None:
    response = (
        await create_app(FakeControl())
        .test_client()
        .open(path, method=method, headers=headers, json={} if method == "POST" else None)
    )
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert (await response.get_json())["error"]


async def test_a_weaker_role_gets_403_and_a_strong_enough_one_passes() -> None:
    client = create_app(FakeControl()).test_client()
    reader = {"Authorization": f"Bearer {READ_TOKEN}"}
    refused = await client.post("/networks", json={"name": "n"}, headers=reader)
    assert refused.status_code == 403
    assert "read" in (await refused.get_json())["error"]
    assert (await client.get("/tokens", headers=reader)).status_code == 403
    assert (await client.get("/networks", headers=reader)).status_code == 200
    assert (await client.get("/tokens", headers=AUTH)).status_code == 200
    assert (await client.get("/nope", headers=AUTH)).status_code == 404


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"content-type": "text/plain", "content-length": "2"}, 415),
        ({"content-type": "application/x-www-form-urlencoded", "content-length": "3"}, 415),
        ({"content-type": "multipart/form-data; boundary=x", "content-length": "3"}, 415),
        ({"content-length": "2"}, 415),
        ({"transfer-encoding": "chunked"}, 415),
        ({"content-type": "text/plain"}, 415),
        ({"content-type": "application/json", "content-length": str((1 << 20) + 1)}, 413),
        ({"content-type": "application/json", "content-length": "x"}, 400),
        ({"content-type": "application/json", "content-length": str(1 << 20)}, None),
        ({"content-type": "Application/JSON; charset=utf-8", "content-length": "2"}, None),
        ({}, None),
        ({"content-length": "0"}, None),
    ],
)
def test_writes_take_json_of_at_most_one_mebibyte(
    headers: dict[str, str], status: int | None
) -> None:
    refusal = body_problem(scope(headers=headers), frozenset({"application/json"}))
    assert (refusal.status if refusal else None) == status
    if refusal is not None:
        assert json.loads(refusal.body)["error"]


def test_media_types_drop_parameters() -> None:
    assert media_type("application/json; charset=utf-8") == "application/json"
    assert media_type(" TEXT/plain ") == "text/plain"
    assert media_type(None) is None and media_type("") is None


@pytest.mark.parametrize(
    ("headers", "same"),
    [
        ({"host": "knit:8080", "origin": "http://knit:8080"}, True),
        ({"host": "knit:8080", "origin": "HTTP://KNIT:8080"}, True),
        ({"host": "knit:8080", "origin": "http://evil.example"}, False),
        ({"host": "knit:8080", "origin": "https://knit:8080"}, False),
        ({"host": "knit:8080", "origin": "http://knit:8081"}, False),
        ({"host": "knit:8080", "origin": "null"}, False),
        ({"host": "knit:8080", "referer": "http://knit:8080/ui/sign-in"}, True),
        ({"host": "knit:8080", "referer": "http://evil.example/knit:8080/"}, False),
        ({"host": "knit:8080"}, False),
        ({"origin": "http://knit:8080"}, False),
    ],
)
def test_browser_writes_must_come_from_this_server(headers: dict[str, str], same: bool) -> None:
    assert same_origin(scope(headers=headers)) is same


async def test_a_cross_site_text_plain_post_is_refused_before_anything_runs() -> None:
    control = FakeControl()
    client = create_app(control).test_client()
    body = json.dumps({"name": "evil", "image": "evil:1"})
    for headers in ({"Content-Type": "text/plain"}, {"Content-Type": "text/plain", **AUTH}):
        response = await client.post("/deployments", data=body, headers=headers)
        assert response.status_code == 415  # FakeControl.create_deployment would raise


async def test_deeply_nested_or_malformed_json_is_a_400() -> None:
    client = create_app(FakeControl()).test_client()
    for body in ("[" * 100_000, '{"name": ', "\xff", '{"a": ' * 50_000 + "1" + "}" * 50_000):
        for path in ("/deployments", "/tokens", "/join-tokens", "/networks", "/registries"):
            response = await client.post(
                path, data=body, headers={"Content-Type": "application/json", **AUTH}
            )
            assert response.status_code == 400, (path, body[:10], response.status_code)
            assert (await response.get_json())["error"].startswith("malformed JSON")


async def test_dashboard_pages_need_a_session_and_browser_writes_an_origin() -> None:
    client = create_app(FakeControl(), sessions=SESSIONS).test_client()
    page = await client.get("/ui/nodes/n1?page=2")
    assert page.status_code == 303
    assert page.headers["Location"] == "/ui/sign-in?next=/ui/nodes/n1%3Fpage%3D2"
    assert (await client.get("/ui/stream")).status_code == 401
    assert (await client.get("/ui/?fragment=1")).status_code == 401
    assert (await client.get("/ui/", headers=AUTH)).status_code == 303  # never a bearer token
    assert (await client.get("/ui/", headers=session_headers())).status_code == 200
    assert (await client.get("/nodes", headers=session_headers())).status_code == 401
    forged = {"Cookie": f"{COOKIE_NAME}=t-admin.9999999999.nonce.forged"}
    refused = await client.get("/ui/", headers=forged)
    assert refused.status_code == 303 and "Max-Age=0" in refused.headers["Set-Cookie"]
    form = {"token": ADMIN_TOKEN}
    for headers in ({}, {"Origin": "http://evil.example"}, {"Origin": "null"}):
        response = await client.post("/ui/sign-in", form=form, headers=headers)
        assert response.status_code == 403, headers
    signed_in = await client.post("/ui/sign-in", form=form, headers=ORIGIN)
    assert signed_in.status_code == 303
    assert "Set-Cookie" in signed_in.headers and ADMIN_TOKEN not in signed_in.headers["Set-Cookie"]


async def test_a_sign_in_with_an_unknown_token_shows_the_form_again() -> None:
    client = create_app(FakeControl()).test_client()
    response = await client.post("/ui/sign-in", form={"token": "knit_nope"}, headers=ORIGIN)
    assert response.status_code == 401
    assert "Set-Cookie" not in response.headers
    assert "unknown" in await response.get_data(as_text=True)
    json_body = await client.post("/ui/sign-in", json={"token": ADMIN_TOKEN}, headers=ORIGIN)
    assert json_body.status_code == 415


async def test_revoking_the_token_ends_its_sessions_and_signing_out_ends_one() -> None:
    control = FakeControl()
    client = create_app(control, sessions=SESSIONS).test_client()
    mine, other = session_headers(), session_headers()
    assert (await client.get("/ui/", headers=mine)).status_code == 200
    out = await client.post("/ui/sign-out", headers={**mine, **ORIGIN})
    assert out.status_code == 303 and "Max-Age=0" in out.headers["Set-Cookie"]
    assert (await client.get("/ui/", headers=mine)).status_code == 303
    assert (await client.get("/ui/", headers=other)).status_code == 200
    del control.tokens[ADMIN_TOKEN]
    assert (await client.get("/ui/", headers=other)).status_code == 303


def test_session_cookies_are_signed_and_expire() -> None:
    sessions = Sessions(b"k" * 32, ttl=100)
    value, max_age = sessions.issue(ADMIN, now=1000.0)
    assert max_age == 100 and ADMIN.token_id in value
    found = sessions.verify(value, now=1050.0)
    assert found is not None and found.token_id == ADMIN.token_id
    assert sessions.verify(value, now=1100.0) is None
    assert Sessions(b"x" * 32).verify(value, now=1050.0) is None  # another server's key
    token_id, expires, nonce, mac = value.split(".")
    assert sessions.verify(f"t-other.{expires}.{nonce}.{mac}", now=1050.0) is None
    assert sessions.verify(f"{token_id}.9999999999.{nonce}.{mac}", now=1050.0) is None
    for junk in ("", "a.b.c", "a.b.c.d.e", "ü.1.2.3", f"{token_id}.x.{nonce}.{mac}"):
        assert sessions.verify(junk, now=1050.0) is None
    short = Principal("t9", "ci", Role.READ, expires_at=1010.0)
    assert sessions.issue(short, now=1000.0)[1] == 10  # never outlives its token


def test_cookies_are_parsed_and_set_with_their_flags() -> None:
    headers = [(b"cookie", b"a=1; knit_session=v.1.n.m; b=2")]
    assert cookie_value(headers) == "v.1.n.m" and cookie_value([]) is None
    plain = set_cookie_header("v", 60, secure=False)
    assert plain == "knit_session=v; Max-Age=60; Path=/; HttpOnly; SameSite=Strict"
    assert set_cookie_header("v", 60, secure=True).endswith("; Secure")
    assert "Max-Age=0" in clear_cookie_header(secure=False)


@pytest.mark.parametrize(
    ("target", "safe"),
    [
        ("/ui/nodes/n1?page=2", "/ui/nodes/n1?page=2"),
        (None, "/ui/"),
        ("https://evil.example/", "/ui/"),
        ("//evil.example/ui/", "/ui/"),
        ("/ui/\\evil", "/ui/"),
        ("/ui/sign-out", "/ui/"),
        ("/nodes", "/ui/"),
        ("/ui/\r\nSet-Cookie: x", "/ui/"),
    ],
)
def test_sign_in_only_returns_to_dashboard_pages(target: str | None, safe: str) -> None:
    assert safe_next(target) == safe


def test_the_gate_leaves_the_principal_in_the_scope() -> None:
    gate = Gate(FakeControl(), SESSIONS)
    request = scope("GET", "/nodes", {"authorization": f"Bearer {ADMIN_TOKEN}"})
    assert gate.check(request) is None
    assert request["knit.principal"].role is Role.ADMIN


async def test_websocket_handshakes_are_refused() -> None:
    app = create_app(FakeControl())
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    ws_scope = {**scope("GET", "/ui/stream", {"authorization": f"Bearer {ADMIN_TOKEN}"})}
    ws_scope["type"] = "websocket"
    await app.asgi_app(cast(Any, ws_scope), cast(Any, receive), cast(Any, send))
    assert [m["type"] for m in sent] == ["websocket.close"]
