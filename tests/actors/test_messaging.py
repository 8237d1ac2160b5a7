"""Tests of tell, tell_nowait and ask: ordering, replies, mailboxes and overflow policies."""

from __future__ import annotations

from functools import partial

import anyio
import pytest
from anyio.lowlevel import checkpoint

from actors import (
    Actor,
    ActorCrashed,
    ActorRef,
    ActorStopped,
    AskTimeout,
    MailboxFull,
    Overflow,
    Strategy,
    open_actor_system,
)
from tests.actors.support import Block, Crash, Get, Journal, wait_until, worker

pytestmark = [pytest.mark.anyio, pytest.mark.unit]


class Collector(Actor[int]):
    """Keeps every message, and checks that handle never runs twice at once."""

    def __init__(self, seen: list[int]) -> None:
        self.seen = seen
        self.busy = False

    async def handle(self, message: int) -> object:
        assert not self.busy, "two messages handled at once"
        self.busy = True
        try:
            if message % 7 == 0:
                await checkpoint()  # yield mid-message: others may send meanwhile
            self.seen.append(message)
        finally:
            self.busy = False
        return len(self.seen)


async def test_tell_delivers_messages_in_order_one_at_a_time() -> None:
    seen: list[int] = []
    async with open_actor_system() as system:
        ref = await system.spawn(lambda: Collector(seen), name="collector", mailbox_size=8)
        for i in range(500):
            await ref.tell(i)
        assert await ref.ask(-1) == 501
    assert seen == [*range(500), -1]


async def test_concurrent_senders_each_keep_their_order() -> None:
    seen: list[int] = []
    async with open_actor_system() as system:
        ref = await system.spawn(lambda: Collector(seen), name="collector", mailbox_size=4)

        async def send(base: int) -> None:
            for i in range(100):
                await ref.tell(base + i)

        async with anyio.create_task_group() as tg:
            for base in (1000, 2000, 3000):
                tg.start_soon(send, base)
        await ref.ask(1)
    for base in (1000, 2000, 3000):
        assert [m for m in seen if base <= m < base + 100] == list(range(base, base + 100))


async def test_ask_returns_what_handle_returns() -> None:
    journal = Journal()
    async with open_actor_system() as system:
        ref = await system.spawn(worker(journal), name="w")
        assert await ref.ask("hello") == "hello"
        assert await ref.ask(Get()) == 1


async def test_ask_raises_actor_crashed_when_handle_raises_and_the_actor_restarts() -> None:
    journal = Journal()
    async with open_actor_system(backoff_base=0.001) as system:
        ref = await system.spawn(worker(journal), name="w")
        await ref.ask("one")
        with anyio.fail_after(5), pytest.raises(ActorCrashed) as info:
            await ref.ask(Crash())
        assert isinstance(info.value.__cause__, RuntimeError)
        assert await ref.ask(Get()) == 0  # a fresh incarnation answers through the same ref
    assert journal.count("started", "w") == 2


async def test_ask_times_out_with_ask_timeout_and_the_actor_carries_on() -> None:
    journal = Journal()
    release = anyio.Event()
    async with open_actor_system() as system:
        ref = await system.spawn(worker(journal), name="w")
        with pytest.raises(AskTimeout):
            await ref.ask(Block(release), timeout=0.02)
        release.set()
        assert await ref.ask("after") == "after"


async def test_ask_timeout_covers_waiting_for_room_in_a_full_mailbox() -> None:
    journal = Journal()
    async with open_actor_system(grace=0.01) as system:
        ref = await system.spawn(worker(journal), name="w", mailbox_size=1)
        await ref.tell(Block())
        await wait_until(lambda: journal.count("blocked", "w") == 1)
        await ref.tell("fills the mailbox")
        with pytest.raises(AskTimeout):
            await ref.ask("no room", timeout=0.02)


async def test_ask_to_a_stopped_actor_raises_actor_stopped() -> None:
    journal = Journal()
    async with open_actor_system() as system:
        ref = await system.spawn(worker(journal), name="w")
        await system.stop(ref)
        assert not ref.alive
        with pytest.raises(ActorStopped):
            await ref.ask("anyone?")
        with pytest.raises(ActorStopped):
            await ref.tell("anyone?")
        with pytest.raises(ActorStopped):
            ref.tell_nowait("anyone?")


