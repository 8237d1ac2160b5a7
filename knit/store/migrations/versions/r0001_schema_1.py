"""Schema 1: the baseline, the tables of Knit's store as the releases before schema 2 made
them (what ``schema_version`` 1 means).

Revision ID: 0001
Revises: (none)

Written out table by table (not from the models) so that it stays what schema 1 was while
the models move on. Schema-1 releases added tables (``deployment_secrets``, the trust,
mesh and token tables) without changing the version number: each start's ``create_all``
made what was missing. So this revision creates only the tables a database lacks: on an
empty database, all of them; on a file of an early schema-1 release, the later ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

ID = sa.String(64)
JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def _schema_version() -> None:
    op.create_table(
        "schema_version",
        sa.Column("version", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("applied_at", sa.Double(), nullable=False),
    )


def _nodes() -> None:
    op.create_table(
        "nodes",
        sa.Column("id", ID, primary_key=True),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("last_heartbeat", sa.Double(), nullable=True),
        sa.Column("eligible", sa.Boolean(), nullable=False),
        sa.Column("labels", JSON, nullable=False),
        sa.Column("cpus", sa.Double(), nullable=False),
        sa.Column("memory_bytes", sa.BigInteger(), nullable=False),
        sa.Column("docker_version", sa.String(64), nullable=False),
        sa.Column("agent_version", sa.String(64), nullable=False),
        sa.Column("public_key", sa.String(128), nullable=False),
        sa.Column("address", sa.String(64), nullable=True),
        sa.Column("registered_at", sa.Double(), nullable=False),
    )
    op.create_index("ix_nodes_status_heartbeat", "nodes", ["status", "last_heartbeat"])


def _registry_credentials() -> None:
    op.create_table(
        "registry_credentials",
        sa.Column("id", ID, primary_key=True),
        sa.Column("url", sa.String(512), nullable=False),
        sa.Column("username", sa.String(255), nullable=False),
        sa.Column("password_encrypted", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
    )


def _networks() -> None:
    op.create_table(
        "networks",
        sa.Column("id", ID, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("driver", sa.String(32), nullable=False),
        sa.Column("subnet", sa.String(64), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.UniqueConstraint("name"),
    )


def _tasks() -> None:
    op.create_table(
        "tasks",
        sa.Column("id", ID, primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("instance_id", ID, nullable=False),
        sa.Column("deployment_id", ID, nullable=False),
        sa.Column("node_id", ID, nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
    )
    op.create_index("ix_tasks_state", "tasks", ["state"])
    op.create_index("ix_tasks_instance", "tasks", ["instance_id"])
    op.create_index("ix_tasks_deployment", "tasks", ["deployment_id"])


def _events() -> None:
    op.create_table(
        "events",
        sa.Column("id", ID, primary_key=True),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("node_id", ID, nullable=True),
        sa.Column("deployment_id", ID, nullable=True),
        sa.Column("instance_id", ID, nullable=True),
        sa.Column("task_id", ID, nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
    )
    op.create_index("ix_events_at", "events", ["at", "id"])
    op.create_index("ix_events_deployment_at", "events", ["deployment_id", "at", "id"])
    op.create_index("ix_events_node_at", "events", ["node_id", "at", "id"])


def _cluster_secrets() -> None:
    op.create_table(
        "cluster_secrets",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value_encrypted", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
    )


def _node_keys() -> None:
    op.create_table(
        "node_keys",
        sa.Column("node_id", ID, primary_key=True),
        sa.Column("public_key", sa.String(128), nullable=False),
        sa.Column("nats_key", sa.String(64), nullable=False),
        sa.Column("join_token_id", ID, nullable=True),
        sa.Column("joined_at", sa.Double(), nullable=False),
        sa.UniqueConstraint("nats_key"),
    )


def _revoked_nodes() -> None:
    op.create_table(
        "revoked_nodes",
        sa.Column("nats_key", sa.String(64), primary_key=True),
        sa.Column("node_id", ID, nullable=False),
        sa.Column("revoked_at", sa.Double(), nullable=False),
    )


def _mesh_members() -> None:
    op.create_table(
        "mesh_members",
        sa.Column("node_id", ID, primary_key=True),
        sa.Column("address", sa.String(15), nullable=False),
        sa.Column("public_key", sa.String(44), nullable=False),
        sa.Column("endpoint", sa.String(262), nullable=True),
        sa.Column("joined_at", sa.Double(), nullable=False),
        sa.Column("removed_at", sa.Double(), nullable=True),
        sa.UniqueConstraint("address"),
    )


def _api_tokens() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", ID, primary_key=True),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=True),
        sa.UniqueConstraint("name"),
        sa.UniqueConstraint("token_hash"),
    )


def _join_tokens() -> None:
    op.create_table(
        "join_tokens",
        sa.Column("id", ID, primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("uses", sa.Integer(), nullable=False),
        sa.Column("used", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.UniqueConstraint("token_hash"),
    )


def _deployments() -> None:
    op.create_table(
        "deployments",
        sa.Column("id", ID, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("image", sa.String(1024), nullable=False),
        sa.Column(
            "registry_credentials_id",
            ID,
            sa.ForeignKey("registry_credentials.id", ondelete="RESTRICT"),
            nullable=True,
        ),
        sa.Column("network_attachments", JSON, nullable=False),
        sa.Column("templates", JSON, nullable=False),
        sa.Column("env", JSON, nullable=False),
        sa.Column("command", JSON, nullable=True),
        sa.Column("replicas", sa.Integer(), nullable=False),
        sa.Column("ports", JSON, nullable=False),
        sa.Column("node_selector", JSON, nullable=False),
        sa.Column("lost_after", sa.Double(), nullable=False),
        sa.Column("restart_policy", JSON, nullable=False),
        sa.Column("pending_reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
    )
    # A name is unique among the deployments that are not deleted (a partial index).
    live = sa.column("deleted", sa.Boolean()) == sa.false()
    op.create_index(
        "uq_deployments_live_name",
        "deployments",
        ["name"],
        unique=True,
        sqlite_where=live,
        postgresql_where=live,
    )
    op.create_index("ix_deployments_credentials", "deployments", ["registry_credentials_id"])


def _node_networks() -> None:
    op.create_table(
        "node_networks",
        sa.Column("node_id", ID, sa.ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True),
        sa.Column(
            "network_id", ID, sa.ForeignKey("networks.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("docker_id", sa.String(128), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
    )
    op.create_index("ix_node_networks_network", "node_networks", ["network_id"])


def _deployment_secrets() -> None:
    op.create_table(
        "deployment_secrets",
        sa.Column(
            "deployment_id",
            ID,
            sa.ForeignKey("deployments.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("names", JSON, nullable=False),
        sa.Column("env_encrypted", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
    )


def _container_instances() -> None:
    op.create_table(
        "container_instances",
        sa.Column("id", ID, primary_key=True),
        sa.Column("container_id", sa.String(128), nullable=True),
        sa.Column("node_id", ID, sa.ForeignKey("nodes.id", ondelete="SET NULL"), nullable=True),
        sa.Column(
            "deployment_id",
            ID,
            sa.ForeignKey("deployments.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("desired", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
    )
    op.create_index("ix_instances_deployment", "container_instances", ["deployment_id", "index"])
    op.create_index("ix_instances_node", "container_instances", ["node_id"])


TABLES: dict[str, Callable[[], None]] = {
    "schema_version": _schema_version,
    "nodes": _nodes,
    "registry_credentials": _registry_credentials,
    "networks": _networks,
    "tasks": _tasks,
    "events": _events,
    "cluster_secrets": _cluster_secrets,
    "node_keys": _node_keys,
    "revoked_nodes": _revoked_nodes,
    "mesh_members": _mesh_members,
    "api_tokens": _api_tokens,
    "join_tokens": _join_tokens,
    "deployments": _deployments,
    "node_networks": _node_networks,
    "deployment_secrets": _deployment_secrets,
    "container_instances": _container_instances,
}
"""Schema 1's tables, each with its indexes; referenced tables before those that refer."""


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    for name, create in TABLES.items():
        if name not in existing:
            create()
    if "schema_version" not in existing:
        # Each revision keeps the integer up to date: Knit before Alembic reads it, and
        # refuses a database newer than itself instead of running on it.
        schema_version = sa.table("schema_version", sa.column("version"), sa.column("applied_at"))
        op.bulk_insert(schema_version, [{"version": 1, "applied_at": time.time()}])


def downgrade() -> None:
    for name in reversed(TABLES):
        op.drop_table(name)
