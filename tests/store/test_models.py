"""The schema: portable DDL (it must compile for PostgreSQL, the scale-out path)."""

from __future__ import annotations

import pytest
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.dialects.sqlite.base import SQLiteDialect
from sqlalchemy.engine import Dialect
from sqlalchemy.schema import CreateIndex, CreateTable

from knit.store.models import Base

pytestmark = pytest.mark.unit

# PGDialect's constructor has no annotations; mypy --strict refuses to call it untyped.
DIALECTS: list[Dialect] = [PGDialect(), SQLiteDialect()]  # type: ignore[no-untyped-call]
PG = DIALECTS[0]


@pytest.mark.parametrize("dialect", DIALECTS, ids=["pg", "sqlite"])
def test_every_table_and_index_compiles_without_autoincrement(dialect: Dialect) -> None:
    for table in Base.metadata.sorted_tables:
        ddl = str(CreateTable(table).compile(dialect=dialect))
        assert "AUTOINCREMENT" not in ddl.upper() and "SERIAL" not in ddl.upper()
        for index in table.indexes:
            str(CreateIndex(index).compile(dialect=dialect))


def test_live_deployment_names_are_unique_through_a_partial_index() -> None:
    table = Base.metadata.tables["deployments"]
    (index,) = [i for i in table.indexes if i.name == "uq_deployments_live_name"]
    for dialect in DIALECTS:
        ddl = str(CreateIndex(index).compile(dialect=dialect))
        assert "UNIQUE" in ddl and "WHERE" in ddl


def test_json_columns_are_jsonb_on_postgresql() -> None:
    ddl = str(CreateTable(Base.metadata.tables["nodes"]).compile(dialect=PG))
    assert "labels JSONB" in ddl
