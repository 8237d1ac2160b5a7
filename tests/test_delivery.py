"""deliver: tell at once when there is room, wait for room when the mailbox is full."""

from __future__ import annotations

import anyio
import pytest

from actors import Actor, open_actor_system
from knit.delivery import deliver

pytestmark = [pytest.mark.unit, pytest.mark.anyio]


class Collector(Actor[int]):
    def __init__(self, gate: anyio.Event, seen: list[int], all_in: anyio.Event) -> None:
        self.gate = gate
        self.seen = seen
        self.all_in = all_in

    async def handle(self, message: int) -> None:
        await self.gate.wait()
        self.seen.append(message)
        if len(self.seen) == 4:
            self.all_in.set()


async def test_deliver_queues_in_order_and_waits_for_room_when_full() -> None:
    gate, all_in = anyio.Event(), anyio.Event()
    seen: list[int] = []
    async with open_actor_system("test") as system:
        ref = await system.spawn(lambda: Collector(gate, seen, all_in), name="c", mailbox_size=2)
        await deliver(ref, 1)  # handled first, held at the gate
        await anyio.wait_all_tasks_blocked()
        await deliver(ref, 2)
        await deliver(ref, 3)  # the mailbox (2) is full now
        done = anyio.Event()

        async def fourth() -> None:
            await deliver(ref, 4)
            done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(fourth)
            await anyio.wait_all_tasks_blocked()
            assert not done.is_set()  # waiting for room
            gate.set()
        with anyio.fail_after(5):
            await all_in.wait()
    assert seen == [1, 2, 3, 4]
