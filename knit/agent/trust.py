"""The agent's side of trust on the bus: proving what it publishes, checking what it runs.

Layer: agent. Imports ``knit.trust`` (pure) and the standard library.

An agent that joined holds the keys it shares with the server (derived from its own key
and the server's, knit.trust.macs). Everything it publishes carries its node id and a MAC
(:meth:`AgentTrust.prove`); a task runs only if it is proved to come from the server (a MAC
under the node's key, or the server's signature on the broadcast subject:
:meth:`AgentTrust.open_task`) and :meth:`AgentTrust.task_refusal` finds no reason to
refuse it: addressed to this node (or to any node, on the broadcast subject), not expired.
The mesh's membership (``knit.mesh.peers``) is signed like a broadcast task
(:meth:`AgentTrust.open_signed`).
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass

from knit.trust import macs
from knit.wire.messages import Task

CLOCK_SKEW = 60.0
"""Seconds a task's ``expires_at`` is stretched for the agent's clock being behind the
server's (the task TTL is minutes: see knit.server.tasks.TASK_TTL)."""


@dataclass(frozen=True)
class AgentTrust:
    """What a joined agent proves and checks with.

    Attributes:
        node_id: this node.
        link: the keys shared with the server.
        task_key: the server's Ed25519 public key (raw), which signs broadcast tasks.
    """

    node_id: str
    link: macs.LinkKeys
    task_key: bytes

    @classmethod
    def of(cls, node_id: str, link: macs.LinkKeys, task_key_b64: str) -> AgentTrust:
        """Build it from the identity's base64 task key.

        Raises:
            ValueError: the task key is not base64 of 32 bytes.
        """
        raw = base64.b64decode(task_key_b64, validate=True)
        if len(raw) != 32:
            raise ValueError("the server's task key must be 32 bytes")
        return cls(node_id=node_id, link=link, task_key=raw)

    def prove(self, subject: str, payload: bytes) -> bytes:
        """``payload`` with the proof that this node published it on ``subject``."""
        return macs.attach(payload, f"{self.node_id} {macs.mac(self.link.up, subject, payload)}")

    def open_task(self, subject: str, message: bytes, *, broadcast: bool) -> bytes | None:
        """The task without its proof if the server sent it on ``subject`` (checked before
        decoding); None if nothing proves it."""
        parts = macs.detach(message)
        if parts is None:
            return None
        body, proof = parts
        if broadcast:
            return self._signed(subject, body, proof)
        return body if macs.mac_ok(self.link.down, subject, body, proof) else None

    def open_signed(self, subject: str, message: bytes) -> bytes | None:
        """The message without its proof if the server's task key signed it for ``subject``
        (``"sig <signature>"``, as a broadcast task); None otherwise."""
        parts = macs.detach(message)
        return None if parts is None else self._signed(subject, *parts)

    def _signed(self, subject: str, body: bytes, proof: str) -> bytes | None:
        if not proof.startswith(macs.SIGNED):
            return None
        signature = proof[len(macs.SIGNED) :]
        return body if macs.signature_ok(self.task_key, subject, body, signature) else None

    def task_refusal(
        self, task: Task, *, broadcast: bool, known: bool = False, now: float | None = None
    ) -> str | None:
        """Why a proved task must not run (None: it may): for another node, or expired.

        A ``known`` task (this agent runs or ran it: a re-delivery is answered from memory,
        nothing runs again) is not refused for its age.
        """
        wanted = None if broadcast else self.node_id
        if task.node_id != wanted:
            return f"addressed to node {task.node_id}, not to this one"
        if known:
            return None
        if task.expires_at is None:
            return "it has no expiry"
        if (time.time() if now is None else now) > task.expires_at + CLOCK_SKEW:
            return "expired (is this host's clock right?)"
        return None


__all__ = ["CLOCK_SKEW", "AgentTrust"]
