"""Tests of supervision: restart policies, strategies, backoff, intensity and escalation."""

from __future__ import annotations

import logging
from typing import TypedDict

import anyio
import pytest

from actors import (
    Actor,
    ActorCrashed,
    Restart,
    Strategy,
    SupervisorGaveUp,
    open_actor_system,
)
from actors._node import Node
from tests.actors.support import Crash, Finish, Get, Journal, Worker, wait_until, worker

pytestmark = [pytest.mark.anyio, pytest.mark.unit]


class Backoff(TypedDict):
    backoff_base: float
    backoff_cap: float


FAST: Backoff = {"backoff_base": 0.001, "backoff_cap": 0.004}


async def test_crashed_actor_is_restarted_fresh_by_its_factory() -> None:
    journal = Journal()
    async with open_actor_system(**FAST) as system:
        ref = await system.spawn(worker(journal), name="w")
        for i in range(3):
            await ref.tell(i)
        assert await ref.ask(Get()) == 3
        await ref.tell(Crash())
        await wait_until(lambda: journal.count("started", "w") == 2)
        assert await ref.ask(Get()) == 0  # new object: state rebuilt from scratch
        assert system.lookup("w") is ref
        (info,) = system.snapshot()
        assert info.restarts == 1 and info.state == "running"
    assert journal.count("stopping", "w") == 1  # only the graceful stop at the end


async def test_crash_is_logged_with_actor_name_and_message_type_never_the_body(
    caplog: pytest.LogCaptureFixture,
) -> None:
    journal = Journal()
    caplog.set_level(logging.INFO, logger="actors")
    async with open_actor_system(**FAST) as system:
        ref = await system.spawn(worker(journal), name="payments")
        await ref.tell(Crash(secret="hunter2"))
        await wait_until(lambda: journal.count("started", "payments") == 2)
    crash_lines = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert crash_lines, "the crash was not logged"
    line = crash_lines[0].getMessage()
    assert "payments" in line and "Crash" in line
    assert "hunter2" not in caplog.text


async def test_one_for_one_restarts_only_the_crashed_child() -> None:
    journal = Journal()
    async with open_actor_system(**FAST) as system:
        sup = await system.spawn_supervisor("sup", **FAST)
        refs = [await system.spawn(worker(journal), name=n, supervisor=sup) for n in "abc"]
        await refs[1].tell(Crash())
        await wait_until(lambda: journal.count("started", "b") == 2)
        assert [journal.count("started", n) for n in "abc"] == [1, 2, 1]
        assert journal.of("stopping") == []


async def test_one_for_all_stops_the_others_in_reverse_order_and_restarts_all_in_start_order() -> (
    None
):
    journal = Journal()
    async with open_actor_system(**FAST) as system:
        sup = await system.spawn_supervisor("sup", strategy=Strategy.ONE_FOR_ALL, **FAST)
        refs = [await system.spawn(worker(journal), name=n, supervisor=sup) for n in "abcd"]
        journal.events.clear()
        await refs[1].tell(Crash())
        await wait_until(lambda: len(journal.of("started")) == 4)
        assert journal.of("stopping") == ["d", "c", "a"]  # reverse start order; b crashed
        assert journal.of("started") == ["a", "b", "c", "d"]
        assert [await r.ask(Get()) for r in refs] == [0, 0, 0, 0]
        assert {i.name: i.restarts for i in system.snapshot()} == {n: 1 for n in "abcd"}


async def test_permanent_child_that_exits_normally_is_restarted() -> None:
    journal = Journal()
    async with open_actor_system(**FAST) as system:
        ref = await system.spawn(worker(journal), name="w", restart=Restart.PERMANENT)
        await ref.tell(Finish())
        await wait_until(lambda: journal.count("started", "w") == 2)
        assert journal.count("stopping", "w") == 1  # a normal exit runs stopping()
        assert ref.alive


async def test_transient_child_is_restarted_after_a_crash_but_not_after_a_normal_exit() -> None:
    journal = Journal()
    async with open_actor_system(**FAST) as system:
        ref = await system.spawn(worker(journal), name="w", restart=Restart.TRANSIENT)
        await ref.tell(Crash())
        await wait_until(lambda: journal.count("started", "w") == 2)
        await ref.tell(Finish())
        await wait_until(lambda: not ref.alive)
        assert system.lookup("w") is None
        assert journal.count("started", "w") == 2


async def test_temporary_child_is_never_restarted() -> None:
    journal = Journal()
    async with open_actor_system(**FAST) as system:
        ref = await system.spawn(worker(journal), name="w", restart=Restart.TEMPORARY)
        with pytest.raises(ActorCrashed):
            await ref.ask(Crash())
        await wait_until(lambda: not ref.alive)
        assert system.snapshot() == []
        assert journal.count("started", "w") == 1


