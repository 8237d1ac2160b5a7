"""Opening the state store: engines, SQLite settings, schema, read and write connections.

Layer: store (adapter). Imports sqlalchemy, anyio, ``knit.errors`` and ``knit.store``'s own
modules (migrations, read threads).

One file in the server's data dir (SQLite in WAL mode) by default; PostgreSQL (asyncpg)
with a ``postgresql://`` URL. The SQL is portable: the only backend-specific statements are
SQLite's PRAGMAs and ``BEGIN`` forms (:func:`_install_sqlite_hooks`) and PostgreSQL's write
lock (:func:`_install_postgresql_hooks`), each on its own backend only.

Two engines share the file:

* the **write engine** (a pool of one or two connections): every transaction starts with
  ``BEGIN IMMEDIATE`` so it holds SQLite's write lock from its first statement. Deferred
  transactions that read then write are what lose updates or raise "database is locked"
  (see ARCHITECTURE.md). Writes normally go through :class:`knit.store.writer.StoreWriter`,
  the one writer.
* the **read threads** (SQLite only; :mod:`knit.store.read_threads`): a few threads, each
  with a synchronous pysqlite connection, that run a whole read function per job
  (:meth:`Database.run_read`, what :meth:`knit.store.Store.read` uses): deferred ``BEGIN``
  (a consistent WAL snapshot per read) and ``PRAGMA query_only``, so nothing writes around
  the writer. One hand-off to a thread per read instead of one per step
  (``docs/decisions/0007-reads-in-threads.md``).
* the **read engine** (async, a small pool, connected on first use), with the same
  settings: :meth:`Database.read` blocks, and every read on other databases. On PostgreSQL,
  :meth:`Database.run_read` runs the same synchronous read functions on it through
  SQLAlchemy's greenlet bridge (``AsyncConnection.run_sync``); a synchronous driver engine
  (psycopg) in read threads would be the next step if reads there need the same treatment.

On PostgreSQL the same rules hold by other means (docs/decisions/0023-postgresql.md): every
write transaction first takes one advisory lock (``pg_advisory_xact_lock``, the stand-in for
``BEGIN IMMEDIATE``), reads run in read-only ``REPEATABLE READ`` transactions (one snapshot
each, nothing written around the writer), and the server drops a query whose client left
(``client_connection_check_interval``), as the interrupt below does on SQLite.

Cancellation: aiosqlite runs each query in a thread that cancelling the awaiting task does
not stop. A ``handle_error`` hook sees the cancellation (SQLAlchemy reports it there before
it invalidates the connection) and calls the sqlite3 connection's ``interrupt()``, so the
query stops at once and the pool replaces the connection. The read threads interrupt their
own connection the same way (:class:`~knit.store.read_threads.ReadThreads`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import anyio
from sqlalchemy import create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection, Engine, ExceptionContext, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from knit.errors import Conflict, Fenced, KnitError, StoreError
from knit.store import leases, migrations
from knit.store.migrations import SchemaUpgrade
from knit.store.read_threads import ReadThreads

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_FILENAME = "knit.db"
SUPPORTED_BACKENDS = ("sqlite", "postgresql")
"""The databases the store runs on (its upserts and migrations are written for these)."""


def database_url(url_or_path: str | os.PathLike[str]) -> URL:
    """The async SQLAlchemy URL for a URL string or a SQLite file path.

    ``"sqlite://"`` and ``"postgresql://"`` URLs get their async drivers (aiosqlite,
    asyncpg) when none is named; ``"postgres://"`` (libpq's other spelling) is
    ``"postgresql://"``. A path (anything without ``://``) is a SQLite file.

    Raises:
        ValueError: an in-memory SQLite database (the read and write engines would each
            see their own, empty database).
    """
    text = os.fspath(url_or_path)
    if "://" in text:
        url = make_url(text)
    else:
        path = Path(text).expanduser().resolve()
        url = URL.create("sqlite+aiosqlite", database=str(path))
    if url.drivername.split("+")[0] == "postgres":
        url = url.set(drivername="postgresql" + url.drivername[len("postgres") :])
    backend = url.get_backend_name()
    named_driver = "+" in url.drivername
    if backend == "sqlite":
        if url.drivername != "sqlite+aiosqlite":
            url = url.set(drivername="sqlite+aiosqlite")
        if url.database in (None, "", ":memory:") or url.query.get("mode") == "memory":
            raise ValueError("in-memory SQLite is not supported: give the store a file")
    elif backend == "postgresql" and not named_driver:
        url = url.set(drivername="postgresql+asyncpg")
    return url


def translate_error(exc: BaseException) -> BaseException:
    """The Knit error for a library error (others are returned unchanged).

    ``IntegrityError`` (a unique or foreign key constraint) becomes ``Conflict``; any other
    SQLAlchemy or driver error becomes ``StoreError``, with the library error as its
    ``__cause__``. The message is the driver's, which names the constraint but never the
    statement's parameters.
    """
    if isinstance(exc, KnitError) or not isinstance(exc, sa_exc.SQLAlchemyError):
        return exc
    error: KnitError
    if isinstance(exc, sa_exc.IntegrityError):
        error = Conflict(f"conflicts with stored state: {exc.orig}")
    elif isinstance(exc, sa_exc.DBAPIError):
        error = StoreError(f"database error: {exc.orig}")
    else:
        error = StoreError(f"database error: {exc}")
    error.__cause__ = exc
    return error


class Database:
    """An open store: a write engine, read threads and a read engine on the same database.

    Get one from :func:`open_database`. Reads use :meth:`run_read` (or :meth:`read` for a
    block of async statements); writes go through a :class:`~knit.store.writer.StoreWriter`
    built on this object (or, outside the server's hot path, :meth:`transaction`).
    """

    def __init__(
        self,
        url: URL,
        write_engine: AsyncEngine,
        read_engine: AsyncEngine,
        read_threads: ReadThreads | None = None,
    ) -> None:
        self.url = url
        self.write_engine = write_engine
        self.read_engine = read_engine
        self.read_threads = read_threads
        self._lease_engine: AsyncEngine | None = None
        self.schema_upgrade: SchemaUpgrade | None = None
        """What :func:`open_database` did to the schema (None until it has run)."""

    @property
    def dialect_name(self) -> str:
        """``"sqlite"`` or ``"postgresql"`` (or another SQLAlchemy dialect name)."""
        return self.write_engine.dialect.name

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only connection; the block sees one consistent snapshot.

        Cancellation interrupts the running query (see the module docstring); the block's
        connection is discarded and the pool stays usable.

        Raises:
            StoreError: the database failed (``Conflict`` is impossible here).
        """
        try:
            async with self.read_engine.connect() as conn:
                yield conn
        except sa_exc.SQLAlchemyError as exc:
            raise translate_error(exc) from exc

    async def run_read(
        self,
        fn: Callable[Concatenate[Connection, P], T],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """``fn(conn, *args, **kwargs)`` on a synchronous read connection, in one transaction.

        On SQLite, in a read thread: one hand-off to the thread and one back, whatever
        ``fn`` does. Elsewhere, on the async read engine through ``run_sync``.

        Cancellation: returns at once; a read not started is skipped, a running query is
        interrupted.

        Raises:
            StoreError: the database failed, or it is closed.
            Exception: what ``fn`` raises (``NotFound``, ...).
        """
        try:
            if self.read_threads is not None:
                return await self.read_threads.run(lambda conn: fn(conn, *args, **kwargs))
            async with self.read_engine.connect() as conn:
                return await conn.run_sync(fn, *args, **kwargs)
        except sa_exc.SQLAlchemyError as exc:
            raise translate_error(exc) from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction, committed when the block ends without an exception.

        On SQLite it takes the write lock at once (``BEGIN IMMEDIATE``) and waits up to the
        busy timeout for it. Prefer the ``StoreWriter``: this is for setup, tools and tests.
        Cancellation rolls the transaction back.

        Raises:
            Conflict: a constraint failed.
            StoreError: the database failed.
        """
        try:
            async with self.write_engine.begin() as conn:
                yield conn
        except sa_exc.SQLAlchemyError as exc:
            raise translate_error(exc) from exc

    def lease_engine(self) -> AsyncEngine:
        """A small engine of its own for the leader lease (``knit.store.leases``): its
        transactions do not take the write lock on their own, so renewing a lease never
        waits behind the writer's batches (taking one does: ``leases.acquire``)."""
        if self._lease_engine is None:
            options: dict[str, Any] = {}
            if self.url.get_driver_name() == "asyncpg":
                options["connect_args"] = {"server_settings": dict(POSTGRESQL_SETTINGS)}
            self._lease_engine = create_async_engine(
                self.url, pool_size=2, max_overflow=0, hide_parameters=True, **options
            )
        return self._lease_engine

    async def aclose(self) -> None:
        """Close every pooled connection (shielded: runs to the end even if cancelled)."""
        with anyio.CancelScope(shield=True):
            if self._lease_engine is not None:
                await self._lease_engine.dispose()
            if self.read_threads is not None:
                await self.read_threads.aclose()
                self.read_threads.engine.dispose()
            await self.write_engine.dispose()
            await self.read_engine.dispose()


@asynccontextmanager
async def open_database(
    url_or_path: str | os.PathLike[str],
    *,
    read_pool_size: int = 4,
    busy_timeout: float = 5.0,
    echo: bool = False,
    read_threads: bool | None = None,
    fence: LeaseFence | None = None,
) -> AsyncIterator[Database]:
    """Open (and create if needed) the store; close it when the block ends.

    Brings the schema to this code's head revision with Alembic (:mod:`knit.store.migrations`:
    an empty database gets the head's tables; an older one, including one from before
    Alembic, is upgraded revision by revision), in one transaction (what was done:
    :attr:`Database.schema_upgrade`). A SQLite
    file's parent folder is created if missing; the file is put in WAL mode with
    ``synchronous=NORMAL`` (a commit survives a crash of Knit; the last commits may be lost
    on power failure).

    Args:
        url_or_path: a SQLAlchemy URL (``sqlite+aiosqlite:///...``, ``postgresql+asyncpg://``)
            or the path of a SQLite file.
        read_pool_size: reads that run at once (read threads, and connections of the
            async read engine).
        busy_timeout: seconds SQLite waits for a lock held by another connection.
        echo: log every statement with its parameters (debugging).
        read_threads: run :meth:`Database.run_read` in read threads (default: on SQLite);
            False runs it on the async read engine, as on other databases.
        fence: the leader lease every write transaction must still hold (PostgreSQL only):
            checked after the write lock is taken, a transaction of a holder whose lease
            passed to another (or ran out) raises ``Fenced`` before it writes anything.

    Raises:
        StoreError: the database cannot be opened (not a URL, neither SQLite nor
            PostgreSQL, its driver missing, unreachable, a refused password), or its
            schema is newer than this code.
        ValueError: the URL names an in-memory SQLite database, asks for read threads
            on another database, or a fence on SQLite.
    """
    try:
        url = database_url(url_or_path)
    except sa_exc.ArgumentError as exc:  # its message does not repeat the URL (a password)
        raise StoreError(f"not a database URL: {exc}") from exc
    if url.get_backend_name() not in SUPPORTED_BACKENDS:
        raise StoreError(f"Knit's store runs on SQLite or PostgreSQL, not {url.get_backend_name()}")
    sqlite = url.get_backend_name() == "sqlite"
    if read_threads and not sqlite:
        raise ValueError(f"read threads need SQLite, not {url.get_backend_name()}")
    if fence is not None and sqlite:
        raise ValueError("a leader lease fence needs PostgreSQL")
    if sqlite and url.database:
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    # Parameters stay out of error messages (they may hold ciphertext) unless debugging.
    common: dict[str, Any] = {"echo": echo, "hide_parameters": not echo}
    write_options: dict[str, Any] = {}
    read_options: dict[str, Any] = {}
    if url.get_backend_name() == "postgresql":
        # One snapshot per read transaction (as a SQLite read sees), and no write around the
        # writer (as SQLite's ``query_only``). Read-only REPEATABLE READ transactions never
        # fail to serialise.
        read_options["isolation_level"] = "REPEATABLE READ"
        if url.get_driver_name() == "asyncpg":
            write_options["connect_args"] = {"server_settings": dict(POSTGRESQL_SETTINGS)}
            settings = {**POSTGRESQL_SETTINGS, "default_transaction_read_only": "on"}
            read_options["connect_args"] = {"server_settings": settings}
    try:
        write_engine = create_async_engine(
            url, pool_size=1, max_overflow=2, **common, **write_options
        )
        read_engine = create_async_engine(
            url, pool_size=read_pool_size, max_overflow=read_pool_size, **common, **read_options
        )
    except ImportError as exc:
        driver = url.get_driver_name()
        raise StoreError(
            f"the {url.get_backend_name()} driver {driver} is not installed: pip install {driver}"
        ) from exc
    except sa_exc.ArgumentError as exc:  # an unknown driver name
        raise StoreError(f"not a database URL Knit can use: {exc}") from exc
    threads: ReadThreads | None = None
    if url.get_backend_name() == "postgresql":
        _install_postgresql_hooks(write_engine.sync_engine, fence)
    if sqlite:
        timeout_ms = int(busy_timeout * 1000)
        _install_sqlite_hooks(write_engine.sync_engine, writer=True, busy_timeout_ms=timeout_ms)
        _install_sqlite_hooks(read_engine.sync_engine, writer=False, busy_timeout_ms=timeout_ms)
        if read_threads is not False:
            engine = _sync_read_engine(url, read_pool_size, timeout_ms, common)
            threads = ReadThreads(engine, read_pool_size)
    db = Database(url, write_engine, read_engine, threads)
    try:
        db.schema_upgrade = await _open_schema(db)
        yield db
    finally:
        await db.aclose()


async def _open_schema(db: Database) -> SchemaUpgrade:
    """:func:`_upgrade_schema`, with a failure to reach the database told in one line.

    A server that refuses the connection or the password does not always surface as a
    ``SQLAlchemyError``: asyncpg's connect raises ``OSError`` (refused, unreachable) and
    its own errors, which SQLAlchemy passes through as they are.
    """
    try:
        return await _upgrade_schema(db)
    except StoreError as exc:
        # ``translate_error``'s "database error: ..." of a driver error (a refused
        # password): say which database. Knit's own (a newer schema) pass as they are.
        cause = exc.__cause__
        if not isinstance(cause, sa_exc.DBAPIError):
            raise
        raise _cannot_open(db.url, cause.orig or cause) from cause
    except KnitError:
        raise
    except Exception as exc:
        if not isinstance(exc, OSError | sa_exc.SQLAlchemyError) and not _from_driver(exc):
            raise
        reason = exc.orig if isinstance(exc, sa_exc.DBAPIError) else None
        raise _cannot_open(db.url, reason or exc) from exc


def _cannot_open(url: URL, reason: BaseException) -> StoreError:
    """``cannot open the database URL: REASON`` in one line, without the password."""
    where = url.render_as_string(hide_password=True)
    text = str(reason).strip()
    message = text.splitlines()[0] if text else type(reason).__name__
    return StoreError(f"cannot open the database {where}: {message}")


def _from_driver(exc: BaseException) -> bool:
    """Whether ``exc`` is one of a database driver's own exceptions (asyncpg's)."""
    return type(exc).__module__.split(".")[0] in ("asyncpg",)


def _sync_read_engine(
    url: URL, threads: int, busy_timeout_ms: int, common: dict[str, Any]
) -> Engine:
    """The pysqlite engine of the read threads: one connection per thread."""
    engine = create_engine(
        url.set(drivername="sqlite+pysqlite"),
        pool_size=threads,
        max_overflow=threads,
        # Each connection is used by one thread at a time, but not always the same one.
        connect_args={"check_same_thread": False},
        **common,
    )
    _install_sqlite_hooks(engine, writer=False, busy_timeout_ms=busy_timeout_ms)
    return engine


async def _upgrade_schema(db: Database) -> SchemaUpgrade:
    """Bring the schema to this code's head revision, in one write transaction.

    On SQLite the transaction begins with ``BEGIN IMMEDIATE`` (the write lock from the
    first statement, as every write of the store), and SQLite's DDL is transactional, as
    PostgreSQL's is: a failing revision leaves the database as it was.
    """
    async with db.transaction() as conn:
        return await conn.run_sync(migrations.upgrade)


POSTGRESQL_SETTINGS = {"client_connection_check_interval": "500ms"}
"""Session settings of every PostgreSQL connection. A cancelled query's connection is
closed by the pool, but the server only notices a gone client when it next writes to it:
without the check a cancelled ``pg_sleep(60)`` (or a long scan) would run to its end, as
a cancelled aiosqlite query would without the interrupt (PostgreSQL 14 or newer)."""

WRITE_LOCK_KEY = leases.WRITE_LOCK_KEY
"""The PostgreSQL advisory lock every write transaction takes first (see
:func:`_install_postgresql_hooks`)."""


@dataclass(frozen=True, slots=True)
class LeaseFence:
    """The leader lease a fenced store's writes must hold: its holder and epoch."""

    holder: str
    epoch: int


def _install_postgresql_hooks(sync_engine: Engine, fence: LeaseFence | None = None) -> None:
    """Every write transaction on PostgreSQL first takes one transaction-level advisory
    lock: PostgreSQL's stand-in for SQLite's ``BEGIN IMMEDIATE``.

    The writer is the one writer of a server, but setup, ``knit db upgrade`` and tools
    write through :meth:`Database.transaction` beside it, and READ COMMITTED (the default
    isolation) lets two read-then-write transactions lose an update. Holding the lock from
    the first statement makes every write transaction see all those committed before it,
    and run alone: what SQLite gives. It is released at commit or rollback; reads never
    take it (docs/decisions/0023-postgresql.md).

    With a ``fence``, the transaction then checks that the lease is still held
    (:func:`knit.store.leases.holds`): a lease changes hands only in a write transaction,
    under the same lock, so no write of a deposed leader lands after its successor took
    over (docs/decisions/0024-leader-lease.md).
    """

    def on_begin(conn: Connection) -> None:
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({WRITE_LOCK_KEY})")
        if fence is not None and not leases.holds(conn, fence.holder, fence.epoch):
            raise Fenced(
                f"not the leader any more (lease epoch {fence.epoch} of {fence.holder} "
                "ended): the write was refused"
            )

    event.listen(sync_engine, "begin", on_begin)


WAL_AUTOCHECKPOINT_PAGES = 10_000
"""WAL pages (4 KiB) after which a commit copies the WAL back into the database (SQLite's
default is 1,000). A busy writer dirties pages all over the node-keyed indexes in every
commit; at 1,000 nearly every commit was a checkpoint, writing each page twice."""
WRITE_BEGIN = "BEGIN IMMEDIATE"
"""How the writer's transactions begin: with the write lock taken at once."""


def _install_sqlite_hooks(sync_engine: Engine, *, writer: bool, busy_timeout_ms: int) -> None:
    """SQLite settings per connection, our own BEGIN, and interrupt-on-cancel."""
    begin = WRITE_BEGIN if writer else "BEGIN"

    # ``dbapi_connection`` is SQLAlchemy's aiosqlite adapter (no type stubs) or a
    # ``sqlite3.Connection`` (read threads).
    def on_connect(dbapi_connection: Any, _record: object) -> None:
        # sqlite3's own transaction handling skips BEGIN before SELECT and SAVEPOINT; we
        # emit BEGIN ourselves (``on_begin``), so turn it off.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            if writer:
                cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
            if not writer:
                cursor.execute("PRAGMA query_only = ON")
        finally:
            cursor.close()

    def on_begin(conn: Connection) -> None:
        conn.exec_driver_sql(begin)

    def on_error(context: ExceptionContext) -> None:
        # An exception that is not an ``Exception`` is a cancellation (or KeyboardInterrupt):
        # the query still runs in aiosqlite's thread. Stop it before SQLAlchemy closes the
        # connection, which would otherwise wait for the query to end.
        if not isinstance(context.original_exception, Exception):
            interrupt_connection(context.connection)

    event.listen(sync_engine, "connect", on_connect)
    event.listen(sync_engine, "begin", on_begin)
    event.listen(sync_engine, "handle_error", on_error)


def interrupt_connection(conn: Connection | None) -> bool:
    """Stop the SQLite query running on ``conn`` and end its transaction; True if it could.

    Called from a synchronous SQLAlchemy hook on the event loop's thread, while the query
    runs in aiosqlite's worker thread:

    1. ``interrupt()`` on the ``sqlite3.Connection`` (thread-safe) makes the query return.
    2. A rollback is queued to the worker thread, so it runs right after the interrupted
       query and before SQLAlchemy's close of the invalidated connection. Without it, the
       close leaves a "zombie" connection (the interrupted statement is not finalized until
       the garbage collector frees its cursor) that keeps the transaction open: after a
       cancelled write, the write lock would stay held and the next writer would time out.

    Both reach under SQLAlchemy's aiosqlite adapter (aiosqlite's ``_conn`` and ``_tx``),
    as SQLAlchemy's own adapter does for the isolation level; if the layout ever changes,
    this returns False and cancellation is merely slower.
    """
    if conn is None or conn.invalidated or conn.closed:
        return False
    try:
        driver = conn.connection.driver_connection
        sqlite_conn = getattr(driver, "_conn", None)
    except (sa_exc.SQLAlchemyError, ValueError):  # closed, or aiosqlite has no connection
        return False
    interrupt = getattr(sqlite_conn, "interrupt", None)
    if sqlite_conn is None or interrupt is None:
        return False
    interrupt()
    queue = getattr(driver, "_tx", None)
    if queue is not None:

        def roll_back() -> None:
            # Runs in aiosqlite's worker thread, after the interrupted query.
            with contextlib.suppress(sqlite3.Error):
                if sqlite_conn.in_transaction:
                    sqlite_conn.rollback()

        queue.put_nowait((None, roll_back))
    log.debug("interrupted a cancelled SQLite query")
    return True