async def test_asks_still_queued_when_the_actor_stops_get_actor_stopped() -> None:
    journal = Journal()
    results: list[str] = []
    async with open_actor_system(grace=0.01) as system:
        ref = await system.spawn(worker(journal), name="w")
        await ref.tell(Block())
        await wait_until(lambda: journal.count("blocked", "w") == 1)

        async def ask() -> None:
            try:
                await ref.ask("queued")
            except ActorStopped:
                results.append("stopped")

        async with anyio.create_task_group() as tg:
            tg.start_soon(ask)
            await wait_until(lambda: ref.mailbox_depth == 1)
            await system.stop(ref)
    assert results == ["stopped"]
    assert journal.count("cancelled", "w") == 1  # the blocked handle was cancelled after grace


async def test_tell_applies_backpressure_when_the_mailbox_is_full() -> None:
    journal = Journal()
    release = anyio.Event()
    async with open_actor_system() as system:
        ref = await system.spawn(worker(journal), name="w", mailbox_size=2)
        await ref.tell(Block(release))
        await wait_until(lambda: journal.count("blocked", "w") == 1)
        await ref.tell(1)
        await ref.tell(2)
        assert ref.mailbox_depth == 2
        with anyio.move_on_after(0.02) as scope:
            await ref.tell(3)
        assert scope.cancelled_caught  # blocked: no room
        with pytest.raises(MailboxFull):
            ref.tell_nowait(3)
        release.set()
        await ref.tell(3)  # room again once the actor drains
        await ref.ask(Get())
    assert journal.count("handled", "w") == 3


async def test_drop_newest_drops_the_new_message_and_counts_it() -> None:
    journal = Journal()
    release = anyio.Event()
    async with open_actor_system() as system:
        ref = await system.spawn(
            worker(journal), name="w", mailbox_size=2, overflow=Overflow.DROP_NEWEST
        )
        await ref.tell(Block(release))
        await wait_until(lambda: journal.count("blocked", "w") == 1)
        for i in range(5):
            await ref.tell(i)
        ref.tell_nowait(5)
        with pytest.raises(MailboxFull):
            await ref.ask("dropped too")
        (info,) = system.snapshot()
        assert info.dropped == 5 and info.mailbox_depth == 2
        release.set()
        await wait_until(lambda: ref.mailbox_depth == 0)
        assert await ref.ask(Get()) == 2
    assert journal.count("handled", "w") == 2


async def test_drop_oldest_keeps_the_newest_and_fails_a_dropped_ask() -> None:
    seen: list[int] = []
    failures: list[str] = []
    release = anyio.Event()

    class Gated(Actor[int]):
        async def handle(self, message: int) -> object:
            if message == -1:
                await release.wait()
            seen.append(message)
            return message

    async with open_actor_system() as system:
        ref = await system.spawn(Gated, name="g", mailbox_size=2, overflow=Overflow.DROP_OLDEST)
        await ref.tell(-1)
        await wait_until(lambda: ref.mailbox_depth == 0)

        async def ask() -> None:
            try:
                await ref.ask(100)
            except MailboxFull:
                failures.append("dropped")

        async with anyio.create_task_group() as tg:
            tg.start_soon(ask)
            await wait_until(lambda: ref.mailbox_depth == 1)
            for i in range(3):
                await ref.tell(i)
        release.set()
        await wait_until(lambda: ref.mailbox_depth == 0)
        await ref.ask(9)
    assert failures == ["dropped"]
    assert seen == [-1, 1, 2, 9]


async def test_fail_policy_raises_mailbox_full_to_the_sender() -> None:
    journal = Journal()
    release = anyio.Event()
    async with open_actor_system() as system:
        ref = await system.spawn(worker(journal), name="w", mailbox_size=1, overflow=Overflow.FAIL)
        await ref.tell(Block(release))
        await wait_until(lambda: journal.count("blocked", "w") == 1)
        await ref.tell(1)
        with pytest.raises(MailboxFull):
            await ref.tell(2)
        with pytest.raises(MailboxFull):
            ref.tell_nowait(2)
        release.set()


async def test_messages_sent_while_the_actor_restarts_wait_for_the_next_incarnation() -> None:
    journal = Journal()
    async with open_actor_system(backoff_base=0.05) as system:
        ref = await system.spawn(worker(journal), name="w")
        await ref.tell(Crash())
        await wait_until(lambda: journal.count("crash", "w") == 1)
        for i in range(3):
            await ref.tell(i)  # during the backoff: queued, not lost
        assert await ref.ask(Get()) == 3


async def test_tell_nowait_works_from_a_plain_asyncio_callback(anyio_backend: str) -> None:
    if anyio_backend != "asyncio":
        pytest.skip("plain event-loop callbacks exist on the asyncio backend only")
    import asyncio

    seen: list[int] = []
    async with open_actor_system() as system:
        ref = await system.spawn(lambda: Collector(seen), name="collector")
        loop = asyncio.get_running_loop()
        for i in range(3):
            loop.call_soon(ref.tell_nowait, i)
        await wait_until(lambda: len(seen) == 3)
    assert seen == [0, 1, 2]


