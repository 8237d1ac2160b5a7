"""The closed set of messages Knit sends on NATS, typed and versioned, and their codec.

Layer: wire. Pure: imports pydantic, ``knit.wire.errors``, ``knit.ids`` and the standard library
only.

Every message has ``v`` (the schema version, :data:`SCHEMA_VERSION`), ``msg_id`` (a hex id,
new for each message) and ``kind`` (which message it is). Messages are frozen pydantic models
encoded as JSON by pydantic-core (``encode``) and decoded strictly (``decode_*``): a wrong type
is an error, never coerced. A message from a newer peer (``v`` > 1) is refused with
:class:`~knit.wire.errors.UnsupportedVersion`; one without ``v`` is read as v1. Unknown
fields are ignored, so adding an optional field keeps ``v`` at 1; removing a field or
changing its meaning bumps it.

Measured on this machine (tests/wire/test_messages.py prints it with ``-s``): decoding is
bound by JSON parsing itself. A heartbeat reporting 50 instances (11.5 KB) decodes in
~80 µs (``json.loads`` alone takes ~60 µs) and encodes in ~35 µs; one with no instances
decodes in ~5 µs. 2,000 heartbeats/s of 50 instances each cost ~0.16 of a core to decode:
that is why most heartbeats carry only the differences of the report (``full=False``, see
:class:`Heartbeat` and docs/decisions/0010-heartbeat-differences.md).

| subject                 | message                              |
|-------------------------|--------------------------------------|
| ``knit.agent.heartbeat``  | :class:`Heartbeat`                   |
| ``knit.tasks.*``          | :data:`Task` (:class:`DeployTask` or :class:`StopTask`) |
| ``knit.task.status``      | :class:`TaskStatus`                  |
"""

from __future__ import annotations

import json
from typing import Annotated, Final, Literal, TypeVar

import pydantic
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from knit.ids import ID_PATTERN, new_id
from knit.trust.macs import decode_x25519_public
from knit.wire.errors import UnsupportedVersion, WireError

SCHEMA_VERSION: Final = 1
"""The version of every message this build sends and the only one it accepts."""

InstanceStatusName = Literal["pending", "running", "stopped", "error", "lost", "unknown"]
"""Values of ``knit.domain.specs.InstanceStatus``."""

HealthName = Literal["none", "starting", "healthy", "unhealthy"]
"""An instance's health (``knit.domain.specs.Health``): Docker's ``State.Health.Status``, or
``none`` for a container without a health check."""
TaskStateName = Literal["accepted", "progress", "succeeded", "failed"]
"""Values of ``knit.domain.specs.TaskState``."""

NodeId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,128}$")]
Id = Annotated[str, Field(min_length=1, max_length=128)]
KnitId = Annotated[str, Field(pattern=ID_PATTERN)]
"""An id Knit made (``knit.ids``): what tasks carry, since the agent names folders and labels
with them. A forged ``../../etc`` is refused when the task is decoded."""
ContainerId = Annotated[str, Field(pattern=r"^[0-9A-Za-z][0-9A-Za-z_.-]{0,127}$")]
"""A container id as a runtime reports it (the Engine's: 64 hex digits): a name, never a path.
The agent only echoes it (it finds containers by their instance label)."""
Name = Annotated[str, Field(pattern=r"^[a-z0-9-]{1,63}$")]
"""A deployment's or a network's name (``knit.domain.specs.NAME_RE``)."""
ImageRef = Annotated[str, Field(min_length=1, max_length=1024, pattern=r"^[^\s\x00-\x1f]+$")]
"""An image reference: no spaces or control characters (the Engine parses the rest)."""
Seconds = Annotated[float, Field(ge=0)]


def new_msg_id() -> str:
    """A fresh message id (time-ordered hex; see ``knit.ids``)."""
    return new_id()


