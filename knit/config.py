"""Process configuration: what ``knit server``, ``knit agent`` and ``knit dev`` are told.

Layer: plain data shared by the CLI and the process entry points; imports the standard
library only.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from knit.domain.leadership import default_server_id

DEFAULT_HTTP = "127.0.0.1:8080"
DEFAULT_API = f"http://{DEFAULT_HTTP}"
DEFAULT_NATS_LISTEN = "127.0.0.1:4222"
DEFAULT_NODE_TTL = 15.0
DEFAULT_HEARTBEAT_INTERVAL = 5.0
DEFAULT_HISTORY_RETENTION = 72 * 3600.0
DEFAULT_LEASE_TTL = 10.0
"""Seconds a leader's lease runs without a renewal (``knit.domain.leadership``)."""
"""Seconds events and finished tasks are kept (``knit server --history-retention``)."""
DEFAULT_MESH_PORT = 51820
"""The WireGuard UDP port (``--mesh-port``)."""
DEFAULT_MESH_INTERFACE = "knit0"
"""The WireGuard interface's name (``--mesh-interface``)."""
DEFAULT_SERVER_DATA_DIR = Path(".knit/server")
"""Where ``knit server`` keeps its state (``--data-dir``)."""
DATABASE_FILENAME = "knit.db"
"""The server's SQLite file in its data dir."""
DEFAULT_MAX_REPLICAS = 1_000
"""The most replicas one deployment may ask for (``knit server --max-replicas``)."""


@dataclass(frozen=True)
class ServerConfig:
    """Settings of one ``knit server`` process.

    Attributes:
        http: the API's listen address, ``HOST:PORT``.
        data_dir: where the SQLite file and the secret key live.
        nats_url: an external NATS to connect to (comma-separated: the members of a NATS
            cluster, failed over between); ``None`` starts an embedded nats-server.
        nats_listen: where the embedded nats-server listens (``HOST:PORT``, port 0 = any).
        node_ttl: seconds without a heartbeat before a node is marked unhealthy.
        database_url: an SQLAlchemy URL overriding the SQLite file in ``data_dir``.
        restart_grace: seconds after a server start during which no node is marked
            unhealthy (agents need one heartbeat interval to be heard again).
        history_retention: seconds events and finished tasks are kept (0: for ever).
        insecure_bus: an open bus for a trusted lab: the embedded nats-server asks no
            credentials and messages are believed without proof (never the default).
        nats_creds: a NATS ``.creds`` file the server connects to an external NATS with
            (user and password may also be given in the ``nats_url``).
        nats_operator_auth: the external NATS (``nats_url``) runs Knit's operator-mode auth
            (``knit nats-config``): the server connects with its own credentials, issues
            nodes theirs at join, and pushes account updates (revocations) to it.
        nats_advertise: the NATS URLs given to joining nodes (default: the one the server
            uses, a wildcard host replaced by the host name the node reached the API with).
        admin_token_file: where the first admin token is written when the store holds no
            API token (default ``<data_dir>/admin.token``).
        tls_cert: a PEM certificate (chain) to serve the API over HTTPS with; needs
            ``tls_key``.
        tls_key: the PEM private key of ``tls_cert``.
        max_replicas: the most replicas one deployment may ask for (422 above).
        mesh_cidr: the WireGuard mesh's network (``--mesh-cidr``); None: no mesh.
        mesh_port: the server's WireGuard UDP port.
        mesh_endpoint: where nodes reach that port (``HOST:PORT``; None: the host name they
            reached the API with).
        mesh_interface: the server's WireGuard interface.
        server_id: this server's name among the servers of its database (``--server-id``;
            default: the host's name).
        lease_ttl: seconds the leader's lease runs without a renewal (PostgreSQL; a
            follower takes over this long after the leader died, plus a moment).
    """

    http: str = DEFAULT_HTTP
    data_dir: Path = DEFAULT_SERVER_DATA_DIR
    nats_url: str | None = None
    nats_listen: str = DEFAULT_NATS_LISTEN
    node_ttl: float = DEFAULT_NODE_TTL
    database_url: str | None = None
    restart_grace: float | None = None
    history_retention: float = DEFAULT_HISTORY_RETENTION
    insecure_bus: bool = False
    nats_creds: Path | None = None
    nats_operator_auth: bool = False
    nats_advertise: tuple[str, ...] = ()
    admin_token_file: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @property
    def admin_token_path(self) -> Path:
        """``admin_token_file``, or ``admin.token`` in the data dir."""
        return self.admin_token_file or self.data_dir / "admin.token"

    max_replicas: int = DEFAULT_MAX_REPLICAS
    mesh_cidr: str | None = None
    mesh_port: int = DEFAULT_MESH_PORT
    mesh_endpoint: str | None = None
    mesh_interface: str = DEFAULT_MESH_INTERFACE
    server_id: str = field(default_factory=lambda: default_server_id(socket.gethostname()))
    lease_ttl: float = DEFAULT_LEASE_TTL


def server_database_url(data_dir: Path, database_url: str | None = None) -> str:
    """The server's SQLAlchemy URL: ``database_url``, or the SQLite file in ``data_dir``."""
    if database_url:
        return database_url
    return f"sqlite+aiosqlite:///{(data_dir / DATABASE_FILENAME).resolve()}"


@dataclass(frozen=True)
class AgentConfig:
    """Settings of one ``knit agent`` process.

    Attributes:
        nats_url: the NATS to connect to (None: the URLs received at join; on an open bus
            without a join, the local default).
        data_dir: where the identity, the node's keys and rendered templates live.
        labels: node labels, matched by deployments' ``node_selector``.
        heartbeat_interval: seconds between two heartbeats.
        docker_host: the Docker Engine to drive (default ``DOCKER_HOST`` or the local socket).
        hostname: the name reported to the server (default the machine's).
        server: the API to join through (with ``join_token``, the first time).
        join_token: a join token (only needed until the agent has joined).
        ca_file: a CA bundle to trust for the API's TLS certificate.
        nats_creds: a NATS ``.creds`` file (a cluster on an external NATS that Knit does
            not issue credentials for).
        insecure_bus: run on an open bus without joining (``knit server --insecure-bus``).
        allow_host_network: run deployments attached to a ``host`` network (off: such
            deployments are never placed on this node, and their tasks are refused).
        mesh_endpoint: ``HOST:PORT`` where the other members of the mesh reach this node's
            WireGuard port (None: not a member, unless it joined as one: then the endpoint
            it joined with).
        mesh_interface: the WireGuard interface's name (unique per machine: wireguard-go's
            sockets are shared by every network namespace).
        metrics_listen: ``HOST:PORT`` where the agent serves its Prometheus metrics
            (``GET /metrics``; None: not served).
    """

    nats_url: str | None = None
    data_dir: Path = Path(".knit/agent")
    labels: dict[str, str] = field(default_factory=dict)
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL
    docker_host: str | None = None
    hostname: str | None = None
    server: str | None = None
    join_token: str | None = None
    ca_file: Path | None = None
    nats_creds: Path | None = None
    insecure_bus: bool = False
    allow_host_network: bool = False
    mesh_endpoint: str | None = None
    mesh_interface: str = "knit0"
    metrics_listen: str | None = None


def default_docker_host() -> str | None:
    """The ``DOCKER_HOST`` of the environment, if any (``None`` means the local socket)."""
    return os.environ.get("DOCKER_HOST") or None
