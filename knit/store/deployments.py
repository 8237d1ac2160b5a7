"""Deployments: create, look up (by id or name), update, mark deleted, purge.

Layer: store (adapter). Imports sqlalchemy, ``knit.errors`` and ``knit.store``'s own modules.

Reads are :class:`~knit.store.reads.Read` functions; writes are factories returning an
op for the :class:`StoreWriter`. Names are unique among deployments that are not deleted.
Deleting is two steps: :func:`mark_deleted` (the row stays while instances are stopped), then
:func:`purge` once none is left.

A deployment's ``secret_env`` lives in ``deployment_secrets`` (encrypted by the caller, as
registry passwords are): :func:`create` stores it in the same transaction, every read of a
deployment brings the names along (a left join on the primary key), :func:`secret_env_of`
reads the ciphertext, and :func:`mark_deleted` deletes it.

:func:`create` also stores the deployment's version 1 (``deployment_versions``);
``knit.store.versions`` changes a deployment's spec afterwards. :func:`spec_json` is the one
form of a spec that versions hold and changes are compared in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Final

from sqlalchemy import Select, delete, exists, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from knit.errors import Conflict, NotFound
from knit.store import instances
from knit.store.models import (
    ContainerInstance,
    Deployment,
    DeploymentSecret,
    DeploymentVersion,
    JSONValue,
    Network,
    RegistryCredentials,
    Task,
)
from knit.store.ops import Op
from knit.store.reads import Read
from knit.store.records import (
    DeploymentRecord,
    InstanceRecord,
    json_copy,
    new_id,
    obj_list,
    str_map,
)
from knit.store.sql import now

UPDATE_POLICY_DEFAULTS: Final[Mapping[str, JSONValue]] = {
    "max_parallel": 1,
    "order": "stop_first",
    "min_healthy_time": 10.0,
    "healthy_deadline": 300.0,
    "on_failure": "pause",
}
"""``knit.domain.update_policy.UpdatePolicy()`` as JSON (the store does not import the domain's
models; a test holds the two equal). A record's ``update`` is always complete: a stored
policy (``{}`` in rows from before schema 2) is merged over these."""


def record_of(row: Mapping[Any, Any]) -> DeploymentRecord:
    """The record of a ``deployments`` row (joined with ``secret_env_names``)."""
    command = row["command"]
    health_check = row["health_check"]
    rollout = row["rollout"]
    # (``get``: schema 3's columns are absent while a schema 1 file is upgraded to 2.)
    resources = row.get("resources")
    return DeploymentRecord(
        id=row["id"],
        name=row["name"],
        image=row["image"],
        registry_credentials_id=row["registry_credentials_id"],
        network_attachments=tuple(str(n) for n in row["network_attachments"] or ()),
        templates=tuple(str_map(t) for t in row["templates"] or ()),
        env=str_map(row["env"]),
        command=None if command is None else tuple(str(c) for c in command),
        replicas=int(row["replicas"]),
        ports=tuple(obj_list(row["ports"])),
        node_selector=str_map(row["node_selector"]),
        lost_after=float(row["lost_after"]),
        restart_policy=_object(row["restart_policy"]),
        pending_reason=row["pending_reason"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        generation=int(row["generation"]),
        deleted=bool(row["deleted"]),
        secret_env=tuple(str(n) for n in row["secret_env_names"] or ()),
        version=int(row["version"]),
        update={**UPDATE_POLICY_DEFAULTS, **_object(row["update"])},
        health_check=None if health_check is None else _object(health_check),
        rollout=None if rollout is None else _object(rollout),
        resources=None if resources is None else _object(resources),
        strategy=str(row.get("strategy") or "spread"),
    )


def spec_json(record: DeploymentRecord) -> dict[str, JSONValue]:
    """The spec ``record`` holds, in the shape of ``POST /deployments`` with every default
    filled, ``secret_env`` as the sorted list of its names: what a version stores, and what
    two specs are compared in."""
    health_check = record.health_check
    return {
        "name": record.name,
        "image": record.image,
        "registry_credentials_id": record.registry_credentials_id,
        "network_attachments": list[JSONValue](record.network_attachments),
        "templates": [dict[str, JSONValue](t) for t in record.templates],
        "env": dict[str, JSONValue](record.env),
        "secret_env": list[JSONValue](sorted(record.secret_env)),
        "command": None if record.command is None else list[JSONValue](record.command),
        "replicas": record.replicas,
        "ports": list[JSONValue](obj_list(record.ports)),
        "node_selector": dict[str, JSONValue](record.node_selector),
        "lost_after": float(record.lost_after),
        "restart_policy": _object(record.restart_policy),
        "update": {**UPDATE_POLICY_DEFAULTS, **_object(record.update)},
        "health_check": None if health_check is None else _object(health_check),
        "resources": None if record.resources is None else _object(record.resources),
        "strategy": record.strategy,
    }


def with_spec(
    record: DeploymentRecord, spec: Mapping[str, Any], *, replicas: int | None = None
) -> DeploymentRecord:
    """``record`` with the spec fields of ``spec`` (in the form of :func:`spec_json`: a
    version's spec, or a validated ``POST /deployments`` body with ``secret_env`` as its
    names), and ``replicas`` instead of the spec's if given. Not stored."""
    row = {
        **_row_of(record),
        **{key: spec.get(key) for key in _SPEC_COLUMNS},
        "secret_env_names": spec.get("secret_env") or [],
        "update": spec.get("update") or {},
    }
    if replicas is not None:
        row["replicas"] = replicas
    return record_of(row)


