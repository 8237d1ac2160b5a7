"""What users submit: Deployment, Network and RegistryCredentials specs, and their rules.

Layer: domain. Pure: imports pydantic, the standard library, ``knit.domain.templates``,
``knit.domain.mesh``, and the parts of a deployment spec kept in modules of their own:
``knit.domain.spec_rules`` (the rules they share), ``knit.domain.resources``,
``knit.domain.health_checks`` and ``knit.domain.update_policy``.

Every model forbids unknown fields and checks its rules when it is built, so the API can
reject a bad request before anything is stored (decision 0004). Problems become a list of
``{"field": "templates.0.destination", "message": "..."}`` through
``knit.domain.validation.errors_from_pydantic``; the rules that need stored state, the
server's settings or real work live there too: references, ``replicas`` against
``--max-replicas``, the registry of the image, and templates' syntax (parsing a 64 KiB
template costs up to ~0.7 s, so the server checks it in a thread, not while validating).
Building a model costs time linear in the size of the request only.
"""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    StrictFloat,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from knit.domain.health_checks import HealthCheck
from knit.domain.mesh import MESH_HOST_IP
from knit.domain.resources import Resources
from knit.domain.spec_rules import INPUT, MAX_REPLICAS, problem
from knit.domain.templates import MAX_TEMPLATE_BYTES, MAX_TEMPLATES
from knit.domain.update_policy import UpdateOrder, UpdatePolicy

FieldError = dict[str, str]
"""One problem: ``{"field": dotted path, "message": what is wrong}``."""

NAME_RE = re.compile(r"^[a-z0-9-]{1,63}$")
SUPPORTED_DRIVERS = ("bridge", "host")
DOCKER_NETWORK_NAMES = frozenset({"bridge", "host", "none"})


# --- statuses ----------------------------------------------------------------------------


class NodeStatus(StrEnum):
    """A node's health, from its heartbeats."""

    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


class InstanceStatus(StrEnum):
    """A ContainerInstance's status (``lost``: its node stopped answering)."""

    PENDING = "pending"
    RUNNING = "running"
    STOPPED = "stopped"
    ERROR = "error"
    LOST = "lost"
    UNKNOWN = "unknown"


class TaskState(StrEnum):
    """What an agent reports about a task on ``knit.task.status``."""

    ACCEPTED = "accepted"
    PROGRESS = "progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class RestartMode(StrEnum):
    """When a deployment's containers are restarted."""

    ALWAYS = "always"
    ON_FAILURE = "on-failure"
    NEVER = "never"


class NetworkDriver(StrEnum):
    """The network drivers Knit supports."""

    BRIDGE = "bridge"
    HOST = "host"


class Health(StrEnum):
    """An instance's health, from Docker's ``State.Health`` (``none``: no health check)."""

    NONE = "none"
    STARTING = "starting"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


class PlacementStrategy(StrEnum):
    """How placement ranks the nodes that fit: ``spread`` replicas over the nodes (fewest
    instances first) or ``binpack`` them onto the fullest nodes that still have room."""

    SPREAD = "spread"
    BINPACK = "binpack"


class RolloutState(StrEnum):
    """A rollout's state (``deployment.rollout.state``)."""

    RUNNING = "running"
    COMPLETE = "complete"
    PAUSED = "paused"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"


# --- rule helpers ------------------------------------------------------------------------


def _name(value: str) -> str:
    if not NAME_RE.fullmatch(value):
        raise problem("must be 1 to 63 characters of lowercase letters, digits and '-'")
    return value


def _no_blank(value: str) -> str:
    if not value.strip():
        raise problem("must not be empty")
    if any(c.isspace() for c in value) or "\x00" in value:
        raise problem("must not contain spaces or control characters")
    return value


def _env_name(key: str) -> None:
    if not key or "=" in key or "\x00" in key:
        raise problem(f"variable name {key!r} must be non-empty, without '='")


def _host_ip(value: str) -> str:
    if value == MESH_HOST_IP:
        return value
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise problem(
            f"{value!r} is not a valid IP address (nor {MESH_HOST_IP!r}: the node's mesh address)"
        ) from None


def _driver(value: object) -> object:
    if isinstance(value, str) and value not in SUPPORTED_DRIVERS:
        raise problem(f"unsupported driver {value!r}: Knit supports bridge and host")
    return value


Name = Annotated[
    str,
    AfterValidator(_name),
    Field(json_schema_extra={"pattern": NAME_RE.pattern, "minLength": 1, "maxLength": 63}),
]
Token = Annotated[str, Field(min_length=1, max_length=1024), AfterValidator(_no_blank)]
Port = Annotated[StrictInt, Field(ge=1, le=65535)]


