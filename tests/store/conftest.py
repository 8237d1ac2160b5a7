"""Fixtures of the store's tests: a fresh database per test, on each backend, opened as a Store.

``store`` and ``db_url`` run each test that uses them twice: on a SQLite file
(``[sqlite]``) and on a PostgreSQL database copied from the session's template
(``[postgresql]``, ``postgres_url`` in tests/conftest.py). ``db_path`` is a SQLite file
only: the tests that use it are about SQLite itself (WAL, pragmas, read threads, busy
timeouts, interrupting pysqlite, the file's bytes) and say so.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from knit.store import Store, open_store

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture
def anyio_backend() -> str:
    """SQLAlchemy's async engine runs on asyncio only (ARCHITECTURE.md)."""
    return "asyncio"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where the test's SQLite database file lives (SQLite-only tests)."""
    return tmp_path / "data" / "knit.db"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The store's backend for this run of the test: ``sqlite`` or ``postgresql``."""
    name: str = request.param
    return name


@pytest.fixture
def db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """The test's fresh database on ``backend``: a SQLite file path, or the URL of a
    PostgreSQL database at the head revision (dropped after the test)."""
    if backend == "sqlite":
        return str(tmp_path / "data" / "knit.db")
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    """An open store with its writer running, on each backend."""
    async with open_store(db_url) as opened:
        yield opened
