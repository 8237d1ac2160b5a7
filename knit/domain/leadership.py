"""Leader election's decisions: when to renew, when a leader must stop, who is alive.

Layer: domain (pure). The ``Elector`` (``knit.server.leadership``) applies them; the lease
itself lives in the database (``knit.store.leases``, decision 0024).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

MIN_LEASE_TTL = 1.0
"""The shortest lease a server accepts: below it a busy event loop could miss renewals."""
MAX_LEASE_TTL = 300.0
"""The longest: past it a dead leader holds the cluster still for too long to be useful."""


class Role(StrEnum):
    """What a server is doing."""

    LEADER = "leader"
    FOLLOWER = "follower"


class Presence(StrEnum):
    """Whether a server in ``knit servers`` still writes itself into the database."""

    ALIVE = "alive"
    GONE = "gone"


@dataclass(frozen=True, slots=True)
class LeaseTiming:
    """The rhythm of a lease of ``ttl`` seconds.

    - The leader renews every third of it, so two renewals may fail before it ends.
    - It stops acting ``margin`` seconds before the lease it last renewed would end by
      its own clock, counted from *before* it asked for the renewal: the database's
      deadline is later than that, so the leader has stopped before anyone else can
      start (clocks may differ; their rates do not, by much).
    - Followers try to take the lease every ``retry`` seconds.
    """

    ttl: float

    @property
    def renew_every(self) -> float:
        return self.ttl / 3

    @property
    def margin(self) -> float:
        return min(1.0, self.ttl / 5)

    @property
    def retry(self) -> float:
        return max(0.1, min(1.0, self.ttl / 5))

    @property
    def announce_every(self) -> float:
        """Seconds between a server's writes of its row in ``servers``."""
        return max(0.5, min(2.0, self.ttl / 3))


def check_lease_ttl(ttl: float) -> str | None:
    """Why ``ttl`` cannot be a lease's time (None: it can)."""
    if not MIN_LEASE_TTL <= ttl <= MAX_LEASE_TTL:
        return f"must be between {MIN_LEASE_TTL:g} and {MAX_LEASE_TTL:g} seconds"
    return None


SERVER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
"""A server's id: a host name or a short name (``--server-id``)."""


def check_server_id(text: str) -> str | None:
    """Why ``text`` cannot be a server's id (None: it can)."""
    if not SERVER_ID.match(text):
        return "must be 1 to 63 letters, digits, '.', '_' or '-', beginning with a letter or digit"
    return None


def default_server_id(hostname: str) -> str:
    """The id of a server not given one: its host's name, made fit for an id."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", hostname).lstrip("._-")[:63]
    return cleaned or "server"


def acting_deadline(asked_at: float, timing: LeaseTiming) -> float:
    """Until when (local monotonic clock) a leader may act on a lease it renewed with a
    request sent at ``asked_at``."""
    return asked_at + timing.ttl - timing.margin


def fit_to_lead(connected: bool, disconnected_at: float, now: float, timing: LeaseTiming) -> bool:
    """Whether a server may lead (or go on leading) as far as its bus goes: it hears no
    heartbeat and sends no task without NATS, so one that has been without it for a whole
    lease gives the lead to a server that has it (and does not take it back meanwhile)."""
    return connected or now - disconnected_at < timing.ttl


def presence(last_seen: float, now: float, timing: LeaseTiming) -> Presence:
    """A server is gone once it missed three of its writes (both times the database's)."""
    if now - last_seen > 3 * timing.announce_every + 1.0:
        return Presence.GONE
    return Presence.ALIVE


__all__ = [
    "MAX_LEASE_TTL",
    "MIN_LEASE_TTL",
    "SERVER_ID",
    "LeaseTiming",
    "Presence",
    "Role",
    "acting_deadline",
    "check_lease_ttl",
    "check_server_id",
    "default_server_id",
    "fit_to_lead",
    "presence",
]
