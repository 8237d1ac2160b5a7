"""API tokens and join tokens in the store: hashes only, unique names, one use at a time."""

from __future__ import annotations

import anyio
import pytest

from knit.errors import Conflict, NotFound, Unauthorized
from knit.store import Store, tokens
from knit.store.records import JoinTokenRecord

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

HASH = "ab" * 32


def never_refuse(record: JoinTokenRecord, now: float) -> str | None:
    return None


def spent_or_revoked(record: JoinTokenRecord, now: float) -> str | None:
    if record.revoked:
        return "join token revoked"
    if now >= record.expires_at:
        return "join token expired"
    return "join token used up" if record.used >= record.uses else None


async def test_api_tokens_are_created_listed_and_deleted(store: Store) -> None:
    ci = await store.write(tokens.create_api_token("ci", "deploy", HASH, at=5.0))
    viewer = await store.write(
        tokens.create_api_token("viewer", "read", "cd" * 32, expires_at=99.0, at=6.0)
    )
    assert await store.read(tokens.list_api_tokens) == [ci, viewer]
    assert "token_hash" not in ci.to_json() and viewer.expires_at == 99.0
    await store.write(tokens.delete_api_token(ci.id))
    assert await store.read(tokens.list_api_tokens) == [viewer]
    with pytest.raises(NotFound):
        await store.write(tokens.delete_api_token(ci.id))


async def test_api_token_names_and_hashes_are_unique(store: Store) -> None:
    await store.write(tokens.create_api_token("ci", "deploy", HASH))
    with pytest.raises(Conflict, match="named 'ci' already exists"):
        await store.write(tokens.create_api_token("ci", "read", "cd" * 32))
    with pytest.raises(Conflict):
        await store.write(tokens.create_api_token("other", "read", HASH))


async def test_a_join_token_admits_as_many_as_its_uses_even_when_raced(store: Store) -> None:
    join = await store.write(tokens.create_join_token(HASH, uses=3, expires_at=1e12))
    admitted: list[str] = []
    refused: list[str] = []

    async def join_once() -> None:
        try:
            admitted.append(await store.write(tokens.consume_join_token(HASH, spent_or_revoked)))
        except Unauthorized as exc:
            refused.append(str(exc))

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(join_once)
    assert admitted == [join.id] * 3
    assert refused == ["join token used up"] * 7
    (listed,) = await store.read(tokens.list_join_tokens)
    assert (listed.uses, listed.used, listed.revoked) == (3, 3, False)


async def test_join_tokens_are_refused_unknown_expired_or_revoked(store: Store) -> None:
    with pytest.raises(Unauthorized, match="join token unknown"):
        await store.write(tokens.consume_join_token(HASH, never_refuse))
    old = await store.write(tokens.create_join_token(HASH, uses=5, expires_at=10.0))
    with pytest.raises(Unauthorized, match="join token expired"):
        await store.write(tokens.consume_join_token(HASH, spent_or_revoked, at=10.0))
    assert await store.write(tokens.consume_join_token(HASH, spent_or_revoked, at=9.0)) == old.id
    revoked = await store.write(tokens.revoke_join_token(old.id))
    assert revoked.revoked and revoked.used == 1
    with pytest.raises(Unauthorized, match="join token revoked"):
        await store.write(tokens.consume_join_token(HASH, spent_or_revoked, at=9.0))
    with pytest.raises(NotFound):
        await store.write(tokens.revoke_join_token("nope"))
