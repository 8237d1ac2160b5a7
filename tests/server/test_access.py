"""The server's token keeper: the first admin token, tokens checked from memory and
revoked at once, join tokens spent one use at a time."""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from knit.domain.auth import Role
from knit.domain.tokens import JoinTokenSpec, TokenSpec
from knit.errors import Conflict, NotFound, Unauthorized
from knit.server.access import TokenKeeper
from knit.store import Store, open_store, tokens

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with open_store(tmp_path / "knit.db") as opened:
        yield opened


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_the_first_start_writes_an_admin_token_0600_and_only_then(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    path = tmp_path / "data" / "admin.token"
    keeper = TokenKeeper(store)
    assert await keeper.ensure_admin_token(path)
    text = path.read_text()
    assert text.endswith("\n") and text.count("\n") == 1
    secret = text.strip()
    assert secret.startswith("knit_") and len(secret) == 48
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    principal = keeper.authenticate(secret)
    assert principal is not None and principal.role is Role.ADMIN
    assert str(path) in caplog.text and secret not in caplog.text
    assert [p.name for p in path.parent.iterdir()] == ["admin.token"]  # no temporary left
    path.unlink()
    again = TokenKeeper(store)  # a restart: a token is stored, nothing is written
    assert not await again.ensure_admin_token(path)
    assert not path.exists() and again.authenticate(secret) == principal
    (stored,) = await store.read(tokens.list_api_tokens)
    assert stored.token_hash != secret and secret not in repr(stored)


async def test_tokens_are_made_listed_and_revoked_at_once(store: Store) -> None:
    clock = Clock()
    keeper = TokenKeeper(store, clock=clock)
    created = await keeper.create_token(TokenSpec(name="ci", role=Role.DEPLOY, ttl=60))
    assert set(created) == {"id", "name", "role", "token", "expires_at"}
    assert created["role"] == "deploy" and created["expires_at"].endswith("Z")
    secret = created["token"]
    assert keeper.authenticate(secret) is not None
    listed = await keeper.list_tokens()
    assert [t["name"] for t in listed] == ["ci"] and secret not in str(listed)
    assert listed[0]["expired"] is False
    with pytest.raises(Conflict):
        await keeper.create_token(TokenSpec(name="ci", role=Role.READ))
    clock.now += 60
    assert keeper.authenticate(secret) is None  # expired
    assert (await keeper.list_tokens())[0]["expired"] is True
    forever = await keeper.create_token(TokenSpec(name="ops", role=Role.ADMIN))
    assert forever["expires_at"] is None
    await keeper.delete_token(forever["id"])
    assert keeper.authenticate(forever["token"]) is None
    with pytest.raises(NotFound):
        await keeper.delete_token(forever["id"])
    reloaded = TokenKeeper(store, clock=clock)
    await reloaded.load()
    assert reloaded.authenticate(forever["token"]) is None


async def test_join_tokens_are_spent_and_refused_with_a_reason(store: Store) -> None:
    clock = Clock()
    keeper = TokenKeeper(store, clock=clock)
    created = await keeper.create_join_token(JoinTokenSpec(uses=2, ttl=60))
    assert set(created) == {"id", "token", "expires_at", "uses"}
    secret = created["token"]
    assert secret.startswith("knitjoin_") and len(secret) == 52
    assert await keeper.consume_join_token(secret) == created["id"]
    assert await keeper.consume_join_token(secret) == created["id"]
    with pytest.raises(Unauthorized, match=r"^join token used up$"):
        await keeper.consume_join_token(secret)
    for bad in ("knitjoin_nope", "knit_" + secret[9:], "", "knitjoin_" + "x" * 500):
        with pytest.raises(Unauthorized, match=r"^join token unknown$"):
            await keeper.consume_join_token(bad)
    other = await keeper.create_join_token(JoinTokenSpec())
    clock.now += 3600
    with pytest.raises(Unauthorized, match=r"^join token expired$"):
        await keeper.consume_join_token(other["token"])
    third = await keeper.create_join_token(JoinTokenSpec())
    revoked = await keeper.delete_join_token(third["id"])
    assert revoked["revoked"] is True
    with pytest.raises(Unauthorized, match=r"^join token revoked$"):
        await keeper.consume_join_token(third["token"])
    listed = await keeper.list_join_tokens()
    assert [(t["uses"], t["used"], t["revoked"]) for t in listed] == [
        (2, 2, False),
        (1, 0, False),
        (1, 0, True),
    ]
    assert not any(t["token"] in str(listed) for t in (created, other, third))