async def test_supervisor_gives_up_past_restart_intensity() -> None:
    journal = Journal()
    async with open_actor_system(**FAST) as system:
        sup = await system.spawn_supervisor("sup", max_restarts=2, within=10.0, **FAST)
        ref = await system.spawn(worker(journal), name="w", supervisor=sup)
        keep = await system.spawn(worker(journal), name="keep", supervisor=sup)
        temp = await system.spawn(
            worker(journal), name="temp", supervisor=sup, restart=Restart.TEMPORARY
        )
        for expected in (2, 3):
            await ref.tell(Crash())
            await wait_until(lambda e=expected: journal.count("started", "w") == e)  # type: ignore[misc]
        journal.events.clear()
        await ref.tell(Crash())  # a third restart within 10 s: too many
        # the supervisor stops its other children (reverse order), forgets the temporary
        # one, and its parent (the root) restarts it with its remaining children.
        await wait_until(lambda: journal.of("started") == ["w", "keep"])
        assert journal.of("stopping") == ["temp", "keep"]
        assert not temp.alive and ref.alive and keep.alive
        (sup_info,) = [s for s in system.supervisors() if s.name == "sup"]
        assert sup_info.restarts == 1 and sup_info.state == "running"
        assert await ref.ask(Get()) == 0


async def test_restarts_outside_the_intensity_window_do_not_count() -> None:
    journal = Journal()
    async with open_actor_system(**FAST) as system:
        sup = await system.spawn_supervisor("sup", max_restarts=1, within=0.02, **FAST)
        ref = await system.spawn(worker(journal), name="w", supervisor=sup)
        for expected in (2, 3, 4):
            await anyio.sleep(0.03)  # let the window slide past the previous restart
            await ref.tell(Crash())
            await wait_until(lambda e=expected: journal.count("started", "w") == e)  # type: ignore[misc]
        (sup_info,) = [s for s in system.supervisors() if s.name == "sup"]
        assert sup_info.restarts == 0


async def test_root_that_gives_up_raises_supervisor_gave_up_out_of_the_block() -> None:
    journal = Journal()
    reached_end = False
    with anyio.fail_after(5), pytest.raises(SupervisorGaveUp) as info:
        async with open_actor_system(max_restarts=1, **FAST) as system:
            sup = await system.spawn_supervisor("sup", max_restarts=0, **FAST)
            ref = await system.spawn(worker(journal), name="w", supervisor=sup)
            await ref.tell(Crash())  # sup gives up; the root restarts it (1 allowed)
            await wait_until(lambda: journal.count("started", "w") == 2)
            await ref.tell(Crash())  # sup gives up again; the root gives up too
            await anyio.sleep_forever()  # cancelled when the root gives up
            reached_end = True
    assert not reached_end
    assert "'system'" in str(info.value)
    assert isinstance(info.value.__cause__, SupervisorGaveUp)  # the sub-supervisor's
    assert journal.count("stopping", "w") == 0  # crashed both times


def test_restart_backoff_doubles_up_to_the_cap() -> None:
    node = Node.__new__(Node)
    node._recent = None
    delays = [node.backoff(now=0.0, within=10.0, base=0.01, cap=0.05) for _ in range(5)]
    assert delays == [0.01, 0.02, 0.04, 0.05, 0.05]
    assert node.backoff(now=100.0, within=10.0, base=0.01, cap=0.05) == 0.01  # forgotten


async def test_spawn_raises_actor_crashed_when_started_fails_and_frees_the_name() -> None:
    class Broken(Actor[object]):
        async def started(self) -> None:
            raise ValueError("no database")

    async with open_actor_system() as system:
        with pytest.raises(ActorCrashed) as info:
            await system.spawn(Broken, name="broken")
        assert isinstance(info.value.__cause__, ValueError)
        assert system.lookup("broken") is None
        journal = Journal()
        await system.spawn(worker(journal), name="broken")  # the name is free again


async def test_a_restart_whose_started_fails_counts_toward_the_intensity() -> None:
    journal = Journal()
    builds = 0

    def factory() -> Worker:
        nonlocal builds
        builds += 1
        if builds > 1:
            raise OSError("the store is down")
        return Worker(journal)

    with anyio.fail_after(5), pytest.raises(SupervisorGaveUp):
        async with open_actor_system(max_restarts=3, **FAST) as system:
            ref = await system.spawn(factory, name="w")
            await ref.tell(Crash())
            await anyio.sleep_forever()
    assert builds == 4  # the first build, then three failed restarts


async def test_actors_spawn_children_from_started_and_from_handle() -> None:
    journal = Journal()

    class Parent(Actor[str]):
        async def started(self) -> None:
            await self.system.spawn(worker(journal), name=f"{self.name}/first")

        async def handle(self, message: str) -> object:
            ref = await self.system.spawn(worker(journal), name=f"{self.name}/{message}")
            return await ref.ask(message)

    async with open_actor_system() as system:
        parent = await system.spawn(Parent, name="p")
        assert await parent.ask("second") == "second"
        assert journal.of("started") == ["p/first", "p/second"]
    assert journal.of("stopping") == ["p/second", "p/first"]
