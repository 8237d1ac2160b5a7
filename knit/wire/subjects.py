"""Every NATS subject Knit uses, and the broadcast queue group (spec 3).

Layer: wire. Pure: standard library only. Nothing else in Knit spells a subject.

| subject                | publisher → subscriber | message                    |
|------------------------|------------------------|----------------------------|
| ``knit.agent.heartbeat`` | agent → server       | ``Heartbeat`` (registration first) |
| ``knit.tasks.{node_id}`` | server → one agent   | ``Task``                   |
| ``knit.tasks.broadcast`` | server → any agent (queue group ``BROADCAST_QUEUE``) | ``Task`` |
| ``knit.task.status``     | agent → server       | ``TaskStatus``             |
| ``knit.mesh.peers``      | server → every agent | ``MeshPeers`` (all members) |
| ``knit.mesh.sync``       | agent → server       | ``MeshSync``: publish the membership again |
| ``knit.logs.to.{node_id}``   | server → one agent | ``LogOpen``, ``LogCredit``, ``LogClose`` |
| ``knit.logs.from.{node_id}`` | one agent → server | ``LogChunk``, ``LogEnd`` |
| ``knit.servers.notices``     | server → servers   | ``ServerNotice``: what to read again |
| ``knit.servers.leader``      | server → the leader | ``ServerNotice`` to apply (answered) |
"""

from __future__ import annotations

import re

HEARTBEAT = "knit.agent.heartbeat"
"""Agents publish their registration and heartbeats here."""

TASKS_PREFIX = "knit.tasks"
"""Tasks go to ``knit.tasks.{node_id}`` or ``knit.tasks.broadcast``."""

TASKS_BROADCAST = f"{TASKS_PREFIX}.broadcast"
"""Tasks for any agent: subscribers join :data:`BROADCAST_QUEUE`, so exactly one takes each."""

BROADCAST_QUEUE = "knit-agents"
"""The queue group every agent uses on :data:`TASKS_BROADCAST`."""

TASK_STATUS = "knit.task.status"
"""Agents report task progress and results here."""

MESH_PEERS = "knit.mesh.peers"
"""The server publishes the mesh's whole membership here after every change."""

MESH_SYNC = "knit.mesh.sync"
"""An agent asks for the mesh's membership here after a (re)connection; the server publishes
it again on :data:`MESH_PEERS` (once for many requests close together)."""

LOGS_TO_PREFIX = "knit.logs.to"
"""Log stream requests and credit go to ``knit.logs.to.{node_id}``."""

LOGS_FROM_PREFIX = "knit.logs.from"
"""A node sends the lines of its log streams on ``knit.logs.from.{node_id}``."""

LOGS_FROM_ANY = f"{LOGS_FROM_PREFIX}.*"
"""What the server subscribes to for every node's log streams."""

SERVER_NOTICES = "knit.servers.notices"
"""Servers of one database tell each other what they changed in it (what they keep in
memory of it: tokens, pins, references)."""

SERVER_LEADER = "knit.servers.leader"
"""Requests to the leader (only it subscribes, while it leads): apply a change stored by
another server; answered with a ``NoticeReply``. Nobody leading: NATS says so at once."""

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def tasks_for(node_id: str) -> str:
    """The subject of tasks for one node: ``knit.tasks.{node_id}``.

    Raises:
        ValueError: ``node_id`` is not a single subject token (empty, or has ``.``, ``*``,
            ``>`` or spaces) or is ``broadcast``, which would collide with the broadcast subject.
    """
    if not _TOKEN.fullmatch(node_id) or node_id == "broadcast":
        raise ValueError(f"{node_id!r} cannot be a node id in a NATS subject")
    return f"{TASKS_PREFIX}.{node_id}"


def logs_to(node_id: str) -> str:
    """The subject of log stream requests for one node: ``knit.logs.to.{node_id}``.

    Raises:
        ValueError: ``node_id`` is not a single subject token.
    """
    return f"{LOGS_TO_PREFIX}.{_token(node_id)}"


def logs_from(node_id: str) -> str:
    """The subject one node sends its log streams on: ``knit.logs.from.{node_id}``.

    Raises:
        ValueError: ``node_id`` is not a single subject token.
    """
    return f"{LOGS_FROM_PREFIX}.{_token(node_id)}"


def _token(node_id: str) -> str:
    if not _TOKEN.fullmatch(node_id):
        raise ValueError(f"{node_id!r} cannot be a node id in a NATS subject")
    return node_id


__all__ = [
    "BROADCAST_QUEUE",
    "HEARTBEAT",
    "LOGS_FROM_ANY",
    "LOGS_FROM_PREFIX",
    "LOGS_TO_PREFIX",
    "MESH_PEERS",
    "MESH_SYNC",
    "TASKS_BROADCAST",
    "TASKS_PREFIX",
    "TASK_STATUS",
    "logs_from",
    "logs_to",
    "tasks_for",
]
