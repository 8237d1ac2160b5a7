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


__all__ = [
    "BROADCAST_QUEUE",
    "HEARTBEAT",
    "MESH_PEERS",
    "MESH_SYNC",
    "TASKS_BROADCAST",
    "TASKS_PREFIX",
    "TASK_STATUS",
    "tasks_for",
]
