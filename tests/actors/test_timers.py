"""Tests of timers and deadlines: after, every, resettable deadlines, and their lifetimes."""

from __future__ import annotations

from dataclasses import dataclass

import anyio
import pytest

from actors import Actor, ActorCrashed, Deadline, Overflow, Timer, open_actor_system
from actors._clock import Clock
from tests.actors.support import wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.unit]


@dataclass(frozen=True)
class Tick:
    label: str


@dataclass(frozen=True)
class Arm:
    """Commands to the Clockwork actor below."""

    what: str
    delay: float = 0.0


class Clockwork(Actor[object]):
    """Arms timers on command and records the ticks it receives."""

    def __init__(self, ticks: list[str], incarnations: list[int]) -> None:
        self.ticks = ticks
        self.incarnations = incarnations
        self.timer: Timer | None = None
        self.dl: Deadline | None = None

    async def started(self) -> None:
        self.incarnations.append(len(self.incarnations))

    async def handle(self, message: object) -> object:
        if isinstance(message, Tick):
            self.ticks.append(message.label)
            return None
        assert isinstance(message, Arm)
        if message.what == "after":
            self.timer = self.after(message.delay, Tick("after"))
        elif message.what == "every":
            self.timer = self.every(message.delay, Tick("every"))
        elif message.what == "cancel-timer":
            assert self.timer is not None
            self.timer.cancel()
        elif message.what == "deadline":
            self.dl = self.deadline(message.delay, Tick("deadline"))
        elif message.what == "reset":
            assert self.dl is not None
            self.dl.reset(message.delay or None)
        elif message.what == "cancel-deadline":
            assert self.dl is not None
            self.dl.cancel()
        elif message.what == "expires_at":
            assert self.dl is not None
            return self.dl.expires_at
        elif message.what == "crash":
            raise RuntimeError("crash on purpose")
        return None


async def test_after_tells_its_message_once() -> None:
    ticks: list[str] = []
    async with open_actor_system() as system:
        ref = await system.spawn(lambda: Clockwork(ticks, []), name="cw")
        await ref.ask(Arm("after", 0.005))
        await wait_until(lambda: ticks == ["after"])
        await anyio.sleep(0.02)
        assert ticks == ["after"]


async def test_every_repeats_until_cancelled() -> None:
    ticks: list[str] = []
    async with open_actor_system() as system:
        ref = await system.spawn(lambda: Clockwork(ticks, []), name="cw")
        await ref.ask(Arm("every", 0.002))
        await wait_until(lambda: len(ticks) >= 3)
        await ref.ask(Arm("cancel-timer"))
        await anyio.sleep(0.01)  # ticks queued before the cancel are still handled
        count = len(ticks)
        await anyio.sleep(0.02)
        assert len(ticks) == count


async def test_cancelled_after_timer_never_fires() -> None:
    ticks: list[str] = []
    async with open_actor_system() as system:
        ref = await system.spawn(lambda: Clockwork(ticks, []), name="cw")
        await ref.ask(Arm("after", 0.1))
        await ref.ask(Arm("cancel-timer"))
        await anyio.sleep(0.15)
        assert ticks == []


async def test_deadline_fires_when_not_reset() -> None:
    ticks: list[str] = []
    async with open_actor_system() as system:
        ref = await system.spawn(lambda: Clockwork(ticks, []), name="cw")
        await ref.ask(Arm("deadline", 0.01))
        assert await ref.ask(Arm("expires_at")) is not None
        await wait_until(lambda: ticks == ["deadline"])
        assert await ref.ask(Arm("expires_at")) is None  # fired: disarmed


async def test_deadline_reset_postpones_expiry() -> None:
    ticks: list[str] = []
    timeout = 0.03
    async with open_actor_system() as system:
        ref = await system.spawn(lambda: Clockwork(ticks, []), name="cw")
        await ref.ask(Arm("deadline", timeout))
        began = last = anyio.current_time()
        longest_gap = 0.0
        for _ in range(6):  # heartbeats every 10 ms keep a 30 ms deadline from expiring
            await anyio.sleep(0.01)
            await ref.ask(Arm("reset"))
            now = anyio.current_time()
            longest_gap, last = max(longest_gap, now - last), now
        if longest_gap < timeout:  # (a loaded machine may stall longer than the deadline)
            assert ticks == []
        await wait_until(lambda: ticks[-1:] == ["deadline"])
        assert anyio.current_time() - began >= 0.06


