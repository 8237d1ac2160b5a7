"""What the dashboard's pages show, computed from the control plane's JSON: pure functions.

Layer: dashboard. Imports the standard library only (no I/O, no quart): counts, pagination,
the change digest the live stream compares, and the small formatting filters templates use.
Every input is the JSON the ``ControlPlane`` port returns (see docs/api.md).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

JSONDict = dict[str, Any]

NODE_STATUSES = ("healthy", "unhealthy")
DEPLOYMENT_STATUSES = ("active", "pending", "deleting")
INSTANCE_STATUSES = ("pending", "running", "stopped", "error", "lost", "unknown")
HEALTHS = ("none", "starting", "healthy", "unhealthy")
"""An instance's ``health`` (``knit.domain.specs.Health``); anything else shows as ``none``."""
ROLLOUT_STATES = ("running", "complete", "paused", "rolling_back", "rolled_back")
"""A rollout's ``state`` (``knit.domain.specs.RolloutState``)."""
MASK = "•••"
SHORT_ID = 12


@dataclass(frozen=True)
class Counts:
    """How many nodes, deployments and instances there are, by status."""

    nodes: dict[str, int]
    deployments: dict[str, int]
    instances: dict[str, int]

    def to_json(self) -> JSONDict:
        """The counts as the live stream sends them."""
        return {
            "nodes": self.nodes,
            "deployments": self.deployments,
            "instances": self.instances,
        }


def _by_status(items: Iterable[Mapping[str, Any]], known: Sequence[str]) -> dict[str, int]:
    """Counts per ``status``: every known status (0 if absent) first, then any other seen."""
    seen = Counter(str(item.get("status")) for item in items)
    counts = {status: seen.pop(status, 0) for status in known}
    counts.update(sorted(seen.items()))
    return counts


def count(
    nodes: Sequence[JSONDict], deployments: Sequence[JSONDict], instances: Sequence[JSONDict]
) -> Counts:
    """Count everything by status."""
    return Counts(
        nodes=_by_status(nodes, NODE_STATUSES),
        deployments=_by_status(deployments, DEPLOYMENT_STATUSES),
        instances=_by_status(instances, INSTANCE_STATUSES),
    )


