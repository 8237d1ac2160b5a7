"""Alembic's environment for Knit's store: how a revision reaches the database.

Layer: store (adapter). Loaded by Alembic, never imported. Imports alembic, sqlalchemy and
``knit.store``'s models and URL handling.

Knit runs it through :mod:`knit.store.migrations` with the connection it opened
(``config.attributes["connection"]``: the synchronous face of the store's async write
connection, inside ``AsyncConnection.run_sync``, in the transaction that opens the
database). Without one (``alembic -x url=... upgrade head`` by hand, with the repository's
``alembic.ini``; or ``sqlalchemy.url`` in a config), it opens the URL with SQLAlchemy's
async engine itself: the store's SQLite settings (WAL, ``BEGIN IMMEDIATE``) are not applied
then, which is fine for a file no server has open.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from knit.store.db import database_url
from knit.store.models import Base

config = context.config


def run_migrations(connection: Connection) -> None:
    """Run the migrations Alembic asked for on ``connection``.

    ``render_as_batch``: SQLite alters tables only in a few ways; batch operations copy the
    table where it cannot (on PostgreSQL they are plain ``ALTER TABLE``).
    """
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,
        compare_type=True,
    )
    # In Knit's own transaction (the connection was handed over inside one), this opens no
    # other: Alembic joins it, and everything commits or rolls back together.
    with context.begin_transaction():
        context.run_migrations()


async def run_on_url(url: str) -> None:
    """Open ``url`` (a URL or a SQLite path) with the async engine and run the migrations."""
    engine = create_async_engine(database_url(url))
    try:
        async with engine.begin() as conn:
            await conn.run_sync(run_migrations)
    finally:
        await engine.dispose()


def main() -> None:
    """Run on Knit's connection, or open the URL given to the ``alembic`` command."""
    connection = config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise SystemExit("no database: pass -x url=URL (or set sqlalchemy.url)")
    if context.is_offline_mode():
        # The revisions read the database (which tables exist, the rows 0002 copies).
        raise SystemExit(
            "offline (--sql) mode is not supported: Knit's revisions read the database"
        )
    asyncio.run(run_on_url(url))


main()
