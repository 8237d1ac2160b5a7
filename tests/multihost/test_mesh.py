"""The WireGuard mesh across hosts, for real: a server on host1 with ``--mesh-cidr``, agents
on host2 and host3 joined with ``--mesh-endpoint`` (and one on host1 outside the mesh), each
host a network namespace with its own dockerd (``tests.support.hosts``).

The tests run in order on one cluster (the module's): they check the mesh is full, NATS is
reachable through the tunnels only, a deployment published on the mesh address is reached
from another host's container, an agent killed and restarted keeps its address, and a spent
or unknown join token and a removed node get no tunnel.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from knit.secrets import NodeKeyPair
from knit.trust.nkeys import KeyKind, NKey
from tests.support.docker import BUSYBOX_IMAGE
from tests.support.hosts import Host, Lan
from tests.support.knit_api import JSON, KnitApi
from tests.support.knit_mesh import WG_PORT, interface_of, mesh_agent, mesh_server
from tests.support.knit_processes import KnitAgent, KnitServer, ProcessWatch
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e]

MESH_CIDR = "10.77.0.0/24"
SERVER_MESH_ADDRESS = "10.77.0.1"
HTTP_PORT = 18080


@dataclass
class MeshCluster:
    """The module's cluster: the server on host1, the agents by host name."""

    lan: Lan
    workdir: Path
    server: KnitServer
    api: KnitApi
    watch: ProcessWatch
    agents: dict[str, KnitAgent]

    def join_token(self) -> str:
        return str(self.api.ok(self.api.post("/join-tokens", {"uses": 1}), 201)["token"])

    def member_agent(self, host: Host, token: str | None, name: str | None = None) -> KnitAgent:
        agent = mesh_agent(
            self.lan,
            host,
            self.workdir,
            self.server.api_url,
            token,
            name=name,
            labels={"host": host.name},
        )
        self.watch.processes.append(agent)
        return agent

    def nodes_by_host(self) -> dict[str, JSON]:
        return {n["hostname"]: n for n in self.api.nodes()}


@pytest.fixture(scope="module")
def mesh(lan: Lan, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshCluster]:
    workdir = tmp_path_factory.mktemp("mesh")
    host1, host2, host3 = lan.hosts
    server = mesh_server(lan, host1, workdir, MESH_CIDR)
    watch = ProcessWatch([server])
    api = KnitApi(server.api_url, watch, token_file=server.token_file)
    cluster = MeshCluster(lan, workdir, server, api, watch, {})
    try:
        server.start_and_wait()
        for host in (host2, host3):
            cluster.agents[host.name] = cluster.member_agent(host, cluster.join_token())
            cluster.agents[host.name].start()
        # An agent on the server's host, outside the mesh: NATS is local to it.
        outside = KnitAgent(
            workdir,
            host1.docker_host,
            name="agent-host1",
            server_url=server.api_url,
            join_token=cluster.join_token(),
            labels={"host": host1.name},
            extra_args=["--hostname", host1.name],
            netns=host1.netns,
        )
        watch.processes.append(outside)
        cluster.agents[host1.name] = outside
        outside.start()
        api.wait_healthy_nodes(3)
        yield cluster
    finally:
        print(watch.logs())
        api.close()
        for process in reversed(watch.processes):
            process.stop()
        for host in lan.hosts:
            host.engine.remove_containers()


def ping(source: Host, address: str) -> bool:
    done = source.run(["busybox", "ping", "-c", "1", "-W", "1", address], check=False)
    return done.returncode == 0


def handshakes(host: Host, interface: str) -> dict[str, int]:
    """``wg show IFACE latest-handshakes``: seconds since the epoch by peer key (0: never)."""
    out = host.run(["wg", "show", interface, "latest-handshakes"]).stdout
    return {key: int(at) for key, at in (line.split("\t") for line in out.splitlines())}


def tcp_answers(source: Host, address: str, port: int) -> bool:
    """Whether a TCP connection from ``source``'s namespace to ``address:port`` is accepted."""
    probe = (
        "import socket,sys\n"
        "try:\n"
        f"    socket.create_connection(({address!r}, {port}), timeout=3).close()\n"
        "except OSError:\n"
        "    sys.exit(1)\n"
    )
    return source.run([sys.executable, "-c", probe], check=False).returncode == 0


