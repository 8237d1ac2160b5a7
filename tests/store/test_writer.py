"""The one writer: batching, no lost updates, isolated failures, cancellation, shutdown."""

from __future__ import annotations

import logging

import anyio
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from knit.errors import Conflict, NotFound, StoreError
from knit.store import Store, StoreWriter, deployments, networks, open_database
from knit.store.db import Database
from knit.store.models import Deployment
from knit.store.ops import Op

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def bump_replicas(deployment_id: str) -> Op[int]:
    """Read-then-write: exactly what loses updates without one writer."""

    async def op(conn: AsyncConnection) -> int:
        stmt = select(Deployment.replicas).where(Deployment.id == deployment_id)
        current = (await conn.execute(stmt)).scalar_one()
        await conn.execute(
            update(Deployment).where(Deployment.id == deployment_id).values(replicas=current + 1)
        )
        return current + 1

    return op


def boom(message: str) -> Op[None]:
    async def op(conn: AsyncConnection) -> None:
        raise RuntimeError(message)

    return op


def write_then_fail(name: str) -> Op[None]:
    """An op that writes, then fails: its write must not survive."""

    async def op(conn: AsyncConnection) -> None:
        await networks.create(name)(conn)
        raise NotFound("thing", name)

    return op


async def test_submit_returns_the_ops_result_after_commit(store: Store) -> None:
    record = await store.write(networks.create("front", subnet="10.1.0.0/24"))
    assert record.name == "front"
    assert await store.read(networks.get_network, record.id) == record


async def test_no_lost_updates_under_200_concurrent_submitters(store: Store) -> None:
    web = await store.write(deployments.create("web", "nginx", replicas=0))
    seen: list[int] = []

    async def submitter() -> None:
        for _ in range(5):
            seen.append(await store.write(bump_replicas(web.id)))

    async def reader() -> None:
        for _ in range(20):
            await store.read(deployments.get_deployment, web.id)

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for _ in range(200):
                tg.start_soon(submitter)
            for _ in range(10):
                tg.start_soon(reader)
    assert (await store.read(deployments.get_deployment, web.id)).replicas == 1000
    assert sorted(seen) == list(range(1, 1001))
    assert store.writer.stats.largest_batch > 1  # concurrent submissions were coalesced


async def test_a_failing_op_does_not_lose_the_rest_of_its_batch(db_url: str) -> None:
    async with open_database(db_url) as db:
        writer = StoreWriter(db)
        # Queue everything before the writer runs, so it all lands in one batch.
        writer.submit_nowait(networks.create("a"))
        outcomes: dict[str, object] = {}
        all_done = anyio.Event()

        async def submit(name: str, op: Op[object]) -> None:
            try:
                outcomes[name] = await writer.submit(op)
            except Exception as exc:
                outcomes[name] = exc
            if len(outcomes) == 5:
                all_done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(submit, "b", networks.create("b"))
            tg.start_soon(submit, "dup", networks.create("a"))
            tg.start_soon(submit, "bug", boom("bug"))
            tg.start_soon(submit, "partial", write_then_fail("c"))
            tg.start_soon(submit, "d", networks.create("d"))
            await anyio.wait_all_tasks_blocked()
            await tg.start(writer.run)
            await all_done.wait()
            await writer.aclose()

        assert writer.stats.batches == 1
        assert writer.stats.retried_batches == 1
        assert isinstance(outcomes["dup"], Conflict)
        assert isinstance(outcomes["bug"], RuntimeError)
        assert isinstance(outcomes["partial"], NotFound)
        async with db.read() as conn:
            names = [n.name for n in await networks.list_networks(conn)]
        assert names == ["a", "b", "d"]  # "c" was rolled back with its savepoint


async def test_a_single_failing_op_gets_its_error_and_the_writer_goes_on(store: Store) -> None:
    await store.write(networks.create("a"))
    with pytest.raises(Conflict, match="already exists"):
        await store.write(networks.create("a"))
    with pytest.raises(RuntimeError, match="bug"):
        await store.write(boom("bug"))
    assert (await store.write(networks.create("b"))).name == "b"


async def test_integrity_errors_become_conflicts(store: Store) -> None:
    from knit.store import InstanceRecord, instances

    orphan = InstanceRecord.new("no-such-deployment", 0, at=1.0)
    with pytest.raises(Conflict, match=r"(?i)foreign key"):
        await store.write(instances.insert_many([orphan]))


