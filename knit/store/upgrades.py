"""Upgrading a database of an older schema in place, when it is opened.

Layer: store (adapter). Imports sqlalchemy and ``knit.store``'s own modules.

Two steps: schema 1 → 2 (deployment versions, rollouts, instance health), decided in
``docs/decisions/0017-schema-2-in-place.md``, and 2 → 3 (deployments' ``resources`` and
``strategy``), the same way. Each runs inside the transaction that opens the database
(:func:`knit.store.db.open_database`): all of it or nothing. It is plain, portable DDL
(``ALTER TABLE ... ADD COLUMN`` with the columns' server defaults, compiled from the models
for the database's dialect), written to be replaced by a migration tool later.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sqlalchemy import Column, insert, select, update
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.schema import CreateColumn, CreateTable

from knit.store import deployments
from knit.store.models import (
    Base,
    ContainerInstance,
    Deployment,
    DeploymentSecret,
    DeploymentVersion,
    SchemaVersion,
)

log = logging.getLogger(__name__)

_DEPLOYMENTS = Base.metadata.tables[Deployment.__tablename__]
_INSTANCES = Base.metadata.tables[ContainerInstance.__tablename__]
SCHEMA_2_COLUMNS = (
    _DEPLOYMENTS.c.version,
    _DEPLOYMENTS.c.update,
    _DEPLOYMENTS.c.health_check,
    _DEPLOYMENTS.c.rollout,
    _INSTANCES.c.version,
    _INSTANCES.c.health,
    _INSTANCES.c.restarts,
)
"""The columns schema 2 adds to existing tables (each with a server default or nullable)."""
SCHEMA_3_COLUMNS = (_DEPLOYMENTS.c.resources, _DEPLOYMENTS.c.strategy)
"""The columns schema 3 adds (nullable, or with a server default: ``'spread'``)."""


def add_column_statements(
    dialect: Dialect, columns: Sequence[Column[Any]] = SCHEMA_2_COLUMNS
) -> list[str]:
    """``ALTER TABLE ... ADD COLUMN ...`` for each of ``columns`` (schema 2's by default), in
    ``dialect`` (the column as the model declares it: type, default, nullability)."""
    out = []
    preparer = dialect.identifier_preparer
    for column in columns:
        table = preparer.format_table(column.table)
        spec = CreateColumn(column).compile(dialect=dialect)
        out.append(f"ALTER TABLE {table} ADD COLUMN {spec}")
    return out


async def upgrade_1_to_2(conn: AsyncConnection) -> None:
    """Add schema 2's columns and table to a schema 1 database, with a stable version 1 of
    every deployment (the spec it runs), and record schema version 2.

    Cancellation: as any statement on ``conn`` (the caller's transaction rolls back).
    """
    for statement in add_column_statements(conn.dialect):
        await conn.exec_driver_sql(statement)
    await conn.execute(CreateTable(Base.metadata.tables[DeploymentVersion.__tablename__]))
    # Each existing deployment runs its spec: that is its version 1, and it is stable (it
    # converged under the old code, and it is the one a rollback would want).
    # The deployments' columns as schema 2 has them (not those of later schemas, absent yet).
    later = {c.name for c in SCHEMA_3_COLUMNS}
    stmt = select(
        *(c for c in _DEPLOYMENTS.c if c.name not in later),
        DeploymentSecret.names.label("secret_env_names"),
        DeploymentSecret.env_encrypted,
    ).outerjoin(DeploymentSecret, DeploymentSecret.deployment_id == Deployment.id)
    rows = []
    for row in (await conn.execute(stmt)).mappings():
        record = deployments.record_of(row)
        spec = deployments.spec_json(record)
        first = deployments.version_row(
            record.id, 1, spec, row["env_encrypted"], at=record.updated_at
        )
        rows.append({**first, "stable": not record.deleted})
    if rows:
        await conn.execute(insert(DeploymentVersion), rows)
    await conn.execute(update(SchemaVersion).values(version=2, applied_at=time.time()))
    log.info("store upgraded from schema 1 to 2 (%d deployments)", len(rows))


async def upgrade_2_to_3(conn: AsyncConnection) -> None:
    """Add schema 3's columns to a schema 2 database (every deployment reserves nothing and
    spreads, as before; versions' specs without the fields read the same), and record schema
    version 3.

    Cancellation: as any statement on ``conn`` (the caller's transaction rolls back).
    """
    for statement in add_column_statements(conn.dialect, SCHEMA_3_COLUMNS):
        await conn.exec_driver_sql(statement)
    await conn.execute(update(SchemaVersion).values(version=3, applied_at=time.time()))
    log.info("store upgraded from schema 2 to 3")


UPGRADES: dict[int, Callable[[AsyncConnection], Awaitable[None]]] = {
    1: upgrade_1_to_2,
    2: upgrade_2_to_3,
}
"""The step that upgrades a database from each schema version to the next."""
