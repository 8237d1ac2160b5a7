"""Running one task on this node: deploy an instance, or stop one.

Layer: agent. The deploy task is a sequence of small steps (Nomad's task-runner hooks):
adopt, credentials, secrets, pull, networks, templates, create, start. Each step names itself
(:class:`Step`), so a failure reaches the server as ``failed`` with the step and a readable
reason, and nothing hangs: the whole task runs under a deadline.

The agent defends itself (docs/security.md): before anything else, a deploy task that asks
for host networking on an agent started without ``--allow-host-network``, or whose registry
credentials are for another registry than its image's, fails (steps ``network`` and
``credentials``); sealed secrets open only with the associated data that binds them to this
node, this task and (for a password) this registry; and every path written or deleted must
be the instance's own folder (``knit.agent.paths``; step ``files``).

A port published with ``host_ip: "mesh"`` is bound to the node's mesh address; on a node
that is not a member of the mesh such a task fails at ``create`` before anything is done.

A deploy task with ``restart`` restarts its instance's running container (stop with
``STOP_GRACE``, then start: the same container); without it a running container is left as
it is. The task's id is what makes a restart happen once: the intake runs a task id once.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, TypeVar

import anyio

from knit.agent.context import LABEL_INSTANCE, AgentContext
from knit.agent.paths import PathRefused
from knit.domain.images import registry_mismatch
from knit.domain.mesh import MESH_HOST_IP
from knit.errors import KnitError, RuntimeFailure, SecretError, TemplateError
from knit.ids import new_id
from knit.runtime.base import (
    HEALTH_NONE,
    ContainerSpec,
    ContainerState,
    HealthCheck,
    Mount,
    PortBinding,
    RegistryAuth,
)
from knit.secrets import env_aad, registry_aad
from knit.wire import subjects
from knit.wire.messages import (
    DeployTask,
    StopTask,
    Task,
    TaskHealthCheck,
    TaskPort,
    TaskStateName,
    TaskStatus,
    encode,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

STOP_GRACE = 10.0
"""Seconds a stopped container gets between SIGTERM and SIGKILL."""


class Step(StrEnum):
    """The steps of a task, as a failure names them (``TaskStatus.step``)."""

    CREDENTIALS = "credentials"
    SECRETS = "secrets"
    PULL = "pull"
    NETWORK = "network"
    TEMPLATES = "templates"
    FILES = "files"
    CREATE = "create"
    START = "start"
    STOP = "stop"
    REMOVE = "remove"
    TIMEOUT = "timeout"
    AGENT = "agent"


class StepFailed(KnitError):
    """A step of a task failed; ``step`` names it, the message says why."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"{step}: {reason}")
        self.step = step
        self.reason = reason


@dataclass(frozen=True)
class Deployed:
    """What a deploy task did: the container that runs, and whether it has a health check
    (None: not known here, as when it was made without one: its image may have one)."""

    container_id: str
    has_check: bool | None


def container_name(deployment_name: str, index: int, instance_id: str) -> str:
    """A readable, unique Docker name for an instance's container (with the end of the
    instance's id: its beginning is the time it was made, shared by its neighbours)."""
    return f"knit-{deployment_name}-{index}-{instance_id[-8:]}"


async def find_instance_container(ctx: AgentContext, instance_id: str) -> ContainerState | None:
    """The container of ``instance_id`` on this node, if one exists (in any state)."""
    found = await ctx.runtime.list({LABEL_INSTANCE: instance_id, "knit.node": ctx.node_id})
    return found[0] if found else None


