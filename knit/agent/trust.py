"""The agent's side of trust on the bus: proving what it publishes, checking what it runs.

Layer: agent. Imports ``knit.trust`` (pure) and the standard library.

An agent that joined holds the keys it shares with the server (derived from its own key
and the server's, knit.trust.macs). Everything it publishes carries its node id and a MAC
(:meth:`AgentTrust.headers`); a task runs only if :meth:`AgentTrust.task_refusal` finds no
reason to refuse it: proved to come from the server (a MAC under the node's key, or the
server's signature on the broadcast subject), addressed to this node (or to any node, on
the broadcast subject), and not expired.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass

from knit.bus import Headers
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

    def headers(self, subject: str, payload: bytes) -> dict[str, str]:
        """The headers proving this node published ``payload`` on ``subject``."""
        return {
            macs.NODE_HEADER: self.node_id,
            macs.MAC_HEADER: macs.mac(self.link.up, subject, payload),
        }

    def proved(
        self, subject: str, payload: bytes, headers: Headers | None, *, broadcast: bool
    ) -> bool:
        """Whether the server sent ``payload`` on ``subject`` (checked before decoding)."""
        if headers is None:
            return False
        if broadcast:
            return macs.signature_ok(self.task_key, subject, payload, headers.get(macs.SIG_HEADER))
        return macs.mac_ok(self.link.down, subject, payload, headers.get(macs.MAC_HEADER))

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
