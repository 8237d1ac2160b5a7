"""The agent's tasks on SimRuntime with an in-memory bus: what each task reports, and which
container changes make the heartbeat beat early."""

from __future__ import annotations

import uuid
from pathlib import Path

import anyio
import pytest

from knit.agent.context import LABEL_INSTANCE
from knit.wire import subjects
from knit.wire.messages import (
    DeployTask,
    InstanceReport,
    StopTask,
    TaskDeployment,
    decode_heartbeat,
)
from simulations.profile import SimProfile
from tests.agent.support import open_agent

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