async def deploy(ctx: AgentContext, task: DeployTask) -> Deployed:
    """Make the instance of ``task`` run here; return its container.

    Idempotent: a container already labelled with the instance id is adopted (started if it
    had stopped; restarted if it runs and the task says ``restart``), never duplicated.

    Raises:
        StepFailed: a step failed, or the task asks for what this agent refuses; nothing of
            this attempt is left running.
    """
    spec = task.deployment
    refusal = refuse(ctx, task)
    if refusal is not None:
        raise refusal
    existing = await find_instance_container(ctx, task.instance_id)
    if existing is not None and existing.state == "running":
        # Docker's list is a view that may lag its events (a container that has just exited
        # can still be listed running): ask the container itself before trusting it.
        existing = await _step(Step.START, ctx.runtime.inspect(existing.id))
    if existing is not None:
        return await adopt(ctx, task, existing)

    auth = open_credentials(ctx, task)
    env = dict(spec.env)
    env.update(open_secret_env(ctx, task))
    # With credentials, always pull: it checks them even when the image is cached.
    if auth is not None or not await ctx.runtime.has_image(spec.image):
        await _step(Step.PULL, ctx.runtime.pull(spec.image, auth))

    networks: list[str] = []
    network_mode: Literal["host"] | None = None
    for attachment in spec.network_attachments:
        if attachment.driver == "host":
            network_mode = "host"
            continue
        await _step(
            Step.NETWORK,
            ctx.runtime.ensure_network(
                attachment.name, attachment.subnet, {"knit.network": attachment.name}
            ),
        )
        networks.append(attachment.name)

    mounts = await render_templates(ctx, task)
    container = ContainerSpec(
        name=container_name(spec.name, task.instance_index, task.instance_id),
        image=spec.image,
        command=list(spec.command) if spec.command else None,
        env=env,
        labels=ctx.container_labels(spec.id, task.instance_id, task.instance_index, spec.name),
        mounts=mounts,
        networks=networks,
        network_mode=network_mode,
        ports=port_bindings(spec.ports, ctx.mesh_address),
        healthcheck=health_check(spec.health_check),
        cpu=spec.resources.cpu if spec.resources else None,
        memory_bytes=spec.resources.memory if spec.resources else None,
    )
    container_id = await _step(Step.CREATE, ctx.runtime.create(container))
    try:
        await _step(Step.START, ctx.runtime.start(container_id))
    except StepFailed:
        with anyio.CancelScope(shield=True):
            await _quietly(ctx.runtime.remove(container_id, force=True))
            await _quietly(ctx.files.remove(task.instance_id))
        raise
    return Deployed(container_id, True if container.healthcheck is not None else None)


async def adopt(ctx: AgentContext, task: DeployTask, existing: ContainerState) -> Deployed:
    """Run the instance's existing container: start it if it does not run, restart it if it
    does and the task says ``restart``, else leave it as it is.

    Raises:
        StepFailed: at ``stop`` or ``start``.
    """
    if existing.state != "running":
        await _step(Step.START, ctx.runtime.start(existing.id))
        return Deployed(existing.id, None)
    if task.restart:
        log.info("task %s restarts container %s", task.task_id, existing.id[:12])
        await _step(Step.STOP, ctx.runtime.stop(existing.id, grace=STOP_GRACE))
        await _step(Step.START, ctx.runtime.start(existing.id))
    # A running container shows its health check's status, if it has one.
    return Deployed(existing.id, existing.health != HEALTH_NONE)


def health_check(check: TaskHealthCheck | None) -> HealthCheck | None:
    """The task's health check as the runtime takes it (None: the image's own applies)."""
    if check is None:
        return None
    return HealthCheck(
        command=tuple(check.command),
        interval=check.interval,
        timeout=check.timeout,
        retries=check.retries,
        start_period=check.start_period,
    )


def port_bindings(ports: list[TaskPort], mesh_address: str | None) -> list[PortBinding]:
    """The task's ports as the runtime binds them: ``host_ip: "mesh"`` becomes the node's
    mesh address.

    Raises:
        StepFailed: a port is published on the mesh and this node is not a member (step
            ``create``).
    """
    bindings = []
    for p in ports:
        host_ip = p.host_ip
        if host_ip == MESH_HOST_IP:
            if mesh_address is None:
                raise not_a_member()
            host_ip = mesh_address
        bindings.append(
            PortBinding(
                container_port=p.container_port,
                protocol=p.protocol,
                host_port=p.host_port,
                host_ip=host_ip,
            )
        )
    return bindings


def not_a_member() -> StepFailed:
    """The failure of a task that publishes a port on the mesh on a node outside it."""
    return StepFailed(
        Step.CREATE,
        'a port is published on the mesh address (host_ip "mesh") and this node is not a '
        "member of the mesh (start its agent with --mesh-endpoint)",
    )


