"""Joining and leaving: an agent joins only with a valid join token, keeps its identity in
its data dir (0600), and a removed node's credentials stop working at once.

Real ``knit server`` and ``knit agent`` processes on the Docker Engine.
"""

from __future__ import annotations

import re
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from nats.errors import Error as NatsError

from tests.security.bus_support import Stolen
from tests.support.knit import SLEEPER, KnitCluster, cluster_for, unique_name
from tests.support.knit_processes import KNIT_COMMAND, REPO_ROOT, KnitAgent, ProcessWatch
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e]


@pytest.fixture(scope="module")
def knit(
    docker_host: str, busybox_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KnitCluster]:
    with cluster_for(tmp_path_factory.mktemp("bus-join"), docker_host, agents=[{}]) as cluster:
        yield cluster


def agent_with(knit: KnitCluster, token: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    """Run ``knit agent`` joining with ``token``; it must end by itself (a refusal)."""
    return subprocess.run(
        [
            *KNIT_COMMAND,
            "agent",
            "--server",
            knit.server.api_url,
            "--join-token",
            token,
            "--data-dir",
            str(data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
    )


def refused_with(result: subprocess.CompletedProcess[str], reason: str) -> None:
    assert result.returncode != 0, result.stdout + result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("knit: join refused") and reason in last, result.stderr
    assert "Traceback" not in result.stderr


def test_an_unknown_used_expired_or_revoked_join_token_is_refused(
    knit: KnitCluster, tmp_path: Path
) -> None:
    refused_with(agent_with(knit, "knitjoin_" + "A" * 43, tmp_path / "unknown"), "unknown")
    expiring = knit.api.ok(knit.api.post("/join-tokens", {"uses": 1, "ttl": 1}), 201)
    time.sleep(1.5)
    refused_with(agent_with(knit, expiring["token"], tmp_path / "expired"), "expired")
    revoked = knit.api.ok(knit.api.post("/join-tokens", {"uses": 1}), 201)
    knit.api.ok(knit.api.delete(f"/join-tokens/{revoked['id']}"), 200)
    refused_with(agent_with(knit, revoked["token"], tmp_path / "revoked"), "revoked")
    # A token of one use admits one node: spent by a join, then refused.
    once = knit.join_token()
    joined = KnitAgent(
        tmp_path, knit.docker_host, name="first", server_url=knit.server.api_url, join_token=once
    )
    joined.start()
    try:
        wait_until(  # (identity.json first, node-id a moment after)
            lambda: (joined.data_dir / "node-id").exists(),
            timeout=30,
            what="the first agent joined",
            watch=ProcessWatch([joined]),
        )
        first = (joined.data_dir / "node-id").read_text().strip()
    finally:
        joined.stop()
    knit.api.ok(knit.api.delete(f"/nodes/{first}"), 200)  # gone: nothing is placed there
    refused_with(agent_with(knit, once, tmp_path / "second"), "used up")
    assert not (tmp_path / "second" / "identity.json").exists()


def test_the_identity_is_kept_private_and_later_starts_need_no_token(knit: KnitCluster) -> None:
    agent = knit.agents[0]
    for name in ("identity.json", "nats.seed", "node.key", "node-id"):
        mode = stat.S_IMODE((agent.data_dir / name).stat().st_mode)
        assert mode == 0o600, f"{name}: {mode:o}"
    assert stat.S_IMODE(agent.data_dir.stat().st_mode) == 0o700
    # Started again with neither the server's address nor a token: the same node.
    knit.stop_agent(agent)
    again = KnitAgent(
        knit.workdir, knit.docker_host, name=agent.name, server_url=None, join_token=None
    )
    again.node_id = agent.node_id
    knit.agents[0] = again
    knit.watch.processes.append(again)
    again.start()
    knit.api.wait(
        lambda: knit.api.get(f"/nodes/{again.node_id}").json().get("status") == "healthy",
        timeout=30,
        what="the same node healthy again",
    )


@pytest.mark.anyio
async def test_a_removed_node_is_cut_off_at_once_and_its_instances_move(
    knit: KnitCluster, busybox_image: str
) -> None:
    doomed = await anyio.to_thread.run_sync(knit.add_agent, {"zone": "doomed"})
    keep = knit.agents[0]
    spec = {"name": unique_name("moves"), "image": busybox_image, "command": SLEEPER, "replicas": 2}
    created = await anyio.to_thread.run_sync(knit.create_deployment, spec)
    await anyio.to_thread.run_sync(
        lambda: knit.api.wait_instances(created["id"], "running", count=2)
    )
    on_doomed = [i for i in knit.api.instances_of(created["id"]) if i["node_id"] == doomed.node_id]
    assert on_doomed, "spread over both nodes: one instance on the doomed node"
    stolen = Stolen.from_data_dir(doomed.data_dir)
    knit.api.ok(knit.api.delete(f"/nodes/{doomed.node_id}"), 200)
    knit.watch.processes.remove(doomed)
    # The agent is told by NATS and ends with the reason.
    await anyio.to_thread.run_sync(lambda: doomed.process.wait(20) if doomed.process else None)
    assert doomed.process is not None and doomed.process.returncode not in (0, None)
    assert "NATS refused this node's credentials" in doomed.log.read_text()
    # Its credentials no longer open a connection; the server no longer knows it.
    with pytest.raises(NatsError):
        await stolen.connect()
    assert knit.api.get(f"/nodes/{doomed.node_id}").status_code == 404
    # Its instance was lost at once and runs elsewhere.
    running = await anyio.to_thread.run_sync(
        lambda: knit.api.wait_instances(created["id"], "running", count=2, timeout=30)
    )
    assert {i["node_id"] for i in running} == {keep.node_id}
    kinds = [e["kind"] for e in knit.api.listing(f"/events?node_id={doomed.node_id}")]
    assert "node.removed" in kinds


SEED = re.compile(rb"\bS[OAU][A-Z2-7]{56}\b")
"""An nkey seed (operator, account or user) in its text form."""


def test_no_key_is_kept_or_logged_in_clear(knit: KnitCluster) -> None:
    agent = knit.agents[0]
    node_seed = (agent.data_dir / "nats.seed").read_text().strip().encode()
    node_key = (agent.data_dir / "node.key").read_text().strip().encode()
    server_files = [p for p in knit.server.data_dir.rglob("*") if p.is_file()]
    logs = [p.log for p in [knit.server, *knit.agents] if p.log.exists()]
    for path in [*server_files, *logs]:
        data = path.read_bytes()
        if path.name in ("secret.key", "admin.token"):
            continue  # the server's own key file and the admin's token: what they are for
        assert not SEED.search(data), f"an nkey seed in clear in {path}"
        assert node_seed not in data and node_key not in data, f"a node's key in {path}"
