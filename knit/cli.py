"""The ``knit`` command: run a server, an agent or a dev cluster, and talk to the API.

Layer: the top. Parses arguments and hands over to ``knit.server``, ``knit.agent``,
``knit.dev`` or the API's commands (``knit.commands``); the heavy modules are imported only
by the subcommand that needs them, so ``knit ps`` starts fast.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from knit.commands import (
    CLIENT_COMMANDS,
    add_access_commands,
    add_deployment_commands,
    run_client_command,
)
from knit.commands.database import add_db_command
from knit.commands.logs import add_logs_command
from knit.commands.nats_config import add_nats_config_command
from knit.config import (
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_HISTORY_RETENTION,
    DEFAULT_HTTP,
    DEFAULT_LEASE_TTL,
    DEFAULT_MAX_REPLICAS,
    DEFAULT_MESH_INTERFACE,
    DEFAULT_MESH_PORT,
    DEFAULT_NATS_LISTEN,
    DEFAULT_NODE_TTL,
    DEFAULT_SERVER_DATA_DIR,
    AgentConfig,
    ServerConfig,
)
from knit.domain.leadership import check_lease_ttl, check_server_id
from knit.errors import KnitError


def parse_labels(items: Sequence[str]) -> dict[str, str]:
    """Turn ``["k=v", ...]`` into a mapping.

    Raises:
        ValueError: an item has no ``=`` or an empty key.
    """
    labels: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--label {item!r}: expected KEY=VALUE")
        labels[key.strip()] = value.strip()
    return labels


def mesh_endpoint(text: str) -> str:
    """A WireGuard endpoint ``HOST:PORT`` (for argparse)."""
    from knit.domain.mesh import parse_endpoint

    try:
        return parse_endpoint(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def nats_urls(given: list[str] | None) -> str | None:
    """The ``--nats`` URLs given (repeated, or comma-separated) as one comma-separated list
    (None: none given)."""
    if not given:
        return None
    urls = [u.strip() for text in given for u in text.split(",") if u.strip()]
    return ",".join(urls) or None


def metrics_listen(text: str) -> str:
    """An address to serve metrics on, ``HOST:PORT`` (for argparse)."""
    from knit.agent.metrics import parse_listen

    try:
        parse_listen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def non_negative_seconds(text: str) -> float:
    """A number of seconds, 0 or more (for argparse)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: must be 0 or more seconds")
    return value


def lease_ttl(text: str) -> float:
    """``--lease-ttl``: seconds, within the bounds a lease may have (for argparse)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    problem = check_lease_ttl(value)
    if problem:
        raise argparse.ArgumentTypeError(f"{text!r}: {problem}")
    return value


def server_id(text: str) -> str:
    """``--server-id``: a name for this server (for argparse)."""
    problem = check_server_id(text)
    if problem:
        raise argparse.ArgumentTypeError(f"{text!r}: {problem}")
    return text


def positive_int(text: str) -> int:
    """A whole number, 1 or more (for argparse)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be 1 or more")
    return value