async def test_fire_and_forget_failures_are_logged_not_raised(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="knit.store.writer"):
        store.write_nowait(boom("lost"))
        await store.write(networks.create("after"))  # FIFO: the failing op ran before
    assert store.writer.stats.failed_ops == 1
    assert any("boom.<locals>.op" in r.getMessage() for r in caplog.records)


async def test_a_cancelled_caller_does_not_withdraw_a_queued_op(db_url: str) -> None:
    async with open_database(db_url) as db:
        writer = StoreWriter(db)
        async with anyio.create_task_group() as tg:
            with anyio.move_on_after(0.05):
                await writer.submit(networks.create("kept"))  # the writer is not running yet
            await tg.start(writer.run)
            await writer.aclose()
        async with db.read() as conn:
            assert [n.name for n in await networks.list_networks(conn)] == ["kept"]


async def test_aclose_commits_everything_queued_then_refuses(db_url: str) -> None:
    async with open_database(db_url) as db:
        writer = StoreWriter(db, max_batch=7)
        async with anyio.create_task_group() as tg:
            await tg.start(writer.run)
            for i in range(100):
                writer.submit_nowait(networks.create(f"n{i}"))
            await writer.aclose()
        with pytest.raises(StoreError, match="stopped"):
            writer.submit_nowait(networks.create("late"))
        with pytest.raises(StoreError, match="stopped"):
            await writer.submit(networks.create("late"))
        async with db.read() as conn:
            assert len(await networks.list_networks(conn)) == 100
        assert writer.stats.largest_batch <= 7


async def test_cancelling_the_writer_finishes_its_batch_and_fails_queued_ops(
    db_url: str,
) -> None:
    async with open_database(db_url) as db:
        writer = StoreWriter(db, max_batch=1)
        entered, release = anyio.Event(), anyio.Event()
        outcomes: dict[str, object] = {}

        def slow_create(name: str) -> Op[object]:
            async def op(conn: AsyncConnection) -> object:
                entered.set()
                await release.wait()
                return await networks.create(name)(conn)

            return op

        async def submit(name: str, op: Op[object]) -> None:
            try:
                outcomes[name] = await writer.submit(op)
            except StoreError as exc:
                outcomes[name] = exc

        async with anyio.create_task_group() as tg:
            scope = anyio.CancelScope()

            async def run_writer() -> None:
                with scope:
                    await writer.run()

            tg.start_soon(run_writer)
            tg.start_soon(submit, "in-flight", slow_create("in-flight"))
            await entered.wait()
            tg.start_soon(submit, "queued", networks.create("queued"))
            await anyio.wait_all_tasks_blocked()
            scope.cancel()  # the batch in flight is shielded: it waits for ``release``
            await anyio.wait_all_tasks_blocked()
            release.set()
        assert not isinstance(outcomes["in-flight"], Exception)
        assert isinstance(outcomes["queued"], StoreError)
        with pytest.raises(StoreError, match="stopped"):
            await writer.submit(networks.create("after"))
        async with db.read() as conn:
            assert [n.name for n in await networks.list_networks(conn)] == ["in-flight"]


async def test_a_full_queue_refuses_fire_and_forget_ops(db_url: str) -> None:
    async with open_database(db_url) as db:
        writer = StoreWriter(db, buffer=2)
        writer.submit_nowait(networks.create("a"))
        writer.submit_nowait(networks.create("b"))
        with pytest.raises(StoreError, match="overloaded"):
            writer.submit_nowait(networks.create("c"))
        assert writer.queued == 2
        await writer.aclose()  # never ran: queued ops fail, nothing hangs
        async with db.read() as conn:
            assert await networks.list_networks(conn) == []


async def test_linger_gathers_ops_into_one_batch(db_url: str) -> None:
    async with open_database(db_url) as db:
        writer = StoreWriter(db, linger=0.2)
        async with anyio.create_task_group() as tg:
            await tg.start(writer.run)

            async def later(name: str, delay: float) -> None:
                await anyio.sleep(delay)
                await writer.submit(networks.create(name))

            tg.start_soon(later, "a", 0)
            tg.start_soon(later, "b", 0.05)
            await anyio.sleep(0.1)
            await writer.aclose()
        assert writer.stats.batches == 1


