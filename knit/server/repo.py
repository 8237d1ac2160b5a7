"""Repo: the store as the server's actors and the control plane use it.

Layer: server. Wraps ``knit.store.Store`` (reads on the read pool, writes through the single
writer) in the few operations the server needs, converting between the store's frozen
records and the actors' mutable ones. Writes that actors make on every message (heartbeats,
instance changes, events, task states) are fire-and-forget: the writer merges them into
batches. Writes whose result the caller needs (creating a deployment) are awaited.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

from sqlalchemy.ext.asyncio import AsyncConnection

from knit.domain.specs import (
    DeploymentSpec,
    NetworkSpec,
    RegistryCredentialsSpec,
)
from knit.domain.validation import (
    check_subnet_overlap,
)
from knit.errors import Invalid, KnitError, NotFound
from knit.secrets import SecretBox
from knit.server.records import InstanceState, NodeState, iso
from knit.store import (
    credentials,
    deployments,
    events,
    instances,
    networks,
    nodes,
    tasks,
    versions,
)
from knit.store.db import LeaseFence
from knit.store.facade import Store, open_store
from knit.store.ops import Op
from knit.store.records import (
    DeploymentRecord,
    DeploymentVersionRecord,
    InstanceRecord,
    NetworkRecord,
    NodeRecord,
    RegistryCredentialsRecord,
    new_id,
)
from knit.store.versions import SecretsEqual

log = logging.getLogger(__name__)


WRITER_MAX_BATCH = 16384
"""Most writes in one transaction: the writer merges them into a few statements."""
WRITER_BUFFER = 100_000
"""Writes that may wait for the writer: placing 100,000 instances queues this many at once."""


async def _nothing(conn: AsyncConnection) -> None:
    """A write that writes nothing (see ``Repo.written``)."""
    del conn


@asynccontextmanager
async def open_repo(url: str, *, fence: LeaseFence | None = None) -> AsyncIterator[Repo]:
    """Open the store at ``url`` (an SQLAlchemy URL or a path) for the block's duration;
    with ``fence``, every write must still hold that leader lease (PostgreSQL)."""
    async with open_store(
        url, max_batch=WRITER_MAX_BATCH, buffer=WRITER_BUFFER, fence=fence
    ) as store:
        yield Repo(store)


def node_state(record: NodeRecord) -> NodeState:
    """A store row as the mutable record a NodeActor holds."""
    return NodeState(
        id=record.id,
        hostname=record.hostname,
        registered_at=record.registered_at,
        status=record.status,
        eligible=record.eligible,
        labels=dict(record.labels),
        cpus=int(record.cpus),
        memory_bytes=record.memory_bytes,
        docker_version=record.docker_version,
        agent_version=record.agent_version,
        public_key=record.public_key,
        last_heartbeat=record.last_heartbeat,
        address=record.address,
    )


def instance_state(record: InstanceRecord) -> InstanceState:
    """A store row as the mutable record a DeploymentActor holds."""
    return InstanceState(
        id=record.id,
        deployment_id=record.deployment_id,
        index=record.index,
        status=record.status,
        created_at=record.created_at,
        node_id=record.node_id,
        container_id=record.container_id,
        error=record.error,
        exit_code=record.exit_code,
        desired=record.desired,
        updated_at=record.updated_at,
        version=record.version,
        health=record.health,
        restarts=record.restarts,
    )


def deployment_json(
    record: DeploymentRecord, insts: Sequence[InstanceState] | None = None
) -> dict[str, Any]:
    """The API's view of a deployment (with ``instances`` when given)."""
    data: dict[str, Any] = {
        "id": record.id,
        "name": record.name,
        "image": record.image,
        "registry_credentials_id": record.registry_credentials_id,
        "network_attachments": list(record.network_attachments),
        "templates": [dict(t) for t in record.templates],
        "env": dict(record.env),
        "secret_env": sorted(record.secret_env),  # the names: values are never returned
        "command": list(record.command) if record.command is not None else None,
        "replicas": record.replicas,
        "ports": [dict(p) for p in record.ports],
        "node_selector": dict(record.node_selector),
        "lost_after": record.lost_after,
        "restart_policy": dict(record.restart_policy),
        "update": dict(record.update),
        "health_check": dict(record.health_check) if record.health_check is not None else None,
        "resources": dict(record.resources) if record.resources is not None else None,
        "strategy": record.strategy,
        "version": record.version,
        "rollout": dict(record.rollout) if record.rollout is not None else None,
        "status": record.status,
        "pending_reason": record.pending_reason,
        "created_at": iso(record.created_at),
        "updated_at": iso(record.updated_at),
    }
    if insts is not None:
        data["instances"] = [i.to_json() for i in insts]
    return data


