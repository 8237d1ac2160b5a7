"""Knit as its users run it, for end-to-end tests: a cluster of one ``knit server`` and its
``knit agent``s (``KnitCluster``, ``cluster_for``), driven over the REST API and checked with
Docker's own view of the truth.

Nothing here imports Knit's server or agent code: the tests drive Knit only through its public
contract (the ``knit`` command, the REST API, the NATS subjects of the spec) and check the
result with the ``docker`` CLI, so a bug in Knit cannot hide itself by also breaking the
harness. The processes are ``tests.support.knit_processes``, the API client
``tests.support.knit_api`` (it sends the admin token the server writes to
``<data dir>/admin.token``), the waits ``tests.support.waiting``.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import httpx

from tests.support.knit_api import JSON, KnitApi
from tests.support.knit_docker import remove_containers_by_label, remove_docker_network
from tests.support.knit_processes import KnitAgent, KnitServer, ProcessWatch

SLEEPER = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
"""A busybox command that runs until stopped and stops at once on SIGTERM (PID 1 ignores
signals it has no handler for, so plain ``sleep`` would make every stop wait for the kill)."""


def files_containing(roots: Sequence[Path], secret: str) -> list[Path]:
    """The files under ``roots`` holding ``secret`` in clear (a database with its WAL, keys,
    rendered templates, a Docker config...)."""
    needle = secret.encode()
    return [
        path
        for root in roots
        if root.exists()
        for path in sorted(root.rglob("*"))
        if path.is_file() and needle in path.read_bytes()
    ]


# -- a cluster of processes ------------------------------------------------------------------


class KnitCluster:
    """One ``knit server`` and its agents, each in its own folder under ``workdir``.

    Tracks what tests create through it (``create_*``) so that ``reset()`` deletes it between
    tests sharing the cluster, and ``close()`` stops every process and removes every container
    carrying the ``knit.node`` of one of its nodes, and the Docker networks the tests declared.
    """

    def __init__(
        self,
        workdir: Path,
        docker_host: str,
        *,
        external_nats: str | None = None,
        server_args: Sequence[str] = (),
    ) -> None:
        self.workdir = workdir
        self.docker_host = docker_host
        self.server = KnitServer(
            workdir, docker_host, nats_url=external_nats, extra_args=server_args
        )
        self.agents: list[KnitAgent] = []
        self.watch = ProcessWatch([self.server])
        self.api = KnitApi(self.server.api_url, self.watch, token_file=self.server.token_file)
        self.node_ids: set[str] = set()
        self.deployments: list[str] = []
        self.registries: list[str] = []
        self.networks: list[str] = []
        self.docker_networks: set[str] = set()
        self.every_docker_network: set[str] = set()

    @property
    def nats_url(self) -> str:
        """The NATS the server and agents use."""
        return self.server.nats_url

    def start(self, agents: Sequence[Mapping[str, str]] = ({},)) -> KnitCluster:
        """Start the server, then one agent per label mapping in ``agents``."""
        self.server.start_and_wait()
        for labels in agents:
            self.add_agent(labels)
        return self

    def add_agent(
        self,
        labels: Mapping[str, str] | None = None,
        *,
        docker_host: str | None = None,
        nats_url: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> KnitAgent:
        """Start an agent (on the cluster's Engine and NATS unless given others, with
        ``extra_args`` after the usual ones, e.g. ``--allow-host-network``) and wait until
        its node is healthy; sets ``agent.node_id``."""
        known = {n["id"] for n in self.api.nodes()}
        agent = KnitAgent(
            self.workdir,
            docker_host or self.docker_host,
            name=f"agent-{len(self.agents) + 1}",
            server_url=self.server.api_url,
            join_token=self.join_token(),
            nats_url=nats_url,
            labels=labels,
            ca_file=self.server.ca_file,
            extra_args=extra_args,
        )
        self.agents.append(agent)
        self.watch.processes.append(agent)
        agent.start()

        def new_healthy_node() -> str | None:
            fresh = [
                n["id"]
                for n in self.api.nodes()
                if n["id"] not in known and n.get("status") == "healthy"
            ]
            return fresh[0] if len(fresh) == 1 else None

        agent.node_id = self.api.wait(
            new_healthy_node, timeout=30, what=f"{agent.name}'s node registered and healthy"
        )
        self.node_ids.add(agent.node_id)
        return agent

    def join_token(self, uses: int = 1) -> str:
        """A new join token admitting ``uses`` agents (``POST /join-tokens``)."""
        made = self.api.ok(self.api.post("/join-tokens", {"uses": uses}), 201)
        assert isinstance(made, dict)
        return str(made["token"])

    def stop_agent(self, agent: KnitAgent) -> int | None:
        """Stop one agent (it stays in ``agents``, no longer watched)."""
        if agent in self.watch.processes:
            self.watch.processes.remove(agent)
        return agent.stop()

    # creating things through the API, tracked for cleanup

    def create(self, path: str, body: JSON) -> JSON:
        """``POST path`` asserting 201; remember the new id for ``reset()``."""
        created = self.api.ok(self.api.post(path, body), 201)
        assert isinstance(created, dict) and created.get("id"), f"POST {path}: {created!r}"
        if path == "/deployments":
            self.deployments.append(created["id"])
        elif path == "/registries":
            self.registries.append(created["id"])
        elif path == "/networks":
            self.networks.append(created["id"])
            self.docker_networks.add(str(body["name"]))
            self.every_docker_network.add(str(body["name"]))
        return created

    def create_deployment(self, spec: JSON) -> JSON:
        """``POST /deployments`` (201)."""
        return self.create("/deployments", spec)

    def create_registry(self, url: str, username: str, password: str) -> JSON:
        """``POST /registries`` (201)."""
        return self.create("/registries", {"url": url, "username": username, "password": password})

    def create_network(self, name: str, subnet: str | None, driver: str = "bridge") -> JSON:
        """``POST /networks`` (201)."""
        body: JSON = {"name": name, "driver": driver}
        if subnet is not None:
            body["subnet"] = subnet
        return self.create("/networks", body)

    def reset(self) -> None:
        """Delete what the last test created: deployments (and their containers), networks
        (and their Docker networks), registries. Best effort: Knit may be broken."""
        with contextlib.suppress(httpx.HTTPError):
            for deployment_id in self.deployments:
                self.api.delete(f"/deployments/{deployment_id}")
        for deployment_id in self.deployments:
            remove_containers_by_label(self.docker_host, "knit.deployment", deployment_id)
        with contextlib.suppress(httpx.HTTPError):
            for network_id in self.networks:
                self.api.delete(f"/networks/{network_id}")
            for registry_id in self.registries:
                self.api.delete(f"/registries/{registry_id}")
        for name in self.docker_networks:
            remove_docker_network(self.docker_host, name)
        self.deployments.clear()
        self.networks.clear()
        self.registries.clear()
        self.docker_networks.clear()

    def close(self) -> None:
        """Stop every process, then remove the containers of its nodes and its networks."""
        with contextlib.suppress(httpx.HTTPError, AssertionError, ValueError, KeyError):
            self.node_ids.update(n["id"] for n in self.api.nodes())
        self.reset()
        for agent in self.agents:
            agent.stop()
        self.server.stop()
        self.api.close()
        for node_id in self.node_ids:
            remove_containers_by_label(self.docker_host, "knit.node", node_id)
        for name in self.every_docker_network:  # again: a late container may have held one
            remove_docker_network(self.docker_host, name)

    def logs(self) -> str:
        """Every process's log tail."""
        return "".join(p.logs() for p in [self.server, *self.agents])

    def files_containing(self, secret: str) -> list[Path]:
        """The files under the server's and agents' data dirs that hold ``secret`` in clear."""
        roots = [self.server.data_dir, *(agent.data_dir for agent in self.agents)]
        return files_containing(roots, secret)

    def log_text(self) -> str:
        """The whole of every process's log (to look for what must never be logged)."""
        logs = [p.log for p in [self.server, *self.agents] if p.log.exists()]
        return "".join(log.read_text(errors="replace") for log in logs)


