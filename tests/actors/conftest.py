"""Fixtures for the actor runtime's tests: every test runs on anyio's asyncio and trio backends.

The actor runtime is backend-neutral, so unlike the rest of Knit's tests (asyncio only, see
``tests/conftest.py``) these run twice. ``trio_mode`` stays off: the anyio plugin drives both.
"""

from __future__ import annotations

import pytest

from tests.actors.support import TaskCounter


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run each ``@pytest.mark.anyio`` test on both backends."""
    backend: str = request.param
    return backend


@pytest.fixture
def tasks() -> TaskCounter:
    """Counts the running tasks, to show that a system leaves none behind."""
    return TaskCounter()
