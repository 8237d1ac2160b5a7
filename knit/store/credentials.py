"""Registry credentials: create, read, update, delete (refused while a deployment uses them).

Layer: store (adapter). Imports sqlalchemy, ``knit.errors`` and ``knit.store``'s own modules.

The store never sees a plaintext password: callers pass ``password_encrypted``, the
ciphertext made by ``knit.secrets``. Because the encryption may bind the ciphertext to the
credentials' id (as associated data), :func:`create` accepts an id chosen by the caller:
pick it with :func:`knit.store.records.new_id`, encrypt, then create.
"""

from __future__ import annotations

from sqlalchemy import RowMapping, delete, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from knit.errors import Conflict, NotFound
from knit.store.models import Deployment, RegistryCredentials
from knit.store.ops import Op
from knit.store.reads import Read
from knit.store.records import RegistryCredentialsRecord, new_id
from knit.store.sql import KEEP, Keep, now


def _record(row: RowMapping) -> RegistryCredentialsRecord:
    return RegistryCredentialsRecord(
        id=row["id"],
        url=row["url"],
        username=row["username"],
        password_encrypted=row["password_encrypted"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


# --- reads ---------------------------------------------------------------------------------


@Read
def find_credentials(conn: Connection, credentials_id: str) -> RegistryCredentialsRecord | None:
    """The credentials ``credentials_id``, or None."""
    stmt = select(RegistryCredentials).where(RegistryCredentials.id == credentials_id)
    row = conn.execute(stmt).mappings().first()
    return None if row is None else _record(row)


@Read
def get_credentials(conn: Connection, credentials_id: str) -> RegistryCredentialsRecord:
    """The credentials ``credentials_id``.

    Raises:
        NotFound: none with this id.
    """
    record = find_credentials.sync(conn, credentials_id)
    if record is None:
        raise NotFound("registry_credentials", credentials_id)
    return record


@Read
def list_credentials(conn: Connection) -> list[RegistryCredentialsRecord]:
    """Every set of credentials, oldest first."""
    stmt = select(RegistryCredentials).order_by(
        RegistryCredentials.created_at, RegistryCredentials.id
    )
    return [_record(row) for row in conn.execute(stmt).mappings()]


@Read
def list_credentials_ids(conn: Connection) -> set[str]:
    """The ids of every set of credentials (to validate references)."""
    return set(conn.execute(select(RegistryCredentials.id)).scalars())


# --- writes (op factories) -----------------------------------------------------------------


def create(
    url: str,
    username: str,
    password_encrypted: str,
    *,
    credentials_id: str | None = None,
    at: float | None = None,
) -> Op[RegistryCredentialsRecord]:
    """Store new credentials; the op returns them.

    Raises (from the op):
        Conflict: ``credentials_id`` is taken.
    """
    stamp = now() if at is None else at
    record = RegistryCredentialsRecord(
        id=credentials_id or new_id(),
        url=url,
        username=username,
        password_encrypted=password_encrypted,
        created_at=stamp,
        updated_at=stamp,
    )

    async def op(conn: AsyncConnection) -> RegistryCredentialsRecord:
        if await find_credentials(conn, record.id) is not None:
            raise Conflict(f"registry credentials {record.id!r} already exist")
        await conn.execute(
            insert(RegistryCredentials).values(
                id=record.id,
                url=url,
                username=username,
                password_encrypted=password_encrypted,
                created_at=stamp,
                updated_at=stamp,
            )
        )
        return record

    return op


def update_credentials(
    credentials_id: str,
    *,
    url: str | Keep = KEEP,
    username: str | Keep = KEEP,
    password_encrypted: str | Keep = KEEP,
    at: float | None = None,
) -> Op[RegistryCredentialsRecord]:
    """Change stored credentials (fields left at ``KEEP`` stay); the op returns them.

    Raises (from the op):
        NotFound: none with this id.
    """
    given = {"url": url, "username": username, "password_encrypted": password_encrypted}
    values: dict[str, object] = {k: v for k, v in given.items() if v is not KEEP}
    values["updated_at"] = now() if at is None else at

    async def op(conn: AsyncConnection) -> RegistryCredentialsRecord:
        result = await conn.execute(
            update(RegistryCredentials)
            .where(RegistryCredentials.id == credentials_id)
            .values(**values)
        )
        if not result.rowcount:
            raise NotFound("registry_credentials", credentials_id)
        return await get_credentials(conn, credentials_id)

    return op


def delete_credentials(credentials_id: str) -> Op[None]:
    """Remove credentials that no deployment (live or being deleted) names.

    Raises (from the op):
        NotFound: none with this id.
        Conflict: a deployment uses them.
    """

    async def op(conn: AsyncConnection) -> None:
        await get_credentials(conn, credentials_id)
        stmt = select(Deployment.name).where(Deployment.registry_credentials_id == credentials_id)
        users = sorted((await conn.execute(stmt)).scalars())
        if users:
            raise Conflict(
                f"registry credentials {credentials_id!r} are used by deployment(s) "
                f"{', '.join(users)}"
            )
        await conn.execute(
            delete(RegistryCredentials).where(RegistryCredentials.id == credentials_id)
        )

    return op
