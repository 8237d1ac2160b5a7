"""Account updates pushed to an external NATS cluster that runs Knit's operator-mode auth.

Layer: server (adapter side: it connects to NATS through ``knit.bus``). Imports ``knit.bus``,
``knit.natsd``'s ``NatsAuth`` and the standard library.

With ``knit server --nats URL... --nats-operator-auth`` the nats-servers are not Knit's
children: they trust Knit's operator through the fragment ``knit nats-config`` wrote, whose
*full* resolver keeps the accounts' JWTs and takes new ones, signed by the operator, on
``$SYS.REQ.CLAIMS.UPDATE`` from a user of the system account. The member that receives an
update passes it on to the others of its cluster, so one push reaches them all: a removed
node's NATS key in the ``KNIT`` account's revocations closes its connections on every
member and keeps it out (docs/nats-cluster.md).

:class:`ClusterResolver` has the ``reload`` of knit.natsd's ``EmbeddedNats``: membership
(knit/server/membership.py) treats both alike.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from knit.bus import BusCredentials, connect_bus
from knit.errors import BusError, KnitError
from knit.natsd import NatsAuth

log = logging.getLogger(__name__)

CLAIMS_UPDATE = "$SYS.REQ.CLAIMS.UPDATE"
"""Where a nats-server's full (or cache) resolver takes account JWTs signed by its operator."""
CONNECT_FOR = 10.0
"""Seconds a push waits for one of the cluster's members to accept its connection."""
REPLY_WITHIN = 5.0
"""Seconds a push waits for a member's answer to one account update."""


class ClusterResolver:
    """Pushes the accounts' JWTs to the resolver of an external NATS (cluster).

    Args:
        url: the NATS URLs (comma-separated), as the server's bus has them.
        credentials: a user of the system account (``BusTrust.system_credentials``), called
            at each push.
        system_account: the system account's public key (its JWT never changes: not pushed).
    """

    def __init__(
        self, url: str, credentials: Callable[[], BusCredentials], system_account: str
    ) -> None:
        self.url = url
        self.credentials = credentials
        self.system_account = system_account

    async def reload(self, auth: NatsAuth) -> None:
        """Push every account of ``auth`` but the system account's (a connection of its own,
        closed afterwards: pushes are rare, at a start and at a node's removal).

        Cancellation abandons the push (a later one sends the whole state again).

        Raises:
            KnitError: no member accepted the system user, or a member refused an update
                (its answer says why; a ``resolver: MEMORY`` has nobody answering at all).
        """
        try:
            bus = await connect_bus(
                self.url,
                name="knit-server-claims",
                retry_for=CONNECT_FOR,
                credentials=self.credentials(),
            )
        except BusError as exc:
            raise KnitError(f"cannot push account updates to NATS: {exc}") from exc
        try:
            for account, jwt in auth.accounts.items():
                if account == self.system_account:
                    continue
                try:
                    reply = await bus.request(CLAIMS_UPDATE, jwt.encode(), timeout=REPLY_WITHIN)
                except BusError as exc:
                    raise KnitError(
                        f"NATS did not take account {account}'s update ({exc}): does its "
                        "configuration include a `knit nats-config` with a full resolver?"
                    ) from exc
                check_reply(account, reply)
                log.info("account %s updated on the NATS cluster", account)
        finally:
            await bus.close()


def check_reply(account: str, reply: bytes) -> None:
    """Accept a resolver's answer to an update (``{"data": {"code": 200, ...}}``).

    Raises:
        KnitError: the answer is an error, or not one a nats-server gives.
    """
    try:
        answer = json.loads(reply)
        data = answer.get("data") or {}
        error = answer.get("error") or {}
        code = data.get("code", error.get("code"))
        message = str(data.get("message") or error.get("description") or "")
    except (ValueError, AttributeError) as exc:
        raise KnitError(f"NATS answered account {account}'s update with no JSON") from exc
    if code != 200:
        raise KnitError(f"NATS refused account {account}'s update: {code} {message}".rstrip())


__all__ = ["CLAIMS_UPDATE", "ClusterResolver", "check_reply"]
