"""What the server's actors share: adapters, settings and a few cluster-wide services.

Layer: server. Adapters (bus, repo, secret box) come in through the constructor; the
actors never import them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from actors import ActorRef
from knit.bus import Bus
from knit.config import DEFAULT_MAX_REPLICAS
from knit.domain.placement import PlacementRequest, Plan
from knit.domain.specs import registry_server
from knit.errors import KnitError
from knit.ids import is_id
from knit.secrets import SecretBox, env_aad, registry_aad, seal
from knit.server.messages import NodeReport
from knit.server.metrics import ServerMetrics
from knit.server.records import InstanceState
from knit.server.repo import Repo
from knit.server.scheduler import Place, Release, Reserve, SchedulerMessage
from knit.server.tasks import TASK_TTL, TaskTiming
from knit.server.trust import BusTrust
from knit.store.records import DeploymentRecord, new_id
from knit.wire import subjects
from knit.wire.messages import (
    DeployTask,
    SealedCredentials,
    StopTask,
    Task,
    TaskDeployment,
    encode,
)

log = logging.getLogger(__name__)

TASK_DEPLOYMENT_CACHE = 10_000
"""Validated deployment parts of tasks kept for reuse (the cache is emptied when full)."""
SECRET_ENV_CACHE = 10_000
"""Encrypted ``secret_env`` of deployments kept for their next tasks (emptied when full)."""


@dataclass
class ServerContext:
    """The server's shared services.

    Attributes:
        repo: the store, as the server's actors use it.
        bus: the NATS adapter.
        secrets: decrypts registry passwords stored at rest.
        trust: who the joined nodes are, and what proves a message is theirs.
        node_ttl: seconds without a heartbeat before a node is unhealthy.
        restart_grace: extra seconds given to every node after a server start.
        timing: the deadlines of tasks.
        metrics: counters and histograms shown by ``GET /status``.
        last_heartbeats: when each node was last heard (newer than the store's copy, which
            is written now and then).
        node_reports: each healthy node's last full report of its instances (written by its
            NodeActor only, replaced whole; read by the DeploymentActors' audits).
        task_owners: the DeploymentActor of each task in flight, by task id (the bridge
            hands the agents' statuses to it).
        max_replicas: the most replicas a deployment may ask for (``--max-replicas``).
        host_network_nodes: the nodes whose last heartbeat said ``allow_host_network``
            (kept in memory only: a node says it again within one interval).
        reserved: the cores and bytes reserved on each node, by node id (written by the
            Scheduler only; read by ``GET /nodes/{id}``).
        node_down_listeners: told the id of each node declared unhealthy, at once (the log
            streams from it end); they must not wait.
    """

    repo: Repo
    bus: Bus
    secrets: SecretBox
    trust: BusTrust
    node_ttl: float
    restart_grace: float
    timing: TaskTiming = field(default_factory=TaskTiming)
    public_keys: dict[str, str] = field(default_factory=dict)
    last_heartbeats: dict[str, float] = field(default_factory=dict)
    node_reports: dict[str, NodeReport] = field(default_factory=dict)
    task_owners: dict[str, ActorRef[Any]] = field(default_factory=dict)
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    max_replicas: int = DEFAULT_MAX_REPLICAS
    host_network_nodes: set[str] = field(default_factory=set)
    reserved: dict[str, tuple[float, int]] = field(default_factory=dict)
    node_down_listeners: list[Callable[[str], None]] = field(default_factory=list)
    _secret_envs: dict[str, str] = field(default_factory=dict)
    _scheduler: ActorRef[SchedulerMessage] | None = None
    _deployments: ActorRef[Any] | None = None
    _task_deployments: dict[tuple[object, ...], TaskDeployment] = field(default_factory=dict)

    @property
    def scheduler(self) -> ActorRef[SchedulerMessage]:
        """The Scheduler actor."""
        assert self._scheduler is not None
        return self._scheduler

    @property
    def deployments(self) -> ActorRef[Any]:
        """The deployments' directory actor."""
        assert self._deployments is not None
        return self._deployments

    async def place(self, request: PlacementRequest) -> Plan:
        """Ask the Scheduler to place instances."""
        return cast(Plan, await self.scheduler.ask(Place(request), timeout=30))

    def release(self, inst: InstanceState) -> None:
        """Tell the Scheduler ``inst`` left its node, with what it reserved there (which
        it then no longer holds: a second release returns no resources)."""
        if inst.node_id is not None:
            self.scheduler.tell_nowait(Release(inst.node_id, inst.cpu, inst.memory_bytes))
        inst.cpu, inst.memory_bytes = 0.0, 0

    def reserve(self, inst: InstanceState, cpu: float, memory_bytes: int) -> None:
        """``inst`` holds ``cpu`` and ``memory_bytes`` on its node from now on, without a
        placement (found running there); nothing if it holds some already."""
        if inst.node_id is None or inst.cpu > 0 or inst.memory_bytes > 0:
            return
        if cpu > 0 or memory_bytes > 0:
            inst.cpu, inst.memory_bytes = cpu, memory_bytes
            self.scheduler.tell_nowait(Reserve(inst.node_id, cpu, memory_bytes))

    async def build_task(
        self,
        record: DeploymentRecord,
        inst: InstanceState,
        kind: str,
        secret_env: str | None = None,
    ) -> Task:
        """The wire task that deploys or stops ``inst``; credentials and secret variables
        sealed to its node, bound to the node and the task (and the registry).

        Raises:
            KnitError: credentials or secret variables are needed but the node's key, the
                credentials or the variables are unknown.
        """
        task_id = new_id()
        self.repo.new_task(task_id, kind, inst, record.id)
        expires_at = time.time() + TASK_TTL
        if kind == "stop":
            return StopTask(
                task_id=task_id,
                instance_id=inst.id,
                container_id=inst.container_id,
                remove=True,
                node_id=inst.node_id,
                expires_at=expires_at,
            )
        networks = await self.repo.networks_named(record.network_attachments)
        credentials = None
        if record.registry_credentials_id:
            credentials = await self.sealed_credentials(
                record.registry_credentials_id, inst.node_id, task_id
            )
        sealed_env = None
        if record.secret_env:  # (a deployment without any reads nothing more)
            sealed_env = await self.sealed_env(record.id, inst.node_id, task_id, secret_env)
        # One validated part per deployment spec (and version) and networks, shared by all
        # its tasks.
        key = (
            record.id,
            record.version,
            record.generation,
            tuple((n.name, n.driver, n.subnet) for n in networks),
        )
        deployment = self._task_deployments.get(key)
        if deployment is None:
            deployment = TaskDeployment.model_validate(
                {
                    "id": record.id,
                    "name": record.name,
                    "image": record.image,
                    "command": record.command,
                    "env": dict(record.env),
                    "templates": [dict(t) for t in record.templates],
                    "ports": [dict(p) for p in record.ports],
                    "network_attachments": [
                        {"name": n.name, "driver": n.driver, "subnet": n.subnet} for n in networks
                    ],
                    "restart_policy": dict(record.restart_policy),
                    "health_check": (
                        None if record.health_check is None else dict(record.health_check)
                    ),
                    "resources": None if record.resources is None else dict(record.resources),
                }
            )
            if len(self._task_deployments) >= TASK_DEPLOYMENT_CACHE:
                self._task_deployments.clear()
            self._task_deployments[key] = deployment
        return DeployTask(
            task_id=task_id,
            instance_id=inst.id,
            instance_index=inst.index,
            credentials=credentials,
            sealed_env=sealed_env,
            deployment=deployment,
            node_id=inst.node_id,
            expires_at=expires_at,
        )

    def task_message(self, node_id: str | None, task: Task) -> tuple[str, bytes]:
        """The subject and message that send ``task`` to ``node_id`` (None: to any node),
        with the proof that it comes from the server.

        Raises:
            KnitError: ``node_id`` is not a joined node (removed meanwhile).
        """
        subject = subjects.tasks_for(node_id) if node_id else subjects.TASKS_BROADCAST
        try:
            return subject, self.trust.prove_task(node_id, subject, encode(task))
        except KeyError:
            raise KnitError(f"node {node_id} is not a member of the cluster") from None

    def node_key(self, node_id: str | None) -> str:
        """The public key ``node_id`` registered.

        Raises:
            KnitError: it has not registered one.
        """
        # The key pinned at join (a heartbeat with another key is refused); on an open bus,
        # the one its heartbeats give.
        key = self.trust.pinned_key(node_id or "") or self.public_keys.get(node_id or "")
        if key is None:
            raise KnitError(f"node {node_id} has not registered a public key")
        return key

    async def sealed_credentials(
        self, credentials_id: str, node_id: str | None, task_id: str
    ) -> SealedCredentials:
        """Decrypt stored credentials and seal the password to ``node_id``'s key, bound to the
        node, the task and the registry (``knit.secrets.registry_aad``)."""
        creds = await self.repo.get_credentials(credentials_id)
        if creds is None:
            raise KnitError(f"registry credentials {credentials_id} no longer exist")
        key = self.node_key(node_id)
        server = registry_server(creds.url)
        password = self.secrets.decrypt(creds.password_encrypted, aad=creds.id)
        return SealedCredentials(
            server=server,
            username=creds.username,
            sealed_password=seal(password, key, registry_aad(node_id or "", task_id, server)),
        )

    async def sealed_env(
        self, deployment_id: str, node_id: str | None, task_id: str, stored: str | None = None
    ) -> str:
        """The deployment's secret variables (a JSON object) sealed to ``node_id``'s key,
        bound to the node and the task (``knit.secrets.env_aad``).

        ``stored``: the ciphertext at rest of an older version's variables (None: the
        current version's, kept for the deployment's next tasks); the plaintext lives only
        while it is sealed.
        """
        key = self.node_key(node_id)
        stored = stored or self._secret_envs.get(deployment_id)
        if stored is None:
            stored = await self.repo.secret_env_of(deployment_id)
            if stored is None:
                raise KnitError(f"the secret variables of deployment {deployment_id} are gone")
            if len(self._secret_envs) >= SECRET_ENV_CACHE:
                self._secret_envs.clear()
            self._secret_envs[deployment_id] = stored
        plain = self.secrets.decrypt(stored, aad=deployment_id)
        return seal(plain, key, env_aad(node_id or "", task_id))

    def forget_secret_env(self, deployment_id: str) -> None:
        """Drop a deleted deployment's secret variables from memory."""
        self._secret_envs.pop(deployment_id, None)

    async def stop_orphan(self, node_id: str, instance_id: str) -> None:
        """Tell ``node_id`` to remove a container Knit does not want (unknown or duplicate).

        A container labelled with an instance id Knit cannot have made is left alone: no task
        may carry such an id (agents refuse them), and Knit did not create it.
        """
        if not is_id(instance_id):  # (debug: it is reported again with every full report)
            log.debug(
                "node %s reports a container of instance %r: not Knit's", node_id, instance_id[:80]
            )
            return
        task = StopTask(
            task_id=new_id(),
            instance_id=instance_id,
            remove=True,
            node_id=node_id,
            expires_at=time.time() + TASK_TTL,
        )
        self.repo.event(
            "instance.orphan",
            f"removing unwanted container of instance {instance_id}",
            node_id=node_id,
            instance_id=instance_id,
        )
        try:
            await self.bus.publish(*self.task_message(node_id, task))
        except KnitError as exc:
            log.warning("cannot ask %s to remove an orphan: %s", node_id, exc)