def running_by_deployment(instances: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """How many instances of each deployment are running."""
    return dict(Counter(str(i["deployment_id"]) for i in instances if i.get("status") == "running"))


def _node_row(n: Mapping[str, Any]) -> str:
    labels = sorted((n.get("labels") or {}).items())
    return (
        f"{n.get('id')}\x1f{n.get('hostname')}\x1f{n.get('status')}\x1f{n.get('eligible')}"
        f"\x1f{labels}\x1f{n.get('cpus')}\x1f{n.get('memory_bytes')}"
        f"\x1f{n.get('reserved_cpus')}\x1f{n.get('reserved_memory_bytes')}"
    )


def _deployment_row(d: Mapping[str, Any]) -> str:
    r = d.get("rollout") or {}
    return (
        f"{d.get('id')}\x1f{d.get('name')}\x1f{d.get('image')}\x1f{d.get('replicas')}"
        f"\x1f{d.get('status')}\x1f{d.get('pending_reason')}\x1f{d.get('updated_at')}"
        f"\x1f{d.get('version')}\x1f{r.get('version')}\x1f{r.get('state')}"
        f"\x1f{r.get('updated')}\x1f{r.get('healthy')}\x1f{r.get('desired')}\x1f{r.get('message')}"
    )


def _instance_row(i: Mapping[str, Any]) -> str:
    return (
        f"{i.get('instance_id')}\x1f{i.get('deployment_id')}\x1f{i.get('node_id')}"
        f"\x1f{i.get('status')}\x1f{i.get('error')}\x1f{i.get('container_id')}"
        f"\x1f{i.get('exit_code')}\x1f{i.get('version')}\x1f{i.get('health')}"
        f"\x1f{i.get('restarts')}\x1f{i.get('desired')}"
    )


def digest(
    nodes: Sequence[JSONDict],
    deployments: Sequence[JSONDict],
    instances: Sequence[JSONDict],
    newest_event_id: str | None,
) -> str:
    """A short hash of what the pages show, so the stream can tell when the view changed.

    Heartbeat times are left out on purpose: they move every few seconds on every node and
    would turn "something changed" into "a second passed". Strings, not JSON: with 10,000
    instances this is the stream's main cost, and joining strings is several times cheaper.
    """
    h = hashlib.sha256()
    # Sorted, so the order the control plane lists rows in does not matter.
    for rows in (
        sorted(map(_node_row, nodes)),
        sorted(map(_deployment_row, deployments)),
        sorted(map(_instance_row, instances)),
        [str(newest_event_id)],
    ):
        h.update("\x1e".join(rows).encode())
        h.update(b"\x1d")
    return h.hexdigest()[:16]


def health(value: object) -> str:
    """An instance's ``health`` as the pages show it: one of :data:`HEALTHS` (the CSS class
    ``h-<health>`` styles each)."""
    return str(value) if value in HEALTHS else "none"


@dataclass(frozen=True)
class RolloutView:
    """A deployment's rollout as its page shows it.

    Attributes:
        version: the version rolled out (after an automatic rollback: the stable one).
        state: one of :data:`ROLLOUT_STATES` (anything else is shown as is).
        desired, updated, healthy: the counts (``updated``/``desired`` draws the bar).
        message: the rollout's message (the reason of a pause or a rollback).
        failed_version: the version whose failure caused an automatic rollback, or None.
    """

    version: int
    state: str
    desired: int
    updated: int
    healthy: int
    message: str
    failed_version: int | None

    @property
    def active(self) -> bool:
        """Whether it still replaces instances."""
        return self.state in ("running", "rolling_back")

    @property
    def settled(self) -> bool:
        """Whether it completed (nothing worth a look on the lists)."""
        return self.state == "complete"


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def rollout_view(deployment: Mapping[str, Any]) -> RolloutView | None:
    """The deployment's ``rollout`` for its page (None: it never had one)."""
    r = deployment.get("rollout")
    if not isinstance(r, Mapping):
        return None
    desired = _count(r.get("desired"))
    failed = r.get("failed_version")
    return RolloutView(
        version=_count(r.get("version")),
        state=str(r.get("state")),
        desired=desired,
        updated=min(_count(r.get("updated")), desired) if desired else _count(r.get("updated")),
        healthy=_count(r.get("healthy")),
        message=str(r.get("message") or ""),
        failed_version=failed if isinstance(failed, int) and not isinstance(failed, bool) else None,
    )


def version_rows(versions: Sequence[Mapping[str, Any]], current: object) -> list[JSONDict]:
    """The rows of a deployment's versions table (newest first, as the API lists them):
    ``version``, ``created_at``, ``stable``, ``image``, ``current``."""
    rows = []
    for v in versions:
        spec = v.get("spec")
        rows.append(
            {
                "version": v.get("version"),
                "created_at": v.get("created_at"),
                "stable": bool(v.get("stable")),
                "image": spec.get("image") if isinstance(spec, Mapping) else None,
                "current": v.get("version") == current,
            }
        )
    return rows


@dataclass(frozen=True)
class Page:
    """One page of a long table: ``items`` plus what the template needs for its note/links."""

    items: Sequence[Any]
    number: int
    pages: int
    total: int
    per_page: int
    param: str

    @property
    def first(self) -> int:
        """The 1-based position of the first item shown (0 when empty)."""
        return (self.number - 1) * self.per_page + 1 if self.items else 0

    @property
    def last(self) -> int:
        """The 1-based position of the last item shown."""
        return self.first + len(self.items) - 1 if self.items else 0

    @property
    def partial(self) -> bool:
        """Whether some items are on other pages."""
        return self.pages > 1


def parse_page(raw: str | None) -> int:
    """A page number from a query string value: anything but a positive integer is 1."""
    try:
        return max(1, int(raw or "1"))
    except ValueError:
        return 1


def paginate(items: Sequence[Any], number: int, *, per_page: int, param: str) -> Page:
    """Cut ``items`` into pages of ``per_page`` and return page ``number`` (clamped)."""
    pages = max(1, math.ceil(len(items) / per_page))
    number = min(max(1, number), pages)
    start = (number - 1) * per_page
    return Page(
        items=items[start : start + per_page],
        number=number,
        pages=pages,
        total=len(items),
        per_page=per_page,
        param=param,
    )


def short(value: object, size: int = SHORT_ID) -> str:
    """An id shortened to its first ``size`` characters ('' for ``None``), as ``docker ps``
    and Knit's CLI show ids (a Knit id begins with the second it was made and 4 random
    digits: ``knit.ids``)."""
    if value is None:
        return ""
    return str(value)[:size]


def masked_env(env: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """Env keys with their values hidden: values may hold secrets, keys only say what is set."""
    return [(str(key), MASK) for key in sorted(env or {})]


def human_bytes(value: object) -> str:
    """``8589934592`` → ``8.0 GiB``."""
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        return "—"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def ago(value: object, now: float | None = None) -> str:
    """An ISO 8601 time as "3 s ago" / "5 min ago" ("never" for ``None``, as-is if unparsable)."""
    if value is None:
        return "never"
    try:
        then = datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        return str(value)
    seconds = max(0.0, (time.time() if now is None else now) - then)
    if seconds < 60:
        return f"{seconds:.0f} s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} d ago"
