"""What a request for logs asks for: which instances, which lines.

Layer: domain. Pure: the standard library and ``knit.errors`` only.

``GET /deployments/{id}/logs`` and ``GET /instances/{id}/logs`` take
``follow``, ``tail``, ``since``, ``timestamps`` (and, for a deployment, ``instance``: one
index) as query parameters; :func:`parse_log_query` reads them the way ``nomad alloc logs``
and ``docker logs`` do: ``tail`` is a number of lines or ``all``, ``since`` a duration
before now (``90s``, ``10m``, ``1h30m``), a Unix time or an RFC 3339 time.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from knit.errors import Invalid

DEFAULT_TAIL = 100
"""Lines of each instance's past sent first when ``tail`` is not given."""

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)(ms|s|m|h|d))+")
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


@dataclass(frozen=True)
class LogQuery:
    """Which lines of each instance (as ``knit.runtime.base.LogOptions``).

    Attributes:
        follow: keep streaming new lines.
        tail: the last lines to start with (None: all).
        since: only lines from this time (seconds since the epoch; None: all).
        timestamps: prefix lines with the runtime's timestamp.
    """

    follow: bool = False
    tail: int | None = DEFAULT_TAIL
    since: float | None = None
    timestamps: bool = False


@dataclass(frozen=True)
class LogTarget:
    """One instance whose logs are asked for.

    Attributes:
        instance_id: the instance.
        node_id: the node its container is on.
        index: its index in its deployment (the prefix of its lines: ``[0] ...``).
    """

    instance_id: str
    node_id: str
    index: int


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``90s``, ``10m``, ``1h30m`` or ``250ms``.

    Raises:
        ValueError: not such a duration.
    """
    text = text.strip()
    if not _DURATION.fullmatch(text):
        raise ValueError(f"{text!r} is not a duration (such as 30s, 10m, 1h30m)")
    return sum(float(n) * _UNIT[unit] for n, unit in _PART.findall(text))


def parse_since(text: str, now: float | None = None) -> float:
    """A time from a duration before ``now``, a Unix time or an RFC 3339 time.

    Raises:
        ValueError: none of them.
    """
    text = text.strip()
    now = time.time() if now is None else now
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (10m), a Unix time nor an RFC 3339 time"
        ) from None
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone (add Z or +00:00)")
    return moment.timestamp()


def parse_log_query(
    args: Mapping[str, str], now: float | None = None
) -> tuple[LogQuery, int | None]:
    """The query of a logs request, and the instance index it asks for (None: all).

    Raises:
        Invalid: a parameter is malformed (each one named).
    """
    errors: list[dict[str, str]] = []

    def flag(name: str) -> bool:
        value = args.get(name, "").strip().lower()
        if value in _TRUE:
            return True
        if value not in _FALSE:
            errors.append({"field": name, "message": "must be 1 or 0 (true or false)"})
        return False

    def count(name: str) -> int | None:
        value = args.get(name, "").strip()
        if not value.isdigit() or len(value) > 9:
            errors.append({"field": name, "message": "must be a whole number of 0 or more"})
            return None
        return int(value)

    follow, timestamps = flag("follow"), flag("timestamps")
    tail: int | None = DEFAULT_TAIL
    if "tail" in args:
        tail = None if args["tail"].strip().lower() in ("all", "-1") else count("tail")
    since = None
    if args.get("since", "").strip():
        try:
            since = parse_since(args["since"], now)
        except ValueError as exc:
            errors.append({"field": "since", "message": str(exc)})
    index = count("instance") if args.get("instance", "").strip() else None
    if errors:
        raise Invalid(errors)
    return LogQuery(follow=follow, tail=tail, since=since, timestamps=timestamps), index


__all__ = [
    "DEFAULT_TAIL",
    "LogQuery",
    "LogTarget",
    "parse_duration",
    "parse_log_query",
    "parse_since",
]
