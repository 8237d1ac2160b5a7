"""Row ops on SQLite: prepared SQL over parameter tuples writes exactly what Core writes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import Column, Double, MetaData, String, Table, insert, select
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncConnection

from knit.errors import Conflict
from knit.store import (
    EventRecord,
    HeartbeatUpsert,
    InstanceRecord,
    InstanceStatusUpdate,
    Store,
    deployments,
    events,
    instances,
    nodes,
    open_database,
    tasks,
)
from knit.store.models import Base, ContainerInstance, Event, Node, Task
from knit.store.ops import Prepared, RowsOp, _prepared, execute_rows

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def beat(node_id: str, at: float, address: str | None = None) -> HeartbeatUpsert:
    return HeartbeatUpsert(
        node_id=node_id,
        hostname=f"host-{node_id}",
        at=at,
        labels={"zone": "a", "gpu": "yes"},
        cpus=4,
        memory_bytes=8 << 30,
        docker_version="27.3.1",
        agent_version="0.1.0",
        public_key="k" * 44,
        address=address,
    )


async def core_execute(
    conn: AsyncConnection, op: RowsOp[Any], rows: Sequence[Any] | None = None
) -> None:
    """What the writer ran before prepared statements: Core with dict rows."""
    await conn.execute(op.statement(conn), [dict(row) for row in (rows or op.rows)])


async def stored_rows(conn: AsyncConnection, table: Table) -> list[dict[str, Any]]:
    """Every row of ``table`` as SQLite holds it (no result processing)."""
    columns = ", ".join(f'"{c.name}"' for c in table.columns)
    result = await conn.exec_driver_sql(f"SELECT {columns} FROM {table.name} ORDER BY id")
    return [dict(row._mapping) for row in result]


def write_ops(deployment_id: str) -> list[tuple[Table, Sequence[RowsOp[Any]]]]:
    """One op of each kind the writer merges, with JSON, boolean and float columns."""
    inst = InstanceRecord.new(deployment_id, 0, at=1.5, node_id="n1")
    task = tasks.create("deploy", inst.id, deployment_id, node_id="n1", at=2.0)
    return [
        (
            Base.metadata.tables[Node.__tablename__],
            [nodes.record_heartbeats([beat("n1", 1.0, "10.0.0.1"), beat("n2", 1.0)])],
        ),
        (Base.metadata.tables[Node.__tablename__], [nodes.record_heartbeat(beat("n1", 2.0))]),
        (
            Base.metadata.tables[ContainerInstance.__tablename__],
            [
                instances.insert_many([inst]),
                instances.update_statuses(
                    [InstanceStatusUpdate(inst.id, "error", at=3, error="x", exit_code=2)]
                ),
                instances.upsert_one(InstanceRecord.new(deployment_id, 1, at=4, node_id=None)),
            ],
        ),
        (
            Base.metadata.tables[Task.__tablename__],
            [task, tasks.record_state(task.result.id, "failed", attempt=2, error="e", at=5)],
        ),
        (
            Base.metadata.tables[Event.__tablename__],
            [
                events.append("node.healthy", "ok", node_id="n1", at=6),
                events.append_many([EventRecord.new("k", "m", at=7.25, task_id="t")]),
            ],
        ),
    ]


# SQLite-only below (tmp_path files): the prepared and direct write paths run on SQLite only;
# PostgreSQL runs every op through Core.


async def test_prepared_row_ops_store_what_core_stores(tmp_path: Path) -> None:
    deployments_table = Base.metadata.tables["deployments"]
    async with (
        open_database(tmp_path / "core.db") as core,
        open_database(tmp_path / "prepared.db") as prepared,
    ):
        async with core.transaction() as conn:
            web = await deployments.create("web", "nginx")(conn)
            plan = write_ops(web.id)
            for _, ops in plan:
                for op in ops:
                    await core_execute(conn, op)
            (web_row,) = await stored_rows(conn, deployments_table)
        async with prepared.transaction() as conn:
            marks = ", ".join("?" for _ in web_row)
            names = ", ".join(f'"{name}"' for name in web_row)
            await conn.exec_driver_sql(
                f"INSERT INTO deployments ({names}) VALUES ({marks})", tuple(web_row.values())
            )
            for _, ops in plan:
                for op in ops:
                    assert _prepared(conn, op, op.rows[0]) is not None, op.key
                    await op(conn)
        for table in {table for table, _ in plan}:
            async with core.read() as a, prepared.read() as b:
                assert await stored_rows(b, table) == await stored_rows(a, table), table.name


async def test_a_statement_with_python_side_defaults_runs_through_core(tmp_path: Path) -> None:
    stamped = Table(
        "stamped",
        MetaData(),
        Column("id", String, primary_key=True),
        Column("at", Double, default=lambda: 9.0),
    )
    async with open_database(tmp_path / "k.db") as db, db.transaction() as conn:
        await conn.run_sync(stamped.metadata.create_all)
        op: RowsOp[None] = RowsOp("stamped.insert", lambda c: insert(stamped), [{"id": "a"}], None)
        assert _prepared(conn, op, op.rows[0]) is None
        await op(conn)
        assert (await conn.execute(select(stamped.c.at))).scalar_one() == 9.0


async def test_a_row_missing_a_parameter_of_the_first_fails_as_in_core(tmp_path: Path) -> None:
    good = events.append("k", "fine")
    partial = {"id": "x", "kind": "k", "message": "m"}  # no "at": NOT NULL
    async with open_database(tmp_path / "k.db") as db:
        for run in (core_execute, execute_rows):
            async with db.transaction() as conn:
                merged: RowsOp[int] = RowsOp(good.key, good.statement, [*good.rows, partial], 2)
                with pytest.raises(StatementError, match="'at'"):
                    await run(conn, merged, merged.rows)
                await conn.rollback()


async def test_a_row_missing_a_parameter_fails_alone_in_the_writer(store: Store) -> None:
    good = events.append("k", "fine")
    bad: RowsOp[int] = RowsOp(good.key, good.statement, [{"id": "x", "kind": "k"}], 1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(store.write, good)
        with pytest.raises(Conflict, match=r"(?i)not.null"):
            await store.write(bad)
    listed = await store.read(events.list_events)
    assert [e.message for e in listed] == ["fine"]


def sqlite_prepared(op: RowsOp[Any]) -> Prepared:
    """``op``'s statement prepared for SQLite, without a database."""
    from sqlalchemy.dialects import sqlite

    class Conn:
        dialect = sqlite.dialect()

    prepared = _prepared(Conn(), op, op.rows[0])  # type: ignore[arg-type]
    assert prepared is not None
    return prepared


