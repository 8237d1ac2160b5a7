"""Fixtures of the store's tests: a fresh SQLite file per test, opened as a Store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from knit.store import Store, open_store


@pytest.fixture
def anyio_backend() -> str:
    """SQLAlchemy's async engine runs on asyncio only (ARCHITECTURE.md)."""
    return "asyncio"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where the test's database file lives."""
    return tmp_path / "data" / "knit.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[Store]:
    """An open store with its writer running."""
    async with open_store(db_path) as opened:
        yield opened
