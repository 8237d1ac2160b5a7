"""``knit deploy``, ``scale``, ``rollback``, ``history``, ``rm``, ``deployments`` and ``ps``.

Layer: cli. Imports the API client, PyYAML and the other ``knit.commands`` modules. A
deployment is named by its name, its id or the start of its id
(:func:`knit.commands.resolve.deployment_of`); ``deploy`` finds it by the name in the file,
like ``nomad job run``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import yaml

from knit.client import JSON, ApiClient
from knit.commands.follow import follow
from knit.commands.output import Column, emit, table, timestamp
from knit.commands.progress import Target
from knit.commands.resolve import deployment_of


def load_spec(path: str) -> dict[str, Any]:
    """Read a deployment spec from a YAML or JSON file (``-`` reads standard input).

    Raises:
        ValueError: the file cannot be read or does not hold a mapping.
    """
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)  # JSON is YAML too
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is neither valid YAML nor JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold one deployment (a mapping)")
    return data


def version_of(deployment: Mapping[str, Any]) -> int:
    """A deployment's ``version`` (1 from a server that does not report one)."""
    value = deployment.get("version")
    return value if isinstance(value, int) and not isinstance(value, bool) else 1


def spec_changes(older: Mapping[str, Any] | None, newer: Mapping[str, Any]) -> str:
    """The top-level spec fields that differ between two versions, for ``knit history``."""
    if older is None:
        return "(first)"
    changed = sorted(k for k in older.keys() | newer.keys() if older.get(k) != newer.get(k))
    return ", ".join(changed) or "(same spec)"


def history_rows(versions: Sequence[Mapping[str, Any]], current: int) -> list[dict[str, Any]]:
    """The rows of ``knit history``: ``versions`` newest first, as the API lists them."""
    rows = []
    for i, v in enumerate(versions):
        spec = v.get("spec")
        spec = spec if isinstance(spec, Mapping) else {}
        older = versions[i + 1].get("spec") if i + 1 < len(versions) else None
        number = v.get("version")
        rows.append(
            {
                "version": f"{number} (current)" if number == current else number,
                "created_at": timestamp(v.get("created_at")),
                "stable": "yes" if v.get("stable") else "no",
                "image": spec.get("image"),
                "changes": spec_changes(older if isinstance(older, Mapping) else None, spec),
            }
        )
    return rows


class Reporter:
    """Where a command's messages go: standard output, or, with ``--json`` (which keeps
    standard output for the deployment's JSON), standard error."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out: TextIO = sys.stderr if args.json else sys.stdout

    def result(self, deployment: JSON, message: str) -> None:
        """Print what the call made: ``message``, or the deployment with ``--json``."""
        if self.args.json:
            print(json.dumps(deployment, indent=2), flush=True)
        else:
            print(message, file=self.out, flush=True)

    def follow(self, client: ApiClient, deployment: JSON, target: Target) -> None:
        """Follow ``deployment`` to ``target`` (``knit.commands.follow``) unless
        ``--detach``."""
        if not self.args.detach:
            follow(client, str(deployment["id"]), target, out=self.out, timeout=self.args.timeout)


def run_deploy(args: argparse.Namespace, client: ApiClient) -> None:
    """``knit deploy -f FILE``: create the deployment, or update the one of that name."""
    spec = load_spec(args.file)
    report = Reporter(args)
    name = spec.get("name")
    existing = client.find_deployment(name) if isinstance(name, str) and name else None
    if existing is None:
        made = client.create_deployment(spec)
        report.result(
            made, f"deployment {made['name']} created: {made['id']} (version {version_of(made)})"
        )
        report.follow(client, made, Target(version_of(made), rollout=True))
        return
    before, replicas = version_of(existing), existing.get("replicas")
    updated = client.update_deployment(str(existing["id"]), spec)
    after = version_of(updated)
    if after != before:
        report.result(updated, f"deployment {name} updated: version {after} (was {before})")
        report.follow(client, updated, Target(after, rollout=True))
    elif updated.get("replicas") != replicas:  # only replicas changed: a scale, no version
        report.result(
            updated,
            f"deployment {name} scaled to {updated.get('replicas')} "
            f"(was {replicas}; version {after})",
        )
        report.follow(client, updated, Target(after, rollout=False))
    else:
        note = rollout_note(updated)
        report.result(updated, f"deployment {name} unchanged (version {after}){note}")


def rollout_note(deployment: Mapping[str, Any]) -> str:
    """``"; its rollout is paused: why"`` when the current version's rollout has not
    completed ("" when it has, or there was none)."""
    rollout = deployment.get("rollout")
    if not isinstance(rollout, Mapping) or rollout.get("state") in (None, "complete"):
        return ""
    message = rollout.get("message")
    return f"; its rollout is {rollout.get('state')}" + (f": {message}" if message else "")


def run_scale(args: argparse.Namespace, client: ApiClient) -> None:
    """``knit scale NAME N``: add or remove instances of the current version."""
    deployment = deployment_of(client, args.target)
    scaled = client.scale_deployment(str(deployment["id"]), args.replicas)
    report = Reporter(args)
    report.result(
        scaled,
        f"deployment {scaled['name']} scaled to {scaled['replicas']} "
        f"(was {deployment.get('replicas')}; version {version_of(scaled)})",
    )
    report.follow(client, scaled, Target(version_of(scaled), rollout=False))


def run_rollback(args: argparse.Namespace, client: ApiClient) -> None:
    """``knit rollback NAME [--version N]``: roll the spec of an older version out again."""
    deployment = deployment_of(client, args.target)
    before = version_of(deployment)
    made = client.rollback_deployment(str(deployment["id"]), args.version)
    after = version_of(made)
    source = f"version {args.version}" if args.version else "the last stable version"
    report = Reporter(args)
    if after == before:
        report.result(made, f"deployment {made['name']} unchanged (version {after})")
        return
    report.result(made, f"deployment {made['name']}: version {after} has the spec of {source}")
    report.follow(client, made, Target(after, rollout=True))


def run_history(args: argparse.Namespace, client: ApiClient) -> None:
    """``knit history NAME``: the deployment's versions, newest first."""
    deployment = deployment_of(client, args.target)
    versions = client.deployment_versions(str(deployment["id"]))
    if args.json:
        print(json.dumps(versions, indent=2))
        return
    columns = ["version", "created_at", "stable", "image", "changes"]
    for line in table(history_rows(versions, version_of(deployment)), columns):
        print(line)


