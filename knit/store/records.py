"""Plain, frozen records of what the store holds: what every query returns.

Layer: store (adapter). Imports the standard library and ``knit.store.models`` (for the
``JSONValue`` alias) only. Records are detached copies: an actor may keep one as long as it
likes without holding a session or a connection. Mapping fields are fresh ``dict`` copies
typed as ``Mapping`` (treat them as read-only); list fields are tuples.

Timestamps are ``float`` seconds since the Unix epoch (UTC); ids are ``str``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import Field, dataclass, field, fields
from typing import ClassVar, Final, Literal

from knit.ids import new_id as new_id  # re-exported: the store's ids
from knit.store.models import JSONValue

NODE_STATUSES: Final = ("healthy", "unhealthy")
INSTANCE_STATUSES: Final = ("pending", "running", "stopped", "error", "lost", "unknown")
RESERVING_STATUSES: Final = ("pending", "running", "stopped", "unknown", "error")
"""The statuses whose placed instances hold their resources on their node: all but ``lost``
(released when it was lost). A stopped instance keeps its room until it is removed: its
container may be started again."""
TASK_KINDS: Final = ("deploy", "stop")
TASK_STATES: Final = ("pending", "published", "accepted", "succeeded", "failed")
UNFINISHED_TASK_STATES: Final = ("pending", "published", "accepted")


class _JSONMixin:
    """``to_json()``: the record as a JSON-ready dict (field names as they are)."""

    __slots__ = ()
    __dataclass_fields__: ClassVar[dict[str, Field[object]]]
    _hidden: ClassVar[tuple[str, ...]] = ()

    def to_json(self) -> dict[str, JSONValue]:
        """The record's fields as plain JSON values (tuples become lists, mappings dicts)."""
        # API replies convert records by the thousand: the field names are looked up once
        # per class (``fields()`` costs more than the conversion of a small record).
        names = _JSON_FIELDS.get(type(self))
        if names is None:
            names = tuple(f.name for f in fields(self) if f.name not in self._hidden)
            _JSON_FIELDS[type(self)] = names
        return {name: _plain(getattr(self, name)) for name in names}


_JSON_FIELDS: dict[type, tuple[str, ...]] = {}


def _plain(value: object) -> JSONValue:
    # Scalars first: they are most values, and ``isinstance(x, Mapping)`` is an ABC check.
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def json_copy(value: JSONValue) -> JSONValue:
    """A deep copy of a JSON value (so a record never shares a dict with anybody)."""
    if isinstance(value, dict):
        return {k: json_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_copy(v) for v in value]
    return value


def str_map(value: Mapping[str, str] | None) -> dict[str, str]:
    """A mapping of strings as a fresh ``dict`` (``None`` is empty)."""
    return {str(k): str(v) for k, v in (value or {}).items()}


def obj_list(value: Sequence[Mapping[str, JSONValue]] | None) -> list[dict[str, JSONValue]]:
    """A list of JSON objects as fresh dicts."""
    return [{str(k): json_copy(v) for k, v in item.items()} for item in (value or [])]


@dataclass(frozen=True, slots=True)
class NodeRecord(_JSONMixin):
    """A worker host.

    Attributes:
        status: "healthy" or "unhealthy".
        eligible: False once drained: the scheduler places nothing new on it.
        public_key: the node's X25519 public key, base64 (not a secret).
        address: where other nodes reach it (e.g. its mesh IP), if known.
    """

    id: str
    hostname: str
    status: str
    last_heartbeat: float | None
    eligible: bool
    labels: Mapping[str, str]
    cpus: float
    memory_bytes: int
    docker_version: str
    agent_version: str
    public_key: str
    address: str | None
    registered_at: float


@dataclass(frozen=True, slots=True)
class HeartbeatUpsert:
    """What one heartbeat says about its node: the input of ``nodes.record_heartbeats``.

    The node becomes (or stays) "healthy" with ``last_heartbeat = at``. A node seen for the
    first time is registered at ``at`` and eligible; ``eligible`` and ``registered_at`` of a
    known node are kept.
    """

    node_id: str
    hostname: str
    at: float
    labels: Mapping[str, str] = field(default_factory=dict)
    cpus: float = 0.0
    memory_bytes: int = 0
    docker_version: str = ""
    agent_version: str = ""
    public_key: str = ""
    address: str | None = None


