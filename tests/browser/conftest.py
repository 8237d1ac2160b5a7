"""Fixtures of the browser suite: Debian's chromium driven by Playwright against a real Knit.

``cluster`` (per module) is the e2e suite's cluster (``tests.support.knit.cluster_for``: a
``knit server`` with its embedded nats-server and one ``knit agent`` on the Docker Engine).
``browser`` (per module) is ``/usr/bin/chromium`` launched by Playwright (its own browser
download is not used). A missing chromium or Playwright fails the run under ``CI=true``
and skips elsewhere (``tests.support.require``). ``shots`` saves a page's screenshot as a
test artifact, in ``$KNIT_TEST_ARTIFACTS/browser/`` or ``<repo>/test-artifacts/browser/``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support import require
from tests.support.knit import KnitCluster, cluster_for
from tests.support.knit_processes import REPO_ROOT

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path(os.environ.get("KNIT_CHROMIUM", "/usr/bin/chromium"))
"""Debian's chromium (scripts/setup.sh installs it)."""


def artifacts_dir() -> Path:
    """Where screenshots go: ``$KNIT_TEST_ARTIFACTS/browser`` or the repo's
    ``test-artifacts/browser`` (git ignores it)."""
    root = os.environ.get("KNIT_TEST_ARTIFACTS")
    base = Path(root) if root else REPO_ROOT / "test-artifacts"
    folder = base / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def cluster(
    docker_host: str, busybox_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KnitCluster]:
    """A server (embedded nats-server on a free port) and one agent on the Docker Engine."""
    with cluster_for(tmp_path_factory.mktemp("knit"), docker_host) as started:
        yield started


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless ``/usr/bin/chromium`` under Playwright, shared by the module."""
    require(CHROMIUM.exists(), f"no chromium at {CHROMIUM}: apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "playwright is not installed: pip install -e '.[dev]'")
        raise
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context (no cookies) and its page."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(20_000)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Callable[[Page, str], Path]:
    """``shots(page, name)`` saves a full-page PNG named after the test and ``name``."""
    folder = artifacts_dir()
    test = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    count = 0

    def shoot(page: Page, name: str) -> Path:
        nonlocal count
        count += 1
        path = folder / f"{test}-{count:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return shoot
