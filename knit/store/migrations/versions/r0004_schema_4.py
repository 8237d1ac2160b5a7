"""Schema 4: the leader lease and the servers of a database (``schema_version`` 4;
decision 0024).

Revision ID: 0004
Revises: 0003

Two new tables, empty: ``leases`` (the row named ``leader`` says which server leads) and
``servers`` (each server that used the database, and when it was last seen).
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("acquired_at", sa.Double(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
    )
    op.create_table(
        "servers",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("api_url", sa.String(512), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("started_at", sa.Double(), nullable=False),
        sa.Column("last_seen", sa.Double(), nullable=False),
    )
    _set_schema_version(4)


def downgrade() -> None:
    op.drop_table("servers")
    op.drop_table("leases")
    _set_schema_version(3)


def _set_schema_version(version: int) -> None:
    """The integer Knit before Alembic reads (and refuses a database newer than itself)."""
    schema_version = sa.table("schema_version", sa.column("version"), sa.column("applied_at"))
    op.execute(schema_version.update().values(version=version, applied_at=time.time()))
