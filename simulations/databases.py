"""The state store a simulation run's server uses: SQLite (the default) or PostgreSQL.

Layer: simulations (a tool). Imports anyio, psutil, the standard library, ``knit.errors``
and ``simulations.postgres`` (the throwaway cluster).

On SQLite the server keeps its database in its fresh data dir, as it does by default. On
PostgreSQL the harness starts a throwaway cluster for the run (``simulations.postgres``: in
``/dev/shm``, durability off) with one database, ``knit``, passes its URL to the server with
``--database-url``, and removes the cluster after the run; given the URL of an existing
database, it uses that one as it is and starts nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
import psutil

from knit.errors import KnitError
from simulations.postgres import PostgresCluster, postgres_problem

DATABASES = ("sqlite", "postgresql")
"""The backends a run can use, as ``--database`` spells them."""

DATABASE_NAME = "knit"
"""The database made in a throwaway cluster for the run."""


class DatabaseError(KnitError):
    """A ``--database`` list names an unknown backend, or the backend cannot be had here."""


def parse_databases(text: str) -> list[str]:
    """``"sqlite,postgresql"`` → ``["sqlite", "postgresql"]``, in the order given.

    ``postgres`` is ``postgresql``, as in store URLs.

    Raises:
        DatabaseError: empty, an unknown backend, or one named twice.
    """
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    names = ["postgresql" if name == "postgres" else name for name in names]
    if not names:
        raise DatabaseError("no database named")
    unknown = [name for name in names if name not in DATABASES]
    if unknown:
        raise DatabaseError(f"unknown database {unknown[0]!r} (one of: {', '.join(DATABASES)})")
    if len(set(names)) != len(names):
        raise DatabaseError(f"a database named twice in {text!r}")
    return names


@dataclass
class RunDatabase:
    """The store of one run: which backend, the URL given to the server (None: SQLite in
    its data dir) and, for a cluster the harness started, its postmaster's process id."""

    backend: str
    url: str | None = None
    postmaster_pid: int | None = None

    def cpu_s(self) -> float | None:
        """CPU seconds used so far by the cluster the harness started (the postmaster, its
        backends and the children it has reaped); None for any other store."""
        if self.postmaster_pid is None:
            return None
        try:
            postmaster = psutil.Process(self.postmaster_pid)
            own = postmaster.cpu_times()
            total = own.user + own.system + own.children_user + own.children_system
            for child in postmaster.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    times = child.cpu_times()
                    total += times.user + times.system
        except psutil.Error:
            return None
        return round(total, 1)


@contextlib.asynccontextmanager
async def open_database(
    backend: str, url: str | None = None, *, start_timeout: float = 60.0
) -> AsyncIterator[RunDatabase]:
    """The store for one run, for as long as the context lasts.

    Args:
        backend: one of ``DATABASES``.
        url: a PostgreSQL database to use as it is (no cluster is started); only with
            ``postgresql``.
        start_timeout: seconds the throwaway cluster may take to accept connections.

    Raises:
        DatabaseError: an unknown backend, a URL for SQLite, or no PostgreSQL to start here.
        RuntimeError: the cluster did not start.

    The cluster starts and stops in a worker thread; cancellation waits for the stop (the
    cluster's folder is always removed).
    """
    if backend not in DATABASES:
        raise DatabaseError(f"unknown database {backend!r}")
    if backend == "sqlite":
        if url is not None:
            raise DatabaseError("--database-url is for postgresql")
        yield RunDatabase(backend)
        return
    if url is not None:
        yield RunDatabase(backend, url)
        return
    problem = postgres_problem()
    if problem is not None:
        raise DatabaseError(problem)
    cluster = PostgresCluster()
    try:
        await anyio.to_thread.run_sync(cluster.start, start_timeout)
        database_url = await anyio.to_thread.run_sync(cluster.create_database, DATABASE_NAME)
        yield RunDatabase(backend, database_url, cluster.pid)
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(cluster.stop)