_SPEC_COLUMNS = (
    "name",
    "image",
    "registry_credentials_id",
    "network_attachments",
    "templates",
    "env",
    "command",
    "replicas",
    "ports",
    "node_selector",
    "lost_after",
    "restart_policy",
    "health_check",
    "resources",
    "strategy",
)


def _row_of(record: DeploymentRecord) -> dict[str, Any]:
    """A record as the row :func:`record_of` reads."""
    return {
        "id": record.id,
        **spec_columns(record),
        "pending_reason": record.pending_reason,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "generation": record.generation,
        "deleted": record.deleted,
        "secret_env_names": list(record.secret_env),
        "version": record.version,
        "rollout": None if record.rollout is None else _object(record.rollout),
    }


def _select() -> Select[Deployment, list[str]]:
    """Deployments with the names of their secret variables (``secret_env_names``)."""
    return select(Deployment, DeploymentSecret.names.label("secret_env_names")).outerjoin(
        DeploymentSecret, DeploymentSecret.deployment_id == Deployment.id
    )


def _object(value: Mapping[str, JSONValue] | None) -> dict[str, JSONValue]:
    return {str(k): json_copy(v) for k, v in (value or {}).items()}


def spec_columns(d: DeploymentRecord) -> dict[str, object]:
    """The columns a spec change writes (all but ``version``, bookkeeping and secrets)."""
    return {
        "name": d.name,
        "image": d.image,
        "registry_credentials_id": d.registry_credentials_id,
        "network_attachments": list(d.network_attachments),
        "templates": [str_map(t) for t in d.templates],
        "env": str_map(d.env),
        "command": None if d.command is None else list(d.command),
        "replicas": d.replicas,
        "ports": obj_list(d.ports),
        "node_selector": str_map(d.node_selector),
        "lost_after": d.lost_after,
        "restart_policy": _object(d.restart_policy),
        "update": {**UPDATE_POLICY_DEFAULTS, **_object(d.update)},
        "health_check": None if d.health_check is None else _object(d.health_check),
        "resources": None if d.resources is None else _object(d.resources),
        "strategy": d.strategy,
    }


# --- reads ---------------------------------------------------------------------------------


@Read
def find_deployment(conn: Connection, deployment_id: str) -> DeploymentRecord | None:
    """The deployment ``deployment_id`` (deleted or not), or None."""
    stmt = _select().where(Deployment.id == deployment_id)
    row = conn.execute(stmt).mappings().first()
    return None if row is None else record_of(row)


