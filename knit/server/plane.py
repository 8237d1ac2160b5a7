"""The control plane as the API sees it: reads from the store, writes through the actors.

Layer: server. Implements ``knit.api.ports.ControlPlane``. Reads go to the store (the
truth); commands that change what runs are stored, then go to the leader's directory
actors, which serialise them: here while this server leads (``term``), else as a notice
to the leader over the bus (``knit.server.notices``; decision 0024). Errors come back from
actors as values (an actor never crashes on a user's mistake).
"""

from __future__ import annotations

import dataclasses
import heapq
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from knit.api.ports import JSONDict
from knit.domain.auth import Principal
from knit.domain.join import BusCredentialSpec, JoinRequest
from knit.domain.logs import LogQuery, LogTarget
from knit.domain.specs import (
    DeploymentSpec,
    NetworkSpec,
    RegistryCredentialsSpec,
)
from knit.domain.tokens import JoinTokenSpec, TokenSpec
from knit.errors import KnitError, NotFound, ValidationError
from knit.server.access import TokenKeeper
from knit.server.bridge import BridgeStats
from knit.server.context import ServerContext
from knit.server.leadership import Leadership
from knit.server.logs import LogHub
from knit.server.membership import Membership, reload_pins
from knit.server.messages import (
    DeleteDeployment,
    DeploymentCreated,
    DeploymentUpdated,
    SetEligible,
)
from knit.server.notices import Notices
from knit.server.prometheus import server_registry
from knit.server.records import NodeState
from knit.server.repo import deployment_json, version_json
from knit.server.spec_checks import SpecChecks
from knit.server.term import LeaderTerm
from knit.store import nodes as node_store
from knit.store.records import DeploymentRecord
from knit.wire.servers import NoticeKind, ServerNotice

STARTED_AT = time.time()
ACTORS_EVERY = 2.0
"""Seconds ``GET /status`` reuses its view of the actors (taking one is O(actors))."""


