"""``knit dev``: a whole Knit on one machine, in one process tree.

Layer: the top (beside the CLI). Starts an embedded nats-server on a free port, the server
and one local agent in this process, SQLite under ``--data-dir``, Docker from ``DOCKER_HOST``
or the default socket. SIGTERM or Ctrl-C stops it; containers keep running and the agent
adopts them on the next start.
"""

from __future__ import annotations

import logging
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx

from knit.config import (
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_HTTP,
    DEFAULT_NODE_TTL,
    AgentConfig,
    ServerConfig,
)
from knit.errors import KnitError, RuntimeUnavailable

log = logging.getLogger(__name__)

DOCKER_HELP = """\
knit dev: no Docker Engine answers{where}.
  Start one, for example:  dockerd >/var/log/dockerd.log 2>&1 &
  (Debian: apt-get install docker.io), or point DOCKER_HOST at a running engine.
  ./scripts/dev.sh installs and starts it for you."""


@dataclass(frozen=True)
class DevConfig:
    """Settings of ``knit dev``."""

    http: str = DEFAULT_HTTP
    data_dir: Path = Path(".knit")
    labels: dict[str, str] = field(default_factory=dict)
    node_ttl: float = DEFAULT_NODE_TTL
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL
    example: bool = False
    docker_host: str | None = None
    allow_host_network: bool = False
    metrics_listen: str | None = None  # HOST:PORT of the agent's /metrics (the server's: the API)


def run_dev(config: DevConfig) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit code."""
    try:
        return anyio.run(dev_main, config, backend="asyncio")
    except KeyboardInterrupt:
        return 0


async def check_docker(docker_host: str | None) -> str:
    """Return the Docker Engine's version, or raise ``RuntimeUnavailable`` with advice."""
    from knit.runtime.docker import DockerRuntime

    runtime = DockerRuntime(docker_host)
    try:
        return await runtime.version()
    finally:
        await runtime.close()


async def dev_main(config: DevConfig) -> int:
    """The body of ``knit dev``."""
    from knit.agent.main import serve_agent
    from knit.server.main import serve_server

    try:
        version = await check_docker(config.docker_host)
    except (RuntimeUnavailable, KnitError) as exc:
        where = f" ({exc})" if str(exc) else ""
        print(DOCKER_HELP.format(where=where), file=sys.stderr)
        return 1
    log.info("Docker Engine %s answers", version)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    server_config = ServerConfig(
        http=config.http,
        data_dir=config.data_dir / "server",
        nats_listen="127.0.0.1:0",
        node_ttl=config.node_ttl,
        admin_token_file=config.data_dir / "admin.token",  # so `knit ps` finds it
    )
    agent_dir = config.data_dir / "agent"
    async with anyio.create_task_group() as tg:
        api_url = await tg.start(serve_server, server_config)
        token_file = server_config.admin_token_path
        admin_token = (await anyio.Path(token_file).read_text()).strip()
        join_token = await dev_join_token(api_url, admin_token, agent_dir)
        agent_config = AgentConfig(
            data_dir=agent_dir,
            labels=config.labels,
            heartbeat_interval=config.heartbeat_interval,
            docker_host=config.docker_host,
            server=api_url,
            join_token=join_token,
            allow_host_network=config.allow_host_network,
            metrics_listen=config.metrics_listen,
        )
        await tg.start(serve_agent, agent_config)
        print(f"Knit is running. API: {api_url}  (knit ps --api {api_url})", flush=True)
        print(f"Admin API token: {token_file} (KNIT_TOKEN_FILE for knit)", flush=True)
        if config.example:
            tg.start_soon(submit_example, api_url, config.docker_host, admin_token)
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("received %s: stopping", signal.Signals(signum).name)
                break
        tg.cancel_scope.cancel()
    return 0


async def dev_join_token(api_url: str, admin_token: str, agent_dir: Path) -> str | None:
    """A join token for the local agent, if it must join (None: it has joined this server).

    An identity left by an earlier ``knit dev`` whose server no longer knows the node (its
    data was wiped) is forgotten, so the agent joins again.

    Raises:
        KnitError: the server refused to make a join token.
    """
    from knit.agent.identity import forget_identity, load_identity

    identity = load_identity(agent_dir)
    headers = {"Authorization": f"Bearer {admin_token}"}
    async with httpx.AsyncClient(base_url=api_url, timeout=10, headers=headers) as http:
        if identity is not None:
            known = await http.get(f"/nodes/{identity.node_id}")
            if known.status_code == 200:
                return None
            log.info("forgetting node %s, unknown to this server: joining again", identity.node_id)
            forget_identity(agent_dir)
        made = await http.post("/join-tokens", json={"ttl": 300, "uses": 1})
        if made.status_code != 201:
            raise KnitError(f"knit dev could not make a join token: HTTP {made.status_code}")
        return str(made.json()["token"])


async def submit_example(api_url: str, docker_host: str | None, token: str) -> None:
    """Make the example image if needed and submit the example deployment (once), with the
    admin ``token``."""
    from knit.example import EXAMPLE_DEPLOYMENT, ensure_example_image

    try:
        await ensure_example_image(docker_host)
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=api_url, timeout=10, headers=headers) as http:
            listed = await http.get("/deployments")
            listed.raise_for_status()
            existing = listed.json()
            if any(d.get("name") == EXAMPLE_DEPLOYMENT["name"] for d in existing):
                print("example deployment already present", flush=True)
                return
            response = await http.post("/deployments", json=EXAMPLE_DEPLOYMENT)
            response.raise_for_status()
            print(
                f"example deployment submitted: {response.json()['id']} - "
                "once running, curl http://127.0.0.1:18080/",
                flush=True,
            )
    except (KnitError, httpx.HTTPError) as exc:
        print(f"example deployment not submitted: {exc}", file=sys.stderr, flush=True)
