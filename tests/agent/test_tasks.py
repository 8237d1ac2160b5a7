"""The agent's tasks on SimRuntime with an in-memory bus: what each task reports, and which
container changes make the heartbeat beat early."""

from __future__ import annotations

import uuid
from pathlib import Path

import anyio
import pytest

from knit.agent.context import LABEL_INSTANCE
from knit.runtime.base import HealthCheck
from knit.wire import subjects
from knit.wire.messages import (
    DeployTask,
    InstanceReport,
    StopTask,
    TaskDeployment,
    TaskHealthCheck,
    decode_heartbeat,
)
from simulations.profile import SimProfile
from tests.agent.support import Agent, open_agent
from tests.support.spies import spy_on_creates

pytestmark = [pytest.mark.unit, pytest.mark.anyio]


def deploy_task(instance_id: str | None = None) -> DeployTask:
    return DeployTask(
        task_id=uuid.uuid4().hex,
        instance_id=instance_id or uuid.uuid4().hex,
        instance_index=0,
        deployment=TaskDeployment(id="d" * 32, name="web", image="app:1"),
    )


async def test_a_task_causes_no_early_heartbeat_but_an_unexpected_exit_does(
    tmp_path: Path,
) -> None:
    async with open_agent(tmp_path) as agent:
        beats = agent.bus.heartbeats()
        task = deploy_task()
        await agent.send(task)
        done = await agent.final(task)
        assert done.state == "succeeded" and done.container_id is not None
        await agent.settle()
        stop = StopTask(task_id=uuid.uuid4().hex, instance_id=task.instance_id)
        await agent.send(stop)
        assert (await agent.final(stop)).state == "succeeded"
        await anyio.sleep(0.1)  # past the heartbeat's SOON: a change beat would be out
        assert agent.bus.heartbeats() == beats

        other = deploy_task()
        await agent.send(other)
        container_id = (await agent.final(other)).container_id
        assert container_id is not None
        agent.runtime.crash(container_id, exit_code=3)
        await agent.bus.until(lambda: agent.bus.heartbeats() > beats)


async def test_a_redelivered_task_runs_once_and_an_ended_one_gets_its_final_status_again(
    tmp_path: Path,
) -> None:
    async with open_agent(tmp_path) as agent:
        task = deploy_task()
        await agent.send(task)
        await agent.send(task)
        first = await agent.final(task)
        await agent.send(task)
        await agent.settle()
        states = [s.state for s in agent.bus.statuses(task)]
        assert states.count("accepted") == 1
        assert states.count("succeeded") == 2
        assert agent.runtime.count() == 1
        assert agent.bus.statuses(task)[-1] == first


async def test_a_task_past_its_timeout_fails_at_step_timeout(tmp_path: Path) -> None:
    async with open_agent(tmp_path, task_timeout=0.05) as agent:
        agent.runtime.profile = SimProfile(pull_latency=5.0)
        task = deploy_task()
        await agent.send(task)
        final = await agent.final(task)
        assert (final.state, final.step) == ("failed", "timeout")
        assert task.instance_id not in agent.ctx.in_flight


async def test_a_task_that_crashes_is_reported_failed_and_the_agent_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_agent(tmp_path) as agent:

        async def broken(labels: object) -> object:
            raise ValueError("a bug")

        monkeypatch.setattr(agent.runtime, "list", broken)
        task = deploy_task()
        await agent.send(task)
        final = await agent.final(task)
        assert (final.state, final.step) == ("failed", "agent")
        monkeypatch.undo()
        again = deploy_task()
        await agent.send(again)
        assert (await agent.final(again)).state == "succeeded"


async def test_reports_taken_after_a_result_agree_with_it(tmp_path: Path) -> None:
    async with open_agent(tmp_path, heartbeat_interval=0.05) as agent:
        task = deploy_task()
        await agent.send(task)
        done = await agent.final(task)

        def after() -> list[dict[str, InstanceReport]]:
            """The node's report as of each heartbeat taken after the result."""
            held: dict[str, InstanceReport] = {}
            found = []
            for subject, payload in agent.bus.sent:
                if subject != subjects.HEARTBEAT:
                    continue
                beat = decode_heartbeat(payload)
                if beat.full:
                    held = {}
                held.update((r.instance_id, r) for r in beat.instances)
                for instance_id in beat.removed:
                    held.pop(instance_id, None)
                if beat.sent_at >= done.at:
                    found.append(dict(held))
            return found

        await agent.bus.until(lambda: bool(after()))
        report = after()[0][task.instance_id]
        assert (report.status, report.container_id) == ("running", done.container_id)
        [container] = await agent.runtime.list({LABEL_INSTANCE: task.instance_id})
        assert container.state == "running"


