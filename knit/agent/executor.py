"""Running one task on this node: deploy an instance, or stop one.

Layer: agent. The deploy task is a sequence of small steps (Nomad's task-runner hooks):
adopt, credentials, pull, networks, templates, create, start. Each step names itself, so a
failure reaches the server as ``failed`` with the step and a readable reason, and nothing
hangs: the whole task runs under a deadline.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from typing import Literal, TypeVar

import anyio

from knit.agent.context import LABEL_INSTANCE, AgentContext
from knit.errors import KnitError, RuntimeFailure, SecretError, TemplateError
from knit.ids import new_id
from knit.runtime.base import ContainerSpec, ContainerState, Mount, PortBinding, RegistryAuth
from knit.wire import subjects
from knit.wire.messages import DeployTask, StopTask, Task, TaskStateName, TaskStatus, encode

log = logging.getLogger(__name__)

T = TypeVar("T")


class StepFailed(KnitError):
    """A step of a task failed; ``step`` names it, the message says why."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"{step}: {reason}")
        self.step = step
        self.reason = reason


def container_name(deployment_name: str, index: int, instance_id: str) -> str:
    """A readable, unique Docker name for an instance's container (with the end of the
    instance's id: its beginning is the time it was made, shared by its neighbours)."""
    return f"knit-{deployment_name}-{index}-{instance_id[-8:]}"


async def find_instance_container(ctx: AgentContext, instance_id: str) -> ContainerState | None:
    """The container of ``instance_id`` on this node, if one exists (in any state)."""
    found = await ctx.runtime.list({LABEL_INSTANCE: instance_id, "knit.node": ctx.node_id})
    return found[0] if found else None


async def deploy(ctx: AgentContext, task: DeployTask) -> str:
    """Make the instance of ``task`` run here; return its container id.

    Idempotent: a container already labelled with the instance id is adopted (started if it
    had stopped), never duplicated.

    Raises:
        StepFailed: a step failed; nothing of this attempt is left running.
    """
    spec = task.deployment
    existing = await find_instance_container(ctx, task.instance_id)
    if existing is not None and existing.state == "running":
        # Docker's list is a view that may lag its events (a container that has just exited
        # can still be listed running): ask the container itself before trusting it.
        existing = await _step("start", ctx.runtime.inspect(existing.id))
    if existing is not None:
        if existing.state != "running":
            await _step("start", ctx.runtime.start(existing.id))
        return existing.id

    auth: RegistryAuth | None = None
    if task.credentials is not None:
        try:
            password = ctx.keys.open(task.credentials.sealed_password)
        except SecretError as exc:
            raise StepFailed("credentials", f"cannot open the sealed password: {exc}") from exc
        auth = RegistryAuth(
            server=task.credentials.server, username=task.credentials.username, password=password
        )
    # With credentials, always pull: it checks them even when the image is cached.
    if auth is not None or not await ctx.runtime.has_image(spec.image):
        await _step("pull", ctx.runtime.pull(spec.image, auth))

    networks: list[str] = []
    network_mode: Literal["host"] | None = None
    for attachment in spec.network_attachments:
        if attachment.driver == "host":
            network_mode = "host"
            continue
        await _step(
            "network",
            ctx.runtime.ensure_network(
                attachment.name, attachment.subnet, {"knit.network": attachment.name}
            ),
        )
        networks.append(attachment.name)

    mounts: list[Mount] = []
    if spec.templates:
        context = {
            "env": dict(spec.env),
            "node": {"id": ctx.node_id, "hostname": ctx.hostname, "labels": dict(ctx.labels)},
            "deployment": {"id": spec.id, "name": spec.name, "image": spec.image},
            "instance": {"id": task.instance_id, "index": task.instance_index},
        }
        try:
            mounts = await ctx.files.render_all(
                task.instance_id, [(t.content, t.destination) for t in spec.templates], context
            )
        except TemplateError as exc:
            raise StepFailed("render", str(exc)) from exc

    container = ContainerSpec(
        name=container_name(spec.name, task.instance_index, task.instance_id),
        image=spec.image,
        command=list(spec.command) if spec.command else None,
        env=dict(spec.env),
        labels=ctx.container_labels(spec.id, task.instance_id, task.instance_index, spec.name),
        mounts=mounts,
        networks=networks,
        network_mode=network_mode,
        ports=[
            PortBinding(
                container_port=p.container_port,
                protocol=p.protocol,
                host_port=p.host_port,
                host_ip=p.host_ip,
            )
            for p in spec.ports
        ],
    )
    container_id = await _step("create", ctx.runtime.create(container))
    try:
        await _step("start", ctx.runtime.start(container_id))
    except StepFailed:
        with anyio.CancelScope(shield=True):
            await _quietly(ctx.runtime.remove(container_id, force=True))
            await ctx.files.remove(task.instance_id)
        raise
    return container_id


async def stop(ctx: AgentContext, task: StopTask) -> None:
    """Stop (and by default remove) the instance's container and its files. Idempotent."""
    existing = await find_instance_container(ctx, task.instance_id)
    if existing is not None:
        if existing.state == "running":
            await _step("stop", ctx.runtime.stop(existing.id, grace=10))
        if task.remove:
            await _step("remove", ctx.runtime.remove(existing.id, force=True))
    if task.remove:
        await ctx.files.remove(task.instance_id)


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
    ctx: AgentContext, instance_id: str, container_id: str | None, deployment_id: str | None
) -> None:
    """Bring the node's report of the instance up to date before the result is sent.

    The server ignores reports taken before a task's result; one taken after it must then
    show what the task did, not what Docker's events have not told yet.
    """
    if ctx.refresh is None:
        return
    try:
        await ctx.refresh(instance_id, container_id, deployment_id)
    except KnitError as exc:  # the next event or re-list catches up
        log.warning("cannot refresh the report of instance %s: %s", instance_id, exc)


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
                container_id = await deploy(ctx, task)
                await refresh(ctx, task.instance_id, container_id, task.deployment.id)
                final = task_status(ctx, task, "succeeded", container_id=container_id)
            else:
                await stop(ctx, task)
                if task.remove:
                    await refresh(ctx, task.instance_id, None, None)
                final = task_status(ctx, task, "succeeded", container_id=task.container_id)
            await publish_status(ctx, final)
            return final
        # Only the deadline ends the body without a return.
        final = task_status(ctx, task, "failed", step="timeout", error="task timed out")
    except StepFailed as exc:
        log.info("task %s failed at %s: %s", task.task_id, exc.step, exc.reason)
        final = task_status(ctx, task, "failed", step=exc.step, error=exc.reason)
    await publish_status(ctx, final)
    return final