@Read
def get_deployment(conn: Connection, deployment_id: str) -> DeploymentRecord:
    """The deployment ``deployment_id`` (deleted or not).

    Raises:
        NotFound: no such deployment.
    """
    record = find_deployment.sync(conn, deployment_id)
    if record is None:
        raise NotFound("deployment", deployment_id)
    return record


@Read
def find_deployment_by_name(conn: Connection, name: str) -> DeploymentRecord | None:
    """The deployment named ``name`` that is not deleted, or None."""
    stmt = _select().where(Deployment.name == name, Deployment.deleted.is_(False))
    row = conn.execute(stmt).mappings().first()
    return None if row is None else record_of(row)


@Read
def get_deployment_by_name(conn: Connection, name: str) -> DeploymentRecord:
    """The deployment named ``name`` that is not deleted.

    Raises:
        NotFound: no such deployment.
    """
    record = find_deployment_by_name.sync(conn, name)
    if record is None:
        raise NotFound("deployment", name)
    return record


@Read
def resolve_deployment(conn: Connection, id_or_name: str) -> DeploymentRecord:
    """The deployment with this id, else the live one with this name.

    Raises:
        NotFound: neither exists.
    """
    record = find_deployment.sync(conn, id_or_name)
    if record is None:
        record = find_deployment_by_name.sync(conn, id_or_name)
    if record is None:
        raise NotFound("deployment", id_or_name)
    return record


@Read
def find_with_instances(
    conn: Connection, deployment_id: str
) -> tuple[DeploymentRecord, list[InstanceRecord]] | None:
    """The deployment ``deployment_id`` (deleted or not) with its instances, or None.

    One snapshot: the instances are those of the deployment as read.
    """
    record = find_deployment.sync(conn, deployment_id)
    if record is None:
        return None
    return record, instances.list_instances.sync(conn, deployment_id=deployment_id)


@Read
def list_deployments(conn: Connection, *, include_deleted: bool = True) -> list[DeploymentRecord]:
    """Every deployment, by name (deleted ones too unless ``include_deleted`` is False)."""
    stmt = _select().order_by(Deployment.name, Deployment.created_at)
    if not include_deleted:
        stmt = stmt.where(Deployment.deleted.is_(False))
    return [record_of(row) for row in conn.execute(stmt).mappings()]


@Read
def secret_env_of(conn: Connection, deployment_id: str) -> str | None:
    """The encrypted ``secret_env`` of a deployment (None: it has none, or no longer)."""
    stmt = select(DeploymentSecret.env_encrypted).where(
        DeploymentSecret.deployment_id == deployment_id
    )
    return conn.execute(stmt).scalar()


@Read
def list_deployment_ids(conn: Connection, *, include_deleted: bool = True) -> list[str]:
    """The ids of every deployment (what the server spawns actors for after a restart)."""
    stmt = select(Deployment.id).order_by(Deployment.created_at)
    if not include_deleted:
        stmt = stmt.where(Deployment.deleted.is_(False))
    return list(conn.execute(stmt).scalars())


# --- writes (op factories) -----------------------------------------------------------------


