"""``knit server --insecure-bus``: the open bus of a trusted lab, never the default, said
loudly at every start; agents run on it without joining."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.security.bus_support import connect
from tests.support.knit_api import KnitApi
from tests.support.knit_processes import KnitProcess, KnitServer, ProcessWatch, wait_for_api
from tests.support.process import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


@pytest.fixture(scope="module")
def lab(
    docker_host: str, busybox_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[KnitServer, KnitProcess, KnitApi]]:
    workdir = tmp_path_factory.mktemp("insecure")
    server = KnitServer(workdir, docker_host)
    server.args.append("--insecure-bus")
    agent = KnitProcess(
        "agent",
        ["agent", "--insecure-bus", "--nats", server.nats_url, "--data-dir", str(workdir / "a")],
        workdir,
        docker_host,
    )
    api = KnitApi(server.api_url, ProcessWatch([server, agent]))
    try:
        server.start()
        wait_for_api(server.api_url, timeout=30, watch=ProcessWatch([server]))
        agent.start()
        yield server, agent, api
    finally:
        agent.stop()
        server.stop()
        api.close()


async def test_an_open_lab_bus_is_announced_and_takes_agents_that_did_not_join(
    lab: tuple[KnitServer, KnitProcess, KnitApi], tmp_path: Path
) -> None:
    server, agent, api = lab
    assert "--insecure-bus: the bus is OPEN" in server.log.read_text()
    client = await connect(server.nats_url)  # no credentials needed
    await client.close()
    api.wait_healthy_nodes(1, timeout=30)
    assert not (Path(agent.args[agent.args.index("--data-dir") + 1]) / "identity.json").exists()


def test_the_bus_is_never_open_by_default(tmp_path: Path) -> None:
    # (The other tests start servers without the flag: their NATS refuses a client without
    # credentials, see test_bus_nodes.py.) An agent that has not joined refuses to start
    # on a bus it was not told is open.
    from tests.support.knit_processes import run_cli

    result = run_cli(
        "agent", "--nats", f"nats://127.0.0.1:{free_port()}", "--data-dir", str(tmp_path)
    )
    assert result.returncode != 0
    assert "has not joined a cluster" in result.stderr.strip().splitlines()[-1]
