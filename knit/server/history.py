"""The history's retention: events and finished tasks older than a limit are removed.

Layer: server. Every event and every task stays in the store until pruned; at scale that is
millions of rows a day (c10k: five events and a task per placement), and a store that only
grows makes every write and read slower and fills the disk. So the server removes events,
and tasks that succeeded or failed, older than ``--history-retention`` (72 h by default; 0
keeps them for ever), looking every ``PRUNE_EVERY`` seconds. Rows go in chunks of
``PRUNE_CHUNK``, one short write each, so the other writes queue behind none of them for
long. Instances, deployments, nodes and tasks still running are never pruned.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import anyio
import anyio.lowlevel

from knit.errors import KnitError
from knit.server.repo import Repo

log = logging.getLogger(__name__)

PRUNE_EVERY = 600.0
"""Seconds between two looks for history past its retention (at most a tenth of it, at
least ``PRUNE_AT_MOST_EVERY``)."""
PRUNE_AT_MOST_EVERY = 1.0
"""Fewest seconds between two looks, however short the retention (no busy loop)."""
PRUNE_CHUNK = 5_000
"""Rows of each kind removed per write."""


async def prune_history(
    repo: Repo, retention: float, *, clock: Callable[[], float] = time.time
) -> tuple[int, int]:
    """Remove the events and finished tasks older than ``retention`` seconds, chunk by
    chunk; how many events and tasks went.

    Raises:
        KnitError: the store failed (what went before stays gone).
    """
    before = clock() - retention
    events = tasks = 0
    while True:
        gone_events, gone_tasks = await repo.prune_older(before, PRUNE_CHUNK)
        events, tasks = events + gone_events, tasks + gone_tasks
        if gone_events < PRUNE_CHUNK and gone_tasks < PRUNE_CHUNK:
            return events, tasks
        await anyio.lowlevel.checkpoint()  # the rest of the server runs between chunks


async def keep_history(repo: Repo, retention: float) -> None:
    """Prune the history now and then until cancelled (``retention`` > 0)."""
    every = max(PRUNE_AT_MOST_EVERY, min(PRUNE_EVERY, retention / 10))
    while True:
        try:
            events, tasks = await prune_history(repo, retention)
        except KnitError as exc:
            log.warning("pruning the history failed (tried again later): %s", exc)
        else:
            if events or tasks:
                log.info("history: removed %d events and %d finished tasks", events, tasks)
        await anyio.sleep(every)
