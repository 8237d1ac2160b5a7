"""How the ``knit`` client commands print: aligned tables, JSON, new secrets.

Layer: cli. Imports the standard library only.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> list[str]:
    """``rows`` as lines of an aligned table of ``columns`` (a header line first)."""
    cells = [[c.upper() for c in columns]]
    cells += [["" if row.get(c) is None else str(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    return ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip() for r in cells]


def emit(args: argparse.Namespace, rows: Sequence[Mapping[str, Any]], columns: list[str]) -> None:
    """Print rows as JSON (``--json``) or as an aligned table of ``columns``."""
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for line in table(rows, columns):
        print(line)


def print_secret(args: argparse.Namespace, created: dict[str, Any], what: str) -> None:
    """Print a new token's secret alone on standard output (``T=$(knit token create ...)``
    captures it), what it is on standard error; or the whole reply with ``--json``."""
    if args.json:
        print(json.dumps(created, indent=2))
        return
    expires = created.get("expires_at") or "never"
    print(f"{what} {created['id']} created, expires {expires}", file=sys.stderr)
    print(created["token"])
