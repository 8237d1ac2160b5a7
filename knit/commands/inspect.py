"""``knit inspect NAME|ID``: one deployment, node or instance, as JSON.

Layer: cli. Imports the API client and :mod:`knit.commands.resolve`.

What the text names is looked for the way :mod:`knit.commands.resolve` says, in each kind
(or only the one ``--type`` gives): a deployment by name or id, a node by id or hostname, an
instance by Knit's id or its container's. One match in all is printed: a deployment and a
node as ``GET /deployments/{id}`` and ``GET /nodes/{id}`` answer (a deployment with its
instances), an instance as ``GET /instances`` lists it. Matches in two kinds (an id prefix
short enough to start a node's id and a deployment's) are an error that lists them.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from knit.client import ApiClient
from knit.commands.resolve import Ambiguous, NoMatch, deployment_of, instance_of, node_of

KINDS = ("deployment", "node", "instance")


def find(
    text: str, finders: dict[str, Callable[[str], dict[str, Any]]]
) -> tuple[str, dict[str, Any]]:
    """The kind and the item ``text`` names among ``finders`` (kind → resolver).

    Raises:
        NoMatch: no kind has it.
        Ambiguous: more than one item matches, in one kind or across kinds.
    """
    found: list[tuple[str, dict[str, Any]]] = []
    for kind, finder in finders.items():
        try:
            found.append((kind, finder(text)))
        except NoMatch:
            continue
    if not found:
        kinds = " or ".join(finders)
        raise NoMatch(f"no {kinds} named or with id {text!r}", kinds, text)
    if len(found) > 1:
        named = ", ".join(
            f"{kind} {item.get('instance_id') or item.get('id')}" for kind, item in found
        )
        raise Ambiguous(
            f"{text!r} matches {named}: give more of the id, or --type", [i for _, i in found]
        )
    return found[0]


def run_inspect(args: argparse.Namespace, client: ApiClient) -> None:
    """``knit inspect NAME|ID [--type deployment|node|instance]``."""
    finders: dict[str, Callable[[str], dict[str, Any]]] = {
        "deployment": lambda t: deployment_of(client, t),
        "node": lambda t: node_of(client, t),
        "instance": lambda t: instance_of(client, t),
    }
    if args.type is not None:
        finders = {args.type: finders[args.type]}
    kind, item = find(args.target, finders)
    if kind == "deployment":
        item = client.deployment(str(item["id"]))
    elif kind == "node":
        item = dict(client.call("GET", f"/nodes/{item['id']}"))
    print(json.dumps(item, indent=2))