class ServerPlane:
    """The server's implementation of the API's ``ControlPlane`` port."""

    def __init__(
        self,
        ctx: ServerContext,
        access: TokenKeeper,
        leadership: Leadership,
        bridge: BridgeStats,
        *,
        membership: Membership | None = None,
        logs: LogHub | None = None,
        notices: Notices | None = None,
    ) -> None:
        self.ctx = ctx
        self.logs = logs
        self.access = access
        self.membership = membership
        self.leadership = leadership
        self.notices = notices
        self.repo = ctx.repo
        self.bridge = bridge
        self.term: LeaderTerm | None = None
        """The leader's actors while this server leads (None: it follows)."""
        self._actors: JSONDict | None = None
        self._actors_at = 0.0
        self.checks = SpecChecks(ctx.repo, ctx.max_replicas)
        self.metrics_registry = server_registry(
            ctx.metrics, ctx.bus, bridge, self.repo.store.writer
        )
        """This server's Prometheus metrics (``GET /metrics``)."""

    @staticmethod
    def _raise_if_error(result: object) -> Any:
        if isinstance(result, KnitError):
            raise result
        return result

    # nodes
    async def list_nodes(self) -> list[JSONDict]:
        reserved = await self._reserved()
        return [self._fresh(n, reserved).to_json() for n in await self.repo.all_nodes()]

    async def get_node(self, node_id: str) -> JSONDict:
        node = await self.repo.get_node(node_id)
        if node is None:
            raise NotFound("node", node_id)
        return self._fresh(node, await self._reserved()).to_json()

    async def _reserved(self) -> Mapping[str, tuple[float, int]]:
        """What each node's instances reserve: the leader's Scheduler knows; a follower
        sums the store's instances."""
        term = self.term
        if term is not None:
            return term.ctx.reserved
        return await self.repo.reserved_by_node()

    def _fresh(self, node: NodeState, reserved: Mapping[str, tuple[float, int]]) -> NodeState:
        """The node with its last heartbeat as the leader's NodeActor heard it (the store's
        copy is written now and then), what its heartbeats say it allows (held in the
        leader's memory; a follower does not know) and what its instances reserve."""
        term = self.term
        if term is not None:
            heard = term.ctx.last_heartbeats.get(node.id)
            if heard is not None and (node.last_heartbeat is None or heard > node.last_heartbeat):
                node.last_heartbeat = heard
            node.allow_host_network = node.id in term.ctx.host_network_nodes
        node.reserved_cpus, node.reserved_memory_bytes = reserved.get(node.id, (0.0, 0))
        mesh = self.membership.mesh if self.membership is not None else None
        if mesh is not None:
            node.address = mesh.address_of(node.id) or node.address
        return node

    async def mesh_members(self) -> list[JSONDict]:
        """``GET /mesh``: the mesh's members, the server first.

        Raises:
            NotFound: this server runs no mesh (no ``--mesh-cidr``).
        """
        mesh = self.membership.mesh if self.membership is not None else None
        if mesh is None:
            raise NotFound("mesh", "this server runs no mesh (knit server --mesh-cidr)")
        return await mesh.status()

    async def join_node(
        self, join_token: str, request: JoinRequest, api_host: str | None
    ) -> JSONDict:
        """Admit a node with a join token (one use of it spent in the same transaction):
        its grant.

        Raises:
            Unauthorized: the join token is unknown, expired, used up or revoked.
            Conflict: the node's keys or the id it asked for are taken.
        """
        if self.membership is None:
            raise KnitError("this server does not admit nodes")
        admission = self.access.join_admission(join_token)
        return await self.membership.join(admission, request, api_host)

    async def issue_bus_credential(self, spec: BusCredentialSpec, api_host: str | None) -> JSONDict:
        """NATS credentials for a tool on the embedded bus (admin)."""
        if self.membership is None:
            raise KnitError("this server does not issue bus credentials")
        return self.membership.bus_credential(spec, api_host)

    async def remove_node(self, node_id: str) -> JSONDict:
        """Remove a node: its credentials stop working at once, its instances move."""
        if self.membership is None:
            raise KnitError("this server does not remove nodes")
        return await self.membership.remove(node_id)

    async def set_node_eligible(self, node_id: str, eligible: bool) -> JSONDict:
        """Drain or un-drain: by the node's actor on the leader; on a follower stored here,
        then told to the leader.

        Raises:
            NotFound: no such node.
        """
        term = self.term
        if term is not None:
            result = await term.nodes.ask((node_id, SetEligible(eligible)), timeout=15)
            if result is None:
                raise NotFound("node", node_id)
            return dict(self._raise_if_error(result))
        if await self.repo.get_node(node_id) is None:
            raise NotFound("node", node_id)
        await self.repo.store.write(node_store.set_eligible(node_id, eligible))
        await self._tell(NoticeKind.NODE_ELIGIBLE, node_id, eligible=eligible)
        return await self.get_node(node_id)

    async def _tell(
        self, kind: NoticeKind, target: str | None = None, *, eligible: bool | None = None
    ) -> Mapping[str, Any] | None:
        """Make a stored change known to the leader and the other servers; the rollout
        the leader answered for an update (None: none, or no leader answered)."""
        if self.notices is None:
            return None
        reply = await self.notices.tell(kind, target, eligible=eligible)
        return None if reply is None else reply.rollout

    async def node_changed(self, kind: NoticeKind, node_id: str) -> None:
        """A node joined or was removed here (``Membership``): tell the leader and the
        other servers (their pins)."""
        await self._tell(kind, node_id)

    async def take_notice(self, notice: ServerNotice) -> None:
        """Another server changed what this one keeps in memory: read it again."""
        if notice.kind is NoticeKind.TOKENS:
            await self.access.load()
        elif notice.kind is NoticeKind.REFERENCES:
            self._forget_references()
        elif notice.kind in (NoticeKind.NODE_JOINED, NoticeKind.NODE_REMOVED):
            await reload_pins(self.repo, self.ctx.trust)

    # registries
    async def create_registry(self, spec: RegistryCredentialsSpec) -> JSONDict:
        self._forget_references()
        created = await self.repo.create_credentials(spec, self.ctx.secrets)
        await self._tell(NoticeKind.REFERENCES)
        return created

    async def list_registries(self) -> list[JSONDict]:
        return await self.repo.list_credentials()

    async def delete_registry(self, registry_id: str) -> None:
        self._forget_references()
        try:
            await self.repo.delete_credentials(registry_id)
        finally:
            self._forget_references()
        await self._tell(NoticeKind.REFERENCES)

    # networks
    async def create_network(self, spec: NetworkSpec) -> JSONDict:
        self._forget_references()
        created = await self.repo.create_network(spec)
        await self._tell(NoticeKind.REFERENCES)
        return created

    async def list_networks(self) -> list[JSONDict]:
        return await self.repo.list_networks()

    async def delete_network(self, network_id: str) -> None:
        self._forget_references()
        try:
            await self.repo.delete_network(network_id)
        finally:
            self._forget_references()
        await self._tell(NoticeKind.REFERENCES)

    def _forget_references(self) -> None:
        self.checks.forget_references()

    # deployments
    async def check_deployment(self, spec: DeploymentSpec) -> None:
        """The checks a submitted spec passes beyond its model (``SpecChecks.check``).

        Raises:
            Invalid: every problem found.
        """
        await self.checks.check(spec)

    async def create_deployment(self, spec: DeploymentSpec) -> JSONDict:
        await self.check_deployment(spec)
        # Stored here, not by the DeploymentDirectory: the writer checks the name in its
        # transaction, and creations wait for their commits side by side, not in a queue.
        record = await self.repo.insert_deployment(spec, self.ctx.secrets)
        term = self.term
        if term is not None:
            await term.deployments.ask(DeploymentCreated(record.id, record), timeout=30)
        else:
            await self._tell(NoticeKind.DEPLOYMENT_CREATED, record.id)
        return deployment_json(record)

    async def update_deployment(self, deployment_id: str, spec: DeploymentSpec) -> JSONDict:
        """``PUT /deployments/{id}``: a new version, a scale, or nothing for the same spec.

        Stored first (the writer compares and writes in one transaction), then the
        deployment's actor is told, only when something was written.

        Raises:
            Invalid: the spec fails the checks of ``POST /deployments``.
            ValidationError: ``name`` is not the deployment's.
            NotFound: no such deployment.
            Conflict: it is being deleted.
        """
        await self.check_deployment(spec)
        record, changed = await self.repo.update_deployment(deployment_id, spec, self.ctx.secrets)
        if changed:
            record = await self._updated(record)
        return deployment_json(record)

    async def scale_deployment(self, deployment_id: str, replicas: int) -> JSONDict:
        """``POST /deployments/{id}/scale``: set ``replicas`` (no new version).

        Raises:
            ValidationError: above ``--max-replicas``.
            NotFound: no such deployment.
            Conflict: it is being deleted.
        """
        if replicas > self.ctx.max_replicas:
            raise ValidationError(
                "replicas",
                f"must be at most {self.ctx.max_replicas} (this server's --max-replicas)",
            )
        record, changed = await self.repo.scale_deployment(deployment_id, replicas)
        if changed:
            record = await self._updated(record)
        return deployment_json(record)

    async def rollback_deployment(self, deployment_id: str, version: int | None) -> JSONDict:
        """``POST /deployments/{id}/rollback``: a new version with the spec of ``version``
        (None: the newest stable one before the current one), keeping ``replicas``.

        Raises:
            NotFound: no such deployment or version.
            Conflict: being deleted, already at that version, no stable version to go back
                to, or the version names credentials or a network that are gone.
        """
        record, changed = await self.repo.rollback_deployment(
            deployment_id, version, self.ctx.secrets
        )
        if changed:
            record = await self._updated(record)
        return deployment_json(record)

    async def deployment_versions(self, deployment_id: str) -> list[JSONDict]:
        """``GET /deployments/{id}/versions``, newest first (never secret values)."""
        return [version_json(v) for v in await self.repo.deployment_versions(deployment_id)]

    async def _updated(self, record: DeploymentRecord) -> DeploymentRecord:
        """Tell the deployment's actor; ``record`` with the rollout the change started."""
        # The secret variables may have changed with the version: the cached ciphertext goes
        # before the actor hears of it (it builds the new version's tasks from the store).
        term = self.term
        if term is not None:
            term.ctx.forget_secret_env(record.id)
            rollout = await term.deployments.ask(DeploymentUpdated(record.id, record), timeout=30)
        else:
            rollout = await self._tell(NoticeKind.DEPLOYMENT_UPDATED, record.id)
        if isinstance(rollout, Mapping):
            return dataclasses.replace(record, rollout=rollout)
        return record

    async def list_deployments(self) -> list[JSONDict]:
        return await self.repo.list_deployments()

    async def get_deployment(self, deployment_id: str) -> JSONDict:
        return await self.repo.deployment_json(deployment_id)

    async def delete_deployment(self, deployment_id: str) -> JSONDict:
        term = self.term
        if term is not None:
            result = await term.deployments.ask(DeleteDeployment(deployment_id), timeout=30)
            term.ctx.forget_secret_env(deployment_id)
            return dict(self._raise_if_error(result))
        record = await self.repo.mark_deployment_deleted(deployment_id)
        await self._tell(NoticeKind.DEPLOYMENT_DELETED, deployment_id)
        return deployment_json(record)

    # instances and events
    async def list_instances(self) -> list[JSONDict]:
        return await self.repo.list_instances()

    async def open_logs(
        self,
        query: LogQuery,
        *,
        deployment_id: str | None = None,
        instance_id: str | None = None,
        index: int | None = None,
    ) -> AsyncIterator[bytes]:
        """``GET /deployments/{id}/logs``, ``GET /instances/{id}/logs`` (see
        ``knit.api.ports.LogSource``): the instances placed on a node, in index order."""
        if self.logs is None:
            raise KnitError("this server does not stream logs")
        if instance_id is not None:
            found = await self.repo.get_instance(instance_id)
            if found is None:
                raise NotFound("instance", instance_id)
            instances = [found]
        else:
            if (
                deployment_id is None
                or await self.repo.get_deployment_record(deployment_id) is None
            ):
                raise NotFound("deployment", deployment_id or "")
            instances = [
                i
                for i in await self.repo.instances_of(deployment_id)
                if i.desired and (index is None or i.index == index)
            ]
            if index is not None and not instances:
                raise NotFound("instance", f"{deployment_id} index {index}")
        targets = sorted(
            (LogTarget(i.id, i.node_id, i.index) for i in instances if i.node_id is not None),
            key=lambda t: t.index,
        )
        return self.logs.stream(targets, query)

    async def list_events(
        self, *, deployment_id: str | None, node_id: str | None, limit: int
    ) -> list[JSONDict]:
        return await self.repo.list_events(
            deployment_id=deployment_id, node_id=node_id, limit=limit
        )

    # access (API tokens from memory; see knit.server.access)
    def authenticate(self, secret: str) -> Principal | None:
        return self.access.authenticate(secret)

    def token_principal(self, token_id: str) -> Principal | None:
        return self.access.principal(token_id)

    async def create_token(self, spec: TokenSpec) -> JSONDict:
        created = await self.access.create_token(spec)
        await self._tell(NoticeKind.TOKENS)
        return created

    async def list_tokens(self) -> list[JSONDict]:
        return await self.access.list_tokens()

    async def delete_token(self, token_id: str) -> None:
        await self.access.delete_token(token_id)
        await self._tell(NoticeKind.TOKENS)

    async def create_join_token(self, spec: JoinTokenSpec) -> JSONDict:
        return await self.access.create_join_token(spec)

    async def list_join_tokens(self) -> list[JSONDict]:
        return await self.access.list_join_tokens()

    async def delete_join_token(self, token_id: str) -> JSONDict:
        return await self.access.delete_join_token(token_id)

    async def consume_join_token(self, secret: str) -> str:
        """Spend one use of a join token (for ``POST /join``); its id.

        Raises:
            Unauthorized: "join token unknown", "join token expired", "join token used up"
                or "join token revoked".
        """
        return await self.access.consume_join_token(secret)

    async def list_servers(self) -> list[JSONDict]:
        """``GET /servers``: the servers of this database, as this one last read them."""
        return self.leadership.servers_json()

    def status(self) -> JSONDict:
        """The server's counters; the ``actors`` part is at most ``ACTORS_EVERY`` s old.
        ``server``: this one (``id``, ``role``); ``leader``: who leads and since when."""
        now = time.monotonic()
        if self._actors is None or now - self._actors_at >= ACTORS_EVERY:
            self._actors, self._actors_at = self._actors_json(), now
        term = self.term
        writer = (term.ctx.repo if term is not None else self.repo).store.writer
        leadership = self.leadership
        return {
            "server": {
                "id": leadership.server_id,
                "role": str(leadership.role),
                "terms": leadership.terms,
            },
            "leader": leadership.leader_json(),
            "uptime_s": round(time.time() - STARTED_AT, 1),
            "bus": {"connected": self.ctx.bus.connected, **vars(self.ctx.bus.stats)},
            "bridge": vars(self.bridge),
            **self.ctx.metrics.to_json(),
            "store_writer": {"queued": writer.queued, **vars(writer.stats)},
            "actors": self._actors,
        }

    def _actors_json(self) -> JSONDict:
        # O(actors): with 100,000 task actors in flight this took a tenth of a second, too
        # much to pay on every poll of a monitor.
        term = self.term
        actors = term.system.snapshot() if term is not None else []
        busiest = heapq.nlargest(10, actors, key=lambda a: a.mailbox_depth)
        restarted = [a for a in actors if a.restarts][:50]
        return {
            "count": len(actors),
            "busiest": [
                {"name": a.name, "mailbox_depth": a.mailbox_depth, "restarts": a.restarts}
                for a in busiest
            ],
            "restarted": [{"name": a.name, "restarts": a.restarts} for a in restarted],
        }