def create(
    name: str,
    image: str,
    *,
    registry_credentials_id: str | None = None,
    network_attachments: Sequence[str] = (),
    templates: Sequence[Mapping[str, str]] = (),
    env: Mapping[str, str] | None = None,
    command: Sequence[str] | None = None,
    replicas: int = 1,
    ports: Sequence[Mapping[str, JSONValue]] = (),
    node_selector: Mapping[str, str] | None = None,
    lost_after: float = 0.0,
    restart_policy: Mapping[str, JSONValue] | None = None,
    update_policy: Mapping[str, JSONValue] | None = None,
    health_check: Mapping[str, JSONValue] | None = None,
    resources: Mapping[str, JSONValue] | None = None,
    strategy: str = "spread",
    secret_env_names: Sequence[str] = (),
    secret_env_encrypted: str | None = None,
    deployment_id: str | None = None,
    at: float | None = None,
) -> Op[DeploymentRecord]:
    """Store a new deployment (generation 1, version 1); the op returns it.

    The op checks, in the same transaction, that the name is free and that the registry
    credentials and networks it names exist. ``secret_env_encrypted`` (the ciphertext of its
    secret variables, bound to ``deployment_id``: pass both) is stored beside it, and with
    its version 1 (:func:`spec_json` of the record; not stable yet). ``update_policy`` (the
    spec's ``update``) takes :data:`UPDATE_POLICY_DEFAULTS` for the fields it lacks.

    Raises (from the op):
        Conflict: a live deployment has this name (or this id exists).
        NotFound: the registry credentials or a network do not exist.
    """
    stamp = now() if at is None else at
    record = DeploymentRecord(
        id=deployment_id or new_id(),
        name=name,
        image=image,
        registry_credentials_id=registry_credentials_id,
        network_attachments=tuple(network_attachments),
        templates=tuple(str_map(t) for t in templates),
        env=str_map(env),
        command=None if command is None else tuple(command),
        replicas=replicas,
        ports=tuple(obj_list(ports)),
        node_selector=str_map(node_selector),
        lost_after=float(lost_after),
        restart_policy=_object(restart_policy),
        pending_reason=None,
        created_at=stamp,
        updated_at=stamp,
        generation=1,
        deleted=False,
        secret_env=tuple(secret_env_names) if secret_env_encrypted is not None else (),
        version=1,
        update={**UPDATE_POLICY_DEFAULTS, **_object(update_policy)},
        health_check=None if health_check is None else _object(health_check),
        resources=None if resources is None else _object(resources),
        strategy=strategy,
    )
    row = {
        "id": record.id,
        **spec_columns(record),
        "pending_reason": None,
        "created_at": stamp,
        "updated_at": stamp,
        "generation": 1,
        "deleted": False,
        "version": 1,
    }
    first = version_row(record.id, 1, spec_json(record), secret_env_encrypted, at=stamp)

    async def op(conn: AsyncConnection) -> DeploymentRecord:
        await _check_name_free(conn, record.name, record.id)
        await check_references(conn, record)
        await conn.execute(insert(Deployment).values(**row))
        if secret_env_encrypted is not None:
            await conn.execute(
                insert(DeploymentSecret).values(
                    deployment_id=record.id,
                    names=list(record.secret_env),
                    env_encrypted=secret_env_encrypted,
                    created_at=stamp,
                )
            )
        await conn.execute(insert(DeploymentVersion).values(**first))
        return record

    return op


def version_row(
    deployment_id: str,
    version: int,
    spec: Mapping[str, JSONValue],
    secrets_encrypted: str | None,
    *,
    at: float,
) -> dict[str, object]:
    """A new ``deployment_versions`` row (not stable)."""
    return {
        "deployment_id": deployment_id,
        "version": version,
        "spec": dict(spec),
        "created_at": at,
        "stable": False,
        "secrets_encrypted": secrets_encrypted,
    }


def update_spec(changed: DeploymentRecord, *, at: float | None = None) -> Op[DeploymentRecord]:
    """Write the spec fields of ``changed`` (a copy of a stored record, edited with
    ``dataclasses.replace``) and bump the generation; the op returns the stored record.

    Optimistic concurrency: ``changed.generation`` must still be the stored one.
    ``pending_reason``, timestamps and ``deleted`` in ``changed`` are ignored.

    Raises (from the op):
        NotFound: no such deployment (or a credentials id / network it names).
        Conflict: the deployment changed meanwhile, is deleted, or the new name is taken.
    """
    values = spec_columns(changed)

    async def op(conn: AsyncConnection) -> DeploymentRecord:
        stored = await get_deployment(conn, changed.id)
        if stored.deleted:
            raise Conflict(f"deployment {stored.name!r} is being deleted")
        if stored.generation != changed.generation:
            raise Conflict(
                f"deployment {stored.name!r} changed meanwhile (generation "
                f"{stored.generation}, not {changed.generation}): read it again"
            )
        if changed.name != stored.name:
            await _check_name_free(conn, changed.name, changed.id)
        await check_references(conn, changed)
        stamp = now() if at is None else at
        await conn.execute(
            update(Deployment)
            .where(Deployment.id == changed.id)
            .values(**values, updated_at=stamp, generation=Deployment.generation + 1)
        )
        return await get_deployment(conn, changed.id)

    return op


