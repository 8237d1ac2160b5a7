"""The dashboard to an attacker: pages need a signed-in browser, the session cookie is
HttpOnly, SameSite=Strict and not the token, sign-in and sign-out refuse other sites, and a
revoked token or a sign-out ends the session at once.

Against a real ``knit server``.
"""

from __future__ import annotations

from collections.abc import Iterator
from http.cookies import SimpleCookie

import httpx
import pytest

from tests.security.api_support import api_server, make_token
from tests.support.knit import KnitCluster, unique_name

pytestmark = [pytest.mark.integration]

PAGES = ["/", "/ui/", "/ui/events", "/ui/nodes/nope", "/ui/deployments/nope", "/ui/nope"]


@pytest.fixture(scope="module")
def knit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KnitCluster]:
    with api_server(tmp_path_factory.mktemp("api-dashboard")) as cluster:
        yield cluster


def browser(knit: KnitCluster) -> httpx.Client:
    return httpx.Client(base_url=knit.server.api_url, timeout=15)


def sign_in(http: httpx.Client, knit: KnitCluster, token: str) -> httpx.Response:
    return http.post(
        "/ui/sign-in",
        data={"token": token, "next": "/ui/events"},
        headers={"Origin": knit.server.api_url},
    )


def test_pages_send_a_stranger_to_the_sign_in_page(knit: KnitCluster) -> None:
    with browser(knit) as http:
        for path in PAGES:
            response = http.get(path)
            assert response.status_code == 303, path
            assert response.headers["location"].startswith("/ui/sign-in?next="), path
        assert http.get("/ui/stream").status_code == 401
        assert http.get("/ui/?fragment=1").status_code == 401
        # A bearer token is not a dashboard credential.
        bearer = {"Authorization": f"Bearer {knit.server.admin_token}"}
        assert http.get("/ui/", headers=bearer).status_code == 303
        form = http.get("/ui/sign-in")
        assert form.status_code == 200 and 'name="token"' in form.text
        assert 'type="password"' in form.text
        assert http.get("/ui/static/dashboard.css").status_code == 200


def test_signing_in_sets_a_strict_http_only_cookie_that_is_not_the_token(
    knit: KnitCluster,
) -> None:
    token = make_token(knit, "read", unique_name("viewer"))
    with browser(knit) as http:
        refused = sign_in(http, knit, "knit_" + "B" * 43)
        assert refused.status_code == 401 and "set-cookie" not in refused.headers
        response = sign_in(http, knit, token)
        assert response.status_code == 303
        assert response.headers["location"] == "/ui/events"
        raw = response.headers["set-cookie"]
        cookie = SimpleCookie()
        cookie.load(raw)
        session = cookie["knit_session"]
        flags = raw.lower()
        assert "httponly" in flags and "samesite=strict" in flags
        assert session["path"] == "/" and "secure" not in flags  # plain HTTP here
        assert token not in raw and session.value and session.value != token
        assert int(session["max-age"]) > 0
        page = http.get("/ui/events")
        assert page.status_code == 200 and "Sign out" in page.text
        with http.stream("GET", "/ui/stream") as stream:
            assert stream.status_code == 200
        # The cookie opens the dashboard only, never the API.
        assert http.get("/nodes").status_code == 401
    assert token not in knit.log_text()


def test_revoking_the_token_ends_its_sessions_at_once(knit: KnitCluster) -> None:
    name = unique_name("revoked")
    token = make_token(knit, "read", name)
    with browser(knit) as http:
        assert sign_in(http, knit, token).status_code == 303
        assert http.get("/ui/").status_code == 200
        (made,) = [t for t in knit.api.ok(knit.api.get("/tokens")) if t["name"] == name]
        knit.api.ok(knit.api.delete(f"/tokens/{made['id']}"), 200)
        assert http.get("/ui/").status_code == 303
        assert http.get("/ui/stream").status_code == 401


def test_signing_out_ends_the_session_even_for_a_copied_cookie(knit: KnitCluster) -> None:
    with browser(knit) as http:
        assert sign_in(http, knit, knit.server.admin_token).status_code == 303
        copied = http.cookies["knit_session"]
        out = http.post("/ui/sign-out", headers={"Origin": knit.server.api_url})
        assert out.status_code == 303 and out.headers["location"] == "/ui/sign-in"
        assert "max-age=0" in out.headers["set-cookie"].lower()
    with browser(knit) as thief:
        thief.cookies.set("knit_session", copied)
        assert thief.get("/ui/").status_code == 303


def test_state_changing_requests_from_another_site_are_refused(knit: KnitCluster) -> None:
    with browser(knit) as http:
        for headers in (
            {"Origin": "http://evil.example"},
            {"Origin": "null"},
            {"Referer": "http://evil.example/page"},
            {},
        ):
            response = http.post(
                "/ui/sign-in", data={"token": knit.server.admin_token}, headers=headers
            )
            assert response.status_code == 403, headers
            assert "set-cookie" not in response.headers
        referer = {"Referer": f"{knit.server.api_url}/ui/sign-in"}
        assert sign_in(http, knit, knit.server.admin_token).status_code == 303
        evil = http.post("/ui/sign-out", headers={"Origin": "http://evil.example"})
        assert evil.status_code == 403
        assert http.get("/ui/").status_code == 200  # still signed in
        assert http.post("/ui/sign-out", headers=referer).status_code == 303
        assert http.get("/ui/").status_code == 303
