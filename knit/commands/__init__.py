"""The ``knit`` subcommands that talk to the API: their arguments and their dispatch.

Layer: cli (under ``knit.cli``, which parses and hands over here). This module imports
argparse and ``knit.config`` only, so ``knit server`` does not load the HTTP client; the
commands' modules are imported when one of them runs:

- :mod:`knit.commands.deployments`: ``deploy``, ``scale``, ``rollback``, ``history``, ``rm``,
  ``deployments``, ``ps``; :mod:`knit.commands.follow` and :mod:`knit.commands.progress`
  follow a rollout;
- :mod:`knit.commands.access`: ``nodes``, ``drain``, ``eligible``, ``mesh``, ``servers``,
  ``node rm``, ``token``, ``join-token``;
- :mod:`knit.commands.events`: ``events [-f]``; :mod:`knit.commands.inspect`: ``inspect``;
- :mod:`knit.commands.logs`: ``logs [-f]``;
- :mod:`knit.commands.output`: tables (short ids) and JSON; :mod:`knit.commands.resolve`:
  names, ids and id prefixes.

A new command takes :func:`client_parser` (``--api``, ``--token``, ``-o json``,
``--no-trunc``), prints with :func:`knit.commands.output.emit`, finds what it is given with
:mod:`knit.commands.resolve`, and is added to :func:`run_client_command`'s handlers and
:data:`CLIENT_COMMANDS`.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import TypeAlias

from knit.config import DEFAULT_API

CA_FILE_ENV = "KNIT_CA_FILE"
DEFAULT_TIMEOUT = 300.0
"""Seconds without any change after which a command that follows a rollout stops waiting
(``--timeout``; ``knit.commands.follow``)."""

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def client_parser(sub: Subparsers, name: str, help_text: str) -> argparse.ArgumentParser:
    """A subcommand that talks to the API: ``--api``, ``--token``, ``--ca-file``, ``-o json``
    (``--json``) and ``--no-trunc``."""
    cmd = sub.add_parser(name, help=help_text)
    cmd.add_argument(
        "--api", default=os.environ.get("KNIT_API", DEFAULT_API), help="the server's API URL"
    )
    cmd.add_argument(
        "--token",
        default=None,
        help="API token (else KNIT_TOKEN, else the file KNIT_TOKEN_FILE, else .knit/admin.token)",
    )
    cmd.add_argument(
        "--ca-file",
        default=os.environ.get(CA_FILE_ENV) or None,
        metavar="FILE",
        help="PEM CA to trust for an https API (KNIT_CA_FILE)",
    )
    cmd.add_argument(
        "-o",
        "--output",
        choices=["table", "json"],
        default="table",
        help="table (default) or json: the API's answer as it is, whole ids",
    )
    cmd.add_argument("--json", action="store_true", help="the same as -o json")
    cmd.add_argument(
        "--no-trunc", action="store_true", help="whole ids in tables (default: 12 characters)"
    )
    return cmd


def whole_number(text: str, least: int) -> int:
    """A whole number, ``least`` or more (for argparse)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"{text!r}: must be {least} or more")
    return value


def replicas(text: str) -> int:
    """``knit scale``'s N: 0 or more."""
    return whole_number(text, 0)


def version(text: str) -> int:
    """A version number: 1 or more."""
    return whole_number(text, 1)