async def test_a_bad_op_in_a_merged_statement_fails_alone(db_url: str) -> None:
    from knit.store import InstanceRecord, instances

    async with open_database(db_url) as db:
        writer = StoreWriter(db)
        async with anyio.create_task_group() as tg:
            await tg.start(writer.run)
            web = await writer.submit(deployments.create("web", "nginx"))
            await writer.aclose()
        writer = StoreWriter(db)
        good = [InstanceRecord.new(web.id, i, at=1.0) for i in range(4)]
        bad = InstanceRecord.new("no-such-deployment", 9, at=1.0)
        outcomes: list[object] = []
        all_done = anyio.Event()

        async def submit(op: Op[int]) -> None:
            try:
                outcomes.append(await writer.submit(op))
            except Conflict as exc:
                outcomes.append(exc)
            if len(outcomes) == 5:
                all_done.set()

        queued = [instances.insert_many([r]) for r in [good[0], good[1], bad, good[2], good[3]]]
        async with anyio.create_task_group() as tg:
            for op in queued:
                tg.start_soon(submit, op)
                await anyio.wait_all_tasks_blocked()  # keeps the queue in this order
            await tg.start(writer.run)
            await all_done.wait()
            await writer.aclose()
        assert writer.stats.statements_saved == 4  # five ops queued as one statement
        assert writer.stats.retried_batches == 1
        assert writer.stats.direct_batches == 0  # it failed there, and ran again op by op
        assert sum(isinstance(o, Conflict) for o in outcomes) == 1
        async with db.read() as conn:
            stored = await instances.list_instances(conn)
        assert {i.id for i in stored} == {g.id for g in good}


class Meltdown(BaseException):
    """Not an ``Exception``: escapes every ``except Exception``."""


async def test_an_op_raising_a_base_exception_crashes_the_writer_but_no_caller_hangs(
    db_url: str,
) -> None:
    async def melt(conn: AsyncConnection) -> None:
        raise Meltdown

    async with open_database(db_url) as db:
        writer = StoreWriter(db)
        errors: list[Exception] = []

        async def submit(op: Op[object]) -> None:
            try:
                await writer.submit(op)
            except StoreError as exc:
                errors.append(exc)

        with pytest.raises(BaseExceptionGroup) as caught:
            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(submit, networks.create("same-batch"))
                    tg.start_soon(submit, melt)
                    await anyio.wait_all_tasks_blocked()
                    tg.start_soon(writer.run)
        assert caught.group_contains(Meltdown)
        assert len(errors) == 2
        assert "crashed" in str(errors[0])


async def run_in_one_batch(db: Database, ops: list[Op[object]]) -> StoreWriter:
    """Queue ``ops`` in this order, then start a writer: they form one batch."""
    writer = StoreWriter(db)
    async with anyio.create_task_group() as tg:
        for op in ops:
            writer.submit_nowait(op)
        await tg.start(writer.run)
        await writer.aclose()
    return writer


async def test_interleaved_row_ops_of_two_kinds_merge_into_two_statements(
    db_url: str,
) -> None:
    from knit.store import EventRecord, InstanceRecord, events, instances

    async with open_database(db_url) as db:
        async with anyio.create_task_group() as tg:
            setup = StoreWriter(db)
            await tg.start(setup.run)
            web = await setup.submit(deployments.create("web", "nginx"))
            await setup.aclose()
        ops: list[Op[object]] = []
        for i in range(10):
            ops.append(instances.upsert_one(InstanceRecord.new(web.id, i, at=1.0)))
            ops.append(events.append_many([EventRecord.new("instance.created", f"{i}", at=1.0)]))
        writer = await run_in_one_batch(db, ops)
        assert writer.stats.batches == 1
        assert writer.stats.statements_saved == 18  # twenty ops, two statements
        # Row statements only: one call to SQLite's thread (PostgreSQL runs them through
        # Core: asyncpg pipelines an executemany on its own).
        assert writer.stats.direct_batches == (1 if db.dialect_name == "sqlite" else 0)
        async with db.read() as conn:
            assert len(await instances.list_instances(conn)) == 10
            assert len(await events.list_events(conn, limit=100)) == 10


