"""What the HTTP API needs from the control plane: one Protocol, implemented by the server.

Layer: api (a port). Routes depend on this, never on actors or the store directly, so the
HTTP layer stays outside the actors' failure domain and can be tested on its own.

Every method returns JSON-ready data (dicts of str, numbers, lists, None) and raises
``knit.errors.NotFound``, ``knit.errors.ValidationError`` (or ``Invalid`` for several at once)
or ``knit.errors.Conflict``; the routes turn those into 404, 422 and 409 (and
``knit.errors.Unauthorized`` into 401).

Authentication is asked of the port too, synchronously: :meth:`ControlPlane.authenticate`
runs for every request, so it must answer from memory (the server keeps its tokens in a
``knit.domain.auth.TokenBook``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from knit.domain.auth import Principal
from knit.domain.join import BusCredentialSpec, JoinRequest
from knit.domain.logs import LogQuery
from knit.domain.specs import DeploymentSpec, NetworkSpec, RegistryCredentialsSpec
from knit.domain.tokens import JoinTokenSpec, TokenSpec

JSONDict = dict[str, Any]


class ControlPlane(Protocol):
    """The server as the API sees it."""

    async def list_nodes(self) -> list[JSONDict]:
        """Every node known."""
        ...

    async def get_node(self, node_id: str) -> JSONDict:
        """One node."""
        ...

    async def mesh_members(self) -> list[JSONDict]:
        """The WireGuard mesh's members, the server first (NotFound: no mesh)."""
        ...

    async def join_node(
        self, join_token: str, request: JoinRequest, api_host: str | None
    ) -> JSONDict:
        """Admit a node with a join token (spent): its identity and bus credentials."""
        ...

    async def issue_bus_credential(self, spec: BusCredentialSpec, api_host: str | None) -> JSONDict:
        """NATS credentials for a tool on the embedded bus, scoped and expiring."""
        ...

    async def remove_node(self, node_id: str) -> JSONDict:
        """Remove a node from the cluster: its credentials stop working at once."""
        ...

    async def set_node_eligible(self, node_id: str, eligible: bool) -> JSONDict:
        """Drain (``False``) or un-drain (``True``) a node."""
        ...

    async def create_registry(self, spec: RegistryCredentialsSpec) -> JSONDict:
        """Store registry credentials (the password encrypted); returns them without it."""
        ...

    async def list_registries(self) -> list[JSONDict]:
        """Every stored credential, never with its password."""
        ...

    async def delete_registry(self, registry_id: str) -> None:
        """Delete credentials no deployment uses."""
        ...

    async def create_network(self, spec: NetworkSpec) -> JSONDict:
        """Declare a network."""
        ...

    async def list_networks(self) -> list[JSONDict]:
        """Every network declared."""
        ...

    async def delete_network(self, network_id: str) -> None:
        """Delete a network no deployment uses."""
        ...

    async def create_deployment(self, spec: DeploymentSpec) -> JSONDict:
        """Store a deployment and start converging it."""
        ...

    async def list_deployments(self) -> list[JSONDict]:
        """Every deployment not deleted."""
        ...

    async def get_deployment(self, deployment_id: str) -> JSONDict:
        """One deployment with its ``instances``."""
        ...

    async def delete_deployment(self, deployment_id: str) -> JSONDict:
        """Delete a deployment: its containers are stopped and removed."""
        ...

    async def update_deployment(self, deployment_id: str, spec: DeploymentSpec) -> JSONDict:
        """Give a deployment a full new spec (same name): a new version and its rollout, a
        scale when only ``replicas`` differs, nothing for the same spec. Its JSON."""
        ...

    async def scale_deployment(self, deployment_id: str, replicas: int) -> JSONDict:
        """Set a deployment's ``replicas`` (no new version). Its JSON."""
        ...

    async def rollback_deployment(self, deployment_id: str, version: int | None) -> JSONDict:
        """A new version with the spec of ``version`` (None: the newest stable one before
        the current one), keeping ``replicas``. Its JSON."""
        ...

    async def deployment_versions(self, deployment_id: str) -> list[JSONDict]:
        """A deployment's versions ``{version, spec, created_at, stable}``, newest first."""
        ...

    async def list_instances(self) -> list[JSONDict]:
        """Every container instance."""
        ...

    async def list_events(
        self, *, deployment_id: str | None, node_id: str | None, limit: int
    ) -> list[JSONDict]:
        """Events, newest first."""
        ...

    def status(self) -> JSONDict:
        """Health and introspection: this server and who leads, actors, bus, versions."""
        ...

    async def list_servers(self) -> list[JSONDict]:
        """The servers of the database (``id``, ``role``, ``status``, ``api_url``, ...)."""
        ...

    # access
    def authenticate(self, secret: str) -> Principal | None:
        """Who an API token's secret speaks for; None if unknown, revoked or expired.

        Called for every request: answers from memory, never from the store.
        """
        ...

    def token_principal(self, token_id: str) -> Principal | None:
        """The principal of the API token ``token_id`` while it is valid (for dashboard
        sessions, which name their token by id); None once revoked or expired."""
        ...

    async def create_token(self, spec: TokenSpec) -> JSONDict:
        """Make an API token: ``{id, name, role, token, expires_at}`` (the only time its
        secret is shown)."""
        ...

    async def list_tokens(self) -> list[JSONDict]:
        """Every API token, without secrets."""
        ...

    async def delete_token(self, token_id: str) -> None:
        """Revoke an API token at once."""
        ...

    async def create_join_token(self, spec: JoinTokenSpec) -> JSONDict:
        """Make a join token: ``{id, token, expires_at, uses}``."""
        ...

    async def list_join_tokens(self) -> list[JSONDict]:
        """Every join token, without secrets."""
        ...

    async def delete_join_token(self, token_id: str) -> JSONDict:
        """Revoke a join token."""
        ...

    async def consume_join_token(self, secret: str) -> str:
        """Spend one use of a join token; its id. Raises ``Unauthorized`` with the reason."""
        ...


class LogSource(Protocol):
    """What the logs routes need: the merged text of instances' logs (a port of its own, so
    that a control plane without logs, as the tests' fakes, stays a ``ControlPlane``)."""

    async def open_logs(
        self,
        query: LogQuery,
        *,
        deployment_id: str | None = None,
        instance_id: str | None = None,
        index: int | None = None,
    ) -> AsyncIterator[bytes]:
        """The logs of a deployment's instances (``index``: only that one) or of one
        instance, as text chunks of whole lines (``[index] line``). Found before it
        returns: the iterator only streams.

        Raises:
            NotFound: no such deployment or instance, or no instance with that index.
            KnitError: the server cannot stream logs now.
        """
        ...