async def test_deadline_reset_can_move_it_earlier() -> None:
    ticks: list[str] = []
    async with open_actor_system() as system:
        ref = await system.spawn(lambda: Clockwork(ticks, []), name="cw")
        await ref.ask(Arm("deadline", 60.0))
        await ref.ask(Arm("reset", 0.005))
        await wait_until(lambda: ticks == ["deadline"], timeout=2.0)


async def test_deadline_cancel_disarms_and_reset_rearms() -> None:
    ticks: list[str] = []
    async with open_actor_system() as system:
        ref = await system.spawn(lambda: Clockwork(ticks, []), name="cw")
        await ref.ask(Arm("deadline", 0.1))
        await ref.ask(Arm("cancel-deadline"))
        assert await ref.ask(Arm("expires_at")) is None
        await anyio.sleep(0.15)
        assert ticks == []
        await ref.ask(Arm("reset", 0.005))
        await wait_until(lambda: ticks == ["deadline"])
        await ref.ask(Arm("reset"))  # a fired deadline can be armed again
        await wait_until(lambda: ticks == ["deadline", "deadline"])


async def test_timers_die_with_the_actor_on_restart() -> None:
    ticks: list[str] = []
    incarnations: list[int] = []
    async with open_actor_system(backoff_base=0.001) as system:
        ref = await system.spawn(lambda: Clockwork(ticks, incarnations), name="cw")
        await ref.ask(Arm("every", 0.002))
        await ref.ask(Arm("deadline", 0.01))
        await wait_until(lambda: len(ticks) >= 1)
        await ref.tell(Arm("crash"))
        await wait_until(lambda: len(incarnations) == 2)
        ticks.clear()
        await anyio.sleep(0.03)
        assert ticks == []  # neither the repeating timer nor the deadline survived


async def test_timer_messages_wait_for_room_in_a_full_mailbox() -> None:
    ticks: list[str] = []
    gate = anyio.Event()

    class Slow(Actor[object]):
        async def started(self) -> None:
            self.every(0.001, Tick("every"))

        async def handle(self, message: object) -> object:
            await gate.wait()
            if isinstance(message, Tick):
                ticks.append(message.label)
            return None

    async with open_actor_system() as system:
        ref = await system.spawn(Slow, name="slow", mailbox_size=1, overflow=Overflow.DROP_NEWEST)
        await wait_until(lambda: ref.mailbox_depth == 1)
        await anyio.sleep(0.01)  # more ticks come due: they wait rather than being dropped
        gate.set()
        await wait_until(lambda: len(ticks) >= 3)
        (info,) = system.snapshot()
        assert info.dropped == 0


async def test_timers_outside_a_running_actor_are_refused() -> None:
    class Eager(Actor[object]):
        def __init__(self) -> None:
            self.after(1.0, "too early")

    async with open_actor_system() as system:
        with pytest.raises(ActorCrashed) as info:
            await system.spawn(Eager, name="eager")
        assert isinstance(info.value.__cause__, RuntimeError)


class Entry:
    """A stand-in heap entry for the clock's own tests."""

    def __init__(self, fired: list[str], label: str) -> None:
        self.fired = fired
        self.label = label
        self.dead = False

    def clock_alive(self, when: float) -> bool:
        return not self.dead

    def clock_fire(self, when: float, now: float, clock: Clock) -> None:
        if not self.dead:
            self.fired.append(self.label)


async def test_clock_fires_in_time_order_and_compaction_keeps_live_entries() -> None:
    fired: list[str] = []
    clock = Clock()
    now = anyio.current_time()
    dead = [Entry(fired, f"dead{i}") for i in range(3000)]
    for i, entry in enumerate(dead):
        clock.add(now + 0.01 + i * 1e-6, entry)
        entry.dead = True  # answered asks, cancelled timers: deleted lazily
    live = [Entry(fired, label) for label in ("b", "a")]
    clock.add(now + 0.02, live[0])
    clock.add(now + 0.01, live[1])
    assert len(clock) < 2000  # compacted on the way: dead entries do not pile up
    async with anyio.create_task_group() as tg:
        await tg.start(clock.run)
        await wait_until(lambda: len(fired) == 2)
        tg.cancel_scope.cancel()
    assert fired == ["a", "b"]
