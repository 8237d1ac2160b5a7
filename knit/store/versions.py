"""Deployment versions: change a deployment's spec, scale it, roll it back or revert it, mark a
version stable, record its rollout.

Layer: store (adapter). Imports sqlalchemy, ``knit.errors`` and ``knit.store``'s own modules.

A deployment's row holds the spec it should run, at ``version``; ``deployment_versions``
holds every spec it was given (version 1 is stored by ``deployments.create``). A change of
anything but ``replicas`` is a new version (:func:`change`, :func:`rollback`); a change of
``replicas`` alone is a scale and makes none (:func:`scale`, or :func:`change` when only
``replicas`` differs). :func:`revert` puts an older version back without a new one: the
deployment's actor does so when a rollout fails and rolls back on its own.

Secret variables are ciphertext bound to the deployment id (encrypted by the caller: the
store holds no key). Whether two ciphertexts hold the same values is asked of the caller
(``SecretsEqual``), which can decrypt them; it is asked only when everything else is equal.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from knit.errors import Conflict, NotFound, ValidationError
from knit.store.deployments import (
    check_references,
    get_deployment,
    secret_env_of,
    spec_columns,
    spec_json,
    version_row,
    with_spec,
)
from knit.store.models import Deployment, DeploymentSecret, DeploymentVersion, JSONValue
from knit.store.ops import Op
from knit.store.reads import Read
from knit.store.records import DeploymentRecord, DeploymentVersionRecord, json_copy
from knit.store.sql import now

SecretsEqual = Callable[[str | None, str | None], bool]
"""Whether two ciphertexts of a deployment's ``secret_env`` (None: it has none) hold the
same names and values."""


def _version(row: RowMapping) -> DeploymentVersionRecord:
    spec = row["spec"] or {}
    return DeploymentVersionRecord(
        deployment_id=row["deployment_id"],
        version=int(row["version"]),
        spec={str(k): json_copy(v) for k, v in spec.items()},
        created_at=row["created_at"],
        stable=bool(row["stable"]),
        secrets_encrypted=row["secrets_encrypted"],
    )


def canonical(spec: Mapping[str, JSONValue]) -> str:
    """A spec as canonical JSON (sorted keys): equal specs give equal strings."""
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


# --- reads ---------------------------------------------------------------------------------


@Read
def list_versions(conn: Connection, deployment_id: str) -> list[DeploymentVersionRecord]:
    """The versions of a deployment, newest first (none for an unknown one)."""
    stmt = (
        select(DeploymentVersion)
        .where(DeploymentVersion.deployment_id == deployment_id)
        .order_by(DeploymentVersion.version.desc())
    )
    return [_version(row) for row in conn.execute(stmt).mappings()]


@Read
def find_version(
    conn: Connection, deployment_id: str, version: int
) -> DeploymentVersionRecord | None:
    """Version ``version`` of a deployment, or None."""
    stmt = select(DeploymentVersion).where(
        DeploymentVersion.deployment_id == deployment_id, DeploymentVersion.version == version
    )
    row = conn.execute(stmt).mappings().first()
    return None if row is None else _version(row)


@Read
def deployment_versions(
    conn: Connection, deployment_id: str
) -> tuple[DeploymentRecord, list[DeploymentVersionRecord]]:
    """A live deployment and its versions (newest first), in one snapshot.

    Raises:
        NotFound: no such deployment.
        Conflict: it is being deleted.
    """
    record = _live(get_deployment.sync(conn, deployment_id))
    return record, list_versions.sync(conn, deployment_id)


# --- writes (op factories) -----------------------------------------------------------------


def change(
    deployment_id: str,
    spec: Mapping[str, Any],
    secret_env_encrypted: str | None,
    *,
    same_secrets: SecretsEqual,
    at: float | None = None,
) -> Op[tuple[DeploymentRecord, bool]]:
    """Give a deployment the spec ``spec`` (in the form of ``deployments.spec_json``: a
    validated ``POST /deployments`` body with ``secret_env`` as the list of its names) and
    the secret variables ``secret_env_encrypted`` (bound to ``deployment_id``); the op
    returns the stored record and whether anything was written.

    - The same spec and secrets: nothing is written (``changed`` False).
    - Only ``replicas`` differs: only ``replicas`` is written (a scale: no version).
    - Otherwise a new version (the highest so far + 1): every spec column, the secrets row,
      ``version``, ``generation`` + 1, ``updated_at`` and a ``deployment_versions`` row.

    Raises (from the op):
        NotFound: no such deployment (or credentials or a network it names).
        Conflict: it is being deleted.
        ValidationError: ``name`` differs (a deployment cannot be renamed).
    """

    async def op(conn: AsyncConnection) -> tuple[DeploymentRecord, bool]:
        stored = _live(await get_deployment(conn, deployment_id))
        changed = with_spec(stored, spec)
        return await _apply(conn, stored, changed, secret_env_encrypted, same_secrets, at)

    return op


def rollback(
    deployment_id: str,
    version: int | None,
    *,
    same_secrets: SecretsEqual,
    at: float | None = None,
) -> Op[tuple[DeploymentRecord, bool]]:
    """Give a deployment the spec and secrets of an earlier version, as a new version, with
    its current ``replicas`` (:func:`change` with that spec); the op returns what
    :func:`update` returns.

    Args:
        version: the version to go back to; None: the newest stable one before the
            current one.

    Raises (from the op):
        NotFound: no such deployment, or no such version of it.
        Conflict: it is being deleted; it is at ``version`` already; no stable version
            precedes the current one; the version names credentials or a network that no
            longer exist.
    """

    async def op(conn: AsyncConnection) -> tuple[DeploymentRecord, bool]:
        stored = _live(await get_deployment(conn, deployment_id))
        target = await _rollback_target(conn, stored, version)
        changed = with_spec(stored, target.spec, replicas=stored.replicas)
        try:
            return await _apply(conn, stored, changed, target.secrets_encrypted, same_secrets, at)
        except NotFound as exc:
            raise Conflict(
                f"version {target.version} of deployment {stored.name!r} names "
                f"{exc.kind} {exc.key!r}, which no longer exists"
            ) from exc

    return op


def revert(deployment_id: str, version: int, *, at: float | None = None) -> Op[DeploymentRecord]:
    """Put version ``version`` back as the deployment's spec (its secrets too), keeping the
    current ``replicas``, without a new version: ``version`` becomes that version again,
    ``generation`` + 1. The op returns the stored record. For the deployment's actor (an
    automatic rollback); its references are not checked again.

    Raises (from the op):
        NotFound: no such deployment, or no such version of it.
        Conflict: it is being deleted.
    """

    async def op(conn: AsyncConnection) -> DeploymentRecord:
        stored = _live(await get_deployment(conn, deployment_id))
        target = await find_version(conn, deployment_id, version)
        if target is None:
            raise NotFound("deployment version", str(version))
        changed = with_spec(stored, target.spec, replicas=stored.replicas)
        stamp = now() if at is None else at
        await _write_spec(conn, changed, target.secrets_encrypted, version, stamp)
        return await get_deployment(conn, deployment_id)

    return op


def scale(
    deployment_id: str, replicas: int, *, at: float | None = None
) -> Op[tuple[DeploymentRecord, bool]]:
    """Set a deployment's ``replicas`` (no version, no generation); the op returns the stored
    record and whether it changed.

    Raises (from the op):
        NotFound: no such deployment.
        Conflict: it is being deleted.
    """

    async def op(conn: AsyncConnection) -> tuple[DeploymentRecord, bool]:
        stored = _live(await get_deployment(conn, deployment_id))
        if stored.replicas == replicas:
            return stored, False
        return await _scale(conn, stored, replicas, at), True

    return op


def mark_stable(deployment_id: str, version: int) -> Op[bool]:
    """Mark a version stable (its rollout completed); the op returns False if there is no
    such version (any more)."""

    async def op(conn: AsyncConnection) -> bool:
        result = await conn.execute(
            update(DeploymentVersion)
            .where(
                DeploymentVersion.deployment_id == deployment_id,
                DeploymentVersion.version == version,
            )
            .values(stable=True)
        )
        return bool(result.rowcount)

    return op


def set_rollout(deployment_id: str, rollout: Mapping[str, JSONValue] | None) -> Op[bool]:
    """Write a deployment's ``rollout`` (only that column); the op returns False if the
    deployment no longer exists."""
    value = None if rollout is None else {str(k): json_copy(v) for k, v in rollout.items()}

    async def op(conn: AsyncConnection) -> bool:
        result = await conn.execute(
            update(Deployment).where(Deployment.id == deployment_id).values(rollout=value)
        )
        return bool(result.rowcount)

    return op


# --- steps ---------------------------------------------------------------------------------


def _live(record: DeploymentRecord) -> DeploymentRecord:
    if record.deleted:
        raise Conflict(f"deployment {record.name!r} is being deleted")
    return record


async def _apply(
    conn: AsyncConnection,
    stored: DeploymentRecord,
    changed: DeploymentRecord,
    secrets: str | None,
    same_secrets: SecretsEqual,
    at: float | None,
) -> tuple[DeploymentRecord, bool]:
    if changed.name != stored.name:
        raise ValidationError(
            "name",
            f"cannot change (the deployment is {stored.name!r}): a renamed deployment is "
            "a new deployment",
        )
    if secrets is None:
        changed = _without_secrets(changed)
    before, after = spec_json(stored), spec_json(changed)
    replicas = after.pop("replicas") != before.pop("replicas")
    if canonical(before) == canonical(after) and (
        not stored.secret_env or same_secrets(await secret_env_of(conn, stored.id), secrets)
    ):
        if not replicas:
            return stored, False
        return await _scale(conn, stored, changed.replicas, at), True
    await check_references(conn, changed)
    highest = await conn.scalar(
        select(func.max(DeploymentVersion.version)).where(
            DeploymentVersion.deployment_id == stored.id
        )
    )
    version = max(int(highest or 0), stored.version) + 1
    stamp = now() if at is None else at
    await _write_spec(conn, changed, secrets, version, stamp)
    await conn.execute(
        insert(DeploymentVersion).values(
            **version_row(stored.id, version, spec_json(changed), secrets, at=stamp)
        )
    )
    return await get_deployment(conn, stored.id), True


def _without_secrets(record: DeploymentRecord) -> DeploymentRecord:
    return with_spec(record, {**spec_json(record), "secret_env": []})


async def _scale(
    conn: AsyncConnection, stored: DeploymentRecord, replicas: int, at: float | None
) -> DeploymentRecord:
    stamp = now() if at is None else at
    await conn.execute(
        update(Deployment)
        .where(Deployment.id == stored.id)
        .values(replicas=replicas, updated_at=stamp)
    )
    return await get_deployment(conn, stored.id)


async def _write_spec(
    conn: AsyncConnection,
    changed: DeploymentRecord,
    secrets: str | None,
    version: int,
    stamp: float,
) -> None:
    """The spec columns of ``changed`` at ``version``, and its secrets row."""
    await conn.execute(
        update(Deployment)
        .where(Deployment.id == changed.id)
        .values(
            **spec_columns(changed),
            version=version,
            updated_at=stamp,
            generation=Deployment.generation + 1,
        )
    )
    await conn.execute(delete(DeploymentSecret).where(DeploymentSecret.deployment_id == changed.id))
    if secrets is not None:
        await conn.execute(
            insert(DeploymentSecret).values(
                deployment_id=changed.id,
                names=sorted(changed.secret_env),
                env_encrypted=secrets,
                created_at=stamp,
            )
        )


async def _rollback_target(
    conn: AsyncConnection, stored: DeploymentRecord, version: int | None
) -> DeploymentVersionRecord:
    if version is not None:
        if version == stored.version:
            raise Conflict(f"deployment {stored.name!r} is already at version {version}")
        target = await find_version(conn, stored.id, version)
        if target is None:
            raise NotFound("deployment version", str(version))
        return target
    for candidate in await list_versions(conn, stored.id):
        if candidate.version < stored.version and candidate.stable:
            return candidate
    raise Conflict(
        f"deployment {stored.name!r} has no stable version before version {stored.version}: "
        'name the version to go back to ({"version": N})'
    )
