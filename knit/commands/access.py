"""``knit nodes``, ``mesh``, ``node rm``, ``token ...`` and ``join-token ...``.

Layer: cli. Imports the API client and :mod:`knit.commands.output`.
"""

from __future__ import annotations

import argparse
from typing import Any

from knit.client import ApiClient
from knit.commands.output import emit, print_secret


def run_nodes(args: argparse.Namespace, client: ApiClient) -> None:
    """``knit nodes``."""
    nodes = client.nodes()
    emit(args, nodes, ["id", "hostname", "status", "eligible", "address", "last_heartbeat"])


def run_mesh(args: argparse.Namespace, client: ApiClient) -> None:
    """``knit mesh``: the WireGuard mesh's members, the server first."""
    members = client.call("GET", "/mesh")
    for member in members:
        member["node_id"] = member["node_id"] or "(server)"
    emit(args, members, ["node_id", "address", "endpoint", "latest_handshake", "public_key"])


def run_node(args: argparse.Namespace, client: ApiClient) -> None:
    """``knit node rm ID`` (its only action)."""
    client.call("DELETE", f"/nodes/{args.id}")
    print(f"node {args.id} removed: its credentials no longer work")


def run_token(args: argparse.Namespace, client: ApiClient) -> None:
    """``knit token create|ls|rm``."""
    if args.action == "create":
        body: dict[str, Any] = {"name": args.name, "role": args.role}
        if args.ttl is not None:
            body["ttl"] = args.ttl
        created = client.call("POST", "/tokens", body)
        print_secret(args, created, f"token {created['name']} ({created['role']})")
    elif args.action == "ls":
        rows = client.call("GET", "/tokens")
        emit(args, rows, ["id", "name", "role", "created_at", "expires_at", "expired"])
    elif args.action == "rm":
        client.call("DELETE", f"/tokens/{args.id}")
        print(f"token {args.id} revoked")


def run_join_token(args: argparse.Namespace, client: ApiClient) -> None:
    """``knit join-token create|ls|rm``."""
    if args.action == "create":
        body: dict[str, Any] = {}
        if args.ttl is not None:
            body["ttl"] = args.ttl
        if args.uses is not None:
            body["uses"] = args.uses
        created = client.call("POST", "/join-tokens", body)
        print_secret(args, created, f"join token for {created['uses']} node(s)")
    elif args.action == "ls":
        rows = client.call("GET", "/join-tokens")
        emit(args, rows, ["id", "uses", "used", "created_at", "expires_at", "revoked"])
    elif args.action == "rm":
        client.call("DELETE", f"/join-tokens/{args.id}")
        print(f"join token {args.id} revoked")
