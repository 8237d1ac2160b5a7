"""Scenarios: what a simulation run does, read from small TOML files.

Layer: simulations. Imports the standard library, pydantic (validation only), ``knit.config``
(the default heartbeat interval and node TTL), ``knit.errors``, ``knit.domain.update_policy``
(``UpdatePolicy``, an update's ``policy``) and ``simulations.profile`` (``SimProfile``, the
``[profile]`` table).

A run goes through phases: start nats-server and ``knit server``; start ``agents`` simulated
agents and wait until all registered (``timeouts.registration_s``); create ``deployments`` and
wait until every replica runs (``timeouts.placement_s``); then the steady phase of
``duration_s`` seconds, during which ``churn`` deploys and deletes, ``api_clients`` query the
API, ``faults`` fire and ``updates`` change deployments ``at_s`` seconds after the steady phase
began (the phase lasts until the last rollout ended, each within ``timeouts.rollout_s``); then
shut down (``timeouts.shutdown_s``). A file looks like::

    description = "100 agents, 1,000 containers"
    agents = 100
    duration_s = 10

    [profile]                # SimProfile fields; a latency is seconds or [low, high]
    start_latency = [0.005, 0.02]

    [[deployments]]
    count = 10
    replicas = 100
    name_prefix = "smoke"

    [[faults]]
    at_s = 5
    kill_agents_percent = 10

    [[updates]]              # a rolling update of every deployment of a group
    at_s = 2
    name_prefix = "smoke"
    env = { VERSION = "2" }
    policy = { max_parallel = 10, order = "start_first", min_healthy_time = 1 }
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    TypeAdapter,
    ValidationError,
)

from knit.config import DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_NODE_TTL
from knit.domain.update_policy import UpdatePolicy
from knit.errors import KnitError
from simulations.profile import SimProfile

SCENARIOS_DIR = Path(__file__).parent / "scenarios"
"""Where ``load_scenario`` finds scenarios by name."""

Percent = Annotated[float, Field(gt=0, le=100)]
NamePrefix = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,49}$")]
FaultKind = Literal["kill", "partition", "restart_nats"]
# Nested stdlib dataclasses without a config of their own (SimProfile) inherit this one.
_FORBID_UNKNOWN = ConfigDict(extra="forbid")


class ScenarioError(KnitError):
    """A scenario cannot be found, parsed or validated; the message says where and why."""


@dataclass(frozen=True)
class DeploymentGroup:
    """``count`` deployments named ``{name_prefix}-{i}``, each of ``replicas`` containers.

    ``node_selector`` restricts them to agents carrying those labels (see ``AgentLabels``).
    ``update``, their update policy (``knit.domain.update_policy.UpdatePolicy``; None: the server's
    default), governs their first rollout already: an ``[[updates]]`` entry waits for it.
    """

    __pydantic_config__ = _FORBID_UNKNOWN

    count: PositiveInt
    replicas: PositiveInt = 1
    name_prefix: NamePrefix = "app"
    image: str = "knit-sim/app:1"
    node_selector: dict[str, str] = field(default_factory=dict)
    update: UpdatePolicy | None = None

    @property
    def containers(self) -> int:
        """How many containers the group asks for."""
        return self.count * self.replicas


@dataclass(frozen=True)
class AgentLabels:
    """Give ``labels`` to ``percent`` % of the agents (the first ones, in a stable order)."""

    __pydantic_config__ = _FORBID_UNKNOWN

    percent: Percent
    labels: dict[str, str]


@dataclass(frozen=True)
class Churn:
    """Deployments created and deleted per second during the steady phase (Poisson arrivals).

    Churned deployments have ``replicas`` each and names ``{name_prefix}-{i}``; only they are
    deleted, never the initial ones.
    """

    __pydantic_config__ = _FORBID_UNKNOWN

    deploy_per_s: NonNegativeFloat = 0.0
    delete_per_s: NonNegativeFloat = 0.0
    replicas: PositiveInt = 1
    name_prefix: NamePrefix = "churn"


@dataclass(frozen=True)
class Fault:
    """One fault, ``at_s`` seconds into the steady phase. Exactly one kind is set.

    Attributes:
        at_s: when it fires.
        kill_agents_percent: kill that share of the agents (they never come back).
        partition_agents_percent: cut that share of the agents off NATS; they reconnect after
            ``heal_after_s`` (None: never).
        restart_nats: SIGKILL the server's nats-server (the server starts it again).
        heal_after_s: for a partition only.
    """

    __pydantic_config__ = _FORBID_UNKNOWN

    at_s: NonNegativeFloat
    kill_agents_percent: Percent | None = None
    partition_agents_percent: Percent | None = None
    restart_nats: bool = False
    heal_after_s: PositiveFloat | None = None

    def __post_init__(self) -> None:
        kinds = [self.kill_agents_percent is not None, self.partition_agents_percent is not None]
        if kinds.count(True) + self.restart_nats != 1:
            raise ValueError(
                "a fault sets exactly one of kill_agents_percent, partition_agents_percent, "
                "restart_nats = true"
            )
        if self.heal_after_s is not None and self.partition_agents_percent is None:
            raise ValueError("heal_after_s applies to partition_agents_percent only")

    @property
    def kind(self) -> FaultKind:
        """ "kill", "partition" or "restart_nats"."""
        if self.kill_agents_percent is not None:
            return "kill"
        return "partition" if self.partition_agents_percent is not None else "restart_nats"

    @property
    def percent(self) -> float | None:
        """The share of agents concerned (None for a NATS restart)."""
        return self.kill_agents_percent or self.partition_agents_percent


@dataclass(frozen=True)
class DeploymentUpdate:
    """A rolling update: ``at_s`` seconds into the steady phase, every deployment of the group
    ``name_prefix`` gets its spec again (``PUT /deployments/{id}``) with ``env`` merged into
    its environment, ``image`` if set, and ``policy`` as its update policy.

    Updates of the same group run one after the other: a deployment's update is sent at
    ``at_s`` or once the deployment's rollout before it ended (the first one too: creating a
    deployment rolls out its version 1), whichever comes later.

    Attributes:
        at_s: the earliest moment it is sent.
        name_prefix: the ``[[deployments]]`` group it changes.
        env: environment variables set (the change that makes a new version).
        image: a new image (None: the same).
        policy: the update policy (``knit.domain.update_policy.UpdatePolicy``: ``max_parallel``,
            ``order``, ``min_healthy_time``, ``healthy_deadline``, ``on_failure``).
    """

    __pydantic_config__ = _FORBID_UNKNOWN

    at_s: NonNegativeFloat
    name_prefix: NamePrefix
    env: dict[str, str] = field(default_factory=dict)
    image: str | None = None
    policy: UpdatePolicy = field(default_factory=UpdatePolicy)

    def __post_init__(self) -> None:
        if not self.env and self.image is None:
            raise ValueError("an update changes env or image (an identical spec rolls nothing)")


@dataclass(frozen=True)
class Timeouts:
    """Deadlines, in seconds, of the phases; a run past one stops and reports failure.

    ``rollout_s`` counts from an update's ``PUT`` to its rollout's end (complete, paused or
    rolled back).
    """

    __pydantic_config__ = _FORBID_UNKNOWN

    start_s: PositiveFloat = 30.0
    registration_s: PositiveFloat = 60.0
    placement_s: PositiveFloat = 120.0
    replace_s: PositiveFloat = 120.0
    rollout_s: PositiveFloat = 300.0
    shutdown_s: PositiveFloat = 30.0


@dataclass(frozen=True)
class Scenario:
    """Everything a run needs (see the module docstring for the phases).

    Attributes:
        name: the file's stem unless the file says otherwise.
        agents: how many simulated agents.
        duration_s: length of the steady phase.
        description: one line for humans.
        heartbeat_interval: seconds between an agent's heartbeats.
        node_ttl: seconds without a heartbeat before the server marks a node unhealthy.
        agents_per_connection: agents sharing one NATS connection. 1: each agent connects
            with its own node credentials, as on a host of its own. More: a worker's agents
            share connections made with bus credentials for the agents' subjects
            (``POST /bus-credentials``); each agent still joined and proves every message
            with its own keys. Thousands of connections from two processes cost the
            machine a core (docs/performance.md).
        processes: processes the agents are spread over.
        agent_labels: labels given to shares of the agents.
        profile: how every simulated runtime behaves.
        deployments: created before the steady phase.
        churn: deploys and deletes during the steady phase.
        faults: fired during the steady phase.
        updates: rolling updates during the steady phase.
        api_clients: concurrent HTTP API clients during the steady phase.
        timeouts: phase deadlines.
    """

    __pydantic_config__ = _FORBID_UNKNOWN

    name: Annotated[str, Field(min_length=1)]
    agents: PositiveInt
    duration_s: PositiveFloat
    description: str = ""
    heartbeat_interval: PositiveFloat = DEFAULT_HEARTBEAT_INTERVAL
    node_ttl: PositiveFloat = DEFAULT_NODE_TTL
    agents_per_connection: PositiveInt = 1
    processes: PositiveInt = 1
    agent_labels: tuple[AgentLabels, ...] = ()
    profile: SimProfile = field(default_factory=SimProfile)
    deployments: tuple[DeploymentGroup, ...] = ()
    churn: Churn = field(default_factory=Churn)
    faults: tuple[Fault, ...] = ()
    updates: tuple[DeploymentUpdate, ...] = ()
    api_clients: NonNegativeInt = 0
    timeouts: Timeouts = field(default_factory=Timeouts)

    def __post_init__(self) -> None:
        if self.node_ttl <= self.heartbeat_interval:
            raise ValueError("node_ttl must be longer than heartbeat_interval")
        if self.processes > self.agents:
            raise ValueError("processes must not outnumber agents")
        prefixes = [g.name_prefix for g in self.deployments]
        if self.churn.deploy_per_s:
            prefixes.append(self.churn.name_prefix)
        if len(set(prefixes)) != len(prefixes):
            raise ValueError("deployment groups and churn need distinct name_prefix values")
        for fault in self.faults:
            if fault.at_s >= self.duration_s:
                raise ValueError(f"a fault at {fault.at_s:g} s falls after duration_s")
        groups = {g.name_prefix for g in self.deployments}
        for update in self.updates:
            if update.at_s >= self.duration_s:
                raise ValueError(f"an update at {update.at_s:g} s falls after duration_s")
            if update.name_prefix not in groups:
                raise ValueError(
                    f"an update names {update.name_prefix!r}, which no [[deployments]] group is"
                )

    @property
    def containers(self) -> int:
        """How many containers the initial deployments ask for."""
        return sum(group.containers for group in self.deployments)


_ADAPTER: TypeAdapter[Scenario] = TypeAdapter(Scenario)
_MESSAGES = {
    "unexpected_keyword_argument": "unknown setting",
    "extra_forbidden": "unknown setting",  # in a pydantic model (an update's ``policy``)
    "missing_argument": "required setting is missing",
    "missing": "required setting is missing",
}
_UNION_MEMBERS = frozenset({"float", "int", "str", "bool", "frozenset", "none"})


def list_scenarios() -> list[str]:
    """Return the names of the scenarios shipped in ``SCENARIOS_DIR``."""
    return sorted(path.stem for path in SCENARIOS_DIR.glob("*.toml"))


def scenario_path(name_or_path: str | Path) -> Path:
    """Resolve a path, or a scenario name under ``SCENARIOS_DIR``.

    Raises:
        ScenarioError: neither a file nor a shipped scenario's name.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    if isinstance(name_or_path, str) and path.name == name_or_path and not path.suffix:
        shipped = SCENARIOS_DIR / f"{name_or_path}.toml"
        if shipped.is_file():
            return shipped
    known = ", ".join(list_scenarios()) or "none"
    raise ScenarioError(f"no scenario {str(name_or_path)!r}: not a file, nor one of: {known}")