def refuse(ctx: AgentContext, task: DeployTask) -> StepFailed | None:
    """Why this agent refuses ``task`` before doing anything, or None.

    Host networking needs ``--allow-host-network``; credentials go only to their own
    registry (the server checks both too, but a task may be forged or the server old); a
    port on the mesh address needs a member of the mesh.
    """
    spec = task.deployment
    if not ctx.allow_host_network and any(a.driver == "host" for a in spec.network_attachments):
        return StepFailed(
            Step.NETWORK,
            "host networking is not allowed on this node (start its agent with "
            "--allow-host-network to allow it)",
        )
    if ctx.mesh_address is None and any(p.host_ip == MESH_HOST_IP for p in spec.ports):
        return not_a_member()
    if task.credentials is not None:
        problem = registry_mismatch(spec.image, task.credentials.server)
        if problem is not None:
            return StepFailed(Step.CREDENTIALS, problem)
    return None


def open_credentials(ctx: AgentContext, task: DeployTask) -> RegistryAuth | None:
    """The task's registry credentials, the password opened (bound to this node, this task
    and the registry it is for), or None.

    Raises:
        StepFailed: the sealed password does not open here.
    """
    creds = task.credentials
    if creds is None:
        return None
    aad = registry_aad(ctx.node_id, task.task_id, creds.server)
    try:
        password = ctx.keys.open(creds.sealed_password, aad)
    except SecretError as exc:
        raise StepFailed(Step.CREDENTIALS, f"cannot open the sealed password: {exc}") from exc
    return RegistryAuth(server=creds.server, username=creds.username, password=password)


def open_secret_env(ctx: AgentContext, task: DeployTask) -> dict[str, str]:
    """The task's secret environment variables, opened (bound to this node and task); empty
    without any.

    Raises:
        StepFailed: the sealed variables do not open here, or are not a map of names to
            values.
    """
    if task.sealed_env is None:
        return {}
    try:
        text = ctx.keys.open(task.sealed_env, env_aad(ctx.node_id, task.task_id))
    except SecretError as exc:
        raise StepFailed(Step.SECRETS, f"cannot open the sealed variables: {exc}") from exc
    try:
        values = json.loads(text)
    except ValueError:
        values = None
    if not isinstance(values, dict) or not all(
        isinstance(k, str)
        and k
        and "=" not in k
        and "\x00" not in k
        and isinstance(v, str)
        and "\x00" not in v
        for k, v in values.items()
    ):
        raise StepFailed(Step.SECRETS, "the sealed variables are not a map of names to values")
    return values


async def render_templates(ctx: AgentContext, task: DeployTask) -> list[Mount]:
    """Render the task's templates into the instance's folder; their mounts.

    Raises:
        StepFailed: a template failed or broke a limit (``templates``), or the instance's
            folder is not the agent's own (``files``).
    """
    spec = task.deployment
    if not spec.templates:
        return []
    context = {
        "env": dict(spec.env),
        "node": {
            "id": ctx.node_id,
            "hostname": ctx.hostname,
            "labels": dict(ctx.labels),
            "address": ctx.mesh_address or "",  # "": not a member of the mesh
        },
        "deployment": {"id": spec.id, "name": spec.name, "image": spec.image},
        "instance": {"id": task.instance_id, "index": task.instance_index},
    }
    try:
        return await ctx.files.render_all(
            task.instance_id, [(t.content, t.destination) for t in spec.templates], context
        )
    except TemplateError as exc:
        raise StepFailed(Step.TEMPLATES, str(exc)) from exc
    except PathRefused as exc:
        raise StepFailed(Step.FILES, exc.reason) from exc
    except OSError as exc:
        raise StepFailed(Step.FILES, f"cannot write the files: {exc.strerror}") from exc


