"""Tests of stopping: graceful stops, grace periods, reverse order, and a clean exit."""

from __future__ import annotations

import logging

import anyio
import pytest

from actors import Actor, ActorStopped, SupervisorRef, open_actor_system
from tests.actors.support import Block, Crash, Journal, TaskCounter, wait_until, worker

pytestmark = [pytest.mark.anyio, pytest.mark.unit]


async def test_leaving_the_block_stops_the_tree_in_reverse_start_order() -> None:
    journal = Journal()
    async with open_actor_system() as system:
        await system.spawn(worker(journal), name="a")
        sup = await system.spawn_supervisor("sup")
        await system.spawn(worker(journal), name="b", supervisor=sup)
        inner = await system.spawn_supervisor("inner", parent=sup)
        await system.spawn(worker(journal), name="c", supervisor=inner)
        await system.spawn(worker(journal), name="d", supervisor=sup)
        await system.spawn(worker(journal), name="e")
        assert journal.of("stopping") == []
    assert journal.of("stopping") == ["e", "d", "c", "b", "a"]
    assert journal.of("stopped") == ["e", "d", "c", "b", "a"]


async def test_a_busy_actor_finishes_its_current_message_before_it_stops() -> None:
    journal = Journal()
    release = anyio.Event()
    replies: list[object] = []
    async with open_actor_system(grace=5.0) as system:
        ref = await system.spawn(worker(journal), name="w")

        async def ask() -> None:
            replies.append(await ref.ask(Block(release)))

        async with anyio.create_task_group() as tg:
            tg.start_soon(ask)
            await wait_until(lambda: journal.count("blocked", "w") == 1)
            tg.start_soon(system.stop, ref)
            await anyio.sleep(0.01)
            assert journal.of("stopping") == []  # still handling its message
            release.set()
    assert replies == ["released"]
    assert journal.of("stopping") == ["w"] and journal.of("cancelled") == []


async def test_a_stuck_actor_is_cancelled_after_the_grace_period() -> None:
    journal = Journal()
    async with open_actor_system(grace=0.02) as system:
        ref = await system.spawn(worker(journal), name="w")
        await ref.tell(Block())  # never returns on its own
        await wait_until(lambda: journal.count("blocked", "w") == 1)
        with anyio.fail_after(2):
            await system.stop(ref)
    assert journal.of("cancelled") == ["w"]
    assert journal.of("stopping") == ["w"]  # the hook still ran after the cancellation


async def test_a_slow_stopping_hook_is_cancelled_when_the_grace_period_runs_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    journal = Journal()
    with anyio.fail_after(2):
        async with open_actor_system(grace=0.02) as system:
            await system.spawn(worker(journal, slow_stop=60.0), name="w")
    assert journal.of("stopping") == ["w"] and journal.of("stopped") == []
    assert "overran its grace period" in caplog.text


async def test_stop_stops_an_actor_for_good_and_frees_its_name() -> None:
    journal = Journal()
    async with open_actor_system() as system:
        ref = await system.spawn(worker(journal), name="w")
        await system.stop(ref)
        assert not ref.alive and system.lookup("w") is None and system.snapshot() == []
        await system.stop(ref)  # stopping what is gone does nothing
        again = await system.spawn(worker(journal), name="w")
        assert again is not ref and again.alive
    assert journal.of("stopping") == ["w", "w"]


async def test_stop_of_a_supervisor_stops_its_subtree_in_reverse_order() -> None:
    journal = Journal()
    async with open_actor_system() as system:
        sup = await system.spawn_supervisor("sup")
        refs = [await system.spawn(worker(journal), name=n, supervisor=sup) for n in "abc"]
        outside = await system.spawn(worker(journal), name="outside")
        await system.stop(sup)
        assert journal.of("stopping") == ["c", "b", "a"]
        assert not sup.alive and not any(r.alive for r in refs) and outside.alive
        assert system.lookup_supervisor("sup") is None
        with pytest.raises(ActorStopped):
            await system.spawn(worker(journal), name="late", supervisor=sup)


