"""WireGuardInterface on wireguard-go, between two network namespaces joined by a veth pair.

The namespaces come from the ``pair`` fixture (tests/mesh/conftest.py).
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from datetime import UTC, datetime, timedelta

import anyio
import pytest

from knit.mesh import MeshError, Peer, WireGuardInterface, generate_private_key, public_key
from knit.mesh.wireguard import UAPI_DIR
from tests.mesh.namespaces import VETH_A, VETH_B, Pair, ip, output, ping_command
from tests.support import require

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def test_public_key_matches_wg_pubkey() -> None:
    require(shutil.which("wg") is not None, "no wg: apt-get install wireguard-tools")
    private = generate_private_key()
    public = public_key(private)
    assert len(base64.b64decode(public, validate=True)) == 32
    assert len(base64.b64decode(private, validate=True)) == 32
    wg = subprocess.run(
        ["wg", "pubkey"], input=private + "\n", capture_output=True, text=True, check=True
    )
    assert wg.stdout.strip() == public


def test_bad_keys_names_and_addresses_are_refused() -> None:
    key = generate_private_key()
    with pytest.raises(ValueError, match="15"):
        WireGuardInterface("k" * 16, key, "10.0.0.1/24", 51820)
    with pytest.raises(ValueError):
        WireGuardInterface("-kw0", key, "10.0.0.1/24", 51820)
    with pytest.raises(ValueError, match="prefix"):
        WireGuardInterface("kw0", key, "10.0.0.1", 51820)
    with pytest.raises(ValueError, match="32 bytes"):
        WireGuardInterface("kw0", "not-a-key", "10.0.0.1/24", 51820)
    with pytest.raises(ValueError, match="32 bytes"):
        Peer(public_key="c2hvcnQ=", allowed_ips=("10.0.0.2/32",))
    WireGuardInterface("k" * 15, key, "10.0.0.1/24", 51820)


@pytest.mark.e2e
async def test_two_namespaces_reach_each_other_over_the_mesh(pair: Pair) -> None:
    ping = ping_command()
    require(ping is not None, "no ping: apt-get install iputils-ping or busybox-static")
    assert ping is not None
    a = WireGuardInterface(
        pair.wg_a, generate_private_key(), f"{pair.mesh_a}/24", 51820, netns=pair.netns_a
    )
    b = WireGuardInterface(
        pair.wg_b, generate_private_key(), f"{pair.mesh_b}/24", 51821, netns=pair.netns_b
    )
    with anyio.fail_after(60):
        async with a, b:
            await a.set_peers(
                [Peer(b.public_key, (f"{pair.mesh_b}/32",), endpoint=f"{VETH_B}:51821")]
            )
            await b.set_peers(
                [Peer(a.public_key, (f"{pair.mesh_a}/32",), endpoint=f"{VETH_A}:51820")]
            )
            result = await anyio.run_process(
                ["ip", "netns", "exec", pair.netns_a, *ping, "-c", "3", "-W", "1", pair.mesh_b],
                check=False,
            )
            assert result.returncode == 0, result.stdout + result.stderr

            seen = await a.peers()
            assert set(seen) == {b.public_key}
            status = seen[b.public_key]
            assert status.endpoint == f"{VETH_B}:51821"
            assert status.allowed_ips == (f"{pair.mesh_b}/32",)
            assert status.latest_handshake is not None
            assert datetime.now(UTC) - status.latest_handshake < timedelta(minutes=1)
            assert status.rx_bytes > 0
            assert (await b.peers())[a.public_key].latest_handshake is not None

            await a.set_peers([])
            assert await a.peers() == {}
    assert not (UAPI_DIR / f"{pair.wg_a}.sock").exists()
    assert not (UAPI_DIR / f"{pair.wg_b}.sock").exists()
    for netns, name in ((pair.netns_a, pair.wg_a), (pair.netns_b, pair.wg_b)):
        links = await output("ip", "-n", netns, "-o", "link", "show")
        assert name not in links
        assert await output("ip", "netns", "pids", netns) == ""


@pytest.mark.e2e
async def test_up_failure_names_the_command_and_leaves_nothing(pair: Pair) -> None:
    wg = WireGuardInterface(pair.wg_a, generate_private_key(), "10.237.0.1/24", 51820,
                            netns=f"{pair.netns_a}-missing")  # fmt: skip
    with anyio.fail_after(30), pytest.raises(MeshError, match="wireguard-go") as caught:
        await wg.up()
    assert "exited" in str(caught.value)
    assert not wg.socket_path.exists()
    await wg.down()  # idempotent


@pytest.mark.e2e
async def test_down_is_idempotent_and_interface_can_come_up_again(pair: Pair) -> None:
    wg = WireGuardInterface(
        pair.wg_a, generate_private_key(), f"{pair.mesh_a}/24", 51820, netns=pair.netns_a
    )
    with anyio.fail_after(30):
        await wg.up()
        with pytest.raises(MeshError, match="up already"):
            await wg.up()
        await wg.down()
        await wg.down()
        assert not wg.socket_path.exists()
        async with wg:
            assert await wg.peers() == {}
    assert await output("ip", "netns", "pids", pair.netns_a) == ""


@pytest.mark.e2e
async def test_up_failure_after_start_stops_wireguard_go(pair: Pair) -> None:
    first = WireGuardInterface(
        pair.wg_a, generate_private_key(), f"{pair.mesh_a}/24", 51820, netns=pair.netns_a
    )
    second = WireGuardInterface(
        pair.wg_b, generate_private_key(), f"{pair.mesh_b}/24", 51820, netns=pair.netns_a
    )
    with anyio.fail_after(30):
        async with first:
            with pytest.raises(MeshError, match="listen-port 51820") as caught:
                await second.up()
            assert "in use" in str(caught.value)
            assert "private-key /dev/stdin" in str(caught.value)
            assert not second.socket_path.exists()
            links = await output("ip", "-n", pair.netns_a, "-o", "link", "show")
            assert pair.wg_b not in links
            assert pair.wg_a in links
    assert await output("ip", "netns", "pids", pair.netns_a) == ""


@pytest.mark.e2e
@pytest.mark.parametrize("after", [0.0, 0.02, 0.1])
async def test_cancelled_up_leaves_nothing(pair: Pair, after: float) -> None:
    wg = WireGuardInterface(
        pair.wg_a, generate_private_key(), f"{pair.mesh_a}/24", 51820, netns=pair.netns_a
    )
    with anyio.fail_after(30):
        with anyio.move_on_after(after):
            await wg.up()
        await wg.down()
    assert not wg.socket_path.exists()
    assert pair.wg_a not in await output("ip", "-n", pair.netns_a, "-o", "link", "show")
    assert await output("ip", "netns", "pids", pair.netns_a) == ""


@pytest.mark.e2e
async def test_a_name_in_use_is_a_clear_error(pair: Pair) -> None:
    ip(
        "-n",
        pair.netns_a,
        "link",
        "add",
        pair.wg_a,
        "type",
        "veth",
        "peer",
        "name",
        "kx" + pair.wg_a,
    )
    taken = WireGuardInterface(
        pair.wg_a, generate_private_key(), f"{pair.mesh_a}/24", 51820, netns=pair.netns_a
    )
    with anyio.fail_after(30), pytest.raises(MeshError, match="exists already"):
        await taken.up()
    first = WireGuardInterface(
        pair.wg_b, generate_private_key(), f"{pair.mesh_b}/24", 51820, netns=pair.netns_b
    )
    # wireguard-go's UAPI socket is per machine: the same name in another namespace is taken.
    second = WireGuardInterface(
        pair.wg_b, generate_private_key(), f"{pair.mesh_a}/24", 51821, netns=pair.netns_a
    )
    with anyio.fail_after(30):
        async with first:
            with pytest.raises(MeshError, match="in use"):
                await second.up()
    assert await output("ip", "netns", "pids", pair.netns_a) == ""


@pytest.mark.e2e
async def test_kernel_backend_is_probed_and_auto_falls_back_to_wireguard_go(pair: Pair) -> None:
    kernel = WireGuardInterface(
        pair.wg_a, generate_private_key(), f"{pair.mesh_a}/24", 51820, netns=pair.netns_a,
        backend="kernel",
    )  # fmt: skip
    with anyio.fail_after(30):
        try:
            await kernel.up()
        except MeshError as exc:  # no module on this machine: the error names the command
            assert "type wireguard" in str(exc)
            has_module = False
        else:
            assert kernel.kernel
            has_module = True
            await kernel.down()
        assert pair.wg_a not in await output("ip", "-n", pair.netns_a, "-o", "link", "show")
        auto = WireGuardInterface(
            pair.wg_a, generate_private_key(), f"{pair.mesh_a}/24", 51820, netns=pair.netns_a
        )
        async with auto:
            assert auto.kernel is has_module
            assert await auto.peers() == {}
    assert pair.wg_a not in await output("ip", "-n", pair.netns_a, "-o", "link", "show")
    assert await output("ip", "netns", "pids", pair.netns_a) == ""
