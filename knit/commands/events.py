"""``knit events [-f]``: what happened, oldest first, then (``-f``) what happens.

Layer: cli. Imports the API client, :mod:`knit.commands.output` and
:mod:`knit.commands.resolve`; blocking, as the rest of the CLI.

``GET /events`` lists the newest events first and has no cursor forward, so following polls
it every :data:`POLL_INTERVAL` seconds for the newest :data:`PAGE` and prints those it has
not printed yet (it remembers the ids of the last :data:`REMEMBERED`). An event is printed
once, when the server first lists it, even if the writer stored it a little after a newer
one. When a whole page is new, more happened than a page holds since the last read: a line
on standard error says some were skipped. Ctrl-C ends it (exit 130, no traceback); a server
that cannot be reached for a while is said once and read again.

Lines have fixed columns (``AT KIND DEPLOYMENT NODE MESSAGE``, ids of 12 characters unless
``--no-trunc``) so that followed events stay aligned with the first ones. ``-o json``
prints a JSON list, or with ``-f`` one JSON object per line (JSON Lines).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TextIO

from knit.client import ApiClient, ApiError, ApiUnreachable
from knit.commands.output import SHORT_ID, timestamp, wants_json
from knit.commands.resolve import NoMatch, deployment_of, node_of

POLL_INTERVAL = 1.0
"""Seconds between two reads of ``GET /events`` while following."""
PAGE = 500
"""Events read per poll while following."""
REMEMBERED = 10_000
"""Ids of printed events kept to recognise them in the next pages."""
KIND_WIDTH = 22

Event = Mapping[str, Any]


class EventReader(Protocol):
    """What following needs of the API client (``knit.client.ApiClient.events``)."""

    def events(
        self, *, limit: int = 100, deployment_id: str | None = None, node_id: str | None = None
    ) -> list[dict[str, Any]]:
        """``GET /events``: newest first."""
        ...


def header(*, no_trunc: bool = False) -> str:
    """The line above the events."""
    width = 32 if no_trunc else SHORT_ID
    return (
        f"{'AT':<20}  {'KIND':<{KIND_WIDTH}}  {'DEPLOYMENT':<{width}}  {'NODE':<{width}}  MESSAGE"
    )


def event_line(event: Event, *, no_trunc: bool = False) -> str:
    """One event as a line of fixed columns."""
    width = 32 if no_trunc else SHORT_ID

    def ident(key: str) -> str:
        value = event.get(key)
        return (str(value) if no_trunc else str(value)[:SHORT_ID]) if value else "-"

    at = timestamp(event.get("at"))
    return (
        f"{at or ''!s:<20}  {event.get('kind', '')!s:<{KIND_WIDTH}}  "
        f"{ident('deployment_id'):<{width}}  {ident('node_id'):<{width}}  "
        f"{event.get('message', '')}"
    ).rstrip()


class Unseen:
    """Which events of a page (newest first) were not printed yet, oldest first.

    Args:
        remembered: how many printed ids are kept.
    """

    def __init__(self, remembered: int = REMEMBERED) -> None:
        self._order: deque[str] = deque()
        self._ids: set[str] = set()
        self.remembered = remembered

    def take(self, page: Sequence[Event]) -> tuple[list[Event], bool]:
        """The page's events not seen before, oldest first, now seen; and whether events
        may have been missed (the whole page is new and full, after an earlier page)."""
        new = [e for e in page if str(e.get("id")) not in self._ids]
        missed = bool(self._ids) and bool(page) and len(new) == len(page)
        for e in reversed(new):
            self._remember(str(e.get("id")))
        return list(reversed(new)), missed

    def _remember(self, event_id: str) -> None:
        self._order.append(event_id)
        self._ids.add(event_id)
        while len(self._order) > self.remembered:
            self._ids.discard(self._order.popleft())


def follow_events(
    client: EventReader,
    show: Callable[[Event], None],
    *,
    deployment_id: str | None = None,
    node_id: str | None = None,
    unseen: Unseen,
    page: int = PAGE,
    interval: float = POLL_INTERVAL,
    sleep: Callable[[float], None] = time.sleep,
    polls: int | None = None,
) -> None:
    """Read new events and ``show`` each, oldest first, until Ctrl-C (or ``polls`` reads).

    ``KeyboardInterrupt`` is raised again: the caller ends the command.

    Raises:
        ApiError: the API refused a read (401, 403, 404 ...); an unreachable API or a 5xx
            answer is said once on standard error and read again.
    """
    lost = False
    done = 0
    while polls is None or done < polls:
        sleep(interval)
        done += 1
        try:
            found = client.events(limit=page, deployment_id=deployment_id, node_id=node_id)
        except ApiError as exc:
            if isinstance(exc, ApiUnreachable) or (exc.status or 0) >= 500:
                if not lost:
                    print(f"knit: {exc}; trying again", file=sys.stderr, flush=True)
                lost = True
                continue
            raise
        if lost:
            print("knit: the API answers again", file=sys.stderr, flush=True)
            lost = False
        new, missed = unseen.take(found)
        if missed and len(found) >= page:
            print(
                f"knit: more than {page} events since the last read: older ones not shown",
                file=sys.stderr,
                flush=True,
            )
        for event in new:
            show(event)


def _filter_id(text: str | None, find: Callable[[str], dict[str, Any]]) -> str | None:
    """The id ``text`` names; a whole id of something gone (events outlive it) as it is."""
    if text is None:
        return None
    try:
        return str(find(text)["id"])
    except NoMatch:
        if len(text) == 32:
            return text
        raise


def run_events(args: argparse.Namespace, client: ApiClient) -> None:
    """``knit events [-f] [-n N] [--deployment NAME|ID] [--node ID]``."""
    deployment_id = _filter_id(args.deployment, lambda t: deployment_of(client, t))
    node_id = _filter_id(args.node, lambda t: node_of(client, t))
    first = client.events(limit=args.tail, deployment_id=deployment_id, node_id=node_id)
    unseen = Unseen()
    shown, _ = unseen.take(first)
    as_json = wants_json(args)
    out: TextIO = sys.stdout
    if as_json and not args.follow:
        print(json.dumps(shown, indent=2))
        return

    def show(event: Event) -> None:
        if as_json:
            print(json.dumps(event), file=out, flush=True)
        else:
            print(event_line(event, no_trunc=args.no_trunc), file=out, flush=True)

    if not as_json:
        print(header(no_trunc=args.no_trunc), file=out, flush=True)
    for event in shown:
        show(event)
    if args.follow:
        follow_events(client, show, deployment_id=deployment_id, node_id=node_id, unseen=unseen)