@dataclass(frozen=True, slots=True)
class RegistryCredentialsRecord(_JSONMixin):
    """Credentials of a private registry; ``password_encrypted`` is ciphertext.

    ``to_json()`` leaves the ciphertext out.
    """

    _hidden: ClassVar[tuple[str, ...]] = ("password_encrypted",)

    id: str
    url: str
    username: str
    password_encrypted: str
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class DeploymentRecord(_JSONMixin):
    """A deployment's spec and bookkeeping.

    Attributes:
        templates: ``{"content", "destination"}`` objects.
        command: None means "the image's default command".
        lost_after: seconds an instance may be ``lost`` before it is replaced (0: at once).
        pending_reason: why some instances cannot be placed (None when all are).
        generation: bumped on every change of the spec (and on deletion).
        deleted: deletion was asked; the row stays until its instances are gone.
        secret_env: the names of its secret environment variables (their values are in
            ``deployment_secrets``, encrypted; never in a record).
        version: the version of the spec these fields hold (1, 2, ...; see
            ``DeploymentVersionRecord``).
        update: the update policy (``knit.domain.update_policy.UpdatePolicy`` as JSON).
        health_check: the health check (``knit.domain.health_checks.HealthCheck`` as JSON) or
            None.
        rollout: the current (or last) rollout as JSON (``knit.domain.rollout.Rollout``),
            written by the deployment's actor only; None before the first update.
        resources: what each instance reserves and may use, ``{"cpu": cores, "memory":
            bytes}`` (``knit.domain.resources.Resources`` as JSON), or None.
        strategy: how placement ranks nodes: ``spread`` or ``binpack``.
    """

    id: str
    name: str
    image: str
    registry_credentials_id: str | None
    network_attachments: tuple[str, ...]
    templates: tuple[Mapping[str, str], ...]
    env: Mapping[str, str]
    command: tuple[str, ...] | None
    replicas: int
    ports: tuple[Mapping[str, JSONValue], ...]
    node_selector: Mapping[str, str]
    lost_after: float
    restart_policy: Mapping[str, JSONValue]
    pending_reason: str | None
    created_at: float
    updated_at: float
    generation: int
    deleted: bool
    secret_env: tuple[str, ...] = ()
    version: int = 1
    update: Mapping[str, JSONValue] = field(default_factory=dict)
    health_check: Mapping[str, JSONValue] | None = None
    rollout: Mapping[str, JSONValue] | None = None
    resources: Mapping[str, JSONValue] | None = None
    strategy: str = "spread"

    @property
    def reserved_cpu(self) -> float:
        """Cores each instance reserves (0: none)."""
        cpu = (self.resources or {}).get("cpu")
        return float(cpu) if isinstance(cpu, int | float) else 0.0

    @property
    def reserved_memory(self) -> int:
        """Bytes each instance reserves (0: none)."""
        memory = (self.resources or {}).get("memory")
        return int(memory) if isinstance(memory, int | float) else 0

    @property
    def status(self) -> Literal["deleting", "pending", "active"]:
        """The deployment's state: deleting, pending (some instances unplaced) or active."""
        if self.deleted:
            return "deleting"
        return "pending" if self.pending_reason else "active"


@dataclass(frozen=True, slots=True)
class InstanceRecord(_JSONMixin):
    """One container of a deployment.

    Attributes:
        id: Knit's instance id (the spec's API ``id`` is ``container_id``: the API maps it).
        container_id: Docker's container id, once the container exists.
        node_id: the node it is placed on (None while unplaced).
        status: one of ``INSTANCE_STATUSES``.
        desired: False once the server wants it gone (surplus, drained, deployment deleted).
        version: the deployment version it runs.
        health: ``knit.domain.specs.Health`` as last reported.
        restarts: how many times Knit restarted it (for ``restart_policy.max_restarts``).
    """

    id: str
    container_id: str | None
    node_id: str | None
    deployment_id: str
    index: int
    status: str
    error: str | None
    exit_code: int | None
    desired: bool
    created_at: float
    updated_at: float
    version: int = 1
    health: str = "none"
    restarts: int = 0

    @classmethod
    def new(
        cls,
        deployment_id: str,
        index: int,
        *,
        at: float,
        node_id: str | None = None,
        status: str = "pending",
        instance_id: str | None = None,
    ) -> InstanceRecord:
        """A new desired instance with a fresh id (not stored yet)."""
        return cls(
            id=instance_id or new_id(),
            container_id=None,
            node_id=node_id,
            deployment_id=deployment_id,
            index=index,
            status=status,
            error=None,
            exit_code=None,
            desired=True,
            created_at=at,
            updated_at=at,
        )


