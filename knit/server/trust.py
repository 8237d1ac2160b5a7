"""The server's side of trust on the bus: who is a node, and what proves a message is its.

Layer: server. Imports ``knit.trust`` (pure), ``knit.store.trust`` records, ``knit.natsd``'s
``NatsAuth`` and ``knit.bus``'s ``BusCredentials``; no I/O of its own (the join and the
removal, which write, are in knit/server/membership.py).

:class:`BusTrust` holds the server's keys and every joined node's pinned keys, and answers,
per message, in memory:

- :meth:`BusTrust.check_up`: which node a heartbeat or a task status comes from, proved by
  its proof field under that node's key (knit.trust.macs); None if nothing proves it;
- :meth:`BusTrust.prove_task`: a task with the proof that it comes from the server and is
  meant for its node;
- :meth:`BusTrust.nats_auth`: what a nats-server must trust (operator, accounts, revoked
  nodes), and :meth:`BusTrust.node_jwt` / :meth:`BusTrust.server_credentials` /
  :meth:`BusTrust.system_credentials`: the bus credentials of a node, of the server itself
  and of the server in the system account (for account updates).

With ``insecure`` (``knit server --insecure-bus``) nothing is checked: any message is taken
for what it says, as before nodes joined.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence

from knit.bus import BusCredentials
from knit.natsd import NatsAuth
from knit.store.trust import NodeKeyRecord
from knit.trust import macs
from knit.trust.keys import ServerKeys
from knit.trust.natsjwt import account_jwt, node_permissions, operator_jwt, user_jwt
from knit.trust.nkeys import KeyKind, NKey

log = logging.getLogger(__name__)

ACCOUNT = "KNIT"
SYSTEM_ACCOUNT = "SYS"
EVENT_EVERY = 60.0
"""Seconds between two events about refused messages naming the same node."""


class BusTrust:
    """Joined nodes' keys and the checks of their messages.

    Args:
        keys: the server's keys.
        pins: the joined nodes' pinned keys.
        revoked: removed nodes' NATS keys → removal time.
        insecure: accept every message as what it says (an open lab bus).
    """

    def __init__(
        self,
        keys: ServerKeys,
        pins: Iterable[NodeKeyRecord] = (),
        revoked: Mapping[str, float] | None = None,
        *,
        insecure: bool = False,
    ) -> None:
        self.keys = keys
        self.insecure = insecure
        self.pins: dict[str, NodeKeyRecord] = {p.node_id: p for p in pins}
        self.revoked: dict[str, float] = dict(revoked or {})
        self._links: dict[str, macs.LinkKeys] = {}
        self._refusals: dict[tuple[str, str], float] = {}
        self._server_user = NKey.generate(KeyKind.USER)
        self._server_jwt = user_jwt(
            keys.account_signing, keys.account.public_key, self._server_user.public_key, "server"
        )
        self._system_user = NKey.generate(KeyKind.USER)
        self._system_user_jwt = user_jwt(
            keys.system_account,
            keys.system_account.public_key,
            self._system_user.public_key,
            "knit-server-system",
        )
        # A nats-server reload refuses a changed operator: operator_jwt gives the same JWT
        # for the same keys; the system account's is signed once per process.
        self._operator_jwt = operator_jwt(keys.operator, keys.system_account.public_key)
        self._system_jwt = account_jwt(
            keys.operator, keys.system_account.public_key, SYSTEM_ACCOUNT
        )

    # --- membership ------------------------------------------------------------------------

    def joined(self, node_id: str) -> bool:
        """Whether ``node_id`` is a joined node (always True on an insecure bus)."""
        return self.insecure or node_id in self.pins

    def pin(self, record: NodeKeyRecord) -> None:
        """Trust a node that just joined."""
        self.pins[record.node_id] = record
        self._links.pop(record.node_id, None)

    def forget(self, node_id: str, nats_key: str | None, at: float) -> None:
        """A node was removed: refuse its messages, revoke its bus identity."""
        self.pins.pop(node_id, None)
        self._links.pop(node_id, None)
        if nats_key is not None:
            self.revoked[nats_key] = at

    def refresh(self, pins: Iterable[NodeKeyRecord], revoked: Mapping[str, float]) -> None:
        """Take the pins and revocations as stored (another server of the database admitted
        or removed a node)."""
        fresh = {p.node_id: p for p in pins}
        for node_id in self.pins.keys() - fresh.keys():
            self._links.pop(node_id, None)
        self.pins = fresh
        self.revoked = dict(revoked)

    def pinned_key(self, node_id: str) -> str | None:
        """The X25519 public key pinned for ``node_id`` at its join (None: not joined)."""
        pin = self.pins.get(node_id)
        return pin.public_key if pin is not None else None

    def link(self, node_id: str) -> macs.LinkKeys | None:
        """The keys shared with a joined node (derived once, then kept)."""
        keys = self._links.get(node_id)
        if keys is None:
            pin = self.pins.get(node_id)
            if pin is None:
                return None
            try:
                keys = macs.derive_link_keys(
                    self.keys.link, macs.decode_x25519_public(pin.public_key), node_id
                )
            except ValueError:
                log.error("node %s has an unusable pinned key", node_id)
                return None
            self._links[node_id] = keys
        return keys

    # --- messages --------------------------------------------------------------------------

    def check_up(self, subject: str, message: bytes) -> tuple[str, bytes] | None:
        """The node a message on ``subject`` is proved to come from, and the message without
        its proof; None if nothing proves it.

        On an insecure bus the node a proof names is believed, and a message without a proof
        is taken whole, from node "" (the caller believes the message itself).
        """
        parts = macs.detach(message)
        if parts is None:
            return ("", message) if self.insecure else None
        body, proof = parts
        node_id, _, presented = proof.partition(" ")
        if self.insecure:
            return node_id, body
        link = self.link(node_id)
        if link is None or not macs.mac_ok(link.up, subject, body, presented):
            return None
        return node_id, body

    @staticmethod
    def claimed(message: bytes) -> str | None:
        """The node a message's proof names (unchecked: for the record of a refusal)."""
        parts = macs.detach(message)
        return parts[1].partition(" ")[0][:128] or None if parts is not None else None

    def should_record(self, node_id: str, kind: str) -> bool:
        """Whether a refusal about ``node_id`` deserves an event now (one per kind and node
        per ``EVENT_EVERY``: a flood of forgeries must not flood the event log)."""
        if node_id not in self.pins:
            return False
        now = time.monotonic()
        key = (node_id, kind)
        if now - self._refusals.get(key, -EVENT_EVERY) < EVENT_EVERY:
            return False
        if len(self._refusals) > 10_000:
            self._refusals.clear()
        self._refusals[key] = now
        return True

    def prove_task(self, node_id: str | None, subject: str, payload: bytes) -> bytes:
        """The task ``payload`` on ``subject`` with the proof that it comes from the server:
        a MAC under the node's key, or the task key's signature for a task to any node
        (``node_id`` None). Unchanged on an insecure bus.

        Raises:
            KeyError: ``node_id`` has not joined (and the bus is not insecure).
        """
        if self.insecure:
            return payload
        if node_id is None:
            return macs.attach(payload, macs.SIGNED + macs.sign(self.keys.task, subject, payload))
        link = self.link(node_id)
        if link is None:
            raise KeyError(node_id)
        return macs.attach(payload, macs.mac(link.down, subject, payload))

    # --- NATS credentials ------------------------------------------------------------------

    def nats_auth(self) -> NatsAuth:
        """What a nats-server of Knit's trusts now (the revoked nodes left out)."""
        keys = self.keys
        return NatsAuth(
            operator_jwt=self._operator_jwt,
            system_account=keys.system_account.public_key,
            accounts={
                keys.system_account.public_key: self._system_jwt,
                keys.account.public_key: account_jwt(
                    keys.operator,
                    keys.account.public_key,
                    ACCOUNT,
                    signing_keys=[keys.account_signing.public_key],
                    revocations={k: int(at) + 1 for k, at in self.revoked.items()},
                ),
            },
        )

    def node_jwt(self, node_id: str, nats_key: str) -> str:
        """The user JWT of a node: its own task subject, the broadcast queue, heartbeats
        and statuses, nothing else."""
        return user_jwt(
            self.keys.account_signing,
            self.keys.account.public_key,
            nats_key,
            node_id,
            node_permissions(node_id),
        )

    def tool_jwt(
        self,
        name: str,
        nats_key: str,
        publish: Sequence[str],
        subscribe: Sequence[str],
        expires: int,
    ) -> str:
        """The user JWT of a tool on the bus (``POST /bus-credentials``): what it lists,
        until ``expires``. An empty list allows nothing (for NATS, an empty ``allow`` would
        allow everything)."""

        def only(subjects: Sequence[str]) -> dict[str, list[str]]:
            return {"allow": list(subjects)} if subjects else {"deny": [">"]}

        return user_jwt(
            self.keys.account_signing,
            self.keys.account.public_key,
            nats_key,
            name,
            {"pub": only(publish), "sub": only(subscribe)},
            expires=expires,
        )

    def server_credentials(self) -> BusCredentials:
        """The server's own bus user (any subject of the account); a new key each start."""
        return BusCredentials(jwt=self._server_jwt, seed=self._server_user.seed)

    def system_credentials(self) -> BusCredentials:
        """The server's user in the system account (a new key each start): what pushes
        account updates to an external NATS cluster's resolver (knit/server/claims.py)."""
        return BusCredentials(jwt=self._system_user_jwt, seed=self._system_user.seed)


__all__ = ["BusTrust"]