def version_json(record: DeploymentVersionRecord) -> dict[str, Any]:
    """A version as ``GET /deployments/{id}/versions`` shows it (never secret values)."""
    return {
        "version": record.version,
        "spec": dict(record.spec),
        "created_at": iso(record.created_at),
        "stable": record.stable,
    }


def record_at_version(
    record: DeploymentRecord, version: DeploymentVersionRecord
) -> DeploymentRecord:
    """``record`` with the spec of an older ``version`` (for that version's instances)."""
    spec = cast(dict[str, Any], version.spec)
    command = spec.get("command")
    return dataclasses.replace(
        record,
        version=version.version,
        image=str(spec.get("image", record.image)),
        registry_credentials_id=spec.get("registry_credentials_id"),
        network_attachments=tuple(spec.get("network_attachments") or ()),
        templates=tuple(spec.get("templates") or ()),
        env=dict(spec.get("env") or {}),
        command=tuple(command) if isinstance(command, list) else None,
        ports=tuple(spec.get("ports") or ()),
        restart_policy=dict(spec.get("restart_policy") or {}),
        health_check=spec.get("health_check"),
        secret_env=tuple(spec.get("secret_env") or ()),
        resources=spec.get("resources"),
    )


def registry_json(record: RegistryCredentialsRecord) -> dict[str, Any]:
    """Credentials as the API shows them: never the password."""
    return {
        "id": record.id,
        "url": record.url,
        "username": record.username,
        "created_at": iso(record.created_at),
    }


def network_json(record: NetworkRecord) -> dict[str, Any]:
    """A network as the API shows it."""
    return {
        "id": record.id,
        "name": record.name,
        "driver": record.driver,
        "subnet": record.subnet,
        "created_at": iso(record.created_at),
    }


def _secrets_equal(box: SecretBox, deployment_id: str) -> SecretsEqual:
    """Whether two ciphertexts of ``deployment_id``'s secret variables hold the same ones."""

    def plain(ciphertext: str | None) -> Any:
        return {} if ciphertext is None else json.loads(box.decrypt(ciphertext, aad=deployment_id))

    def equal(a: str | None, b: str | None) -> bool:
        return a == b or bool(plain(a) == plain(b))

    return equal


