"""Tests of knit.domain.auth and knit.domain.tokens: who may call what, the token book, the
join rule, and the token request models."""

from __future__ import annotations

import re

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from knit.domain.auth import (
    ADMIN,
    DEPLOY,
    PUBLIC,
    READ,
    Access,
    Guard,
    Principal,
    Role,
    TokenBook,
    bearer_token,
    hash_secret,
    new_secret,
    required_access,
)
from knit.domain.tokens import (
    DEFAULT_JOIN_TTL,
    JoinTokenSpec,
    TokenSpec,
    join_token_refusal,
)
from knit.domain.validation import errors_from_pydantic

pytestmark = pytest.mark.unit

SESSION = Access(Guard.SESSION, Role.READ)
SESSION_WRITE = Access(Guard.SESSION, Role.READ, browser_write=True)

ACCESS_TABLE: list[tuple[str, str, Access]] = [
    # no credential
    ("GET", "/healthz", PUBLIC),
    ("HEAD", "/healthz", PUBLIC),
    ("GET", "/ui/sign-in", PUBLIC),
    ("POST", "/ui/sign-in", Access(Guard.PUBLIC, browser_write=True)),
    ("GET", "/ui/static/dashboard.css", PUBLIC),
    # the join route checks its own token
    ("POST", "/join", Access(Guard.JOIN)),
    ("GET", "/join", READ),
    # every GET reads
    ("GET", "/nodes", READ),
    ("GET", "/nodes/n1", READ),
    ("GET", "/deployments", READ),
    ("GET", "/deployments/d1", READ),
    ("GET", "/instances", READ),
    ("GET", "/events", READ),
    ("GET", "/registries", READ),
    ("GET", "/networks", READ),
    ("GET", "/status", READ),
    ("GET", "/openapi.json", READ),
    ("HEAD", "/nodes", READ),
    ("OPTIONS", "/deployments", READ),
    ("GET", "/no/such/route", READ),
    ("GET", "/healthz/", READ),
    # ...but the inventory of tokens is the admin's
    ("GET", "/tokens", ADMIN),
    ("GET", "/join-tokens", ADMIN),
    # deployments are deploy's
    ("POST", "/deployments", DEPLOY),
    ("DELETE", "/deployments/d1", DEPLOY),
    ("post", "/deployments", DEPLOY),
    ("PUT", "/deployments/d1", DEPLOY),
    ("POST", "/deployments/d1/scale", DEPLOY),
    ("POST", "/deployments/d1/rollback", DEPLOY),
    ("GET", "/deployments/d1/versions", READ),
    # everything else is admin's
    ("POST", "/registries", ADMIN),
    ("DELETE", "/registries/r1", ADMIN),
    ("POST", "/networks", ADMIN),
    ("DELETE", "/networks/x", ADMIN),
    ("POST", "/nodes/n1/drain", ADMIN),
    ("POST", "/nodes/n1/eligible", ADMIN),
    ("DELETE", "/nodes/n1", ADMIN),
    ("POST", "/tokens", ADMIN),
    ("DELETE", "/tokens/t1", ADMIN),
    ("POST", "/join-tokens", ADMIN),
    ("DELETE", "/join-tokens/j1", ADMIN),
    ("PATCH", "/deployments/d1", ADMIN),
    ("PUT", "/deployments", ADMIN),
    ("POST", "/deployments/d1/versions", ADMIN),
    ("PUT", "/deployments/d1/scale", ADMIN),
    ("POST", "/no/such/route", ADMIN),
    # paths a router might read otherwise never get a cheaper rule
    ("POST", "/deployments/", ADMIN),
    ("POST", "//deployments", ADMIN),
    ("DELETE", "/deployments/d1/", ADMIN),
    ("POST", "/deployments/d1/scale/", ADMIN),
    ("POST", "/deployments//scale", ADMIN),
    ("POST", "/deployments/d1/x/rollback", ADMIN),
    ("DELETE", "/deployments/../registries/r1", ADMIN),
    ("POST", "/healthz", ADMIN),
    ("POST", "/ui-not-dashboard", ADMIN),
    # the dashboard: a signed-in browser
    ("GET", "/", SESSION),
    ("GET", "/ui", SESSION),
    ("GET", "/ui/", SESSION),
    ("GET", "/ui/deployments/d1", SESSION),
    ("GET", "/ui/stream", SESSION),
    ("GET", "/ui/static", SESSION),
    ("GET", "/ui/sign-in/", SESSION),
    ("POST", "/ui/sign-out", SESSION_WRITE),
    ("POST", "/ui/", SESSION_WRITE),
    ("POST", "/ui/static/dashboard.css", SESSION_WRITE),
    # the dashboard's actions need the role of the API route they stand for
    ("GET", "/ui/deployments/new", Access(Guard.SESSION, Role.DEPLOY)),
    ("POST", "/ui/deployments/new", Access(Guard.SESSION, Role.DEPLOY, browser_write=True)),
    ("POST", "/ui/deployments/d1/scale", Access(Guard.SESSION, Role.DEPLOY, browser_write=True)),
    ("GET", "/ui/deployments/d1/delete", Access(Guard.SESSION, Role.DEPLOY)),
    ("POST", "/ui/deployments/d1/delete", Access(Guard.SESSION, Role.DEPLOY, browser_write=True)),
    ("POST", "/ui/nodes/n1/drain", Access(Guard.SESSION, Role.ADMIN, browser_write=True)),
    ("POST", "/ui/nodes/n1/eligible", Access(Guard.SESSION, Role.ADMIN, browser_write=True)),
    ("GET", "/ui/deployments/d1/logs", SESSION),
    ("GET", "/ui/deployments/d1/scale", SESSION),
]


