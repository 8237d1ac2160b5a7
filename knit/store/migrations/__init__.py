"""Schema migrations of Knit's store, with Alembic: revisions, and bringing a database to
the schema of this code.

Layer: store (adapter). Imports alembic, sqlalchemy, ``knit.errors`` and the models (for an
empty database: see :func:`upgrade`; the revisions never use them); the environment
(``env.py``) and the revisions (``versions/``) ship in the package and are found by path,
so no ``alembic.ini`` is needed.

Revisions are named after the integer schema versions Knit wrote before Alembic
(``schema_version``): ``0001`` is schema 1 (the baseline), ``0002`` schema 2, ``0003``
schema 3, ``0004`` schema 4. A database from before Alembic has a ``schema_version`` row and no
``alembic_version``: at 2 or 3 it is stamped with that revision, at 1 it runs the baseline,
which creates only the schema-1 tables the file lacks (early schema-1 releases made fewer),
then every revision up to the head runs. ``docs/decisions/0022-alembic-migrations.md``
says why.

Everything here is synchronous and takes a SQLAlchemy ``Connection``: the store calls it
through ``AsyncConnection.run_sync`` in the transaction that opens the database
(:func:`knit.store.db.open_database`), so a migration commits entirely or not at all.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import insert, inspect, text
from sqlalchemy.engine import Connection

from knit.errors import StoreError
from knit.store.models import SCHEMA_VERSION, Base, SchemaVersion

log = logging.getLogger(__name__)

SCRIPT_LOCATION = Path(__file__).parent
"""Where the environment and ``versions/`` are."""
LEGACY_REVISIONS: dict[int, str] = {1: "0001", 2: "0002", 3: "0003"}
"""The revision of each integer schema version Knit wrote before Alembic."""


@dataclass(frozen=True)
class SchemaState:
    """Where a database's schema is.

    Attributes:
        revision: its Alembic revision; for a database from before Alembic, the revision of
            its ``schema_version`` (until an upgrade stamps it); None: an empty database.
        head: the newest revision this code knows.
        schema_version: the integer in its ``schema_version`` table (None: no such table).
        stamped: its revision is Alembic's (False: an empty database, or one from before
            Alembic).
    """

    revision: str | None
    head: str
    schema_version: int | None = None
    stamped: bool = True

    @property
    def legacy_version(self) -> int | None:
        """The ``schema_version`` of a database from before Alembic (not yet stamped)."""
        return None if self.stamped else self.schema_version

    @property
    def at_head(self) -> bool:
        """True if nothing is left to upgrade."""
        return self.stamped and self.revision == self.head

    @property
    def known(self) -> bool:
        """False if a newer Knit wrote it: a revision none of this code's, or a schema
        version above :data:`~knit.store.models.SCHEMA_VERSION`."""
        if self.schema_version is not None and self.schema_version > SCHEMA_VERSION:
            return False
        return self.revision is None or self.revision in revisions()

    def describe(self) -> str:
        """``revision X``; ``schema version N`` for a database from before Alembic, or where
        the integer says more than a revision this code knows."""
        if self.legacy_version is not None:
            return f"schema version {self.legacy_version}"
        if self.revision is None:
            return "empty"
        if self.revision in revisions() and not self.known:
            return f"revision {self.revision}, schema version {self.schema_version}"
        return f"revision {self.revision}"


@dataclass(frozen=True)
class SchemaUpgrade:
    """What :func:`upgrade` did: from ``before`` (its revision None: an empty database) to
    the revision ``after``."""

    before: SchemaState
    after: str

    @property
    def changed(self) -> bool:
        """False if the database was at the head already."""
        return not self.before.at_head


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration of Knit's migrations (no ``alembic.ini``).

    Args:
        connection: the connection the environment runs the migrations on, in the
            caller's transaction (``config.attributes["connection"]``). Without one, the
            environment opens ``sqlalchemy.url`` (set it with ``set_main_option``).
    """
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache
def script_directory() -> ScriptDirectory:
    """The revisions (read once per process)."""
    return ScriptDirectory.from_config(alembic_config())


@functools.cache
def revisions() -> frozenset[str]:
    """Every revision this code knows."""
    return frozenset(script.revision for script in script_directory().walk_revisions())


def head() -> str:
    """The newest revision."""
    head = script_directory().get_current_head()
    assert head is not None, "no revisions in knit/store/migrations/versions"
    return head


def current(conn: Connection) -> SchemaState:
    """Where the database on ``conn`` is (reads only).

    Raises:
        StoreError: the database has more than one Alembic revision (branches Knit never
            makes).
    """
    try:
        revision = MigrationContext.configure(conn).get_current_revision()
    except CommandError as exc:
        raise StoreError(f"cannot read the database's schema revision: {exc}") from exc
    version = _schema_version(conn)
    if revision is not None:
        return SchemaState(revision, head(), version)
    if version is None:
        return SchemaState(None, head(), stamped=False)
    # Before Alembic: the revision of its integer (or, newer than any, the integer itself).
    legacy = LEGACY_REVISIONS.get(version, str(version))
    return SchemaState(legacy, head(), version, stamped=False)


def upgrade(conn: Connection, *, from_revisions: bool = False) -> SchemaUpgrade:
    """Bring the database on ``conn`` to the head revision, in the caller's transaction.

    An empty database gets the models' tables (``create_all``) and is stamped with the
    head: the same schema as running every revision (a test compares the two), and as fast
    as opening a new database was before Alembic, which the test suite's many fresh
    databases notice (decision 0022 has the numbers). One from before Alembic is stamped
    first (see the module docstring).

    Args:
        from_revisions: run every revision on an empty database too.

    Raises:
        StoreError: the database's schema is newer than this code's head (nothing is
            touched), or it cannot be read.
        Exception: what a failing revision raises (the caller's transaction rolls back).
    """
    before = current(conn)
    if not before.known:
        raise StoreError(
            f"the database's schema ({before.describe()}) is newer than this Knit knows "
            f"(head {before.head}): upgrade Knit"
        )
    if before.at_head:
        return SchemaUpgrade(before, before.head)
    if before.revision is None and not from_revisions:
        _create_head(conn)
        return SchemaUpgrade(before, before.head)
    config = alembic_config(conn)
    # Schema 1 is not stamped: the baseline runs and adds what an early file lacks.
    if before.legacy_version is not None and before.legacy_version > 1:
        command.stamp(config, before.revision or "base")
    command.upgrade(config, "head")
    log.info("store schema upgraded from %s to %s", before.revision or "empty", before.head)
    return SchemaUpgrade(before, before.head)


def _create_head(conn: Connection) -> None:
    """The head's schema on an empty database, from the models, stamped with the head."""
    Base.metadata.create_all(conn)
    conn.execute(insert(SchemaVersion).values(version=SCHEMA_VERSION, applied_at=time.time()))
    MigrationContext.configure(conn).stamp(script_directory(), "head")
    log.info("store schema created at %s", head())


def _schema_version(conn: Connection) -> int | None:
    """The integer in the ``schema_version`` table; None if there is none."""
    if not inspect(conn).has_table("schema_version"):
        return None
    version = conn.execute(text("SELECT max(version) FROM schema_version")).scalar()
    return None if version is None else int(version)