def test_every_node_has_a_mesh_address_and_a_tunnel_to_every_other(mesh: MeshCluster) -> None:
    lan, api = mesh.lan, mesh.api
    nodes = mesh.nodes_by_host()
    assert nodes["host1"]["address"] is None  # outside the mesh
    addresses = {name: nodes[name]["address"] for name in ("host2", "host3")}
    assert sorted(addresses.values()) == ["10.77.0.2", "10.77.0.3"]
    members = api.listing("/mesh")
    assert [m["address"] for m in members] == [SERVER_MESH_ADDRESS, "10.77.0.2", "10.77.0.3"]
    assert members[0]["node_id"] is None
    assert members[0]["endpoint"] == f"{lan.hosts[0].address}:{WG_PORT}"
    mesh_address = {"host1": SERVER_MESH_ADDRESS, **addresses}
    keys = {m["address"]: m["public_key"] for m in members}
    for host in lan.hosts:
        for other in lan.hosts:
            if other is not host:
                wait_until(
                    functools.partial(ping, host, mesh_address[other.name]),
                    timeout=20,
                    what=f"{host.name} pinging {other.name} at {mesh_address[other.name]}",
                    watch=mesh.watch,
                )
        seen = handshakes(host, interface_of(lan, host))
        others = {keys[a] for n, a in mesh_address.items() if n != host.name}
        assert set(seen) == others, f"{host.name}'s peers: {seen}"
        assert all(seen[k] > 0 for k in others), f"{host.name} lacks a handshake: {seen}"
    for member in api.listing("/mesh")[1:]:
        assert member["latest_handshake"] is not None
        assert member["transfer"]["rx_bytes"] > 0


def test_nats_is_reached_through_the_tunnel_only(mesh: MeshCluster) -> None:
    host1, host2, _ = mesh.lan.hosts
    port = mesh.server.nats_port
    assert port is not None
    assert tcp_answers(host2, SERVER_MESH_ADDRESS, port)
    assert not tcp_answers(host2, host1.address, port)
    assert not tcp_answers(host1, host1.address, port)  # not even on the server's own LAN address


def test_a_deployment_published_on_the_mesh_is_reached_from_another_hosts_container(
    mesh: MeshCluster,
) -> None:
    api, lan = mesh.api, mesh.lan
    spec = {
        "name": "mesh-web",
        "image": BUSYBOX_IMAGE,
        "replicas": 2,
        "command": ["sh", "-c", "exec httpd -f -p 8080 -h /www"],
        "templates": [
            {"destination": "/www/index.html", "content": "hello from {{ node.address }}\n"}
        ],
        "ports": [{"container_port": 8080, "host_port": HTTP_PORT, "host_ip": "mesh"}],
    }
    deployment = api.ok(api.post("/deployments", spec), 201)["id"]
    instances = api.wait_instances(deployment, "running", count=2, timeout=60)
    node_host = {n["id"]: n["hostname"] for n in api.nodes()}
    assert sorted(node_host[i["node_id"]] for i in instances) == ["host2", "host3"]
    addresses = {n["hostname"]: n["address"] for n in api.nodes()}
    host3 = lan.hosts[2]
    url = f"http://{addresses['host2']}:{HTTP_PORT}/"
    command = ["timeout", "8", "wget", "-q", "-O", "-", url]

    def fetched() -> str | None:
        try:
            return host3.docker("run", "--rm", BUSYBOX_IMAGE, *command)
        except Exception:  # not served yet
            return None

    page = wait_until(fetched, timeout=20, what=f"{url} from a container on host3")
    assert page == f"hello from {addresses['host2']}\n"
    # Published on the mesh address only: not on host2's LAN address.
    assert not tcp_answers(lan.hosts[0], lan.hosts[1].address, HTTP_PORT)
    api.ok(api.delete(f"/deployments/{deployment}"), 200)
    api.wait_gone(deployment)


