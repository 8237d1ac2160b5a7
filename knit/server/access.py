"""The server's API tokens and join tokens: stored as hashes, checked from memory.

Layer: server. Imports ``knit.domain`` (roles, the token book, the join rule), ``knit.store``
(the token tables) and the standard library.

:class:`TokenKeeper` loads every API token into a :class:`~knit.domain.auth.TokenBook` at
start; afterwards it is the only writer of the tokens table, so the book stays the truth
without reading the store per request: creating a token adds it once stored, revoking one
removes it from the book *before* the store, so it is refused from the moment the revoke
is asked. Secrets appear only in the reply that creates them (and in ``admin.token``);
they are never logged.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from knit.domain.auth import (
    API_TOKEN_PREFIX,
    JOIN_TOKEN_PREFIX,
    Principal,
    Role,
    TokenBook,
    hash_secret,
    new_secret,
)
from knit.domain.tokens import JoinTokenSpec, TokenSpec, join_token_refusal
from knit.errors import KnitError, Unauthorized
from knit.server.records import iso
from knit.store import tokens
from knit.store.facade import Store
from knit.store.ops import Op
from knit.store.records import ApiTokenRecord, JoinTokenRecord

log = logging.getLogger(__name__)

ADMIN_TOKEN_FILE = "admin.token"
"""Where, in the server's data dir, the first admin token is written (mode 0600)."""
ADMIN_TOKEN_NAME = "admin"

JSONDict = dict[str, Any]


def principal_of(record: ApiTokenRecord) -> Principal:
    """The principal a stored token speaks for."""
    return Principal(
        token_id=record.id, name=record.name, role=Role(record.role), expires_at=record.expires_at
    )


def token_json(record: ApiTokenRecord, now: float) -> JSONDict:
    """An API token as ``GET /tokens`` shows it: never its secret nor its hash."""
    return {
        "id": record.id,
        "name": record.name,
        "role": record.role,
        "created_at": iso(record.created_at),
        "expires_at": iso(record.expires_at),
        "expired": record.expires_at is not None and now >= record.expires_at,
    }


def join_token_json(record: JoinTokenRecord) -> JSONDict:
    """A join token as ``GET /join-tokens`` shows it: never its secret nor its hash."""
    return {
        "id": record.id,
        "uses": record.uses,
        "used": record.used,
        "created_at": iso(record.created_at),
        "expires_at": iso(record.expires_at),
        "revoked": record.revoked,
    }


def admits(record: JoinTokenRecord, now: float) -> str | None:
    """The join rule on a stored join token (see ``join_token_refusal``)."""
    return join_token_refusal(
        revoked=record.revoked,
        expires_at=record.expires_at,
        uses=record.uses,
        used=record.used,
        now=now,
    )