@dataclass(frozen=True, slots=True)
class DeploymentVersionRecord(_JSONMixin):
    """One version of a deployment's spec (``GET /deployments/{id}/versions``).

    Attributes:
        spec: the spec as submitted, in the shape of ``POST /deployments`` except that
            ``secret_env`` is the list of the names (the values are in ``secrets_encrypted``).
        stable: its rollout completed once.
        secrets_encrypted: the secret_env values of this version, encrypted (or None);
            never in ``to_json()``.
    """

    _hidden: ClassVar[tuple[str, ...]] = ("secrets_encrypted", "deployment_id")

    deployment_id: str
    version: int
    spec: Mapping[str, JSONValue]
    created_at: float
    stable: bool
    secrets_encrypted: str | None = None


@dataclass(frozen=True, slots=True)
class InstanceStatusUpdate:
    """One status change, for ``instances.update_statuses`` (bulk).

    ``container_id`` None keeps the stored one; ``error`` and ``exit_code`` are written as
    given (None clears them).
    """

    instance_id: str
    status: str
    at: float
    container_id: str | None = None
    error: str | None = None
    exit_code: int | None = None


@dataclass(frozen=True, slots=True)
class NetworkRecord(_JSONMixin):
    """A Knit network (``driver`` "bridge" or "host"; ``subnet`` None: Docker picks)."""

    id: str
    name: str
    driver: str
    subnet: str | None
    created_at: float


@dataclass(frozen=True, slots=True)
class NodeNetworkRecord(_JSONMixin):
    """Docker's id of network ``network_id`` on node ``node_id``."""

    node_id: str
    network_id: str
    docker_id: str
    updated_at: float


@dataclass(frozen=True, slots=True)
class TaskRecord(_JSONMixin):
    """A task sent to an agent.

    Attributes:
        kind: "deploy" or "stop".
        node_id: the node it is for (None: broadcast, any node may take it).
        state: one of ``TASK_STATES``.
        attempt: 1 for the first publication, bumped on each retry.
    """

    id: str
    kind: str
    instance_id: str
    deployment_id: str
    node_id: str | None
    state: str
    attempt: int
    error: str | None
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class EventRecord(_JSONMixin):
    """Something that happened (``kind`` like "node.unhealthy", "instance.running")."""

    id: str
    at: float
    kind: str
    message: str
    node_id: str | None = None
    deployment_id: str | None = None
    instance_id: str | None = None
    task_id: str | None = None

    @classmethod
    def new(
        cls,
        kind: str,
        message: str,
        *,
        at: float,
        node_id: str | None = None,
        deployment_id: str | None = None,
        instance_id: str | None = None,
        task_id: str | None = None,
    ) -> EventRecord:
        """A new event with a fresh id (not stored yet)."""
        return cls(
            id=new_id(),
            at=at,
            kind=kind,
            message=message,
            node_id=node_id,
            deployment_id=deployment_id,
            instance_id=instance_id,
            task_id=task_id,
        )


@dataclass(frozen=True, slots=True)
class ApiTokenRecord(_JSONMixin):
    """An API token as stored: ``token_hash`` is the SHA-256 of the secret (hex).

    ``to_json()`` leaves the hash out.
    """

    _hidden: ClassVar[tuple[str, ...]] = ("token_hash",)

    id: str
    name: str
    role: str
    token_hash: str
    created_at: float
    expires_at: float | None = None


@dataclass(frozen=True, slots=True)
class JoinTokenRecord(_JSONMixin):
    """A join token as stored: ``token_hash`` is the SHA-256 of the secret (hex).

    ``to_json()`` leaves the hash out.
    """

    _hidden: ClassVar[tuple[str, ...]] = ("token_hash",)

    id: str
    token_hash: str
    uses: int
    used: int
    expires_at: float
    created_at: float
    revoked: bool = False