class Struct(BaseModel):
    """A frozen part of a message."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class WireMessage(Struct):
    """Fields every message carries."""

    v: Literal[1] = SCHEMA_VERSION
    msg_id: Id = Field(default_factory=new_msg_id)


# --- knit.agent.heartbeat ----------------------------------------------------------------


class Capacity(Struct):
    """What a node offers."""

    cpus: Annotated[int, Field(ge=0)]
    memory_bytes: Annotated[int, Field(ge=0)]


class InstanceReport(Struct):
    """One Knit container on a node, as the agent sees it (part of the status report)."""

    instance_id: Id
    deployment_id: Id
    container_id: str | None = None
    status: InstanceStatusName
    error: str | None = None
    exit_code: int | None = None
    health: HealthName = "none"


def report_changed(before: InstanceReport | None, report: InstanceReport) -> bool:
    """Whether ``report`` says something ``before`` (the same instance's earlier report, or
    None) did not.

    Compared field by field: pydantic's ``__eq__`` is slow, and tuples to compare would be
    more garbage. The agent uses it to build a heartbeat's differences and the server to
    find what to forward, so both agree on what a change is.
    """
    return before is not report and (
        before is None
        or before.status != report.status
        or before.container_id != report.container_id
        or before.exit_code != report.exit_code
        or before.error != report.error
        or before.deployment_id != report.deployment_id
        or before.health != report.health
    )


class Heartbeat(WireMessage):
    """Registration (``first``) and periodic heartbeat of an agent, with its instances.

    A heartbeat is either full (``full=True``: ``instances`` is every Knit instance on the
    node) or carries the differences only (``full=False``): ``instances`` holds the reports
    that are new or differ from those of the heartbeat ``seq - 1`` (the previous one this
    agent sent) and ``removed`` the ids that heartbeat listed and the node no longer has.
    The registration is always full. A receiver that did not apply heartbeat ``seq - 1``
    cannot apply a difference and waits for the next full one (see knit.agent.heartbeat).

    Attributes:
        seq: 0 for the registration, then +1 per heartbeat sent.
        public_key: the node's X25519 public key (base64 of 32 bytes); credentials in tasks
            are sealed to it.
        interval: seconds until the next heartbeat (the server derives its deadline).
        full: whether ``instances`` is the node's whole report (the default, so a
            heartbeat from an agent that predates differences is full).
        instances: every Knit instance on the node (``full``), or the new and changed ones.
        removed: ids of instances gone since heartbeat ``seq - 1`` (only when not ``full``).
        sent_at: the agent's clock when the report was taken (seconds since the epoch).
        allow_host_network: the agent was started with ``--allow-host-network``: it runs
            deployments on ``host`` networks (the scheduler places them only there).
        mesh_endpoint: where the node's WireGuard port is reached now (``HOST:PORT``;
            None: not a member of the mesh). The server pushes a change to every member.
    """

    kind: Literal["heartbeat"] = "heartbeat"
    node_id: NodeId
    hostname: str
    seq: Annotated[int, Field(ge=0)]
    first: bool = False
    capacity: Capacity
    labels: dict[str, str] = Field(default_factory=dict)
    docker_version: str = ""
    agent_version: str = ""
    public_key: str
    interval: Annotated[float, Field(gt=0)] = 5.0
    full: bool = True
    instances: list[InstanceReport] = Field(default_factory=list)
    removed: list[Id] = Field(default_factory=list)
    sent_at: Seconds
    allow_host_network: bool = False
    mesh_endpoint: Annotated[str, Field(max_length=262)] | None = None

    @field_validator("public_key")
    @classmethod
    def _x25519(cls, value: str) -> str:
        decode_x25519_public(value)  # ValueError says what is wrong
        return value

    @model_validator(mode="after")
    def _full_or_differences(self) -> Heartbeat:
        if self.full and self.removed:
            raise ValueError("removed must be empty in a full heartbeat")
        if self.first and not self.full:
            raise ValueError("the registration (first) must be full")
        return self


# --- knit.tasks.{node_id} and knit.tasks.broadcast ----------------------------------------


class TaskTemplate(Struct):
    """A template to render and mount at ``destination`` (an absolute path of a file)."""

    content: str
    destination: str

    @field_validator("destination")
    @classmethod
    def _absolute_file(cls, value: str) -> str:
        parts = value.split("/")
        if not value.startswith("/") or value.endswith("/") or "\x00" in value:
            raise ValueError("must be an absolute path of a file")
        if any(part in (".", "..") for part in parts):
            raise ValueError("must not contain '.' or '..'")
        return value


class TaskPort(Struct):
    """A port to publish."""

    container_port: Annotated[int, Field(ge=1, le=65535)]
    host_port: Annotated[int, Field(ge=1, le=65535)] | None = None
    host_ip: str | None = None
    protocol: Literal["tcp", "udp"] = "tcp"


class NetworkAttachment(Struct):
    """A network to attach the container to, with what the agent needs to create it."""

    name: Name
    driver: Literal["bridge", "host"] = "bridge"
    subnet: str | None = None


class TaskRestartPolicy(Struct):
    """When the container is restarted."""

    mode: Literal["always", "on-failure", "never"] = "always"
    backoff: Seconds = 1.0
    max_restarts: Annotated[int, Field(ge=0)] | None = None


class TaskHealthCheck(Struct):
    """A health check for Docker to run in the container (seconds; see
    ``knit.domain.health_checks.HealthCheck``)."""

    command: Annotated[list[str], Field(min_length=1)]
    interval: Annotated[float, Field(gt=0)] = 10.0
    timeout: Annotated[float, Field(gt=0)] = 5.0
    retries: Annotated[int, Field(ge=1)] = 3
    start_period: Seconds = 0.0


class TaskResources(Struct):
    """Limits on the container (see ``knit.domain.resources.Resources``): ``cpu`` cores
    (Docker's ``NanoCpus``), ``memory`` bytes (``Memory``); None: no limit."""

    cpu: Annotated[float, Field(gt=0)] | None = None
    memory: Annotated[int, Field(gt=0)] | None = None


class TaskDeployment(Struct):
    """The part of a deployment an agent needs to run one of its instances."""

    id: KnitId
    name: Name
    image: ImageRef
    command: list[str] | None = None
    env: dict[str, str] = Field(default_factory=dict)
    templates: list[TaskTemplate] = Field(default_factory=list)
    ports: list[TaskPort] = Field(default_factory=list)
    network_attachments: list[NetworkAttachment] = Field(default_factory=list)
    restart_policy: TaskRestartPolicy = Field(default_factory=TaskRestartPolicy)
    health_check: TaskHealthCheck | None = None
    resources: TaskResources | None = None

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for key, item in value.items():
            if not key or "=" in key or "\x00" in key or "\x00" in item:
                raise ValueError("names must be non-empty, without '=' or NUL; values without NUL")
        return value


class SealedCredentials(Struct):
    """Registry credentials; the password sealed to the target node (``knit.secrets.seal``)."""

    server: str
    username: str
    sealed_password: str = Field(repr=False)


class DeployTask(WireMessage):
    """Run one instance of a deployment. ``task_id`` is the same on every re-delivery.

    Attributes:
        node_id: the node it is for (None: any node, on the broadcast subject); an agent
            refuses a task for another node.
        expires_at: the server's clock after which the task must not be started (seconds
            since the epoch); None only on an open bus (``--insecure-bus``).
        credentials: the registry credentials, the password sealed to the node with
            ``knit.secrets.registry_aad(node, task, registry)``.
        sealed_env: the deployment's ``secret_env`` as a JSON object, sealed to the node
            with ``knit.secrets.env_aad(node, task)`` (None: it has none).
        restart: restart the instance's container even if it runs (it turned unhealthy);
            otherwise a running container is left as it is.
    """

    kind: Literal["deploy"] = "deploy"
    task_id: KnitId
    instance_id: KnitId
    deployment: TaskDeployment
    instance_index: Annotated[int, Field(ge=0)]
    credentials: SealedCredentials | None = None
    sealed_env: str | None = Field(default=None, repr=False)
    attempt: Annotated[int, Field(ge=1)] = 1
    node_id: NodeId | None = None
    expires_at: Seconds | None = None
    restart: bool = False


class StopTask(WireMessage):
    """Stop an instance's container, and remove it (and its files) unless ``remove`` is False.

    ``node_id`` and ``expires_at`` as for :class:`DeployTask`.
    """

    kind: Literal["stop"] = "stop"
    task_id: KnitId
    instance_id: KnitId
    container_id: ContainerId | None = None
    remove: bool = True
    node_id: NodeId | None = None
    expires_at: Seconds | None = None


Task = Annotated[DeployTask | StopTask, Field(discriminator="kind")]
"""A task for an agent, told apart by ``kind``."""


# --- knit.task.status -------------------------------------------------------------------


class TaskStatus(WireMessage):
    """An agent's report on a task: accepted, progress, succeeded or failed.

    Attributes:
        container_id: the container, once known (always on ``succeeded`` of a deploy).
        error: why it failed (on ``failed``).
        step: the step reached or failed (``pull``, ``create``, ``start``, ...).
        at: the agent's clock (seconds since the epoch).
        health: the container's health when a deploy succeeded (None: not known).
    """

    kind: Literal["task_status"] = "task_status"
    task_id: Id
    instance_id: Id
    node_id: NodeId
    state: TaskStateName
    container_id: str | None = None
    error: str | None = None
    step: str | None = None
    at: Seconds
    health: HealthName | None = None


Message = Annotated[Heartbeat | DeployTask | StopTask | TaskStatus, Field(discriminator="kind")]
"""Any message Knit sends."""


# --- codec -------------------------------------------------------------------------------

M = TypeVar("M")
_TASK: TypeAdapter[DeployTask | StopTask] = TypeAdapter(Task)
_MESSAGE: TypeAdapter[Heartbeat | DeployTask | StopTask | TaskStatus] = TypeAdapter(Message)
_HEARTBEAT = TypeAdapter(Heartbeat)
_STATUS = TypeAdapter(TaskStatus)


def encode(message: WireMessage) -> bytes:
    """Serialize a message to the JSON bytes published on NATS."""
    return message.__pydantic_serializer__.to_json(message)


def decode_heartbeat(payload: bytes | str) -> Heartbeat:
    """Decode a ``knit.agent.heartbeat`` message.

    Raises:
        UnsupportedVersion: the message is from a newer schema version.
        WireError: anything else wrong (not JSON, not a heartbeat, a field invalid).
    """
    return _decode(_HEARTBEAT, payload, "heartbeat")


def decode_task(payload: bytes | str) -> DeployTask | StopTask:
    """Decode a task from ``knit.tasks.{node_id}`` or ``knit.tasks.broadcast``.

    Raises:
        UnsupportedVersion: the message is from a newer schema version.
        WireError: anything else wrong.
    """
    return _decode(_TASK, payload, "task")


def decode_status(payload: bytes | str) -> TaskStatus:
    """Decode a ``knit.task.status`` message.

    Raises:
        UnsupportedVersion: the message is from a newer schema version.
        WireError: anything else wrong.
    """
    return _decode(_STATUS, payload, "task status")


def decode(payload: bytes | str) -> Heartbeat | DeployTask | StopTask | TaskStatus:
    """Decode any message, whatever its kind.

    Raises:
        UnsupportedVersion: the message is from a newer schema version.
        WireError: anything else wrong.
    """
    return _decode(_MESSAGE, payload, "message")


def _decode(adapter: TypeAdapter[M], payload: bytes | str, what: str) -> M:
    try:
        return adapter.validate_json(payload, strict=True)
    except pydantic.ValidationError as exc:
        raise _explain(exc, payload, what) from exc


def _explain(exc: pydantic.ValidationError, payload: bytes | str, what: str) -> WireError:
    """The WireError for a payload that failed validation; the version is checked first."""
    try:
        data = json.loads(payload)
    except ValueError:
        return WireError(f"invalid {what}: not valid JSON")
    if not isinstance(data, dict):
        return WireError(f"invalid {what}: not a JSON object")
    version = data.get("v", SCHEMA_VERSION)
    if version != SCHEMA_VERSION or isinstance(version, bool):
        return UnsupportedVersion(version, SCHEMA_VERSION)
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        field = ".".join(str(part) for part in error["loc"]) or "message"
        message = error["msg"]
        if error["type"] == "union_tag_invalid":
            field, message = "kind", f"{data.get('kind')!r} is not a {what}"
        problems.append({"field": field, "message": message})
    summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems[:5])
    return WireError(f"invalid {what}: {summary}", problems)


__all__ = [
    "SCHEMA_VERSION",
    "Capacity",
    "DeployTask",
    "Heartbeat",
    "InstanceReport",
    "InstanceStatusName",
    "Message",
    "NetworkAttachment",
    "SealedCredentials",
    "StopTask",
    "Task",
    "TaskDeployment",
    "TaskPort",
    "TaskResources",
    "TaskRestartPolicy",
    "TaskStateName",
    "TaskStatus",
    "TaskTemplate",
    "WireMessage",
    "decode",
    "decode_heartbeat",
    "decode_status",
    "decode_task",
    "encode",
    "report_changed",
]
