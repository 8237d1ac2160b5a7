"""Knit's state store: SQLAlchemy 2 (async) on SQLite in WAL mode, PostgreSQL-ready.

Layer: store (adapter). Imports sqlalchemy, aiosqlite (through SQLAlchemy), anyio and
``knit.errors`` — never ``knit.domain``'s pydantic models: callers convert.

The database is the truth; the server's actors rebuild their state from it after a restart.

* :func:`open_store` / :class:`Store` — the usual entry point: reads in a few read threads
  (a whole read per hand-off, one WAL snapshot each), writes through the one
  :class:`StoreWriter` (batched ``BEGIN IMMEDIATE`` transactions, savepoint fallback so one
  failing write does not fail its batch).
* :func:`open_database` / :class:`Database` / :class:`StoreWriter` — the parts, for
  wrapping the writer into an actor.
* :mod:`knit.store.migrations` — the schema's Alembic revisions; :func:`open_database`
  brings a database to the head with them (``knit db upgrade`` / ``knit db current``).
* ``nodes``, ``deployments`` (and their ``versions``), ``instances``, ``networks``,
  ``credentials``, ``tasks``, ``events``, ``tokens`` — per entity: read functions
  (:class:`Read`: ``f(conn, ...)`` on a synchronous connection, also awaitable on an async
  one) and write op factories.
* Records (``NodeRecord``, ``DeploymentRecord``, ...) — frozen, detached results.

Conventions: ids are ``str`` (time-ordered hex, made in Python by :func:`new_id`); timestamps are
``float`` seconds since the Unix epoch (UTC). Library errors become ``knit.errors``:
``Conflict``, ``NotFound``, ``StoreError``.
"""

from knit.store import (
    credentials,
    deployments,
    events,
    instances,
    networks,
    nodes,
    tasks,
    tokens,
    versions,
)
from knit.store.db import Database, database_url, open_database, translate_error
from knit.store.facade import Store, open_store
from knit.store.instances import LIVE_STATUSES
from knit.store.ops import Op, RowsOp
from knit.store.reads import Read
from knit.store.records import (
    INSTANCE_STATUSES,
    NODE_STATUSES,
    TASK_KINDS,
    TASK_STATES,
    UNFINISHED_TASK_STATES,
    ApiTokenRecord,
    DeploymentRecord,
    DeploymentVersionRecord,
    EventRecord,
    HeartbeatUpsert,
    InstanceRecord,
    InstanceStatusUpdate,
    JoinTokenRecord,
    NetworkRecord,
    NodeNetworkRecord,
    NodeRecord,
    RegistryCredentialsRecord,
    TaskRecord,
    new_id,
)
from knit.store.sql import KEEP, Keep
from knit.store.writer import StoreWriter, WriterStats

__all__ = [
    "INSTANCE_STATUSES",
    "KEEP",
    "LIVE_STATUSES",
    "NODE_STATUSES",
    "TASK_KINDS",
    "TASK_STATES",
    "UNFINISHED_TASK_STATES",
    "ApiTokenRecord",
    "Database",
    "DeploymentRecord",
    "DeploymentVersionRecord",
    "EventRecord",
    "HeartbeatUpsert",
    "InstanceRecord",
    "InstanceStatusUpdate",
    "JoinTokenRecord",
    "Keep",
    "NetworkRecord",
    "NodeNetworkRecord",
    "NodeRecord",
    "Op",
    "Read",
    "RegistryCredentialsRecord",
    "RowsOp",
    "Store",
    "StoreWriter",
    "TaskRecord",
    "WriterStats",
    "credentials",
    "database_url",
    "deployments",
    "events",
    "instances",
    "networks",
    "new_id",
    "nodes",
    "open_database",
    "open_store",
    "tasks",
    "tokens",
    "translate_error",
    "versions",
]