def restart_server_keeping(
    knit: KnitCluster, deployment_id: str, node_id: str | None, before: list[JSON]
) -> list[JSON]:
    """Stop and start the server; check the deployment is still there, the node ``node_id``
    healthy again and the very instances of ``before`` running. Returns them."""
    knit.server.stop()
    knit.server.start_and_wait()
    assert deployment_id in [d["id"] for d in knit.api.listing("/deployments")]
    knit.api.wait(
        lambda: any(n["id"] == node_id and n["status"] == "healthy" for n in knit.api.nodes()),
        timeout=30,
        what="the agent healthy again after the server restarted",
    )
    after = knit.api.wait_instances(deployment_id, "running", count=len(before), timeout=30)
    assert sorted(i["id"] for i in after) == sorted(i["id"] for i in before)
    return after


def unique_name(prefix: str) -> str:
    """A Knit name (``[a-z0-9-]``, ≤ 63) unique to this call: ``PREFIX-xxxxxxxx``."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def cluster_for(
    workdir: Path,
    docker_host: str,
    agents: Sequence[Mapping[str, str]] = ({},),
    external_nats: str | None = None,
    server_args: Sequence[str] = (),
) -> Iterator[KnitCluster]:
    """A started ``KnitCluster``, closed on exit (even when starting it failed);
    ``server_args`` go to ``knit server`` after the usual ones (``--database-url ...``)."""
    cluster = KnitCluster(
        workdir, docker_host, external_nats=external_nats, server_args=server_args
    )
    try:
        yield cluster.start(agents)
    finally:
        cluster.close()
