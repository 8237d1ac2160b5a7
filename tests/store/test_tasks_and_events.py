"""Tasks (states, unfinished list for restarts) and events (newest first, filters, pages)."""

from __future__ import annotations

import pytest

from knit.errors import NotFound
from knit.store import EventRecord, Store, events, tasks

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def test_task_lifecycle(store: Store) -> None:
    task = await store.write(tasks.create("deploy", "i1", "d1", node_id="n1", at=1.0))
    assert (task.state, task.attempt, task.error) == ("pending", 1, None)
    published = await store.write(tasks.set_state(task.id, "published", at=2.0))
    assert (published.state, published.updated_at, published.node_id) == ("published", 2.0, "n1")
    retried = await store.write(tasks.set_state(task.id, "published", attempt=2, node_id=None))
    assert (retried.attempt, retried.node_id) == (2, None)
    failed = await store.write(tasks.set_state(task.id, "failed", error="image not found"))
    assert (failed.state, failed.error, failed.attempt) == ("failed", "image not found", 2)
    assert await store.read(tasks.get_task, task.id) == failed
    with pytest.raises(NotFound):
        await store.write(tasks.set_state("ghost", "failed"))
    with pytest.raises(ValueError, match="state"):
        tasks.set_state(task.id, "teleported")
    with pytest.raises(ValueError, match="kind"):
        tasks.create("dance", "i1", "d1")


async def test_unfinished_tasks_are_listed_oldest_first(store: Store) -> None:
    a = await store.write(tasks.create("deploy", "i1", "d1", at=1.0))
    b = await store.write(tasks.create("stop", "i2", "d1", node_id=None, at=2.0))
    c = await store.write(tasks.create("deploy", "i3", "d2", at=3.0))
    await store.write(tasks.set_state(b.id, "accepted"))
    await store.write(tasks.set_state(c.id, "succeeded"))
    unfinished = await store.read(tasks.list_unfinished)
    assert [t.id for t in unfinished] == [a.id, b.id]
    assert [t.id for t in await store.read(tasks.list_tasks, deployment_id="d2")] == [c.id]
    assert [t.id for t in await store.read(tasks.list_tasks, instance_id="i2")] == [b.id]


async def test_record_state_is_fire_and_forget(store: Store) -> None:
    task = await store.write(tasks.create("deploy", "i1", "d1"))
    store.write_nowait(tasks.record_state(task.id, "published", attempt=1, at=5.0))
    store.write_nowait(tasks.record_state(task.id, "accepted", attempt=1, at=6.0))
    store.write_nowait(tasks.record_state("ghost", "accepted", attempt=1))
    await store.write(tasks.record_state(task.id, "succeeded", attempt=1, at=7.0))
    stored = await store.read(tasks.get_task, task.id)
    assert (stored.state, stored.updated_at) == ("succeeded", 7.0)
    assert store.writer.stats.failed_ops == 0


async def test_tasks_are_pruned_and_deleted(store: Store) -> None:
    old = await store.write(tasks.create("deploy", "i1", "d1", at=1.0))
    await store.write(tasks.set_state(old.id, "succeeded", at=1.0))
    live = await store.write(tasks.create("deploy", "i2", "d1", at=1.0))
    assert await store.write(tasks.prune_finished(before=10.0)) == 1
    assert await store.write(tasks.delete_many([live.id, "ghost"])) == 1
    assert await store.read(tasks.list_tasks) == []


async def test_finished_tasks_are_pruned_a_chunk_at_a_time(store: Store) -> None:
    made = [await store.write(tasks.create("deploy", f"i{i}", "d1", at=1.0)) for i in range(5)]
    for task in made:
        await store.write(tasks.set_state(task.id, "failed", at=1.0))
    running = await store.write(tasks.create("deploy", "i9", "d1", at=1.0))
    assert await store.write(tasks.prune_finished(before=10.0, limit=3)) == 3
    assert await store.write(tasks.prune_finished(before=10.0, limit=3)) == 2
    assert [t.id for t in await store.read(tasks.list_tasks)] == [running.id]


def event(at: float, kind: str = "x.y", **ids: str) -> EventRecord:
    return EventRecord.new(kind, f"{kind} at {at}", at=at, **ids)


async def test_events_newest_first_with_filters(store: Store) -> None:
    await store.write(
        events.append_many(
            [
                event(1.0, "node.registered", node_id="n1"),
                event(2.0, "instance.running", deployment_id="d1", node_id="n1", instance_id="i1"),
                event(3.0, "deployment.pending", deployment_id="d2"),
                event(4.0, "node.unhealthy", node_id="n1"),
            ]
        )
    )
    await store.write(events.append("task.failed", "boom", task_id="t1", at=5.0))
    listed = await store.read(events.list_events)
    assert [e.at for e in listed] == [5.0, 4.0, 3.0, 2.0, 1.0]
    on_n1 = await store.read(events.list_events, node_id="n1")
    assert [e.kind for e in on_n1] == ["node.unhealthy", "instance.running", "node.registered"]
    of_d1 = await store.read(events.list_events, deployment_id="d1")
    assert [e.instance_id for e in of_d1] == ["i1"]
    assert len(await store.read(events.list_events, kinds=["task.failed"])) == 1
    assert len(await store.read(events.list_events, instance_id="i1")) == 1
    assert [e.at for e in await store.read(events.list_events, limit=2)] == [5.0, 4.0]


async def test_event_pages_never_skip_or_repeat_even_with_equal_timestamps(store: Store) -> None:
    batch = [event(float(i // 3), deployment_id="d1") for i in range(30)]
    await store.write(events.append_many(batch))
    seen: list[str] = []
    before: str | None = None
    while True:
        page = await store.read(events.list_events, deployment_id="d1", limit=7, before=before)
        if not page:
            break
        seen.extend(e.id for e in page)
        before = page[-1].id
    assert sorted(seen) == sorted(e.id for e in batch)
    assert len(seen) == len(set(seen)) == 30
    with pytest.raises(NotFound):
        await store.read(events.list_events, before="no-such-event")


async def test_old_events_are_pruned(store: Store) -> None:
    await store.write(events.append_many([event(float(i)) for i in range(10)]))
    assert await store.write(events.prune(before=5.0)) == 5
    assert [e.at for e in await store.read(events.list_events)] == [9.0, 8.0, 7.0, 6.0, 5.0]


async def test_old_events_are_pruned_oldest_first_a_chunk_at_a_time(store: Store) -> None:
    await store.write(events.append_many([event(float(i)) for i in reversed(range(10))]))
    assert await store.write(events.prune(before=5.0, limit=2)) == 2
    assert [e.at for e in await store.read(events.list_events)][-1] == 2.0
    assert await store.write(events.prune(before=5.0, limit=100)) == 3
    assert await store.write(events.prune(before=5.0, limit=100)) == 0