@pytest.mark.parametrize(("method", "path", "expected"), ACCESS_TABLE)
def test_each_route_needs_its_access(method: str, path: str, expected: Access) -> None:
    assert required_access(method, path) == expected


@given(st.sampled_from(["POST", "PUT", "PATCH", "DELETE"]), st.text(max_size=40))
def test_no_write_is_public(method: str, tail: str) -> None:
    access = required_access(method, "/" + tail)
    assert access.guard is not Guard.PUBLIC or access.browser_write
    if access.guard is Guard.BEARER:
        assert access.role in (Role.DEPLOY, Role.ADMIN)


@given(st.text(max_size=40))
def test_only_the_listed_paths_are_public(tail: str) -> None:
    path = "/" + tail
    if required_access("GET", path).guard is Guard.PUBLIC:
        assert path in ("/healthz", "/ui/sign-in") or path.startswith("/ui/static/")


def test_roles_are_ordered() -> None:
    assert [r.rank for r in (Role.READ, Role.DEPLOY, Role.ADMIN)] == [0, 1, 2]
    assert Role.ADMIN.allows(Role.DEPLOY) and Role.ADMIN.allows(Role.READ)
    assert Role.DEPLOY.allows(Role.READ) and not Role.DEPLOY.allows(Role.ADMIN)
    assert not Role.READ.allows(Role.DEPLOY)
    assert Role("deploy") is Role.DEPLOY


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer knit_abc", "knit_abc"),
        ("bearer knit_abc", "knit_abc"),
        ("BEARER   knit_abc  ", "knit_abc"),
        ("Bearer", None),
        ("Bearer ", None),
        ("Basic dXNlcjpwYXNz", None),
        ("knit_abc", None),
        ("Bearer two words", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_tokens_are_read_from_the_authorization_header(
    header: str | None, token: str | None
) -> None:
    assert bearer_token(header) == token


def test_secrets_have_the_contract_format_and_are_stored_as_sha256() -> None:
    api, join = new_secret(), new_secret("knitjoin_")
    assert re.fullmatch(r"knit_[A-Za-z0-9_-]{43}", api)
    assert re.fullmatch(r"knitjoin_[A-Za-z0-9_-]{43}", join)
    assert new_secret() != api
    assert re.fullmatch(r"[0-9a-f]{64}", hash_secret(api))
    assert hash_secret(api) == hash_secret(api) != hash_secret(join)
    assert hash_secret("\udcff")  # a lone surrogate from a garbled header does not crash


def test_the_book_finds_live_tokens_and_forgets_revoked_and_expired_ones() -> None:
    alice = Principal("t1", "alice", Role.ADMIN)
    bob = Principal("t2", "bob", Role.READ, expires_at=100.0)
    book = TokenBook([(hash_secret("knit_a"), alice), (hash_secret("knit_b"), bob)])
    assert book.authenticate("knit_a", now=50) == alice
    assert book.authenticate("knit_b", now=99.9) == bob
    assert book.principal("t2", now=50) == bob
    assert book.authenticate("knit_c", now=50) is None
    assert book.authenticate("knit_b", now=100) is None  # expired: refused, then dropped
    assert book.principal("t2", now=0) is None and len(book) == 1
    assert book.remove("t1") and not book.remove("t1")
    assert book.authenticate("knit_a", now=50) is None and book.principal("t1", now=50) is None


def test_adding_a_token_again_replaces_its_old_secret() -> None:
    book = TokenBook()
    book.add(hash_secret("knit_old"), Principal("t1", "ci", Role.DEPLOY))
    book.add(hash_secret("knit_new"), Principal("t1", "ci", Role.READ))
    assert book.authenticate("knit_old", now=0) is None
    found = book.authenticate("knit_new", now=0)
    assert found is not None and found.role is Role.READ and len(book) == 1


@pytest.mark.parametrize(
    ("revoked", "expires_at", "uses", "used", "reason"),
    [
        (False, 200.0, 1, 0, None),
        (False, 200.0, 3, 2, None),
        (False, 200.0, 1, 1, "join token used up"),
        (False, 200.0, 2, 5, "join token used up"),
        (False, 100.0, 1, 0, "join token expired"),
        (False, 99.0, 1, 1, "join token expired"),
        (True, 200.0, 1, 0, "join token revoked"),
        (True, 99.0, 1, 1, "join token revoked"),
    ],
)
def test_join_tokens_admit_until_used_up_expired_or_revoked(
    revoked: bool, expires_at: float, uses: int, used: int, reason: str | None
) -> None:
    refusal = join_token_refusal(
        revoked=revoked, expires_at=expires_at, uses=uses, used=used, now=100.0
    )
    assert refusal == reason


def test_token_specs_name_each_bad_field() -> None:
    spec = TokenSpec.model_validate({"name": "ci", "role": "deploy", "ttl": 60})
    assert spec.role is Role.DEPLOY and spec.ttl == 60
    assert TokenSpec.model_validate({"name": "ci", "role": "read"}).ttl is None
    bad = [
        ({"name": "CI!", "role": "read"}, "name"),
        ({"name": "ci", "role": "root"}, "role"),
        ({"name": "ci", "role": "read", "ttl": 0}, "ttl"),
        ({"name": "ci", "role": "read", "ttl": -5}, "ttl"),
        ({"name": "ci", "role": "read", "ttl": "60"}, "ttl"),
        ({"name": "ci", "role": "read", "ttl": float("inf")}, "ttl"),
        ({"name": "ci", "role": "read", "ttl": 1e12}, "ttl"),
        ({"role": "read"}, "name"),
        ({"name": "ci", "role": "read", "secret": "x"}, "secret"),
    ]
    for body, field in bad:
        with pytest.raises(pydantic.ValidationError) as caught:
            TokenSpec.model_validate(body)
        assert [e["field"] for e in errors_from_pydantic(caught.value)] == [field], body


def test_join_token_specs_default_to_one_use_for_an_hour() -> None:
    spec = JoinTokenSpec.model_validate({})
    assert (spec.ttl, spec.uses) == (DEFAULT_JOIN_TTL, 1) == (3600.0, 1)
    assert JoinTokenSpec.model_validate({"ttl": 60, "uses": 5}).uses == 5
    for body, field in [({"uses": 0}, "uses"), ({"uses": 1.5}, "uses"), ({"ttl": 0}, "ttl")]:
        with pytest.raises(pydantic.ValidationError) as caught:
            JoinTokenSpec.model_validate(body)
        assert [e["field"] for e in errors_from_pydantic(caught.value)] == [field], body