def write_secret_file(path: Path, secret: str) -> None:
    """Write ``secret`` alone on one line to ``path``, mode 0600 from its creation on.

    The file appears whole (a complete temporary file renamed over it), so a reader never
    sees half a token.

    Raises:
        KnitError: the file cannot be written.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(6).hex()}.tmp")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(secret + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise KnitError(f"cannot write {path}: {exc.strerror}") from exc
    finally:
        tmp.unlink(missing_ok=True)


class TokenKeeper:
    """API tokens (in memory and in the store) and join tokens (in the store).

    Args:
        store: the store holding the token tables.
        clock: seconds since the epoch (``time.time``; tests pass their own).
    """

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.book = TokenBook()

    async def load(self) -> int:
        """Fill the book with every stored API token; how many there are.

        Raises:
            StoreError: the store cannot be read.
        """
        records = await self.store.read(tokens.list_api_tokens)
        self.book = TokenBook((r.token_hash, principal_of(r)) for r in records)
        return len(records)

    async def ensure_admin_token(self, path: Path) -> bool:
        """If the store holds no API token, make an admin token and write it to ``path``.

        The file is written before the token is stored: a failure in between leaves a
        token that does not work, never one nobody knows. Logs the path, never the token.
        Returns whether a token was made.

        Raises:
            KnitError: the file cannot be written.
            StoreError: the store failed.
        """
        if await self.load():
            return False
        secret = new_secret(API_TOKEN_PREFIX)
        write_secret_file(path, secret)
        record = await self.store.write(
            tokens.create_api_token(ADMIN_TOKEN_NAME, Role.ADMIN.value, hash_secret(secret))
        )
        self.book.add(record.token_hash, principal_of(record))
        log.info("no API token was stored: an admin token was written to %s", path)
        return True

    # --- API tokens ----------------------------------------------------------------------

    def authenticate(self, secret: str) -> Principal | None:
        """Who ``secret`` speaks for, or None (unknown, revoked or expired): from memory."""
        return self.book.authenticate(secret, self.clock())

    def principal(self, token_id: str) -> Principal | None:
        """The principal of the token ``token_id`` while it is valid, else None."""
        return self.book.principal(token_id, self.clock())

    async def create_token(self, spec: TokenSpec) -> JSONDict:
        """Make and store an API token; the reply holds its secret (the only time).

        Raises:
            Conflict: a token already has this name.
        """
        secret = new_secret(API_TOKEN_PREFIX)
        at = self.clock()
        expires_at = at + spec.ttl if spec.ttl is not None else None
        record = await self.store.write(
            tokens.create_api_token(
                spec.name, spec.role.value, hash_secret(secret), expires_at=expires_at, at=at
            )
        )
        self.book.add(record.token_hash, principal_of(record))
        log.info("API token %s (%s, role %s) created", record.id, record.name, record.role)
        return {
            "id": record.id,
            "name": record.name,
            "role": record.role,
            "token": secret,
            "expires_at": iso(record.expires_at),
        }

    async def list_tokens(self) -> list[JSONDict]:
        """Every API token, without secrets."""
        now = self.clock()
        return [token_json(r, now) for r in await self.store.read(tokens.list_api_tokens)]

    async def delete_token(self, token_id: str) -> None:
        """Revoke an API token: refused at once, then removed from the store.

        Raises:
            NotFound: no token has this id.
        """
        self.book.remove(token_id)
        await self.store.write(tokens.delete_api_token(token_id))
        log.info("API token %s revoked", token_id)

    # --- join tokens ---------------------------------------------------------------------

    async def create_join_token(self, spec: JoinTokenSpec) -> JSONDict:
        """Make and store a join token; the reply holds its secret (the only time)."""
        secret = new_secret(JOIN_TOKEN_PREFIX)
        at = self.clock()
        record = await self.store.write(
            tokens.create_join_token(
                hash_secret(secret), uses=spec.uses, expires_at=at + spec.ttl, at=at
            )
        )
        log.info("join token %s created (%d use(s))", record.id, record.uses)
        return {
            "id": record.id,
            "token": secret,
            "expires_at": iso(record.expires_at),
            "uses": record.uses,
        }

    async def list_join_tokens(self) -> list[JSONDict]:
        """Every join token, without secrets."""
        return [join_token_json(r) for r in await self.store.read(tokens.list_join_tokens)]

    async def delete_join_token(self, token_id: str) -> JSONDict:
        """Revoke a join token; it admits nobody from now on.

        Raises:
            NotFound: no join token has this id.
        """
        record = await self.store.write(tokens.revoke_join_token(token_id))
        log.info("join token %s revoked", token_id)
        return join_token_json(record)

    def join_admission(self, secret: str) -> Op[str]:
        """The writer op that spends one use of a join token and returns its id, to run in
        the transaction of what the token admits (a node's join).

        Raises:
            Unauthorized: the secret cannot be a join token (from the op: the token is
                unknown, expired, revoked or used up).
        """
        if not secret.startswith(JOIN_TOKEN_PREFIX) or len(secret) > 128:
            raise Unauthorized("join token unknown")  # not worth a trip to the writer
        return tokens.consume_join_token(hash_secret(secret), admits, at=self.clock())

    async def consume_join_token(self, secret: str) -> str:
        """Spend one use of a join token (one writer op: check and count in one
        transaction); its id.

        Raises:
            Unauthorized: the token is unknown, expired, revoked or used up (the message
                says which, in one line).
        """
        return await self.store.write(self.join_admission(secret))