def load_scenario(name_or_path: str | Path) -> Scenario:
    """Read and validate a scenario: a TOML file's path, or a name such as ``"smoke"``.

    Raises:
        ScenarioError: the file is missing, is not TOML, or breaks a rule; the message names
            the file and every offending setting.
    """
    path = scenario_path(name_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: cannot read it: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from exc
    return parse_scenario({"name": path.stem, **data}, source=str(path))


def parse_scenario(data: Mapping[str, Any], *, source: str = "<scenario>") -> Scenario:
    """Validate a scenario given as a mapping (the TOML document).

    Raises:
        ScenarioError: a rule is broken; ``source`` starts the message.
    """
    try:
        return _ADAPTER.validate_python(dict(data))
    except ValidationError as exc:
        problems = _describe(exc.errors(include_url=False))
        raise ScenarioError(f"{source}: invalid scenario:\n  " + "\n  ".join(problems)) from exc


def _describe(errors: list[Any]) -> list[str]:
    """One line per offending setting: ``deployments[0].replicas: ...``."""
    found: dict[str, list[str]] = {}
    for error in errors:
        where = ""
        for part in error["loc"]:
            if isinstance(part, int):
                where += f"[{part}]"
            elif part not in _UNION_MEMBERS and "[" not in part:  # not "float", "tuple[...]"
                where += f".{part}" if where else part
        message = _MESSAGES.get(error["type"], error["msg"]).removeprefix("Value error, ")
        found.setdefault(where or "scenario", []).append(message)
    return [f"{where}: {' or '.join(messages)}" for where, messages in found.items()]
