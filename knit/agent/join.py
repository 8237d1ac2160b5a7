"""Joining a cluster: ``POST /join`` with a join token, once; the identity is kept after.

Layer: agent. Imports httpx, ``knit.agent.identity``, ``knit.domain.mesh``, ``knit.wire.mesh``
and the standard library.

The agent sends the public halves of the keys it made for itself (its X25519 key, its
NATS user key) with a join token as its bearer token; the server answers with the node's
identity (knit.server.membership). The token is spent and never stored. Later starts read
the identity from the data dir and need no token.

A node that joins the mesh (``--mesh-endpoint``) also sends its WireGuard public key and
endpoint (``"mesh": {"public_key", "endpoint"}``, ``knit.domain.mesh.MeshJoin``); the grant
then holds ``"mesh": {"address", "cidr", "revision", "members"}`` (the members as
``knit.wire.mesh.MeshMember``, the server's with ``node_id`` null), and its ``nats_urls``
are on the server's mesh address. A server without a mesh answers 409.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import pydantic

from knit.agent.identity import Identity, MeshIdentity, load_or_create_nats_key, save_identity
from knit.domain.mesh import MeshJoin
from knit.errors import KnitError
from knit.secrets import NodeKeyPair
from knit.wire.mesh import MeshMember

log = logging.getLogger(__name__)

JOIN_TIMEOUT = 30.0


class JoinRefused(KnitError):
    """The server refused the join token (unknown, expired, used up, revoked)."""


def _reason(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        problems = body.get("errors")
        if isinstance(problems, list) and problems:
            details = "; ".join(
                f"{p.get('field')}: {p.get('message')}" for p in problems if isinstance(p, dict)
            )
            return f"{body['error']} ({details})"
        return str(body["error"])
    return f"HTTP {response.status_code}"


async def request_join(
    server: str,
    token: str,
    body: dict[str, Any],
    *,
    verify: str | bool = True,
    client: httpx.AsyncClient | None = None,
) -> dict[str, Any]:
    """``POST {server}/join`` with ``token``; the server's grant.

    Args:
        server: the API's base URL.
        token: the join token.
        body: ``{hostname, public_key, nats_key}``.
        verify: a CA bundle path to trust (a server with its own certificate), or True.
        client: an HTTP client to use (the simulations share one); its base URL is ignored.

    Raises:
        JoinRefused: the token was refused (401/403).
        KnitError: the server cannot be reached, or answered something else.
    """
    url = server.rstrip("/") + "/join"
    headers = {"Authorization": f"Bearer {token}"}
    try:
        if client is not None:
            response = await client.post(url, json=body, headers=headers, timeout=JOIN_TIMEOUT)
        else:
            async with httpx.AsyncClient(verify=verify, timeout=JOIN_TIMEOUT) as http:
                response = await http.post(url, json=body, headers=headers)
    except httpx.HTTPError as exc:
        raise KnitError(f"cannot reach the Knit API at {server} to join: {exc}") from exc
    if response.status_code in (401, 403):
        raise JoinRefused(f"join refused by {server}: {_reason(response)}")
    if response.status_code != 201:
        raise KnitError(f"join failed at {server}: {_reason(response)}")
    try:
        grant = response.json()
    except ValueError as exc:
        raise KnitError(f"join failed at {server}: the answer is not JSON") from exc
    if not isinstance(grant, dict):
        raise KnitError(f"join failed at {server}: unexpected answer")
    return grant


def mesh_from_grant(server: str, grant: dict[str, Any], mesh: MeshJoin) -> MeshIdentity:
    """This node's place in the mesh, from the ``mesh`` part of a join's grant.

    Args:
        server: the API's URL (for the errors).
        grant: the whole grant.
        mesh: what this node sent (its endpoint is kept).

    Raises:
        KnitError: the grant has no mesh, or a malformed one, or no entry for the server.
    """
    part = grant.get("mesh")
    if part is None:
        raise KnitError(f"join failed at {server}: the server has no mesh (it runs without one)")
    try:
        if not isinstance(part, dict):
            raise TypeError("not an object")
        members = tuple(MeshMember.model_validate(m) for m in part["members"])
        servers = [m for m in members if m.node_id is None]
        if len(servers) != 1:
            raise ValueError("the members must hold the server's entry (node_id null) once")
        return MeshIdentity(
            address=str(part["address"]),
            cidr=str(part["cidr"]),
            endpoint=mesh.endpoint,
            server=servers[0],
            members=members,
            revision=int(part["revision"]),
        )
    except (KeyError, TypeError, ValueError, pydantic.ValidationError) as exc:
        why = f"lacks {exc}" if isinstance(exc, KeyError) else f"is malformed: {exc}"
        raise KnitError(f"join failed at {server}: the grant's mesh {why}") from exc


def identity_from_grant(
    server: str, grant: dict[str, Any], mesh: MeshJoin | None = None
) -> Identity:
    """The identity a join's grant gives.

    Args:
        server: the API's URL.
        grant: the server's answer.
        mesh: what this node sent to join the mesh (None: it did not ask to be a member;
            a ``mesh`` in the grant is then ignored).

    Raises:
        KnitError: the grant lacks a field (or a mesh that was asked for).
    """
    member = mesh_from_grant(server, grant, mesh) if mesh is not None else None
    try:
        urls = grant["nats_urls"]
        if not isinstance(urls, list) or not urls:
            raise KeyError("nats_urls")
        jwt = grant.get("nats_jwt")
        return Identity(
            node_id=str(grant["node_id"]),
            server=server,
            nats_urls=tuple(str(u) for u in urls),
            nats_jwt=None if jwt is None else str(jwt),
            server_key=str(grant["server_key"]),
            task_key=str(grant["task_key"]),
            insecure_bus=bool(grant.get("insecure_bus", False)),
            mesh=member,
        )
    except KeyError as exc:
        raise KnitError(f"join failed at {server}: the answer lacks {exc}") from exc


async def join(
    server: str,
    token: str,
    data_dir: Path,
    keys: NodeKeyPair,
    hostname: str,
    *,
    ca_file: Path | None = None,
    mesh: MeshJoin | None = None,
) -> Identity:
    """Join the cluster of ``server`` with ``token``; keep and return the identity.

    Args:
        server: the API's base URL.
        token: the join token.
        data_dir: where the identity is kept.
        keys: the node's X25519 key pair (its public half is sent).
        hostname: the name the node reports.
        ca_file: a CA bundle to trust for the API's certificate.
        mesh: the node's WireGuard public key and endpoint, to be a member of the mesh
            (``knit.agent.mesh.mesh_join``); None: not a member.

    Raises:
        JoinRefused: the token was refused.
        KnitError: the server cannot be reached or the join failed (a server without a mesh
            refuses a member with 409).
    """
    nats_key = load_or_create_nats_key(data_dir)
    body: dict[str, Any] = {
        "hostname": hostname,
        "public_key": keys.public_key_b64,
        "nats_key": nats_key.public_key,
    }
    if mesh is not None:
        body["mesh"] = mesh.model_dump(mode="json")
    grant = await request_join(
        server, token, body, verify=str(ca_file) if ca_file is not None else True
    )
    identity = identity_from_grant(server, grant, mesh)
    save_identity(data_dir, identity)
    if identity.mesh is not None:
        log.info(
            "joined the cluster of %s as node %s, mesh address %s",
            server,
            identity.node_id,
            identity.mesh.address,
        )
    else:
        log.info("joined the cluster of %s as node %s", server, identity.node_id)
    return identity


__all__ = ["JoinRefused", "identity_from_grant", "join", "mesh_from_grant", "request_join"]