async def stop(ctx: AgentContext, task: StopTask) -> None:
    """Stop (and by default remove) the instance's container and its files. Idempotent.

    Raises:
        StepFailed: a step failed; an instance whose folder is not the agent's own to delete
            fails at ``files`` before anything is stopped.
    """
    if task.remove:
        try:
            ctx.files.folder(task.instance_id)
        except PathRefused as exc:
            raise StepFailed(Step.FILES, exc.reason) from exc
    existing = await find_instance_container(ctx, task.instance_id)
    if existing is not None:
        if existing.state == "running":
            await _step(Step.STOP, ctx.runtime.stop(existing.id, grace=STOP_GRACE))
        if task.remove:
            await _step(Step.REMOVE, ctx.runtime.remove(existing.id, force=True))
    if task.remove:
        try:
            await ctx.files.remove(task.instance_id)
        except PathRefused as exc:
            raise StepFailed(Step.FILES, exc.reason) from exc


async def _step(name: str, work: Awaitable[T]) -> T:
    try:
        return await work
    except RuntimeFailure as exc:
        raise StepFailed(name, exc.message) from exc
    except KnitError as exc:
        raise StepFailed(name, str(exc)) from exc


async def _quietly(work: Awaitable[object]) -> None:
    try:
        await work
    except KnitError as exc:
        log.debug("cleanup failed: %s", exc)


def task_status(
    ctx: AgentContext, task: Task, state: TaskStateName, **fields: str | None
) -> TaskStatus:
    """A TaskStatus of ``task`` on this node, stamped now."""
    return TaskStatus(
        msg_id=new_id(),
        task_id=task.task_id,
        instance_id=task.instance_id,
        node_id=ctx.node_id,
        state=state,
        at=time.time(),
        **fields,  # type: ignore[arg-type]
    )


async def publish_status(ctx: AgentContext, status: TaskStatus) -> None:
    """Publish one TaskStatus; a bus failure is logged (the server retries the task)."""
    await publish_payload(ctx, status.task_id, encode(status))


async def publish_payload(ctx: AgentContext, task_id: str, payload: bytes) -> None:
    """Publish an encoded TaskStatus of ``task_id``; a bus failure is logged."""
    try:
        await ctx.publish(subjects.TASK_STATUS, payload)
    except KnitError as exc:
        log.warning("cannot report task %s: %s", task_id, exc)


async def refresh(
    ctx: AgentContext,
    instance_id: str,
    container_id: str | None,
    deployment_id: str | None,
    has_check: bool | None = None,
) -> str | None:
    """Bring the node's report of the instance up to date before the result is sent; return
    the health it shows for ``container_id`` (None: not known).

    The server ignores reports taken before a task's result; one taken after it must then
    show what the task did, not what Docker's events have not told yet.
    """
    if ctx.refresh is None:
        return None
    try:
        report = await ctx.refresh(instance_id, container_id, deployment_id, has_check)
    except KnitError as exc:  # the next event or re-list catches up
        log.warning("cannot refresh the report of instance %s: %s", instance_id, exc)
        return None
    if report is None or container_id is None or report.container_id != container_id:
        return None
    return report.health


async def run_task(ctx: AgentContext, task: Task) -> TaskStatus:
    """Run one task to its end under ``ctx.task_timeout``; publish and return its final status.

    A step that fails ends the task ``failed`` with the step and the reason; so does the
    timeout (step ``timeout``). Cancellation (the agent stopping) abandons the task unreported:
    the server re-sends it and the retry adopts what this attempt left.
    """
    # A plain deadline scope: fail_after's two generator-based context managers cost more.
    scope = anyio.CancelScope(deadline=anyio.current_time() + ctx.task_timeout)
    try:
        with scope:
            if isinstance(task, DeployTask):
                done = await deploy(ctx, task)
                health = await refresh(
                    ctx, task.instance_id, done.container_id, task.deployment.id, done.has_check
                )
                final = task_status(
                    ctx, task, "succeeded", container_id=done.container_id, health=health
                )
            else:
                await stop(ctx, task)
                if task.remove:
                    await refresh(ctx, task.instance_id, None, None)
                final = task_status(ctx, task, "succeeded", container_id=task.container_id)
            await publish_status(ctx, final)
            return final
        # Only the deadline ends the body without a return.
        final = task_status(ctx, task, "failed", step=Step.TIMEOUT, error="task timed out")
    except StepFailed as exc:
        log.info("task %s failed at %s: %s", task.task_id, exc.step, exc.reason)
        final = task_status(ctx, task, "failed", step=exc.step, error=exc.reason)
    await publish_status(ctx, final)
    return final
