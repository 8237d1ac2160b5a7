"""The control plane as the API sees it: reads from the store, writes through the actors.

Layer: server. Implements ``knit.api.ports.ControlPlane``. Reads go to the store (the
truth); commands that change what runs go to the directory actors, which serialise them.
Errors come back from actors as values (an actor never crashes on a user's mistake).
"""

from __future__ import annotations

import time
from typing import Any

from actors import ActorRef, ActorSystem
from knit.api.ports import JSONDict
from knit.domain.specs import (
    DeploymentSpec,
    NetworkSpec,
    RegistryCredentialsSpec,
)
from knit.domain.validation import (
    check_network_attachments,
    check_references,
)
from knit.errors import Invalid, KnitError, NotFound
from knit.server.bridge import BridgeStats
from knit.server.context import ServerContext
from knit.server.messages import CreateDeployment, DeleteDeployment, SetEligible

STARTED_AT = time.time()


class ServerPlane:
    """The server's implementation of the API's ``ControlPlane`` port."""

    def __init__(
        self,
        ctx: ServerContext,
        system: ActorSystem,
        nodes: ActorRef[Any],
        deployments: ActorRef[Any],
        bridge: BridgeStats,
    ) -> None:
        self.ctx = ctx
        self.repo = ctx.repo
        self.system = system
        self.nodes = nodes
        self.deployments = deployments
        self.bridge = bridge

    @staticmethod
    def _raise_if_error(result: object) -> Any:
        if isinstance(result, KnitError):
            raise result
        return result

    # nodes
    async def list_nodes(self) -> list[JSONDict]:
        return [n.to_json() for n in await self.repo.all_nodes()]

    async def get_node(self, node_id: str) -> JSONDict:
        node = await self.repo.get_node(node_id)
        if node is None:
            raise NotFound("node", node_id)
        return node.to_json()

    async def set_node_eligible(self, node_id: str, eligible: bool) -> JSONDict:
        result = await self.nodes.ask((node_id, SetEligible(eligible)), timeout=15)
        if result is None:
            raise NotFound("node", node_id)
        return dict(self._raise_if_error(result))

    # registries
    async def create_registry(self, spec: RegistryCredentialsSpec) -> JSONDict:
        return await self.repo.create_credentials(spec, self.ctx.secrets)

    async def list_registries(self) -> list[JSONDict]:
        return await self.repo.list_credentials()

    async def delete_registry(self, registry_id: str) -> None:
        await self.repo.delete_credentials(registry_id)

    # networks
    async def create_network(self, spec: NetworkSpec) -> JSONDict:
        return await self.repo.create_network(spec)

    async def list_networks(self) -> list[JSONDict]:
        return await self.repo.list_networks()

    async def delete_network(self, network_id: str) -> None:
        await self.repo.delete_network(network_id)

    # deployments
    async def create_deployment(self, spec: DeploymentSpec) -> JSONDict:
        registries = await self.repo.credential_ids()
        networks = await self.repo.network_drivers()
        errors = check_references(spec, registries, networks) + check_network_attachments(
            spec, networks
        )
        if errors:
            raise Invalid(errors)
        result = await self.deployments.ask(CreateDeployment(spec), timeout=30)
        return dict(self._raise_if_error(result))

    async def list_deployments(self) -> list[JSONDict]:
        return await self.repo.list_deployments()

    async def get_deployment(self, deployment_id: str) -> JSONDict:
        return await self.repo.deployment_json(deployment_id)

    async def delete_deployment(self, deployment_id: str) -> JSONDict:
        result = await self.deployments.ask(DeleteDeployment(deployment_id), timeout=30)
        return dict(self._raise_if_error(result))

    # instances and events
    async def list_instances(self) -> list[JSONDict]:
        return await self.repo.list_instances()

    async def list_events(
        self, *, deployment_id: str | None, node_id: str | None, limit: int
    ) -> list[JSONDict]:
        return await self.repo.list_events(
            deployment_id=deployment_id, node_id=node_id, limit=limit
        )

    def status(self) -> JSONDict:
        actors = self.system.snapshot()
        return {
            "uptime_s": round(time.time() - STARTED_AT, 1),
            "bus": {"connected": self.ctx.bus.connected, **vars(self.ctx.bus.stats)},
            "bridge": vars(self.bridge),
            **self.ctx.metrics.to_json(),
            "store_writer": {
                "queued": self.repo.store.writer.queued,
                **vars(self.repo.store.writer.stats),
            },
            "actors": {
                "count": len(actors),
                "busiest": [
                    {"name": a.name, "mailbox_depth": a.mailbox_depth, "restarts": a.restarts}
                    for a in sorted(actors, key=lambda a: -a.mailbox_depth)[:10]
                ],
                "restarted": [
                    {"name": a.name, "restarts": a.restarts} for a in actors if a.restarts
                ][:50],
            },
        }
