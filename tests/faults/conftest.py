"""Fixtures of the fault-injection suite: a ``FaultEnv`` per test.

Each scenario starts its own nats-server, ``knit server`` and agents (fast settings: heartbeat
every 0.5 s, node TTL 3 s) under the test's tmp dir, hurts them, and checks Docker. The
figures it measures are printed (``pytest -s``) and kept in ``fault-figures.json`` in the
test's tmp dir.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.knit_faults import FaultEnv, Figures


@pytest.fixture
def fault_env(
    docker_host: str, busybox_image: str, nats_server_binary: str, tmp_path: Path
) -> FaultEnv:
    """The Engine (with the busybox image), nats-server, and a figures file for one test."""
    return FaultEnv(
        workdir=tmp_path,
        docker_host=docker_host,
        nats_binary=nats_server_binary,
        figures=Figures(tmp_path / "fault-figures.json"),
    )