def set_pending_reason(deployment_id: str, reason: str | None) -> Op[bool]:
    """Record why instances cannot be placed (None: all placed). Not a spec change: the
    generation stays. The op returns False if the deployment no longer exists."""

    async def op(conn: AsyncConnection) -> bool:
        result = await conn.execute(
            update(Deployment).where(Deployment.id == deployment_id).values(pending_reason=reason)
        )
        return bool(result.rowcount)

    return op


def mark_deleted(deployment_id: str, *, at: float | None = None) -> Op[DeploymentRecord]:
    """Mark the deployment deleted (idempotent; bumps the generation the first time).

    Its name is free again at once; its row stays until :func:`purge`. Its secret variables
    are deleted at once, those its versions hold too: nothing is deployed for it any more.

    Raises (from the op):
        NotFound: no such deployment.
    """

    async def op(conn: AsyncConnection) -> DeploymentRecord:
        stored = await get_deployment(conn, deployment_id)
        if stored.deleted:
            return stored
        stamp = now() if at is None else at
        await conn.execute(
            update(Deployment)
            .where(Deployment.id == deployment_id)
            .values(deleted=True, updated_at=stamp, generation=Deployment.generation + 1)
        )
        await conn.execute(
            delete(DeploymentSecret).where(DeploymentSecret.deployment_id == deployment_id)
        )
        await conn.execute(
            update(DeploymentVersion)
            .where(DeploymentVersion.deployment_id == deployment_id)
            .values(secrets_encrypted=None)
        )
        return dataclasses.replace(
            stored, deleted=True, updated_at=stamp, generation=stored.generation + 1
        )

    return op


def purge(deployment_id: str) -> Op[bool]:
    """Remove a deleted deployment that has no instances left, with its tasks and versions.

    Events about it stay. The op returns False if the row was already gone.

    Raises (from the op):
        Conflict: the deployment is not marked deleted, or still has instances.
    """

    async def op(conn: AsyncConnection) -> bool:
        stored = await find_deployment(conn, deployment_id)
        if stored is None:
            return False
        if not stored.deleted:
            raise Conflict(f"deployment {stored.name!r} is not deleted: mark it deleted first")
        count = await conn.scalar(
            select(func.count())
            .select_from(ContainerInstance)
            .where(ContainerInstance.deployment_id == deployment_id)
        )
        if count:
            raise Conflict(f"deployment {stored.name!r} still has {count} instance(s)")
        await conn.execute(delete(Task).where(Task.deployment_id == deployment_id))
        await conn.execute(
            delete(DeploymentSecret).where(DeploymentSecret.deployment_id == deployment_id)
        )
        await conn.execute(
            delete(DeploymentVersion).where(DeploymentVersion.deployment_id == deployment_id)
        )
        await conn.execute(delete(Deployment).where(Deployment.id == deployment_id))
        return True

    return op


# --- checks --------------------------------------------------------------------------------


async def _check_name_free(conn: AsyncConnection, name: str, deployment_id: str) -> None:
    taken = await conn.scalar(
        select(
            exists().where(
                Deployment.name == name,
                Deployment.deleted.is_(False),
                Deployment.id != deployment_id,
            )
        )
    )
    if taken:
        raise Conflict(f"a deployment named {name!r} already exists")


async def check_references(conn: AsyncConnection, record: DeploymentRecord) -> None:
    """Raise ``NotFound`` for the registry credentials or a network ``record`` names that
    do not exist (checked in the writer's transaction: nothing can delete them meanwhile)."""
    creds = record.registry_credentials_id
    if creds is not None:
        found = await conn.scalar(select(exists().where(RegistryCredentials.id == creds)))
        if not found:
            raise NotFound("registry_credentials", creds)
    wanted = set(record.network_attachments)
    if wanted:
        stmt = select(Network.name).where(Network.name.in_(sorted(wanted)))
        known = set((await conn.execute(stmt)).scalars())
        missing = sorted(wanted - known)
        if missing:
            raise NotFound("network", missing[0])
