"""``knit nodes``, ``drain``, ``eligible``, ``mesh``, ``node rm``, ``token ...`` and
``join-token ...``.

Layer: cli. Imports the API client, :mod:`knit.commands.output` and
:mod:`knit.commands.resolve` (a node is named by its id, the start of it, or its hostname; a
token by its id or the start of it).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from knit.client import ApiClient
from knit.commands.output import Column, emit, print_secret, timestamp, usage
from knit.commands.resolve import NoMatch, node_of, resolve

NODE_COLUMNS = [
    Column("id", id=True),
    Column("hostname"),
    Column("status"),
    Column("eligible"),
    Column("instances"),
    Column("cpu", "CPU"),
    Column("memory", "MEMORY"),
    Column("address"),
    Column("last_heartbeat"),
]


def node_rows(nodes: list[dict[str, Any]], instances: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of ``knit nodes``: each with how many desired instances it holds and what
    they reserve of its cpus and memory."""
    held: dict[object, int] = {}
    for i in instances:
        if i.get("desired", True) and i.get("node_id"):
            held[i["node_id"]] = held.get(i["node_id"], 0) + 1
    return [
        {
            **n,
            "instances": held.get(n.get("id"), 0),
            "cpu": usage(n.get("reserved_cpus"), n.get("cpus")),
            "memory": usage(n.get("reserved_memory_bytes"), n.get("memory_bytes"), "bytes"),
            "last_heartbeat": timestamp(n.get("last_heartbeat")),
        }
        for n in sorted(nodes, key=lambda n: (str(n.get("hostname")), str(n.get("id"))))
    ]


def run_nodes(args: argparse.Namespace, client: ApiClient) -> None:
    """``knit nodes``."""
    nodes = client.nodes()
    if args.json:
        emit(args, nodes, NODE_COLUMNS)
        return
    emit(args, node_rows(nodes, client.instances()), NODE_COLUMNS)


def set_eligible(args: argparse.Namespace, client: ApiClient, eligible: bool) -> None:
    """``knit drain`` (``eligible`` False) or ``knit eligible``: of the node ``args.node``
    names (id, id prefix or hostname)."""
    node = node_of(client, args.node)
    action = "eligible" if eligible else "drain"
    changed = client.call("POST", f"/nodes/{node['id']}/{action}")
    if args.json:
        print(json.dumps(changed, indent=2))
    elif eligible:
        print(f"node {node['id']} ({node.get('hostname')}) is eligible: new instances may go there")
    else:
        print(
            f"node {node['id']} ({node.get('hostname')}) drained: nothing new is placed on it "
            "and its instances move elsewhere (knit eligible NODE makes it eligible again)"
        )


def run_drain(args: argparse.Namespace, client: ApiClient) -> None:
    """``knit drain NODE``: ``POST /nodes/{id}/drain``."""
    set_eligible(args, client, False)


def run_eligible(args: argparse.Namespace, client: ApiClient) -> None:
    """``knit eligible NODE``: ``POST /nodes/{id}/eligible``."""
    set_eligible(args, client, True)


def run_mesh(args: argparse.Namespace, client: ApiClient) -> None:
    """``knit mesh``: the WireGuard mesh's members, the server first."""
    members = client.call("GET", "/mesh")
    for member in members:
        member["node_id"] = member["node_id"] or "(server)"
    columns: list[str | Column] = [Column("node_id", id=True), "address", "endpoint"]
    emit(args, members, [*columns, "latest_handshake", "public_key"])


SERVER_COLUMNS: list[str | Column] = [
    "id",
    "role",
    "status",
    "api_url",
    "version",
    "started_at",
    "last_seen",
]


def run_servers(args: argparse.Namespace, client: ApiClient) -> None:
    """``knit servers``: the servers of the cluster's database, which one leads, which
    are gone (``GET /servers``)."""
    servers = client.call("GET", "/servers")
    if not args.json:
        for server in servers:
            if server.get("this"):
                server["id"] = f"{server['id']} (this)"
    emit(args, servers, SERVER_COLUMNS)


def run_node(args: argparse.Namespace, client: ApiClient) -> None:
    """``knit node rm ID`` (its only action)."""
    node_id = node_of(client, args.id)["id"]
    client.call("DELETE", f"/nodes/{node_id}")
    print(f"node {node_id} removed: its credentials no longer work")


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
        emit(
            args,
            rows,
            [Column("id", id=True), "name", "role", "created_at", "expires_at", "expired"],
        )
    elif args.action == "rm":
        token_id = token_of(client, "/tokens", "token", args.id)
        client.call("DELETE", f"/tokens/{token_id}")
        print(f"token {token_id} revoked")


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
        columns: list[str | Column] = [Column("id", id=True), "uses", "used"]
        columns += ["created_at", "expires_at", "revoked"]
        emit(args, rows, columns)
    elif args.action == "rm":
        token_id = token_of(client, "/join-tokens", "join token", args.id)
        client.call("DELETE", f"/join-tokens/{token_id}")
        print(f"join token {token_id} revoked")


def token_of(client: ApiClient, path: str, kind: str, text: str) -> str:
    """The id of the token (at ``path``: ``/tokens`` or ``/join-tokens``) whose id is, or
    starts with, ``text``; a whole id is sent as it is (a token gone answers 404 itself)."""
    listed = client.call("GET", path)
    try:
        return str(resolve(text, listed, kind, names=("name",))["id"])
    except NoMatch:
        if len(text) >= 32:  # a whole id: the API says whether it exists
            return text
        raise
