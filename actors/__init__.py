"""A supervised-actor runtime on anyio (runs on both its asyncio and trio backends).

Layer: ``actors``, a library below every Knit package. Imports anyio and the standard library
only; never ``knit``, never ``asyncio`` directly. Knows nothing of Knit.

An actor is an object whose ``handle`` sees one message at a time from a bounded mailbox;
supervisors restart crashed actors with backoff and give up past a restart intensity; timers
and resettable deadlines deliver messages to their actor. ``docs/actors.md`` describes the
model; the implementation lives in private modules, and this namespace is the whole API::

    async with open_actor_system("server") as system:
        ref = await system.spawn(Counter, name="counter")
        await ref.tell(Add(1))
        total = await ref.ask(Get(), timeout=1.0)
"""

from actors._actor import Actor, ActorRef
from actors._clock import Deadline, Timer
from actors._errors import (
    ActorCrashed,
    ActorError,
    ActorStopped,
    AskTimeout,
    MailboxFull,
    SupervisorGaveUp,
)
from actors._model import ActorInfo, Overflow, Restart, Strategy, SupervisorInfo
from actors._supervisor import SupervisorRef
from actors._system import ActorSystem, open_actor_system

__all__ = [
    "Actor",
    "ActorCrashed",
    "ActorError",
    "ActorInfo",
    "ActorRef",
    "ActorStopped",
    "ActorSystem",
    "AskTimeout",
    "Deadline",
    "MailboxFull",
    "Overflow",
    "Restart",
    "Strategy",
    "SupervisorGaveUp",
    "SupervisorInfo",
    "SupervisorRef",
    "Timer",
    "open_actor_system",
]