def timeout_seconds(text: str) -> float:
    """``--timeout``: seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: must be more than 0 seconds")
    return value


def add_following(cmd: argparse.ArgumentParser) -> None:
    """``--detach`` and ``--timeout`` of a command that follows what it started."""
    cmd.add_argument(
        "--detach",
        action="store_true",
        help="return once the server took the change, without following it",
    )
    cmd.add_argument(
        "--timeout",
        type=timeout_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="stop waiting (exit 1) when nothing has changed for this long "
        f"(default {DEFAULT_TIMEOUT:g}); the rollout goes on",
    )


def add_deployment_commands(sub: Subparsers) -> None:
    """``deployments``, ``ps``, ``deploy``, ``scale``, ``rollback``, ``history``, ``rm``,
    ``events``, ``inspect``."""
    client_parser(sub, "deployments", "list deployments")
    client_parser(sub, "ps", "list instances (of one deployment: NAME)").add_argument(
        "target", nargs="?", default=None, metavar="NAME|ID"
    )
    events = client_parser(sub, "events", "list what happened, oldest first; -f: and follow")
    events.add_argument(
        "-f", "--follow", action="store_true", help="then print new events until Ctrl-C"
    )
    events.add_argument(
        "-n",
        "--tail",
        type=lambda text: whole_number(text, 1),
        default=50,
        metavar="N",
        help="the last N events first (default 50)",
    )
    events.add_argument("--deployment", default=None, metavar="NAME|ID")
    events.add_argument("--node", default=None, metavar="ID")
    inspect = client_parser(sub, "inspect", "a deployment, node or instance as JSON")
    inspect.add_argument("target", metavar="NAME|ID")
    inspect.add_argument(
        "--type", choices=["deployment", "node", "instance"], default=None, help="only look here"
    )
    deploy = client_parser(
        sub,
        "deploy",
        "create a deployment, or update the one of that name; then follow its rollout",
    )
    deploy.add_argument("-f", "--file", required=True, help="YAML or JSON spec ('-': stdin)")
    add_following(deploy)
    scale = client_parser(sub, "scale", "set a deployment's replicas (no rollout)")
    scale.add_argument("target", metavar="NAME|ID")
    scale.add_argument("replicas", type=replicas, metavar="N")
    add_following(scale)
    rollback = client_parser(
        sub, "rollback", "roll out an older version's spec again (a new version)"
    )
    rollback.add_argument("target", metavar="NAME|ID")
    rollback.add_argument(
        "--version",
        type=version,
        default=None,
        metavar="N",
        help="the version to go back to (default: the last stable one before the current)",
    )
    add_following(rollback)
    client_parser(sub, "history", "list a deployment's versions").add_argument(
        "target", metavar="NAME|ID"
    )
    client_parser(sub, "rm", "delete a deployment").add_argument("target", metavar="NAME|ID")


def add_access_commands(sub: Subparsers) -> None:
    """``nodes``, ``mesh``, ``token ...``, ``node rm``, ``join-token ...``."""
    client_parser(sub, "nodes", "list nodes")
    client_parser(sub, "drain", "make a node ineligible: nothing new is placed on it").add_argument(
        "node", metavar="NODE"
    )
    client_parser(sub, "eligible", "make a drained node eligible again").add_argument(
        "node", metavar="NODE"
    )
    client_parser(sub, "mesh", "list the WireGuard mesh's members")
    client_parser(sub, "servers", "list the servers: which one leads, which are gone")

    token = sub.add_parser("token", help="API tokens (admin)").add_subparsers(
        dest="action", required=True
    )
    create = client_parser(token, "create", "make an API token; prints it (shown only once)")
    create.add_argument("--name", required=True, help="1-63 of [a-z0-9-], unique")
    create.add_argument("--role", required=True, choices=["read", "deploy", "admin"])
    create.add_argument("--ttl", type=positive_seconds, default=None, metavar="SECONDS")
    client_parser(token, "ls", "list API tokens (never their secrets)")
    client_parser(token, "rm", "revoke an API token").add_argument("id", metavar="ID")

    node = sub.add_parser("node", help="nodes (admin)").add_subparsers(dest="action", required=True)
    client_parser(node, "rm", "remove a node: its credentials stop working at once").add_argument(
        "id", metavar="ID"
    )

    join = sub.add_parser("join-token", help="join tokens for new agents (admin)")
    join_sub = join.add_subparsers(dest="action", required=True)
    create = client_parser(join_sub, "create", "make a join token; prints it (shown only once)")
    create.add_argument("--ttl", type=positive_seconds, default=None, metavar="SECONDS")
    create.add_argument("--uses", type=int, default=None, metavar="N", help="nodes it admits")
    client_parser(join_sub, "ls", "list join tokens (never their secrets)")
    client_parser(join_sub, "rm", "revoke a join token").add_argument("id", metavar="ID")


def positive_seconds(text: str) -> float:
    """A number of seconds above 0 (for argparse)."""
    return timeout_seconds(text)


def run_client_command(args: argparse.Namespace) -> int:
    """Run one of the API's subcommands; returns the exit code.

    Raises:
        KnitError: the API refused a call, could not be reached, or a followed rollout
            failed (``knit.commands.follow.FollowFailed``).
        ValueError: a file could not be read.
    """
    from knit.client import ApiClient, find_token
    from knit.commands import access, deployments, events, inspect, logs

    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        # httpx logs every request at INFO: a rollout followed would print two a second.
        logging.getLogger("httpx").setLevel(logging.WARNING)

    handlers = {
        "deployments": deployments.run_deployments,
        "ps": deployments.run_ps,
        "deploy": deployments.run_deploy,
        "scale": deployments.run_scale,
        "rollback": deployments.run_rollback,
        "history": deployments.run_history,
        "rm": deployments.run_rm,
        "events": events.run_events,
        "inspect": inspect.run_inspect,
        "nodes": access.run_nodes,
        "drain": access.run_drain,
        "eligible": access.run_eligible,
        "mesh": access.run_mesh,
        "servers": access.run_servers,
        "node": access.run_node,
        "token": access.run_token,
        "join-token": access.run_join_token,
        "logs": logs.run_logs,
    }
    if args.output == "json":
        args.json = True  # one flag for the commands to read
    client = ApiClient(args.api, token=find_token(args.token), ca_file=args.ca_file)
    try:
        handlers[args.command](args, client)
    finally:
        client.close()
    return 0


CLIENT_COMMANDS = frozenset(
    {
        "deployments",
        "ps",
        "deploy",
        "scale",
        "rollback",
        "history",
        "rm",
        "events",
        "inspect",
        "nodes",
        "drain",
        "eligible",
        "mesh",
        "servers",
        "node",
        "token",
        "join-token",
        "logs",
    }
)
"""The subcommands :func:`run_client_command` runs (their logs default to warnings only)."""