class Repo:
    """The server's operations on the store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def written(self) -> None:
        """Return once every write queued before it is committed (the writer runs its ops
        in order)."""
        await self.store.write(_nothing)

    def _nowait(self, op: Op[object]) -> None:
        try:
            self.store.write_nowait(op)
        except KnitError as exc:  # the writer is full or stopping: the periodic paths repair
            log.warning("write dropped: %s", exc)

    # --- nodes -----------------------------------------------------------------------------

    async def all_nodes(self) -> list[NodeState]:
        return [node_state(r) for r in await self.store.read(nodes.list_nodes)]

    async def get_node(self, node_id: str) -> NodeState | None:
        record = await self.store.read(nodes.find_node, node_id)
        return node_state(record) if record is not None else None

    def save_node(self, node: NodeState) -> None:
        self._nowait(
            nodes.upsert_node(
                NodeRecord(
                    id=node.id,
                    hostname=node.hostname,
                    status=node.status,
                    last_heartbeat=node.last_heartbeat,
                    eligible=node.eligible,
                    labels=dict(node.labels),
                    cpus=float(node.cpus),
                    memory_bytes=node.memory_bytes,
                    docker_version=node.docker_version,
                    agent_version=node.agent_version,
                    public_key=node.public_key,
                    address=node.address,
                    registered_at=node.registered_at,
                )
            )
        )

    # --- deployments -----------------------------------------------------------------------

    async def deployment_ids(self) -> list[str]:
        return await self.store.read(deployments.list_deployment_ids, include_deleted=True)

    async def get_deployment_record(self, deployment_id: str) -> DeploymentRecord | None:
        return await self.store.read(deployments.find_deployment, deployment_id)

    async def insert_deployment(self, spec: DeploymentSpec, box: SecretBox) -> DeploymentRecord:
        """Store a new deployment; its ``secret_env`` encrypted with ``box``, bound to its id."""
        data = spec.model_dump(mode="json")
        deployment_id = new_id()
        secret_env = None
        if spec.secret_env:
            plain = {name: value.get_secret_value() for name, value in spec.secret_env.items()}
            secret_env = box.encrypt(json.dumps(plain), aad=deployment_id)
        return await self.store.write(
            deployments.create(
                spec.name,
                spec.image,
                registry_credentials_id=spec.registry_credentials_id,
                network_attachments=spec.network_attachments,
                templates=data["templates"],
                env=spec.env,
                command=spec.command,
                replicas=spec.replicas,
                ports=data["ports"],
                node_selector=spec.node_selector,
                lost_after=spec.lost_after,
                restart_policy=data["restart_policy"],
                update_policy=data["update"],
                health_check=data["health_check"],
                resources=data["resources"],
                strategy=data["strategy"],
                secret_env_names=sorted(spec.secret_env),
                secret_env_encrypted=secret_env,
                deployment_id=deployment_id,
            )
        )

    async def update_deployment(
        self, deployment_id: str, spec: DeploymentSpec, box: SecretBox
    ) -> tuple[DeploymentRecord, bool]:
        """Give a deployment a new spec in one write (``knit.store.versions.change``): a new
        version, a scale when only ``replicas`` differs, or nothing for the same spec (its
        secret values compared by decrypting the stored ones). Returns the stored record and
        whether anything was written.

        Raises:
            NotFound: no such deployment, or credentials or a network it names.
            Conflict: it is being deleted.
            ValidationError: ``spec.name`` is not its name.
        """
        data = spec.model_dump(mode="json")
        data["secret_env"] = sorted(spec.secret_env)
        secrets = None
        if spec.secret_env:
            plain = {name: value.get_secret_value() for name, value in spec.secret_env.items()}
            secrets = box.encrypt(json.dumps(plain), aad=deployment_id)
        same = _secrets_equal(box, deployment_id)
        return await self.store.write(
            versions.change(deployment_id, data, secrets, same_secrets=same)
        )

    async def scale_deployment(
        self, deployment_id: str, replicas: int
    ) -> tuple[DeploymentRecord, bool]:
        """Set a deployment's ``replicas`` (no new version); the record and whether it changed.

        Raises:
            NotFound: no such deployment.
            Conflict: it is being deleted.
        """
        return await self.store.write(versions.scale(deployment_id, replicas))

    async def rollback_deployment(
        self, deployment_id: str, version: int | None, box: SecretBox
    ) -> tuple[DeploymentRecord, bool]:
        """A new version with the spec and secrets of ``version`` (None: the newest stable
        one before the current one), keeping ``replicas``; as :meth:`update_deployment`.

        Raises:
            NotFound: no such deployment or version.
            Conflict: being deleted, already at that version, no stable version to go back
                to, or the version names credentials or a network that are gone.
        """
        same = _secrets_equal(box, deployment_id)
        return await self.store.write(versions.rollback(deployment_id, version, same_secrets=same))

    async def deployment_versions(self, deployment_id: str) -> list[DeploymentVersionRecord]:
        """A deployment's versions, newest first.

        Raises:
            NotFound: no such deployment.
            Conflict: it is being deleted.
        """
        _, found = await self.store.read(versions.deployment_versions, deployment_id)
        return found

    async def get_version(self, deployment_id: str, version: int) -> DeploymentVersionRecord | None:
        """Version ``version`` of a deployment (its spec, and its secret variables'
        ciphertext: what an instance of that version needs), or None."""
        return await self.store.read(versions.find_version, deployment_id, version)

    def mark_stable(self, deployment_id: str, version: int) -> None:
        """Mark a version of a deployment stable: its rollout completed (not awaited)."""
        self._nowait(versions.mark_stable(deployment_id, version))

    def set_rollout(self, deployment_id: str, rollout: Mapping[str, Any] | None) -> None:
        """Write a deployment's ``rollout`` JSON, and only that (not awaited)."""
        self._nowait(versions.set_rollout(deployment_id, rollout))

    async def revert(self, deployment_id: str, version: int) -> DeploymentRecord:
        """Put version ``version`` back as the deployment's spec and secrets, keeping
        ``replicas``, without a new version (an automatic rollback); the stored record.

        Raises:
            NotFound: no such deployment or version.
            Conflict: it is being deleted.
        """
        return await self.store.write(versions.revert(deployment_id, version))

    async def secret_env_of(self, deployment_id: str) -> str | None:
        """The encrypted ``secret_env`` of a deployment (None: none, or deleted)."""
        return await self.store.read(deployments.secret_env_of, deployment_id)

    async def mark_deployment_deleted(self, deployment_id: str) -> DeploymentRecord:
        return await self.store.write(deployments.mark_deleted(deployment_id))

    async def purge_deployment(self, deployment_id: str) -> None:
        await self.store.write(deployments.purge(deployment_id))

    def deployment_status(self, deployment_id: str, reason: str | None) -> None:
        self._nowait(deployments.set_pending_reason(deployment_id, reason))

    async def list_deployments(self) -> list[dict[str, Any]]:
        records = await self.store.read(deployments.list_deployments, include_deleted=False)
        return [deployment_json(r) for r in records]

    async def deployment_json(self, deployment_id: str) -> dict[str, Any]:
        # One read (one thread hop, one snapshot) for the deployment and its instances.
        found = await self.store.read(deployments.find_with_instances, deployment_id)
        if found is None or found[0].deleted:
            raise NotFound("deployment", deployment_id)
        record, rows = found
        return deployment_json(record, [instance_state(r) for r in rows])

    # --- instances -------------------------------------------------------------------------

    async def instances_of(self, deployment_id: str) -> list[InstanceState]:
        rows = await self.store.read(instances.list_instances, deployment_id=deployment_id)
        return [instance_state(r) for r in rows]

    async def get_instance(self, instance_id: str) -> InstanceState | None:
        """The instance with that id, or else whose container has that id (the API's
        ``id`` of an instance is its container's, spec 4)."""
        record = await self.store.read(instances.find_instance, instance_id)
        if record is None:
            record = await self.store.read(instances.find_by_container, instance_id)
        return None if record is None else instance_state(record)

    async def list_instances(self) -> list[dict[str, Any]]:
        rows = await self.store.read(instances.list_instances)
        return [instance_state(r).to_json() for r in rows]

    async def instance_counts_by_node(self) -> dict[str, int]:
        return await self.store.read(instances.count_by_node)

    async def reserved_by_node(self) -> dict[str, tuple[float, int]]:
        """The cores and bytes the instances on each node reserve (for the Scheduler)."""
        return await self.store.read(instances.reserved_by_node)

    def save_instance(self, inst: InstanceState) -> None:
        inst.updated_at = time.time()
        self._nowait(
            instances.upsert_one(
                InstanceRecord(
                    id=inst.id,
                    container_id=inst.container_id,
                    node_id=inst.node_id,
                    deployment_id=inst.deployment_id,
                    index=inst.index,
                    status=inst.status,
                    error=inst.error,
                    exit_code=inst.exit_code,
                    desired=inst.desired,
                    created_at=inst.created_at,
                    updated_at=inst.updated_at,
                    version=inst.version,
                    health=inst.health,
                    restarts=inst.restarts,
                )
            )
        )

    def delete_instance(self, instance_id: str) -> None:
        self._nowait(instances.delete_one(instance_id))

    # --- tasks and events ------------------------------------------------------------------

    def new_task(self, task_id: str, kind: str, inst: InstanceState, deployment_id: str) -> None:
        """Store a task as published (its first attempt goes out as soon as it is built)."""
        self._nowait(
            tasks.create(
                kind,
                inst.id,
                deployment_id,
                node_id=inst.node_id,
                task_id=task_id,
                state="published",
            )
        )

    def task_state(
        self, task_id: str, state: str, *, attempt: int, error: str | None = None
    ) -> None:
        self._nowait(tasks.record_state(task_id, state, attempt=attempt, error=error))

    def event(
        self,
        kind: str,
        message: str,
        *,
        node_id: str | None = None,
        deployment_id: str | None = None,
        instance_id: str | None = None,
        task_id: str | None = None,
    ) -> None:
        self._nowait(
            events.append(
                kind,
                message,
                node_id=node_id,
                deployment_id=deployment_id,
                instance_id=instance_id,
                task_id=task_id,
            )
        )

    async def list_events(
        self, *, deployment_id: str | None, node_id: str | None, limit: int
    ) -> list[dict[str, Any]]:
        rows = await self.store.read(
            events.list_events, deployment_id=deployment_id, node_id=node_id, limit=limit
        )
        return [{**r.to_json(), "at": iso(r.at)} for r in rows]

    async def prune_older(self, before: float, limit: int) -> tuple[int, int]:
        """Remove up to ``limit`` events and ``limit`` finished tasks older than ``before``
        (one short write each); how many of each went."""
        gone_events = await self.store.write(events.prune(before, limit))
        gone_tasks = await self.store.write(tasks.prune_finished(before, limit))
        return gone_events, gone_tasks

    # --- networks --------------------------------------------------------------------------

    async def networks_named(self, names: Sequence[str]) -> list[NetworkRecord]:
        if not names:
            return []
        found = {
            n.name: n for n in await self.store.read(networks.list_networks, names=list(names))
        }
        return [found[name] for name in names if name in found]

    async def network_drivers(self) -> dict[str, str]:
        """Every network's driver, by name."""
        return {n.name: n.driver for n in await self.store.read(networks.list_networks)}

    async def create_network(self, spec: NetworkSpec) -> dict[str, Any]:
        inner = networks.create(spec.name, driver=spec.driver, subnet=spec.subnet)

        async def op(conn: Any) -> NetworkRecord:
            # Checked inside the writer's transaction: two requests cannot both pass.
            existing = {n.name: n.subnet for n in await networks.list_networks(conn)}
            problem = check_subnet_overlap(spec.subnet, existing)
            if problem is not None:
                raise Invalid([problem])
            return await inner(conn)

        return network_json(await self.store.write(op))

    async def list_networks(self) -> list[dict[str, Any]]:
        return [network_json(n) for n in await self.store.read(networks.list_networks)]

    async def delete_network(self, network_id: str) -> None:
        await self.store.write(networks.delete_network(network_id))

    # --- registry credentials --------------------------------------------------------------

    async def credential_urls(self) -> dict[str, str]:
        """Every set of credentials' URL, by id."""
        return {r.id: r.url for r in await self.store.read(credentials.list_credentials)}

    async def get_credentials(self, credentials_id: str) -> RegistryCredentialsRecord | None:
        return await self.store.read(credentials.find_credentials, credentials_id)

    async def create_credentials(
        self, spec: RegistryCredentialsSpec, box: SecretBox
    ) -> dict[str, Any]:
        credentials_id = new_id()
        ciphertext = box.encrypt(spec.password.get_secret_value(), aad=credentials_id)
        record = await self.store.write(
            credentials.create(spec.url, spec.username, ciphertext, credentials_id=credentials_id)
        )
        return registry_json(record)

    async def list_credentials(self) -> list[dict[str, Any]]:
        return [registry_json(r) for r in await self.store.read(credentials.list_credentials)]

    async def delete_credentials(self, credentials_id: str) -> None:
        await self.store.write(credentials.delete_credentials(credentials_id))
