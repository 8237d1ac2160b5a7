"""Helpers for tests that need real services (nats-server, Docker Engine, a registry).

The one rule for a missing service is ``require``: a failure when ``CI=true`` (CI must run
everything), a skip otherwise (a laptop without Docker can still run the rest).
"""

from __future__ import annotations

import os

import pytest


def in_ci() -> bool:
    """Return whether the environment says this is CI (``CI=true``)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require(condition: bool, reason: str) -> None:
    """Fail (under CI=true) or skip (elsewhere) the current test unless ``condition`` holds.

    Args:
        condition: whether the service the test needs is there.
        reason: what is missing and how to get it, shown in the test report.
    """
    if condition:
        return
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing service fails the run)", pytrace=False)
    pytest.skip(f"{reason} (skipped outside CI; with CI=true this fails)")
