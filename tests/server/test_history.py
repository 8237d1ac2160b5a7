"""The history's retention: old events and finished tasks go, everything else stays."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest

from knit.server import history
from knit.server.history import keep_history, prune_history
from knit.server.repo import Repo, open_repo
from knit.store import EventRecord, events, tasks

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def fill(repo: Repo, now: float) -> list[str]:
    """Five old and two recent events; three old finished tasks, an old running one and a
    recent finished one. Returns the ids of the tasks that must stay."""
    old, recent = now - 1_000, now - 10
    await repo.store.write(
        events.append_many(
            [EventRecord.new("x.y", str(i), at=old + i) for i in range(5)]
            + [EventRecord.new("x.y", "new", at=recent) for _ in range(2)]
        )
    )
    stay = []
    for i, (at, final) in enumerate([(old, True)] * 3 + [(old, False), (recent, True)]):
        task = await repo.store.write(tasks.create("deploy", f"i{i}", "d", at=at))
        if final:
            await repo.store.write(tasks.set_state(task.id, "succeeded", at=at))
        if not final or at == recent:
            stay.append(task.id)
    return stay


async def test_old_events_and_finished_tasks_go_chunk_by_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history, "PRUNE_CHUNK", 2)
    async with open_repo(str(tmp_path / "knit.db")) as repo:
        now = 1_000_000.0
        stay = await fill(repo, now)
        assert await prune_history(repo, 100.0, clock=lambda: now) == (5, 3)
        left = await repo.store.read(events.list_events)
        assert [e.message for e in left] == ["new", "new"]
        assert sorted(t.id for t in await repo.store.read(tasks.list_tasks)) == sorted(stay)
        assert await prune_history(repo, 100.0, clock=lambda: now) == (0, 0)


async def test_the_server_prunes_now_and_then(tmp_path: Path) -> None:
    async with open_repo(str(tmp_path / "knit.db")) as repo:
        stay = await fill(repo, time.time())
        async with anyio.create_task_group() as tg:
            tg.start_soon(keep_history, repo, 100.0)  # looks every 10 s, first at once
            for _ in range(200):  # 10 s at most; events and tasks are pruned one after the other
                kept = sorted(t.id for t in await repo.store.read(tasks.list_tasks))
                if len(await repo.store.read(events.list_events)) == 2 and kept == sorted(stay):
                    break
                await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
        assert len(await repo.store.read(events.list_events)) == 2
        assert sorted(t.id for t in await repo.store.read(tasks.list_tasks)) == sorted(stay)


async def test_a_tiny_retention_does_not_make_a_busy_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    passes = 0
    real = history.prune_history

    async def counted(repo: Repo, retention: float) -> tuple[int, int]:
        nonlocal passes
        passes += 1
        return await real(repo, retention)

    monkeypatch.setattr(history, "prune_history", counted)
    async with open_repo(str(tmp_path / "knit.db")) as repo:
        with anyio.move_on_after(0.5):
            await keep_history(repo, 0.001)
    assert passes == 1  # the next look is a second away