def run_rm(args: argparse.Namespace, client: ApiClient) -> None:
    """``knit rm NAME|ID``."""
    deployment = deployment_of(client, args.target)
    client.delete_deployment(deployment["id"])
    print(f"deployment {deployment['name']} deleted")


def instance_rows(
    instances: Sequence[Mapping[str, Any]], deployments: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The rows of ``knit ps``: each instance with its deployment's name, by deployment
    name then index."""
    names = {d.get("id"): d.get("name") for d in deployments}
    rows = [
        {**i, "deployment": names.get(i.get("deployment_id")) or i.get("deployment_id")}
        for i in instances
    ]
    rows.sort(key=lambda r: (str(r["deployment"] or ""), _index(r), str(r.get("instance_id"))))
    return rows


def _index(row: Mapping[str, Any]) -> int:
    index = row.get("index")
    return index if isinstance(index, int) else -1


PS_COLUMNS = [
    Column("instance_id", "INSTANCE", id=True),
    Column("container_id", "CONTAINER", id=True),
    Column("deployment"),
    Column("index"),
    Column("node_id", "NODE", id=True),
    Column("status"),
    Column("version"),
    Column("health"),
    Column("restarts"),
    Column("error"),
]


def run_ps(args: argparse.Namespace, client: ApiClient) -> None:
    """``knit ps [NAME]``: every instance, or those of one deployment."""
    instances = client.instances()
    if args.target is not None:
        wanted = deployment_of(client, args.target)["id"]
        instances = [i for i in instances if i.get("deployment_id") == wanted]
    if args.json:
        emit(args, instances, PS_COLUMNS)  # the API's rows, as they are
        return
    emit(args, instance_rows(instances, client.deployments()), PS_COLUMNS)


def deployment_rows(
    deployments: Sequence[Mapping[str, Any]], instances: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The rows of ``knit deployments``: each with ``running`` (``"2/3"``: desired
    instances running over replicas) and its rollout's state, by name."""
    running: dict[object, int] = {}
    for i in instances:
        if i.get("status") == "running" and i.get("desired", True):
            running[i.get("deployment_id")] = running.get(i.get("deployment_id"), 0) + 1
    rows = []
    for d in sorted(deployments, key=lambda d: str(d.get("name"))):
        rollout = d.get("rollout")
        state = rollout.get("state") if isinstance(rollout, Mapping) else None
        rows.append(
            {
                **d,
                "running": f"{running.get(d.get('id'), 0)}/{d.get('replicas')}",
                "rollout_state": state,
                "created_at": timestamp(d.get("created_at")),
            }
        )
    return rows


DEPLOYMENT_COLUMNS = [
    Column("id", id=True),
    Column("name"),
    Column("image"),
    Column("version"),
    Column("running"),
    Column("status"),
    Column("rollout_state", "ROLLOUT"),
    Column("created_at"),
    Column("pending_reason", "PENDING"),
]


def run_deployments(args: argparse.Namespace, client: ApiClient) -> None:
    """``knit deployments``: every deployment, with how many of its instances run."""
    found = client.deployments()
    if args.json:
        emit(args, found, DEPLOYMENT_COLUMNS)
        return
    emit(args, deployment_rows(found, client.instances()), DEPLOYMENT_COLUMNS)