def parse_subnet(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """Parse a subnet in strict CIDR form (``10.8.0.0/24``, no host bits, prefix required).

    Raises:
        ValueError: with a readable message.
    """
    if "/" not in value:
        raise ValueError(f"{value!r} needs a prefix length, e.g. {value}/24")
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        if "host bits set" in str(exc):
            loose = ipaddress.ip_network(value, strict=False)
            raise ValueError(f"{value!r} has host bits set; did you mean {loose}?") from None
        raise ValueError(f"{value!r} is not a valid IPv4 or IPv6 subnet") from None
    if network.num_addresses < 4:
        raise ValueError(f"{value!r} is too small for a network (use at most /30 or /126)")
    return network


# --- models ------------------------------------------------------------------------------


class TemplateSpec(BaseModel):
    """A file rendered for each instance and mounted at ``destination`` (spec 5.3).

    ``content`` is at most :data:`MAX_TEMPLATE_BYTES` (64 KiB) of UTF-8; its syntax is
    checked by ``knit.domain.validation.check_template_syntax``.
    """

    model_config = INPUT

    content: str
    destination: str

    @field_validator("content")
    @classmethod
    def _size(cls, value: str) -> str:
        # Characters first: four bytes at most each, so most templates need no encoding.
        if len(value) * 4 > MAX_TEMPLATE_BYTES and len(value.encode()) > MAX_TEMPLATE_BYTES:
            raise problem(f"a template may hold at most {MAX_TEMPLATE_BYTES // 1024} KiB")
        return value

    @field_validator("destination")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise problem(f"{value!r} must be an absolute path (start with '/')")
        if value.endswith("/") or "\x00" in value:
            raise problem(f"{value!r} must name a file")
        if any(part in (".", "..") for part in value.split("/")):
            raise problem(f"{value!r} must not contain '.' or '..'")
        return value


class PortSpec(BaseModel):
    """A container port published on the host (``host_port`` None: the Engine picks).

    ``host_ip`` is an IP address of the host, or ``"mesh"`` (``MESH_HOST_IP``): the node's
    mesh address, which its agent puts in (only members of the mesh run such a deployment).
    """

    model_config = INPUT

    container_port: Port
    host_port: Port | None = None
    host_ip: Annotated[str, AfterValidator(_host_ip)] | None = None
    protocol: Literal["tcp", "udp"] = "tcp"


class RestartPolicy(BaseModel):
    """When to restart a deployment's containers.

    Attributes:
        mode: ``always`` (default), ``on-failure`` (non-zero exit) or ``never``.
        backoff: seconds to wait before a restart.
        max_restarts: restarts before giving up (None: no limit).
    """

    model_config = INPUT

    mode: Literal["always", "on-failure", "never"] = "always"
    backoff: Annotated[StrictFloat, Field(ge=0, le=86_400)] = 1.0
    max_restarts: Annotated[StrictInt, Field(ge=0)] | None = None


class DeploymentSpec(BaseModel):
    """A deployment as submitted to ``POST /deployments`` (spec 4, ``Deployment``).

    ``secret_env`` holds environment variables whose values are secrets: ``SecretStr``, so
    they show in no repr, log or validation error; the API stores them encrypted and never
    returns them (only their names). A name may not be in both ``env`` and ``secret_env``.
    """

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    name: Name
    image: Token
    registry_credentials_id: Token | None = None
    network_attachments: list[Name] = Field(default_factory=list)
    templates: list[TemplateSpec] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    secret_env: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Secret variables: stored encrypted, answered as the list of their names",
    )
    command: list[str] | None = None
    replicas: Annotated[StrictInt, Field(ge=0, le=MAX_REPLICAS)] = 1
    ports: list[PortSpec] = Field(default_factory=list)
    node_selector: dict[str, str] = Field(default_factory=dict)
    lost_after: Annotated[StrictFloat, Field(ge=0)] = 0.0
    restart_policy: RestartPolicy = Field(default_factory=RestartPolicy)
    update: UpdatePolicy = Field(default_factory=UpdatePolicy)
    health_check: HealthCheck | None = None
    resources: Resources | None = None
    strategy: PlacementStrategy = PlacementStrategy.SPREAD

    @field_validator("network_attachments")
    @classmethod
    def _unique_networks(cls, value: list[str]) -> list[str]:
        seen: set[str] = set()
        for i, name in enumerate(value):
            if name in seen:
                raise problem(f"network {name!r} is listed twice", at=str(i))
            seen.add(name)
        return value

    @field_validator("templates")
    @classmethod
    def _unique_destinations(cls, value: list[TemplateSpec]) -> list[TemplateSpec]:
        if len(value) > MAX_TEMPLATES:
            raise problem(f"a deployment may have at most {MAX_TEMPLATES} templates")
        seen: dict[str, int] = {}
        for i, template in enumerate(value):
            first = seen.setdefault(template.destination, i)
            if first != i:
                raise problem(
                    f"{template.destination!r} is already the destination of templates.{first}",
                    at=f"{i}.destination",
                )
        return value

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for key, item in value.items():
            _env_name(key)
            if "\x00" in item:
                raise problem("values must not contain NUL characters", at=key)
        return value

    @field_validator("secret_env")
    @classmethod
    def _secret_env_names(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for key, item in value.items():
            _env_name(key)
            if "\x00" in item.get_secret_value():
                raise problem("values must not contain NUL characters", at=key)
        return value

    @model_validator(mode="after")
    def _env_or_secret(self) -> DeploymentSpec:
        both = sorted(set(self.env) & set(self.secret_env))
        if both:
            raise problem(
                f"{both[0]!r} is also in env: a variable is either secret or not",
                at=f"secret_env.{both[0]}",
            )
        return self

    @field_validator("node_selector")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not key.strip():
                raise problem("label names must not be empty")
        return value

    @field_validator("ports")
    @classmethod
    def _unique_host_ports(cls, value: list[PortSpec]) -> list[PortSpec]:
        seen: dict[tuple[str | None, int, str], int] = {}
        for i, port in enumerate(value):
            if port.host_port is None:
                continue
            first = seen.setdefault((port.host_ip, port.host_port, port.protocol), i)
            if first != i:
                raise problem(
                    f"host port {port.host_port}/{port.protocol} is already used by ports.{first}",
                    at=f"{i}.host_port",
                )
        return value

    @model_validator(mode="after")
    def _start_first_ports(self) -> DeploymentSpec:
        if self.update.order != UpdateOrder.START_FIRST:
            return self
        for i, port in enumerate(self.ports):
            if port.host_port is not None:
                raise problem(
                    f"host port {port.host_port} is fixed: with update.order start_first an "
                    "old and a new instance would need it on the same node at once; leave "
                    "host_port out (the Engine picks one) or use stop_first",
                    at=f"ports.{i}.host_port",
                )
        return self


class NetworkSpec(BaseModel):
    """A network as submitted to ``POST /networks``: ``bridge`` (subnet optional) or ``host``."""

    model_config = INPUT

    name: Name
    driver: Annotated[
        Literal["bridge", "host"],
        BeforeValidator(_driver),
        Field(json_schema_extra={"description": "bridge or host"}),
    ] = "bridge"
    subnet: str | None = None

    @field_validator("subnet")
    @classmethod
    def _subnet(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if info.data.get("driver") == "host":
            raise problem("a host network has no subnet: leave it out")
        try:
            return str(parse_subnet(value))
        except ValueError as exc:
            raise problem(str(exc)) from None

    @model_validator(mode="after")
    def _not_docker_default(self) -> NetworkSpec:
        if self.driver == "bridge" and self.name in DOCKER_NETWORK_NAMES:
            raise problem(f"{self.name!r} is the name of Docker's own network", at="name")
        return self


class RegistryCredentialsSpec(BaseModel):
    """Credentials for a private registry, as submitted to ``POST /registries``.

    The password is a ``SecretStr``: it never shows in a repr, a log or a validation error.
    """

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    # The lengths of the store's columns (PostgreSQL refuses longer values).
    url: Annotated[str, Field(min_length=1, max_length=512), AfterValidator(_no_blank)]
    username: Annotated[str, Field(min_length=1, max_length=255)]
    password: Annotated[SecretStr, Field(min_length=1)]

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        try:
            registry_server(value)
        except ValueError as exc:
            raise problem(str(exc)) from None
        return value

    @property
    def server(self) -> str:
        """The ``host[:port]`` Docker authenticates against (``url`` without scheme or path)."""
        return registry_server(self.url)


def registry_server(url: str) -> str:
    """The ``host[:port]`` of a registry URL (``https://r.example:5000/v2/`` → ``r.example:5000``).

    Raises:
        ValueError: the URL has no host, or a scheme other than http/https.
    """
    rest = url
    if "://" in url:
        scheme, rest = url.split("://", 1)
        if scheme not in ("http", "https"):
            raise ValueError(f"{url!r}: the scheme must be http or https")
    host = rest.split("/", 1)[0]
    if not host or host.startswith(":"):
        raise ValueError(f"{url!r} has no host")
    return host


__all__ = [
    "DeploymentSpec",
    "FieldError",
    "Health",
    "InstanceStatus",
    "NetworkDriver",
    "NetworkSpec",
    "NodeStatus",
    "PlacementStrategy",
    "PortSpec",
    "RegistryCredentialsSpec",
    "RestartMode",
    "RestartPolicy",
    "RolloutState",
    "TaskState",
    "TemplateSpec",
    "parse_subnet",
    "registry_server",
]