def test_many_rows_go_as_statements_of_a_few_fixed_sizes() -> None:
    prepared = sqlite_prepared(events.append("k", "m", at=1.0))
    params = [(str(i),) * 8 for i in range(303)]
    runs = prepared.statements(params)
    sizes = [len(p) // 8 if not many else -len(p) for _, p, many in runs]
    assert sizes == [256, 32, 4, 4, 4, -3]  # the last three one by one (executemany)
    flat = [v for _, p, many in runs if not many for v in p]
    assert flat == [v for row in params[:300] for v in row]
    assert runs[0][0].count("(?, ?, ?, ?, ?, ?, ?, ?)") == 256


async def test_a_direct_batch_of_many_rows_stores_what_core_stores(tmp_path: Path) -> None:
    from knit.store.db import WRITE_BEGIN
    from knit.store.direct import write_direct

    async with (
        open_database(tmp_path / "core.db") as core,
        open_database(tmp_path / "direct.db") as direct,
    ):
        async with core.transaction() as conn:
            web = await deployments.create("web", "nginx")(conn)
        async with direct.transaction() as conn:
            await deployments.create("web", "nginx", deployment_id=web.id)(conn)
        made = [InstanceRecord.new(web.id, i, at=1.5, node_id=None) for i in range(300)]
        again = [InstanceRecord.new(web.id, i, at=2.5) for i in range(40)]
        made_tasks = [tasks.create("deploy", i.id, web.id, at=1.0) for i in made[:70]]
        states = [
            tasks.record_state(t.result.id, "accepted", attempt=i, at=2.0)
            for i, t in enumerate(made_tasks)
        ]

        def merged(ops: list[RowsOp[Any]]) -> RowsOp[None]:
            return RowsOp(ops[0].key, ops[0].statement, [r for op in ops for r in op.rows], None)

        ops: list[RowsOp[Any]] = [
            instances.insert_many(made),
            events.append_many([EventRecord.new("k", f"m{i}", at=i / 4) for i in range(517)]),
            instances.upsert_many(again + again[:7]),  # one id twice in a statement
            merged(made_tasks),
            merged(states[:36]),  # UPDATE ... FROM (VALUES ...): 32 + 4 rows
            merged(states[36:68]),
            merged(  # a key twice in a statement of four: one row at a time
                [
                    tasks.record_state(made_tasks[68].result.id, "failed", attempt=9, at=3),
                    tasks.record_state(made_tasks[68].result.id, "succeeded", attempt=1, at=4),
                    *states[68:],
                ]
            ),
        ]
        async with core.transaction() as conn:
            for op in ops:
                await core_execute(conn, op)
        async with direct.write_engine.connect() as conn:
            assert await write_direct(conn, [(op, op.rows) for op in ops], WRITE_BEGIN, 30.0)
        for table in ("container_instances", "events", "tasks"):
            async with core.read() as a, direct.read() as b:
                t = Base.metadata.tables[table]
                assert await stored_rows(b, t) == await stored_rows(a, t), table


def test_updates_by_key_go_as_update_from_values_unless_a_key_repeats() -> None:
    prepared = sqlite_prepared(tasks.record_state("t", "accepted", attempt=1))
    distinct = [("s", 1, None, 1.0, f"t{i}") for i in range(4)]
    ((sql, params, many),) = prepared.statements(distinct)
    assert not many and "FROM (VALUES" in sql and sql.endswith("WHERE tasks.id = v.column5")
    assert params == [v for row in distinct for v in row]
    repeated = [*distinct[:3], distinct[0]]
    assert prepared.statements(repeated) == [(prepared.sql, repeated, True)]