def test_a_killed_agent_loses_its_instance_and_comes_back_with_the_same_address(
    mesh: MeshCluster,
) -> None:
    api = mesh.api
    spec = {
        "name": "mesh-mover",
        "image": BUSYBOX_IMAGE,
        "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"],
        "ports": [{"container_port": 8080, "host_ip": "mesh"}],  # mesh members only
    }
    deployment = api.ok(api.post("/deployments", spec), 201)["id"]
    (instance,) = api.wait_instances(deployment, "running")
    before = mesh.nodes_by_host()
    victim = next(h for h, n in before.items() if n["id"] == instance["node_id"])
    survivor = "host3" if victim == "host2" else "host2"
    agent = mesh.agents[victim]
    assert agent.process is not None
    agent.process.kill()
    agent.process.wait(10)

    def moved() -> JSON | None:
        running = [i for i in api.instances_of(deployment) if i["status"] == "running"]
        on = [i for i in running if i["node_id"] == before[survivor]["id"]]
        return on[0] if on else None

    wait_until(moved, timeout=45, what=f"the instance moving to {survivor}")  # (no watch:
    # the agent it would report dead was killed on purpose)
    # Back on another WireGuard port: the new endpoint reaches the other members.
    index = agent.args.index("--mesh-endpoint") + 1
    moved_to = agent.args[index].replace(f":{WG_PORT}", f":{WG_PORT + 1}")
    agent.args[index] = moved_to
    agent.start()  # the same data dir: no token needed
    wait_until(
        lambda: mesh.nodes_by_host()[victim]["status"] == "healthy",
        timeout=30,
        what=f"{victim}'s agent healthy again",
        watch=mesh.watch,
    )
    other_host = next(h for h in mesh.lan.hosts if h.name == survivor)

    def endpoint_seen() -> bool:
        out = other_host.run(["wg", "show", interface_of(mesh.lan, other_host), "endpoints"])
        return moved_to in out.stdout

    wait_until(endpoint_seen, timeout=10, what=f"{survivor} told {victim}'s new endpoint")
    assert ping(other_host, before[victim]["address"])
    after = mesh.nodes_by_host()
    assert len(api.nodes()) == len(before)  # no duplicate node
    assert after[victim]["id"] == before[victim]["id"]
    assert after[victim]["address"] == before[victim]["address"]
    api.ok(api.delete(f"/deployments/{deployment}"), 200)
    api.wait_gone(deployment)


def spend(api_url: str, token: str) -> None:
    """Join a made-up node (outside the mesh) with ``token``, as an agent would."""
    body = {
        "hostname": "spender",
        "public_key": NodeKeyPair.generate().public_key_b64,
        "nats_key": NKey.generate(KeyKind.USER).public_key,
    }
    headers = {"Authorization": f"Bearer {token}"}
    response = httpx.post(f"{api_url}/join", json=body, headers=headers, timeout=15)
    assert response.status_code == 201, response.text


def test_a_spent_or_unknown_token_and_a_removed_node_get_no_tunnel(mesh: MeshCluster) -> None:
    api, lan = mesh.api, mesh.lan
    _, host2, _ = lan.hosts
    members_before = api.listing("/mesh")
    spent = mesh.join_token()
    spend(mesh.server.api_url, spent)
    for token, name in ((spent, "agent-spent"), ("knitjoin_" + "A" * 43, "agent-unknown")):
        agent = mesh.member_agent(host2, token, name=name)
        interface = f"kx{name[6]}{lan.tag}"[:15]
        agent.args[agent.args.index("--mesh-interface") + 1] = interface
        agent.start()
        assert agent.process is not None
        assert agent.process.wait(30) != 0, agent.logs()
        assert "join" in agent.logs().lower()
        assert host2.run(["ip", "link", "show", interface], check=False).returncode != 0
    assert [m["node_id"] for m in api.listing("/mesh")] == [m["node_id"] for m in members_before]

    removed = mesh.nodes_by_host()["host3"]
    api.ok(api.delete(f"/nodes/{removed['id']}"), 200)
    agent3 = mesh.agents["host3"]
    assert agent3.process is not None
    assert agent3.process.wait(30) != 0
    wait_until(
        lambda: removed["id"] not in {m["node_id"] for m in api.listing("/mesh")},
        timeout=10,
        what="the removed node leaving the mesh",
    )
    key = next(m["public_key"] for m in members_before if m["node_id"] == removed["id"])
    wait_until(
        lambda: key not in handshakes(host2, interface_of(lan, host2)),
        timeout=10,
        what="host2 dropping the removed node from its peers",
    )
    assert not ping(host2, removed["address"])
