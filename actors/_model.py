"""Plain data of the actor runtime: policies named at spawn time and introspection records.

Layer: ``actors``. Imports the standard library only; no behaviour lives here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Strategy(enum.Enum):
    """What a supervisor restarts when one child crashes."""

    ONE_FOR_ONE = "one_for_one"
    """Only the crashed child."""
    ONE_FOR_ALL = "one_for_all"
    """Every child: the others are stopped (reverse start order), then all start again."""


class Restart(enum.Enum):
    """When a supervisor restarts a child that ended."""

    PERMANENT = "permanent"
    """Always: after a crash and after a normal exit."""
    TRANSIENT = "transient"
    """Only after a crash."""
    TEMPORARY = "temporary"
    """Never; the child is forgotten when it ends."""


class Overflow(enum.Enum):
    """What a send does when the mailbox is full."""

    BLOCK = "block"
    """``tell``/``ask`` wait for room (backpressure); ``tell_nowait`` raises MailboxFull."""
    DROP_NEWEST = "drop_newest"
    """The new message is dropped (an asker gets MailboxFull)."""
    DROP_OLDEST = "drop_oldest"
    """The oldest queued message is dropped to make room (its asker gets MailboxFull)."""
    FAIL = "fail"
    """The sender gets MailboxFull."""


@dataclass(frozen=True, slots=True)
class ActorInfo:
    """One actor as ``ActorSystem.snapshot()`` sees it (for dashboards and metrics).

    Attributes:
        name: the actor's unique name.
        supervisor: the name of its supervisor.
        mailbox_depth: messages waiting in its mailbox.
        restarts: how many times it was restarted.
        state: ``"running"``, ``"starting"`` (first start under way), ``"restarting"``
            (crashed, a restart is pending or under way) or ``"stopped"`` (not running,
            e.g. while its supervisor restarts).
        mailbox_size: the mailbox bound.
        dropped: messages dropped by the overflow policy so far.
    """

    name: str
    supervisor: str
    mailbox_depth: int
    restarts: int
    state: str
    mailbox_size: int = 0
    dropped: int = 0


@dataclass(frozen=True, slots=True)
class SupervisorInfo:
    """One supervisor as ``ActorSystem.supervisors()`` sees it.

    Attributes:
        name: the supervisor's unique name (among supervisors).
        parent: the name of its own supervisor, None for the root.
        strategy: its restart strategy.
        children: how many children it holds.
        restarts: how many times it was itself restarted.
        state: ``"running"``, ``"restarting"`` or ``"stopped"``.
    """

    name: str
    parent: str | None
    strategy: Strategy
    children: int
    restarts: int
    state: str
