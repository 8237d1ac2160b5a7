"""Schema 3: what each deployment's instances reserve, and how placement ranks nodes
(``schema_version`` 3; decision 0019).

Revision ID: 0003
Revises: 0002

Every deployment reserves nothing (``resources`` NULL) and spreads (``strategy`` defaults to
``'spread'``), as before. Versions' specs without the fields read the same.
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.add_column("deployments", sa.Column("resources", JSON, nullable=True))
    op.add_column(
        "deployments",
        sa.Column("strategy", sa.String(16), server_default=sa.text("'spread'"), nullable=False),
    )
    _set_schema_version(3)


def downgrade() -> None:
    # Knit never runs this; by hand (``alembic ... downgrade``) on SQLite, keep foreign keys
    # off (the ``alembic`` command's own connection does): the batch copies deployments,
    # and with them on, dropping the old table would cascade to the rows that refer to it.
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("strategy")
        batch.drop_column("resources")
    _set_schema_version(2)


def _set_schema_version(version: int) -> None:
    """The integer Knit before Alembic reads (and refuses a database newer than itself)."""
    schema_version = sa.table("schema_version", sa.column("version"), sa.column("applied_at"))
    op.execute(schema_version.update().values(version=version, applied_at=time.time()))