async def test_a_stopped_actor_is_not_restarted_even_while_a_restart_is_pending() -> None:
    journal = Journal()
    async with open_actor_system(backoff_base=0.05) as system:
        ref = await system.spawn(worker(journal), name="w")
        await ref.tell(Crash())
        await wait_until(lambda: journal.count("crash", "w") == 1)
        assert system.snapshot()[0].state == "restarting"
        await system.stop(ref)
        await anyio.sleep(0.08)
        assert journal.count("started", "w") == 1 and not ref.alive


async def test_an_actor_can_stop_itself_from_handle() -> None:
    journal = Journal()

    class Quitter(Actor[str]):
        async def handle(self, message: str) -> object:
            await self.system.stop(self.ref)  # returns at once: the stop waits for us
            journal.add("after-stop", self.name)
            return "bye"

        async def stopping(self) -> None:
            journal.add("stopping", self.name)

    async with open_actor_system() as system:
        ref = await system.spawn(Quitter, name="q")
        with anyio.fail_after(2):
            assert await ref.ask("quit") == "bye"
            await wait_until(lambda: not ref.alive)
    assert journal.events == [("after-stop", "q"), ("stopping", "q")]


async def test_an_actor_can_stop_its_own_supervisor() -> None:
    journal = Journal()

    class Chief(Actor[SupervisorRef]):
        async def handle(self, message: SupervisorRef) -> object:
            await self.system.stop(message)
            return None

    async with open_actor_system() as system:
        sup = await system.spawn_supervisor("sup")
        await system.spawn(worker(journal), name="w", supervisor=sup)
        chief = await system.spawn(Chief, name="chief", supervisor=sup)
        with anyio.fail_after(2):
            await chief.tell(sup)
            await wait_until(lambda: not sup.alive)
    assert journal.of("stopping") == ["w"]


async def test_nothing_is_left_running_after_the_system_exits(tasks: TaskCounter) -> None:
    journal = Journal()
    before = tasks.now()

    class Ticking(Actor[object]):
        async def started(self) -> None:
            self.every(0.001, "tick")
            self.deadline(60.0, "late")

        async def handle(self, message: object) -> object:
            return None

    async with open_actor_system(grace=0.01, backoff_base=0.5) as system:
        sup = await system.spawn_supervisor("sup", backoff_base=0.5)
        for i in range(20):
            await system.spawn(Ticking, name=f"t{i}", supervisor=sup)
        blocked = await system.spawn(worker(journal), name="blocked")
        await blocked.tell(Block())
        crashing = await system.spawn(worker(journal), name="crashing", supervisor=sup)
        await crashing.tell(Crash())  # left waiting for a 0.5 s restart
        await wait_until(lambda: journal.count("crash", "crashing") == 1)
        assert tasks.now() > before
    assert tasks.now() == before
    assert journal.of("cancelled") == ["blocked"]


async def test_an_exception_in_the_block_propagates_unchanged_after_the_shutdown() -> None:
    journal = Journal()
    with pytest.raises(KeyError, match="mine"):
        async with open_actor_system() as system:
            await system.spawn(worker(journal), name="w")
            raise KeyError("mine")
    assert journal.of("stopping") == ["w"]


async def test_cancelling_the_block_still_runs_the_stopping_hooks() -> None:
    journal = Journal()
    with anyio.CancelScope() as scope:
        async with open_actor_system() as system:
            await system.spawn(worker(journal), name="a")
            await system.spawn(worker(journal), name="b")
            scope.cancel()
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert journal.of("stopped") == ["b", "a"]


async def test_stop_completes_even_when_the_caller_is_cancelled() -> None:
    journal = Journal()
    async with open_actor_system() as system:
        ref = await system.spawn(worker(journal, slow_stop=0.02), name="w")
        with anyio.CancelScope() as scope:
            scope.cancel()
            await system.stop(ref)  # shielded: completes, then the cancellation lands
            await anyio.sleep(1)
        assert journal.of("stopped") == ["w"] and not ref.alive


async def test_stop_logs_nothing_alarming_for_a_clean_shutdown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="actors")
    journal = Journal()
    async with open_actor_system() as system:
        await system.spawn(worker(journal), name="w")
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
