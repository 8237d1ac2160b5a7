"""``knit db upgrade`` and ``knit db current``: the store's schema, outside a running server.

Layer: cli (under ``knit.cli``). Parsing imports argparse and ``knit.config`` only; running
imports ``knit.store`` (SQLAlchemy, Alembic).

They find the database as ``knit server`` does: ``--database-url``, or ``knit.db`` in
``--data-dir`` (default ``.knit/server``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TypeAlias

from knit.config import DEFAULT_SERVER_DATA_DIR, server_database_url

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_db_command(sub: Subparsers) -> None:
    """``knit db upgrade | current`` and their database options."""
    db = sub.add_parser("db", help="the server's database: schema revision and upgrades")
    actions = db.add_subparsers(dest="db_command", required=True)
    for name, help_text in (
        ("upgrade", "bring the database's schema to this Knit's (as `knit server` does)"),
        ("current", "show the database's schema revision and whether it is this Knit's"),
    ):
        action = actions.add_parser(name, help=help_text)
        action.add_argument(
            "--data-dir",
            type=Path,
            default=DEFAULT_SERVER_DATA_DIR,
            help=f"the server's data dir, with knit.db (default {DEFAULT_SERVER_DATA_DIR})",
        )
        action.add_argument(
            "--database-url",
            default=os.environ.get("KNIT_DATABASE_URL"),
            help="SQLAlchemy URL (default $KNIT_DATABASE_URL, else knit.db in --data-dir)",
        )


def run_db(args: argparse.Namespace) -> int:
    """Run ``knit db ...``; returns the exit code.

    Raises:
        StoreError: the database cannot be read, or (``upgrade``) its schema is newer than
            this Knit's, or a revision failed (nothing is changed then).
    """
    import anyio

    url = server_database_url(args.data_dir, args.database_url)
    if args.db_command == "upgrade":
        print(anyio.run(upgrade, url, backend="asyncio"))
    else:
        print(anyio.run(current, url, backend="asyncio"))
    return 0


async def upgrade(url: str) -> str:
    """Open the database at ``url`` (which upgrades it); says from which revision to which."""
    from knit.store import open_database

    async with open_database(url, read_pool_size=1, read_threads=False) as db:
        done = db.schema_upgrade
    assert done is not None
    if not done.changed:
        return f"{done.after} (head): nothing to upgrade"
    if done.before.revision is None:
        return f"none -> {done.after} (head): created"
    legacy = done.before.legacy_version
    since = "" if legacy is None else f" (schema {legacy}, from before Alembic)"
    return f"{done.before.revision} -> {done.after} (head): upgraded{since}"


async def current(url: str) -> str:
    """The revision of the database at ``url`` and whether it is the head (reads only)."""
    import anyio
    from sqlalchemy import exc as sa_exc
    from sqlalchemy.ext.asyncio import create_async_engine

    from knit.errors import StoreError
    from knit.store import database_url, migrations, translate_error

    try:
        parsed = database_url(url)
    except sa_exc.ArgumentError as exc:  # its message does not repeat the URL (a password)
        raise StoreError(f"not a database URL: {exc}") from exc
    head = migrations.head()
    if (
        parsed.get_backend_name() == "sqlite"
        and not await anyio.Path(parsed.database or "").exists()
    ):
        return f"none: no database at {parsed.database} (head {head})"
    try:
        engine = create_async_engine(parsed)
    except ImportError as exc:  # the URL's driver is not installed
        raise StoreError(f"cannot open {parsed.get_backend_name()}: {exc}") from exc
    try:
        async with engine.connect() as conn:
            state = await conn.run_sync(migrations.current)
    except sa_exc.SQLAlchemyError as exc:
        raise translate_error(exc) from exc
    except OSError as exc:  # asyncpg's connection errors are not wrapped
        raise StoreError(f"cannot reach the database: {exc}") from exc
    finally:
        await engine.dispose()
    if state.revision is None:
        return f"none: an empty database (head {head})"
    if not state.known:
        return f"{state.describe()}: newer than this Knit knows (head {head}): upgrade Knit"
    if state.legacy_version is not None:
        return (
            f"{state.revision}: schema {state.legacy_version} from before Alembic, not stamped "
            f"yet (head {head}; `knit db upgrade` upgrades it)"
        )
    if state.at_head:
        return f"{state.revision} (head)"
    return f"{state.revision}: behind the head {head} (`knit db upgrade` upgrades it)"
