"""API tokens and join tokens: stored as the SHA-256 of their secrets, never the secrets.

Layer: store (adapter). Imports sqlalchemy, ``knit.errors`` and ``knit.store``'s own modules.

The caller makes the secret and hashes it; the store sees only the hash. Spending a use of
a join token (:func:`consume_join_token`) is one op of the single writer: the check and
the increment happen in one transaction, so two agents racing for the last use cannot
both win. Whether a join token may admit one more node is the caller's rule, passed in
(``knit.domain.tokens.join_token_refusal``).
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import RowMapping, bindparam, delete, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from knit.errors import Conflict, NotFound, Unauthorized
from knit.store.models import ApiToken, JoinToken
from knit.store.ops import Op
from knit.store.reads import Read
from knit.store.records import ApiTokenRecord, JoinTokenRecord, new_id
from knit.store.sql import now

JoinRule = Callable[[JoinTokenRecord, float], str | None]
"""Why a join token cannot admit one more node at a time, or None if it can."""


def _api_record(row: RowMapping) -> ApiTokenRecord:
    return ApiTokenRecord(
        id=row["id"],
        name=row["name"],
        role=row["role"],
        token_hash=row["token_hash"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
    )


def _join_record(row: RowMapping) -> JoinTokenRecord:
    return JoinTokenRecord(
        id=row["id"],
        token_hash=row["token_hash"],
        uses=row["uses"],
        used=row["used"],
        expires_at=row["expires_at"],
        created_at=row["created_at"],
        revoked=bool(row["revoked"]),
    )


# --- API tokens ----------------------------------------------------------------------------


@Read
def list_api_tokens(conn: Connection) -> list[ApiTokenRecord]:
    """Every API token, oldest first."""
    stmt = select(ApiToken).order_by(ApiToken.created_at, ApiToken.id)
    return [_api_record(row) for row in conn.execute(stmt).mappings()]


def create_api_token(
    name: str,
    role: str,
    token_hash: str,
    *,
    expires_at: float | None = None,
    token_id: str | None = None,
    at: float | None = None,
) -> Op[ApiTokenRecord]:
    """Store a new API token; the op returns it.

    Raises (from the op):
        Conflict: a token is already named ``name``.
    """
    record = ApiTokenRecord(
        id=token_id or new_id(),
        name=name,
        role=role,
        token_hash=token_hash,
        created_at=now() if at is None else at,
        expires_at=expires_at,
    )

    async def op(conn: AsyncConnection) -> ApiTokenRecord:
        taken = await conn.execute(select(ApiToken.id).where(ApiToken.name == name))
        if taken.first() is not None:
            raise Conflict(f"a token named {name!r} already exists")
        await conn.execute(
            insert(ApiToken).values(
                id=record.id,
                name=record.name,
                role=record.role,
                token_hash=record.token_hash,
                created_at=record.created_at,
                expires_at=record.expires_at,
            )
        )
        return record

    return op


def delete_api_token(token_id: str) -> Op[None]:
    """Remove an API token (revoke it).

    Raises (from the op):
        NotFound: no token has this id.
    """

    async def op(conn: AsyncConnection) -> None:
        result = await conn.execute(delete(ApiToken).where(ApiToken.id == token_id))
        if not result.rowcount:
            raise NotFound("token", token_id)

    return op


# --- join tokens ---------------------------------------------------------------------------


@Read
def list_join_tokens(conn: Connection) -> list[JoinTokenRecord]:
    """Every join token (revoked and spent ones too), oldest first."""
    stmt = select(JoinToken).order_by(JoinToken.created_at, JoinToken.id)
    return [_join_record(row) for row in conn.execute(stmt).mappings()]


def create_join_token(
    token_hash: str,
    *,
    uses: int,
    expires_at: float,
    token_id: str | None = None,
    at: float | None = None,
) -> Op[JoinTokenRecord]:
    """Store a new join token; the op returns it."""
    record = JoinTokenRecord(
        id=token_id or new_id(),
        token_hash=token_hash,
        uses=uses,
        used=0,
        expires_at=expires_at,
        created_at=now() if at is None else at,
        revoked=False,
    )

    async def op(conn: AsyncConnection) -> JoinTokenRecord:
        await conn.execute(
            insert(JoinToken).values(
                id=record.id,
                token_hash=record.token_hash,
                uses=record.uses,
                used=record.used,
                expires_at=record.expires_at,
                created_at=record.created_at,
                revoked=record.revoked,
            )
        )
        return record

    return op


def revoke_join_token(token_id: str) -> Op[JoinTokenRecord]:
    """Mark a join token revoked (its row stays, so a refused agent is told why).

    Raises (from the op):
        NotFound: no join token has this id.
    """

    async def op(conn: AsyncConnection) -> JoinTokenRecord:
        result = await conn.execute(
            update(JoinToken).where(JoinToken.id == token_id).values(revoked=True)
        )
        if not result.rowcount:
            raise NotFound("join token", token_id)
        row = (
            (await conn.execute(select(JoinToken).where(JoinToken.id == token_id))).mappings().one()
        )
        return _join_record(row)

    return op


_FIND_JOIN = select(JoinToken).where(JoinToken.token_hash == bindparam("token_hash"))
_SPEND_JOIN = (
    update(JoinToken).where(JoinToken.id == bindparam("join_id")).values(used=JoinToken.used + 1)
)
"""A join's statements, built once (thousands of nodes may join in a few minutes)."""


def consume_join_token(token_hash: str, rule: JoinRule, *, at: float | None = None) -> Op[str]:
    """Spend one use of the join token whose secret hashes to ``token_hash``; the op
    returns its id.

    Raises (from the op):
        Unauthorized: no join token has this hash ("join token unknown"), or ``rule``
            refuses it (its reason).
    """

    async def op(conn: AsyncConnection) -> str:
        stamp = now() if at is None else at
        row = (await conn.execute(_FIND_JOIN, {"token_hash": token_hash})).mappings().first()
        if row is None:
            raise Unauthorized("join token unknown")
        record = _join_record(row)
        refusal = rule(record, stamp)
        if refusal is not None:
            raise Unauthorized(refusal)
        await conn.execute(_SPEND_JOIN, {"join_id": record.id})
        return record.id

    return op
