"""Find what the user named: a name, a whole id, or the start of an id (like ``docker``).

Layer: cli. :func:`resolve` is pure (the standard library only); the ``*_of`` helpers below
it read the listing they resolve against through the API client.

The rules, in order: a name (or another exact key) that matches wins; then a whole id; then
an id that starts with the text. More than one match is an error that lists them, none is an
error that names what was looked for. A deployment named like the start of another's id is
found by its name: ``knit inspect NAME`` never surprises someone who uses names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from knit.errors import KnitError

Item = Mapping[str, Any]
MAX_LISTED = 5
"""Candidates an ambiguity error names (then "and N more")."""


class NoMatch(KnitError):
    """Nothing is named so, has that id, or has an id starting so."""

    def __init__(self, message: str, kind: str, text: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.text = text


class Ambiguous(KnitError):
    """More than one thing matches; the message lists them."""

    def __init__(self, message: str, candidates: Sequence[Item]) -> None:
        super().__init__(message)
        self.candidates = list(candidates)


def _describe(item: Item, id_keys: Sequence[str], names: Sequence[str]) -> str:
    ident = next((str(item[k]) for k in id_keys if item.get(k)), "?")
    name = next((str(item[k]) for k in names if item.get(k)), "")
    return f"{ident} ({name})" if name else ident


def resolve(
    text: str,
    items: Sequence[Item],
    kind: str,
    *,
    id_keys: Sequence[str] = ("id",),
    names: Sequence[str] = (),
    not_found: str | None = None,
) -> Item:
    """The one item ``text`` names.

    Args:
        text: what the user typed.
        items: the listing to look in.
        kind: what an item is, for messages ("deployment", "node").
        id_keys: the fields holding ids (exact match, then prefix).
        names: the fields holding names (exact match only; checked first).
        not_found: the message when nothing matches (default: "no KIND 'TEXT'").

    Raises:
        NoMatch: nothing matches.
        Ambiguous: two or more items match at the same rule.
    """
    if not text:
        raise NoMatch(f"no {kind} ''", kind, text)
    rules: tuple[Callable[[Item], bool], ...] = (
        lambda item: any(item.get(k) == text for k in names),
        lambda item: any(item.get(k) == text for k in id_keys),
        lambda item: any(str(item.get(k) or "").startswith(text) for k in id_keys),
    )
    for rule in rules:
        found = [item for item in items if rule(item)]
        if len(found) == 1:
            return found[0]
        if found:
            listed = [_describe(i, id_keys, names) for i in found[:MAX_LISTED]]
            more = f" and {len(found) - MAX_LISTED} more" if len(found) > MAX_LISTED else ""
            raise Ambiguous(
                f"{text!r} matches {len(found)} {kind}s: {', '.join(listed)}{more}; "
                "give more of the id",
                found,
            )
    raise NoMatch(not_found or f"no {kind} {text!r}", kind, text)


class Lister(Protocol):
    """What resolving needs of the API client (``knit.client.ApiClient``)."""

    def deployments(self) -> list[dict[str, Any]]:
        """``GET /deployments``."""
        ...

    def nodes(self) -> list[dict[str, Any]]:
        """``GET /nodes``."""
        ...

    def instances(self) -> list[dict[str, Any]]:
        """``GET /instances``."""
        ...


def deployment_of(client: Lister, text: str) -> dict[str, Any]:
    """The deployment named ``text``, or whose id is (or starts with) ``text``.

    Raises:
        NoMatch, Ambiguous: see :func:`resolve`.
    """
    found = resolve(
        text,
        client.deployments(),
        "deployment",
        names=("name",),
        not_found=f"no deployment named or with id {text!r}",
    )
    return dict(found)


def node_of(client: Lister, text: str) -> dict[str, Any]:
    """The node whose id is (or starts with) ``text``, or whose hostname is ``text``.

    Raises:
        NoMatch, Ambiguous: see :func:`resolve`.
    """
    return dict(resolve(text, client.nodes(), "node", names=("hostname",)))


INSTANCE_IDS = ("instance_id", "container_id")
"""An instance is named by Knit's id or by its container's (Docker's)."""


def instance_of(client: Lister, text: str) -> dict[str, Any]:
    """The instance whose Knit id or container id is (or starts with) ``text``.

    Raises:
        NoMatch, Ambiguous: see :func:`resolve`.
    """
    return dict(resolve(text, client.instances(), "instance", id_keys=INSTANCE_IDS))