async def test_a_self_sending_actor_does_not_starve_the_event_loop() -> None:
    progress = {"n": 0}
    seen_by_ticker: list[int] = []

    class Looper(Actor[int]):
        async def handle(self, message: int) -> object:
            progress["n"] = message
            if message < 5000:
                self.ref.tell_nowait(message + 1)  # never awaits anything real
            return None

    async with open_actor_system() as system:
        ref = await system.spawn(Looper, name="looper")

        async def ticker() -> None:
            for _ in range(3):
                seen_by_ticker.append(progress["n"])
                await checkpoint()

        async with anyio.create_task_group() as tg:
            await ref.tell(0)
            tg.start_soon(ticker)
        await wait_until(lambda: progress["n"] == 5000)
    assert seen_by_ticker[-1] < 5000  # the ticker ran while the looper was still busy


async def test_a_chain_of_actors_asking_each_other_never_waits_for_a_free_worker() -> None:
    class Link(Actor[int]):
        def __init__(self, following: ActorRef[int] | None) -> None:
            self.following = following

        async def handle(self, message: int) -> object:
            if self.following is None:
                return message
            reply: int = await self.following.ask(message + 1)
            return reply

    async with open_actor_system() as system:
        following: ActorRef[int] | None = None
        for i in range(60):  # every handler in the chain waits at once
            following = await system.spawn(partial(Link, following), name=f"link{i}")
        assert following is not None
        with anyio.fail_after(5):
            assert await following.ask(0) == 59
            replies = []
            async with anyio.create_task_group() as tg:

                async def ask(start: int) -> None:
                    assert following is not None
                    replies.append(await following.ask(start))

                for start in range(5):
                    tg.start_soon(ask, start * 100)
            assert sorted(replies) == [59 + 100 * s for s in range(5)]


async def test_asks_queued_during_a_one_for_all_restart_are_answered_by_the_new_incarnation() -> (
    None
):
    journal = Journal()
    async with open_actor_system(backoff_base=0.02) as system:
        sup = await system.spawn_supervisor("sup", strategy=Strategy.ONE_FOR_ALL, backoff_base=0.02)
        first = await system.spawn(worker(journal), name="first", supervisor=sup)
        second = await system.spawn(worker(journal), name="second", supervisor=sup)
        await second.tell("counted by the old incarnation")
        await first.tell(Crash())
        await wait_until(lambda: journal.count("stopping", "second") == 1)
        with anyio.fail_after(5):
            assert await second.ask(Get()) == 0  # waited for the restart, fresh state


async def test_a_cancelled_asker_is_cancelled_and_the_actor_carries_on() -> None:
    journal = Journal()
    release = anyio.Event()
    async with open_actor_system() as system:
        ref = await system.spawn(worker(journal), name="w")
        with anyio.move_on_after(0.01) as scope:
            await ref.ask(Block(release))
        assert scope.cancelled_caught  # the cancellation reached the asker, not swallowed
        release.set()
        assert await ref.ask("still here") == "still here"
    assert journal.of("cancelled") == []  # the handler itself was not cancelled


class Asker(Actor[ActorRef[int]]):
    """Asks the actor it is told about, and answers what that one answered."""

    async def handle(self, message: ActorRef[int]) -> object:
        return await message.ask(0)


async def test_a_burst_of_activations_wakes_a_few_workers_not_one_each() -> None:
    seen: list[int] = []
    async with open_actor_system() as system:
        refs = [
            await system.spawn(partial(Collector, seen), name=f"c{i}", mailbox_size=4)
            for i in range(500)
        ]
        dispatcher = system._dispatcher
        before = dispatcher.workers
        for i, ref in enumerate(refs):
            ref.tell_nowait(i + 1)  # 500 idle actors activated in one go
        await wait_until(lambda: len(seen) == 500)
        # One worker each would be 500; a turn that yields (every 7th message here) sends
        # one more worker to the queue, so about 500 / 7 at most.
        assert dispatcher.workers - before < 100, dispatcher.workers


async def test_turns_that_wait_on_queued_actors_still_progress() -> None:
    # Each asker's turn waits for an actor that is queued behind it: the dispatcher must
    # keep sending workers while turns wait, or this deadlocks.
    seen: list[int] = []
    async with open_actor_system() as system:
        collectors = [await system.spawn(partial(Collector, seen), name=f"c{i}") for i in range(50)]
        askers = [await system.spawn(Asker, name=f"a{i}") for i in range(50)]
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                for asker, collector in zip(askers, collectors, strict=True):
                    tg.start_soon(asker.ask, collector)
    assert len(seen) == 50
