"""``knit logs NAME [-f] [--tail N] [--since DURATION] [--timestamps] [--instance I]``:
a deployment's logs, as ``nomad alloc logs`` and ``docker logs`` print them.

Layer: cli. Imports argparse (the API client only to type it). Reads
``GET /deployments/{id}/logs`` as it streams and writes it to standard output unchanged
(each line is ``[index] line``); Ctrl-C ends it quietly.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, TextIO

from knit.commands import Subparsers, client_parser, whole_number
from knit.commands.resolve import deployment_of

if TYPE_CHECKING:  # (``knit server`` parses these arguments too: no HTTP client for it)
    from knit.client import ApiClient


def add_logs_command(sub: Subparsers) -> None:
    """``knit logs``."""
    cmd = client_parser(sub, "logs", "print a deployment's logs (all its instances, merged)")
    cmd.add_argument("target", metavar="NAME|ID")
    cmd.add_argument(
        "-f", "--follow", action="store_true", help="keep printing new lines until Ctrl-C"
    )
    cmd.add_argument(
        "--tail",
        default="100",
        metavar="N",
        type=tail_lines,
        help="lines of each instance's past to start with, or 'all' (default 100)",
    )
    cmd.add_argument(
        "--since",
        default=None,
        metavar="DURATION",
        help="only lines newer than this: 10m, 1h30m, or an RFC 3339 time",
    )
    cmd.add_argument(
        "-t", "--timestamps", action="store_true", help="prefix each line with its time"
    )
    cmd.add_argument(
        "--instance", type=index, default=None, metavar="I", help="only the instance of index I"
    )


def tail_lines(text: str) -> str:
    """``--tail``: a whole number or ``all``."""
    return "all" if text.strip().lower() == "all" else str(whole_number(text, 0))


def index(text: str) -> int:
    """``--instance``: an index, 0 or more."""
    return whole_number(text, 0)


def run_logs(args: argparse.Namespace, client: ApiClient, out: TextIO | None = None) -> None:
    """Print the logs until they end (or, following, until Ctrl-C).

    Raises:
        ApiError: a malformed option, the API refused or broke off.
        NoMatch, Ambiguous: no deployment, or several, for ``args.target`` (a name, an id
            or an id's prefix).
    """
    out = out if out is not None else sys.stdout
    deployment = deployment_of(client, args.target)
    params = {"tail": args.tail, "follow": "1" if args.follow else "0"}
    if args.since:
        params["since"] = args.since
    if args.timestamps:
        params["timestamps"] = "1"
    if args.instance is not None:
        params["instance"] = str(args.instance)
    try:
        for text in client.stream_text(f"/deployments/{deployment['id']}/logs", params):
            out.write(text)
            out.flush()
    except KeyboardInterrupt:
        return


__all__ = ["add_logs_command", "run_logs"]
