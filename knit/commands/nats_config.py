"""``knit nats-config``: the nats-server configuration of Knit's operator-mode auth, for the
members of an external NATS cluster (``knit server --nats URL... --nats-operator-auth``).

Layer: cli (under ``knit.cli``). Parsing imports argparse and ``knit.config`` only; running
imports the store, the secret box and ``knit.server.membership`` (the keys are loaded as
``knit server`` loads them, and made and stored if the store has none yet).

It finds the database as ``knit server`` does (``--database-url``, or ``knit.db`` in
``--data-dir``) and the secret key too (``KNIT_SECRET_KEY``, or ``secret.key`` in the data
dir). What it prints holds public JWTs only (the operator's, the accounts'), never a seed:
each member ``include``s it beside its own ``listen`` and ``cluster`` blocks
(docs/nats-cluster.md).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TypeAlias

from knit.config import DEFAULT_SERVER_DATA_DIR, server_database_url

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

DEFAULT_RESOLVER_DIR = "knit-jwt"
"""Where each member's full resolver keeps the accounts' JWTs (relative: to the folder the
nats-server runs in)."""
RESOLVERS = ("full", "memory")


def add_nats_config_command(sub: Subparsers) -> None:
    """``knit nats-config`` and its options."""
    command = sub.add_parser(
        "nats-config",
        help="print the nats-server configuration of Knit's operator-mode auth (for an "
        "external NATS cluster)",
    )
    command.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_SERVER_DATA_DIR,
        help="the server's data dir, with knit.db and secret.key "
        f"(default {DEFAULT_SERVER_DATA_DIR})",
    )
    command.add_argument(
        "--database-url",
        default=os.environ.get("KNIT_DATABASE_URL"),
        help="SQLAlchemy URL (default $KNIT_DATABASE_URL, else knit.db in --data-dir)",
    )
    command.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="FILE",
        help="write it to FILE (mode 0600) instead of standard output",
    )
    command.add_argument(
        "--resolver",
        choices=RESOLVERS,
        default="full",
        help="full (default): members keep the accounts in --resolver-dir and take the "
        "server's updates (revocations) at run time; memory: a removal needs this file "
        "again and a reload of every member",
    )
    command.add_argument(
        "--resolver-dir",
        default=DEFAULT_RESOLVER_DIR,
        metavar="DIR",
        help=f"the full resolver's folder on each member (default {DEFAULT_RESOLVER_DIR}, "
        "relative to the nats-server's working directory)",
    )


def run_nats_config(args: argparse.Namespace) -> int:
    """Run ``knit nats-config``; returns the exit code.

    Raises:
        StoreError: the database cannot be opened.
        SecretError: the secret key is unusable or does not open the stored keys.
        KnitError: ``--out`` cannot be written.
    """
    import anyio

    url = server_database_url(args.data_dir, args.database_url)
    args.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    text = anyio.run(
        render,
        url,
        args.data_dir,
        None if args.resolver == "memory" else args.resolver_dir,
        backend="asyncio",
    )
    if args.out is None:
        sys.stdout.write(text)
    else:
        write_private(args.out, text)
    return 0


async def render(url: str, data_dir: Path, resolver_dir: str | None) -> str:
    """The configuration fragment for the cluster whose store is at ``url``."""
    from knit.natsd import render_auth
    from knit.secrets import SecretBox
    from knit.server.membership import load_trust
    from knit.server.repo import open_repo

    async with open_repo(url) as repo:
        secrets = SecretBox.from_data_dir(data_dir)
        trust = await load_trust(repo, secrets, insecure=False)
    header = [
        "# Knit's operator-mode auth (knit nats-config): include it in the configuration of",
        "# every member of the NATS cluster, beside its listen and cluster blocks.",
        "# Public JWTs only: the operator, the system account and Knit's account.",
    ]
    return "\n".join(header) + "\n" + render_auth(trust.nats_auth(), resolver_dir)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600 (replacing it whole).

    Raises:
        KnitError: it cannot be written.
    """
    from knit.errors import KnitError

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise KnitError(f"cannot write {path}: {exc.strerror}") from exc
