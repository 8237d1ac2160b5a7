"""How the ``knit`` client commands print: aligned tables with short ids, JSON, new secrets.

Layer: cli, pure: imports the standard library only.

Every listing goes through :func:`emit`: a table by default, the API's rows untouched with
``-o json`` (``--json``). In a table an id column shows each id's first :data:`SHORT_ID`
characters, like ``docker ps``, or the whole id with ``--no-trunc``. Knit's ids begin with
the second they were made and a sequence number (``knit.ids``); where two still share
those 12 (made by two processes in one second), :func:`short_ids` shows as many more
characters as it takes to tell them apart, so a short id in a table is always a prefix that the
commands accept (:mod:`knit.commands.resolve`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

SHORT_ID = 12
"""Characters of an id shown in a table (``--no-trunc``: all of them)."""

Row = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a table.

    Attributes:
        key: the row's field shown, or a function of the row.
        header: the column's title (default: ``key`` in capitals).
        id: the values are ids: shortened unless ``--no-trunc``.
    """

    key: str | Callable[[Row], object]
    header: str = ""
    id: bool = False

    @property
    def title(self) -> str:
        """The header shown."""
        if self.header:
            return self.header
        return self.key.upper() if isinstance(self.key, str) else "?"

    def value(self, row: Row) -> object:
        """This column's value in ``row``."""
        return row.get(self.key) if isinstance(self.key, str) else self.key(row)


def short_ids(ids: Iterable[str], least: int = SHORT_ID) -> dict[str, str]:
    """The short form of each id: its first ``least`` characters, or more where two of
    ``ids`` share those (each then as long as it takes to differ from every other)."""
    unique = sorted(set(ids))
    shown: dict[str, str] = {}
    for i, this in enumerate(unique):
        length = least
        for other in (unique[i - 1] if i else None, unique[i + 1] if i + 1 < len(unique) else None):
            # Sorted: the longest prefix this id shares with any other is with a neighbour.
            if other is not None:
                common = _common_prefix(this, other)
                if common >= length:
                    length = common + 1
        shown[this] = this[:length]
    return shown


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def usage(reserved: object, total: object, unit: str = "") -> str:
    """What is reserved of a capacity, ``docker stats`` style: ``0.5/2`` cpus,
    ``256MiB/7.8GiB`` with ``unit="bytes"`` ('-' where a number is missing)."""

    def text(value: object) -> str:
        if not isinstance(value, int | float) or isinstance(value, bool):
            return "-"
        if unit != "bytes":
            return f"{value:g}"
        number, suffix = float(value), "B"
        for suffix in ("B", "KiB", "MiB", "GiB", "TiB"):
            if abs(number) < 1024 or suffix == "TiB":
                break
            number /= 1024
        return f"{number:.3g}{suffix}"

    return f"{text(reserved)}/{text(total)}"


def timestamp(value: object) -> object:
    """A time (ISO 8601, or seconds since the epoch) as ISO 8601 in UTC to the second;
    anything else as it is."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        when = datetime.fromtimestamp(value, tz=UTC)
    elif isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            return value
    else:
        return value
    if when.tzinfo is not None:
        when = when.astimezone(UTC)
    return when.replace(microsecond=0, tzinfo=None).isoformat() + "Z"


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def cells(
    rows: Sequence[Row], columns: Sequence[str | Column], *, no_trunc: bool = False
) -> list[list[str]]:
    """The table's text, a header row first: ids shortened unless ``no_trunc``."""
    cols = [c if isinstance(c, Column) else Column(c) for c in columns]
    values = [[c.value(row) for c in cols] for row in rows]
    for i, col in enumerate(cols):
        if col.id and not no_trunc:
            short = short_ids(cell for v in values if isinstance(cell := v[i], str))
            for v in values:
                cell = v[i]
                if isinstance(cell, str):
                    v[i] = short[cell]
    return [[c.title for c in cols]] + [[_cell(x) for x in v] for v in values]


def align(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows of cells as aligned lines (two spaces between columns, no trailing blanks)."""
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip() for r in rows]


def table(
    rows: Sequence[Row], columns: Sequence[str | Column], *, no_trunc: bool = False
) -> list[str]:
    """``rows`` as lines of an aligned table of ``columns`` (a header line first)."""
    return align(cells(rows, columns, no_trunc=no_trunc))


def wants_json(args: argparse.Namespace) -> bool:
    """Whether the command was asked for JSON (``-o json`` or ``--json``)."""
    return bool(getattr(args, "json", False)) or getattr(args, "output", None) == "json"


def emit(args: argparse.Namespace, rows: Sequence[Row], columns: Sequence[str | Column]) -> None:
    """Print rows as JSON (``-o json``: the API's rows, full ids) or as an aligned table of
    ``columns`` (ids short unless ``--no-trunc``)."""
    if wants_json(args):
        print(json.dumps(rows, indent=2))
        return
    for line in table(rows, columns, no_trunc=bool(getattr(args, "no_trunc", False))):
        print(line)


def print_secret(args: argparse.Namespace, created: dict[str, Any], what: str) -> None:
    """Print a new token's secret alone on standard output (``T=$(knit token create ...)``
    captures it), what it is on standard error; or the whole reply with ``--json``."""
    if wants_json(args):
        print(json.dumps(created, indent=2))
        return
    expires = created.get("expires_at") or "never"
    print(f"{what} {created['id']} created, expires {expires}", file=sys.stderr)
    print(created["token"])