async def test_a_row_op_never_moves_ahead_of_another_write_of_the_same_row(
    db_url: str,
) -> None:
    from knit.store import InstanceRecord, instances

    async with open_database(db_url) as db:
        async with anyio.create_task_group() as tg:
            setup = StoreWriter(db)
            await tg.start(setup.run)
            web = await setup.submit(deployments.create("web", "nginx"))
            await setup.aclose()
        first = InstanceRecord.new(web.id, 0, at=1.0)
        again = InstanceRecord.new(web.id, 0, at=2.0, instance_id=first.id, status="running")
        other = InstanceRecord.new(web.id, 1, at=1.0)
        ops: list[Op[object]] = [
            instances.upsert_one(first),
            instances.delete_one(first.id),
            instances.upsert_one(other),  # other rows: joins the first upsert
            instances.upsert_one(again),  # the deleted row: must stay after the delete
        ]
        writer = await run_in_one_batch(db, ops)
        assert writer.stats.statements_saved == 1
        async with db.read() as conn:
            stored = {i.id: i.status for i in await instances.list_instances(conn)}
        assert stored == {first.id: "running", other.id: "pending"}


async def test_a_child_row_never_moves_ahead_of_a_write_of_its_parent_table(
    db_url: str,
) -> None:
    from knit.store import InstanceRecord, NodeRecord, instances, nodes

    async with open_database(db_url) as db:
        async with anyio.create_task_group() as tg:
            setup = StoreWriter(db)
            await tg.start(setup.run)
            web = await setup.submit(deployments.create("web", "nginx"))
            await setup.aclose()
        node = NodeRecord(
            id="n1",
            hostname="h1",
            status="healthy",
            last_heartbeat=1.0,
            eligible=True,
            labels={},
            cpus=1.0,
            memory_bytes=1,
            docker_version="",
            agent_version="",
            public_key="",
            address=None,
            registered_at=1.0,
        )
        ops: list[Op[object]] = [
            instances.upsert_one(InstanceRecord.new(web.id, 0, at=1.0)),
            nodes.upsert_node(node),  # a new node...
            instances.upsert_one(InstanceRecord.new(web.id, 1, at=1.0, node_id="n1")),  # ...used
        ]
        writer = await run_in_one_batch(db, ops)
        assert writer.stats.statements_saved == 0
        assert writer.stats.retried_batches == 0
        assert writer.stats.failed_ops == 0
        async with db.read() as conn:
            assert len(await instances.list_instances(conn)) == 2


async def test_merged_full_upserts_of_one_row_write_its_last_version(db_url: str) -> None:
    from knit.store import InstanceRecord, instances

    async with open_database(db_url) as db:
        async with anyio.create_task_group() as tg:
            setup = StoreWriter(db)
            await tg.start(setup.run)
            web = await setup.submit(deployments.create("web", "nginx"))
            await setup.aclose()
        first = InstanceRecord.new(web.id, 0, at=1.0)
        statuses = ["pending", "running", "stopped", "running"]
        ops: list[Op[object]] = [
            instances.upsert_one(
                InstanceRecord.new(web.id, 0, at=1.0, instance_id=first.id, status=status)
            )
            for status in statuses
        ]
        ops.append(instances.upsert_one(InstanceRecord.new(web.id, 1, at=1.0)))
        writer = await run_in_one_batch(db, ops)
        assert writer.stats.statements_saved == 4
        async with db.read() as conn:
            stored = {i.index: i.status for i in await instances.list_instances(conn)}
        assert stored == {0: "running", 1: "pending"}


async def test_a_direct_batch_past_its_timeout_is_interrupted_and_the_writer_goes_on(
    db_url: str,
) -> None:
    from knit.store import EventRecord, events

    async with open_database(db_url) as db:
        rows = [EventRecord.new("instance.created", f"{i}", at=1.0) for i in range(50_000)]
        writer = StoreWriter(db, batch_timeout=0.001)
        async with anyio.create_task_group() as tg:
            await tg.start(writer.run)
            with pytest.raises(StoreError, match="longer than"):
                await writer.submit(events.append_many(rows))
            writer.batch_timeout = 30.0
            await writer.submit(events.append_many(rows[:1]))  # the write lock is free
            await writer.aclose()
        async with db.read() as conn:
            assert len(await events.list_events(conn, limit=100)) == 1
