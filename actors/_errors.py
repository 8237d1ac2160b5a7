"""The actor runtime's one exception tree, rooted at :class:`ActorError`.

Layer: ``actors`` (a library below every Knit package). Imports the standard library only.
Callers catch these; anyio's stream errors (``ClosedResourceError``, ``BrokenResourceError``,
``WouldBlock``) are translated into them at the mailbox boundary and never leak out.
"""

from __future__ import annotations


class ActorError(Exception):
    """Root of every error the actor runtime raises on purpose."""


class AskTimeout(ActorError, TimeoutError):
    """No reply came within an ``ask``'s timeout (the message may still be handled later)."""


class ActorStopped(ActorError):
    """The actor is gone for good (stopped, not restarted): it takes no more messages.

    Also raised to an asker whose message was still queued, or being handled, when the actor
    was stopped.
    """


class ActorCrashed(ActorError):
    """The actor raised while handling this ``ask`` (or in ``started()`` during ``spawn``).

    The original exception is the ``__cause__``. The actor itself crashed; its supervisor
    decides what happens next.
    """


class MailboxFull(ActorError):
    """The mailbox is full and its overflow policy says the sender must hear about it.

    Raised by ``tell_nowait`` on an ``Overflow.BLOCK`` mailbox, by any send on an
    ``Overflow.FAIL`` mailbox, and to an asker whose message an ``Overflow.DROP_*`` policy
    dropped.
    """


class SupervisorGaveUp(ActorError):
    """A supervisor saw more restarts than its intensity allows and stopped its tree.

    Its own supervisor then applies its own policy; when the root gives up, this propagates
    out of ``open_actor_system``. The ``__cause__`` is the crash that tipped it over.
    """