def mesh_cidr(text: str) -> str:
    """``--mesh-cidr``: an IPv4 network of a /30 or larger."""
    from knit.domain.mesh import parse_cidr

    try:
        return str(parse_cidr(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def endpoint(text: str) -> str:
    """``--mesh-endpoint``: ``HOST:PORT``."""
    from knit.domain.mesh import parse_endpoint

    try:
        return parse_endpoint(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def udp_port(text: str) -> int:
    """A UDP port, 1-65535."""
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: a port is 1-65535")
    return value


HOST_NETWORK_HELP = (
    "run deployments attached to a host network here (they share the host's network stack; "
    "off by default: such deployments are placed on other nodes only)"
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="knit", description="A small container orchestrator.")
    parser.add_argument(
        "--log-level",
        default=os.environ.get("KNIT_LOG_LEVEL"),
        help="DEBUG, INFO, WARNING... (KNIT_LOG_LEVEL; default INFO, WARNING for the "
        "commands that talk to the API)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    server = sub.add_parser("server", help="run the control plane")
    server.add_argument("--http", default=DEFAULT_HTTP, help="API listen address HOST:PORT")
    server.add_argument("--data-dir", type=Path, default=DEFAULT_SERVER_DATA_DIR)
    server.add_argument(
        "--nats",
        action="append",
        default=None,
        metavar="URL",
        help="NATS URL; several (repeated or comma-separated) for the members of a NATS "
        "cluster; omitted: start an embedded one",
    )
    server.add_argument("--nats-listen", default=DEFAULT_NATS_LISTEN)
    server.add_argument("--node-ttl", type=float, default=DEFAULT_NODE_TTL, metavar="SECONDS")
    server.add_argument(
        "--database-url",
        default=os.environ.get("KNIT_DATABASE_URL"),
        help="SQLAlchemy URL, e.g. postgresql://USER:PASS@HOST/DB (default $KNIT_DATABASE_URL, "
        "else SQLite in --data-dir)",
    )
    server.add_argument(
        "--history-retention",
        type=non_negative_seconds,
        default=DEFAULT_HISTORY_RETENTION,
        metavar="SECONDS",
        help="how long events and finished tasks are kept (0: for ever; default 72 h)",
    )
    server.add_argument(
        "--nats-creds",
        type=Path,
        default=None,
        metavar="FILE",
        help="a NATS .creds file to connect to an external NATS (--nats) with",
    )
    server.add_argument(
        "--nats-operator-auth",
        action="store_true",
        help="the external NATS (--nats) runs Knit's operator-mode auth (`knit nats-config`): "
        "connect with the server's own credentials and issue nodes theirs at join",
    )
    server.add_argument(
        "--nats-advertise",
        action="append",
        default=[],
        metavar="URL",
        help="a NATS URL joining nodes are given (default: the server's own)",
    )
    server.add_argument(
        "--insecure-bus",
        action="store_true",
        help="an OPEN bus for a trusted lab: no NATS credentials, messages not proved",
    )
    server.add_argument(
        "--mesh-cidr",
        type=mesh_cidr,
        default=None,
        metavar="CIDR",
        help="run a WireGuard mesh of every node in CIDR (the server takes its first address)",
    )
    server.add_argument("--mesh-port", type=udp_port, default=DEFAULT_MESH_PORT, metavar="PORT")
    server.add_argument(
        "--mesh-endpoint",
        type=endpoint,
        default=None,
        metavar="HOST:PORT",
        help="where nodes reach the server's WireGuard port (default: the API's host name)",
    )
    server.add_argument("--mesh-interface", default=DEFAULT_MESH_INTERFACE, metavar="NAME")
    server.add_argument(
        "--max-replicas",
        type=positive_int,
        default=DEFAULT_MAX_REPLICAS,
        metavar="N",
        help=f"the most replicas one deployment may ask for (default {DEFAULT_MAX_REPLICAS:,})",
    )

    server.add_argument(
        "--server-id",
        type=server_id,
        default=None,
        metavar="NAME",
        help="this server's name among the servers of its database (default: the host name)",
    )
    server.add_argument(
        "--lease-ttl",
        type=lease_ttl,
        default=DEFAULT_LEASE_TTL,
        metavar="SECONDS",
        help="how long the leader's lease runs without a renewal (PostgreSQL: several servers "
        f"on one database; default {DEFAULT_LEASE_TTL:g})",
    )

    agent = sub.add_parser("agent", help="run the agent of this host")
    agent.add_argument(
        "--server", default=None, metavar="URL", help="the API to join through (first start)"
    )
    agent.add_argument(
        "--join-token",
        default=os.environ.get("KNIT_JOIN_TOKEN"),
        metavar="TOKEN",
        help="a join token (first start only; default $KNIT_JOIN_TOKEN)",
    )
    agent.add_argument("--ca-file", type=Path, default=None, metavar="FILE")
    agent.add_argument(
        "--nats",
        action="append",
        default=None,
        metavar="URL",
        help="NATS URL, repeated or comma-separated for a cluster (default: those received at "
        "join)",
    )
    agent.add_argument("--nats-creds", type=Path, default=None, metavar="FILE")
    agent.add_argument(
        "--insecure-bus", action="store_true", help="run on an open lab bus without joining"
    )
    agent.add_argument("--data-dir", type=Path, default=Path(".knit/agent"))
    agent.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    agent.add_argument(
        "--heartbeat-interval", type=float, default=DEFAULT_HEARTBEAT_INTERVAL, metavar="SECONDS"
    )
    agent.add_argument("--docker-host", default=None)
    agent.add_argument("--hostname", default=None)
    agent.add_argument("--allow-host-network", action="store_true", help=HOST_NETWORK_HELP)
    agent.add_argument(
        "--mesh-endpoint",
        type=mesh_endpoint,
        default=None,
        metavar="HOST:PORT",
        help="be a member of the WireGuard mesh, reached by the others at HOST:PORT (UDP; "
        "the interface listens on PORT)",
    )
    agent.add_argument(
        "--mesh-interface",
        default="knit0",
        metavar="NAME",
        help="the mesh's WireGuard interface (default knit0; unique on the machine)",
    )

    agent.add_argument(
        "--metrics",
        type=metrics_listen,
        default=None,
        metavar="HOST:PORT",
        help="serve the agent's Prometheus metrics at http://HOST:PORT/metrics (no token: "
        "bind an address only the scraper reaches)",
    )

    dev = sub.add_parser("dev", help="nats-server, server and one agent in one process tree")
    dev.add_argument("--http", default=DEFAULT_HTTP)
    dev.add_argument("--data-dir", type=Path, default=Path(".knit"))
    dev.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    dev.add_argument("--node-ttl", type=float, default=DEFAULT_NODE_TTL, metavar="SECONDS")
    dev.add_argument(
        "--heartbeat-interval", type=float, default=DEFAULT_HEARTBEAT_INTERVAL, metavar="SECONDS"
    )
    dev.add_argument("--example", action="store_true", help="submit an example deployment")
    dev.add_argument("--allow-host-network", action="store_true", help=HOST_NETWORK_HELP)
    dev.add_argument(
        "--metrics",
        type=metrics_listen,
        default=None,
        metavar="HOST:PORT",
        help="serve the local agent's Prometheus metrics at http://HOST:PORT/metrics "
        "(the server's are at the API's /metrics)",
    )

    server.add_argument(
        "--tls-cert", type=Path, default=None, metavar="FILE", help="serve HTTPS: PEM certificate"
    )
    server.add_argument(
        "--tls-key", type=Path, default=None, metavar="FILE", help="the certificate's PEM key"
    )

    add_deployment_commands(sub)
    add_access_commands(sub)
    add_logs_command(sub)
    add_db_command(sub)
    add_nats_config_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``knit`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    level = args.log_level or ("WARNING" if args.command in CLIENT_COMMANDS else "INFO")
    logging.basicConfig(
        level=str(level).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,  # standard output is for tables and JSON
    )
    # Alembic's INFO lines (plugins set up; "non-transactional DDL", untrue inside the
    # store's own transaction) are noise at every start: knit.store.migrations logs what
    # it changes.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        return run(args)
    except BrokenPipeError:
        # ``knit events -f | head``: the reader left; stop quietly, as ``cat`` does. Standard
        # output goes to /dev/null so that flushing it at exit does not fail again.
        # (A standard output that is not a real file, a test's capture, is left alone.)
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KnitError as exc:
        print(f"knit: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"knit: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BaseExceptionGroup as group:
        # Errors from inside task groups arrive grouped; a KnitError in there is still
        # the user's problem to read about, not a traceback.
        matched, _ = group.split(KnitError)
        if matched is None:
            raise
        print(f"knit: {first_leaf(matched)}", file=sys.stderr)
        return 1


def first_leaf(group: BaseExceptionGroup[KnitError]) -> BaseException:
    """The first non-group exception inside ``group``."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def run(args: argparse.Namespace) -> int:
    """Dispatch one parsed command."""
    if args.command == "server":
        from knit.server.main import run_server

        return run_server(
            ServerConfig(
                http=args.http,
                data_dir=args.data_dir,
                nats_url=nats_urls(args.nats),
                nats_listen=args.nats_listen,
                node_ttl=args.node_ttl,
                database_url=args.database_url,
                history_retention=args.history_retention,
                insecure_bus=args.insecure_bus,
                nats_creds=args.nats_creds,
                nats_operator_auth=args.nats_operator_auth,
                nats_advertise=tuple(args.nats_advertise),
                tls_cert=args.tls_cert,
                tls_key=args.tls_key,
                max_replicas=args.max_replicas,
                mesh_cidr=args.mesh_cidr,
                mesh_port=args.mesh_port,
                mesh_endpoint=args.mesh_endpoint,
                mesh_interface=args.mesh_interface,
                lease_ttl=args.lease_ttl,
                **({"server_id": args.server_id} if args.server_id else {}),
            )
        )
    if args.command == "agent":
        from knit.agent.main import run_agent

        return run_agent(
            AgentConfig(
                nats_url=nats_urls(args.nats),
                data_dir=args.data_dir,
                labels=parse_labels(args.label),
                heartbeat_interval=args.heartbeat_interval,
                docker_host=args.docker_host,
                hostname=args.hostname,
                server=args.server,
                join_token=args.join_token,
                ca_file=args.ca_file,
                nats_creds=args.nats_creds,
                insecure_bus=args.insecure_bus,
                allow_host_network=args.allow_host_network,
                mesh_endpoint=args.mesh_endpoint,
                mesh_interface=args.mesh_interface,
                metrics_listen=args.metrics,
            )
        )
    if args.command == "dev":
        from knit.dev import DevConfig, run_dev

        return run_dev(
            DevConfig(
                http=args.http,
                data_dir=args.data_dir,
                labels=parse_labels(args.label),
                node_ttl=args.node_ttl,
                heartbeat_interval=args.heartbeat_interval,
                example=args.example,
                allow_host_network=args.allow_host_network,
                metrics_listen=args.metrics,
            )
        )
    if args.command == "db":
        from knit.commands.database import run_db

        return run_db(args)
    if args.command == "nats-config":
        from knit.commands.nats_config import run_nats_config

        return run_nats_config(args)
    return run_client_command(args)


if __name__ == "__main__":
    sys.exit(main())
