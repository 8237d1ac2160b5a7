"""Schema 2: deployment versions, update policies, health checks and rollouts
(``schema_version`` 2; decision 0017 made it in place, before Alembic).

Revision ID: 0002
Revises: 0001

Adds columns to ``deployments`` and ``container_instances`` (each with a server default
or nullable, so the rows already there get a value), creates ``deployment_versions`` and
fills it with version 1 of every deployment: the spec it runs, its secret variables'
ciphertext, ``stable`` for the deployments not deleted (they converged under the old
code, and a rollback from version 2 should find them).

The spec is built here, not by ``knit.store.deployments``: a revision must do tomorrow
what it does today. It is the shape ``knit.store.deployments.spec_json`` gave when this
revision was written (with schema 3's ``resources: None`` and ``strategy: "spread"``, the
values every deployment has after 0003), so a version 1 made here compares equal to the
deployment it describes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

ID = sa.String(64)
JSON = sa.JSON().with_variant(JSONB(), "postgresql")

UPDATE_POLICY_DEFAULTS: Mapping[str, Any] = {
    "max_parallel": 1,
    "order": "stop_first",
    "min_healthy_time": 10.0,
    "healthy_deadline": 300.0,
    "on_failure": "pause",
}
"""The default update policy when this revision was written (an empty stored policy)."""


def upgrade() -> None:
    # ADD COLUMN is plain on SQLite too: no batch (a batch reflects and may copy the table).
    op.add_column(
        "deployments",
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
    )
    op.add_column(
        "deployments", sa.Column("update", JSON, server_default=sa.text("'{}'"), nullable=False)
    )
    op.add_column("deployments", sa.Column("health_check", JSON, nullable=True))
    op.add_column("deployments", sa.Column("rollout", JSON, nullable=True))
    op.add_column(
        "container_instances",
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
    )
    op.add_column(
        "container_instances",
        sa.Column("health", sa.String(16), server_default=sa.text("'none'"), nullable=False),
    )
    op.add_column(
        "container_instances",
        sa.Column("restarts", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    versions = op.create_table(
        "deployment_versions",
        sa.Column(
            "deployment_id",
            ID,
            sa.ForeignKey("deployments.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("version", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("spec", JSON, nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("stable", sa.Boolean(), nullable=False),
        sa.Column("secrets_encrypted", sa.Text(), nullable=True),
    )
    assert versions is not None
    rows = [_first_version(row) for row in op.get_bind().execute(_deployments_query()).mappings()]
    if rows:
        op.bulk_insert(versions, rows)
    _set_schema_version(2)


def downgrade() -> None:
    # Knit never runs this; by hand (``alembic ... downgrade``) on SQLite, keep foreign keys
    # off (the ``alembic`` command's own connection does): the batches copy the tables, and
    # with them on, dropping the old ``deployments`` would cascade to the rows referring to it.
    op.drop_table("deployment_versions")
    with op.batch_alter_table("container_instances") as batch:
        for name in ("restarts", "health", "version"):
            batch.drop_column(name)
    with op.batch_alter_table("deployments") as batch:
        for name in ("rollout", "health_check", "update", "version"):
            batch.drop_column(name)
    _set_schema_version(1)


def _deployments_query() -> sa.Select[Any]:
    """Schema 1's deployments with their secret variables (names and ciphertext)."""
    deployments = sa.table(
        "deployments",
        *(
            sa.column(name, JSON)
            for name in (
                "network_attachments",
                "templates",
                "env",
                "command",
                "ports",
                "node_selector",
                "restart_policy",
            )
        ),
        *(
            sa.column(name)
            for name in (
                "id",
                "name",
                "image",
                "registry_credentials_id",
                "replicas",
                "lost_after",
                "updated_at",
                "deleted",
            )
        ),
    )
    secrets = sa.table(
        "deployment_secrets",
        sa.column("deployment_id"),
        sa.column("names", JSON),
        sa.column("env_encrypted"),
    )
    return sa.select(
        deployments, secrets.c.names.label("secret_env_names"), secrets.c.env_encrypted
    ).outerjoin(secrets, secrets.c.deployment_id == deployments.c.id)


def _first_version(row: Mapping[Any, Any]) -> dict[str, Any]:
    """Version 1 of a schema 1 deployment: its spec as it runs, stable unless deleted."""
    command = row["command"]
    spec = {
        "name": row["name"],
        "image": row["image"],
        "registry_credentials_id": row["registry_credentials_id"],
        "network_attachments": [str(n) for n in row["network_attachments"] or ()],
        "templates": [_strings(t) for t in row["templates"] or ()],
        "env": _strings(row["env"]),
        "secret_env": sorted(str(n) for n in row["secret_env_names"] or ()),
        "command": None if command is None else [str(c) for c in command],
        "replicas": int(row["replicas"]),
        "ports": [dict(p) for p in row["ports"] or ()],
        "node_selector": _strings(row["node_selector"]),
        "lost_after": float(row["lost_after"]),
        "restart_policy": dict(row["restart_policy"] or {}),
        "update": dict(UPDATE_POLICY_DEFAULTS),
        "health_check": None,
        "resources": None,
        "strategy": "spread",
    }
    # A round trip through JSON: plain values only, as a JSON column gives them back.
    return {
        "deployment_id": row["id"],
        "version": 1,
        "spec": json.loads(json.dumps(spec)),
        "created_at": row["updated_at"],
        "stable": not row["deleted"],
        "secrets_encrypted": row["env_encrypted"],
    }


def _strings(value: Mapping[str, Any] | None) -> dict[str, str]:
    return {str(k): str(v) for k, v in (value or {}).items()}


def _set_schema_version(version: int) -> None:
    """The integer Knit before Alembic reads (and refuses a database newer than itself)."""
    schema_version = sa.table("schema_version", sa.column("version"), sa.column("applied_at"))
    op.execute(schema_version.update().values(version=version, applied_at=time.time()))