# -- health checks and restarts ------------------------------------------------------------


def checked_task(command: list[str], instance_id: str | None = None) -> DeployTask:
    check = TaskHealthCheck(command=command, interval=0.05, timeout=1.0, retries=2)
    deployment = TaskDeployment(id="d" * 32, name="web", image="app:1", health_check=check)
    return DeployTask(
        task_id=uuid.uuid4().hex,
        instance_id=instance_id or uuid.uuid4().hex,
        instance_index=0,
        deployment=deployment,
    )


@pytest.mark.parametrize(
    ("command", "health"), [(["CMD-SHELL", "true"], "healthy"), (["CMD", "false"], "unhealthy")]
)
async def test_a_health_check_is_reported_starting_then_its_result_beats_soon(
    tmp_path: Path, command: list[str], health: str
) -> None:
    async with open_agent(tmp_path) as agent:  # no regular beat within the test
        task = checked_task(command)
        await agent.send(task)
        done = await agent.final(task)
        assert (done.state, done.health) == ("succeeded", "starting")
        await agent.bus.until(lambda: agent.bus.healths(task.instance_id)[-1:] == [health])
        assert agent.bus.healths(task.instance_id) == [health]  # the first beat: its change


async def test_without_a_health_check_the_health_is_none(tmp_path: Path) -> None:
    async with open_agent(tmp_path, heartbeat_interval=0.05) as agent:
        task = deploy_task()
        await agent.send(task)
        done = await agent.final(task)
        assert (done.state, done.health) == ("succeeded", "none")
        await agent.bus.until(lambda: bool(agent.bus.healths(task.instance_id)))
        assert agent.bus.healths(task.instance_id) == ["none"]


def spy_on_restarts(agent: Agent) -> list[str]:
    """The runtime calls ``stop`` and ``start`` the agent makes from now on, in order."""
    calls: list[str] = []
    real_stop, real_start = agent.runtime.stop, agent.runtime.start

    async def stop(container_id: str, grace: float = 10) -> None:
        calls.append("stop")
        await real_stop(container_id, grace)

    async def start(container_id: str) -> None:
        calls.append("start")
        await real_start(container_id)

    agent.runtime.stop = stop  # type: ignore[method-assign]
    agent.runtime.start = start  # type: ignore[method-assign]
    return calls


async def test_the_tasks_health_check_is_the_containers(tmp_path: Path) -> None:
    async with open_agent(tmp_path) as agent:
        created = spy_on_creates(agent)
        task = checked_task(["curl", "-f", "localhost"])
        await agent.send(task)
        assert (await agent.final(task)).state == "succeeded"
        [spec] = created
        assert spec.healthcheck == HealthCheck(
            ("curl", "-f", "localhost"), interval=0.05, timeout=1.0, retries=2, start_period=0.0
        )
        plain = deploy_task()
        await agent.send(plain)
        assert (await agent.final(plain)).state == "succeeded"
        assert created[1].healthcheck is None


async def test_a_restart_task_restarts_a_running_container_once(tmp_path: Path) -> None:
    async with open_agent(tmp_path) as agent:
        first = checked_task(["true"])
        await agent.send(first)
        container_id = (await agent.final(first)).container_id
        await agent.bus.until(lambda: agent.bus.healths(first.instance_id)[-1:] == ["healthy"])
        calls = spy_on_restarts(agent)
        restart = first.model_copy(update={"task_id": uuid.uuid4().hex, "restart": True})
        await agent.send(restart)
        await agent.send(restart)  # delivered again while it runs: ignored
        done = await agent.final(restart)
        assert (done.state, done.container_id, done.health) == (
            "succeeded",
            container_id,
            "starting",
        )
        await agent.send(restart)  # delivered again once ended: its status again
        await agent.settle()
        assert calls == ["stop", "start"]
        assert [s.state for s in agent.ended(restart)] == ["succeeded", "succeeded"]
        assert agent.runtime.count() == 1
        # The restart's own exit never shows; the new run's check result does, soon.
        await agent.bus.until(lambda: agent.bus.healths(first.instance_id)[-1:] == ["healthy"])
        after = agent.bus.reports(first.instance_id)[-1]
        assert after is not None and after.status == "running"


async def test_a_deploy_task_without_restart_leaves_a_running_container_alone(
    tmp_path: Path,
) -> None:
    async with open_agent(tmp_path) as agent:
        first = deploy_task()
        await agent.send(first)
        container_id = (await agent.final(first)).container_id
        calls = spy_on_restarts(agent)
        again = first.model_copy(update={"task_id": uuid.uuid4().hex})
        await agent.send(again)
        done = await agent.final(again)
        assert (done.state, done.container_id, done.health) == ("succeeded", container_id, "none")
        assert calls == []
