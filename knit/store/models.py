"""The state store's tables, as SQLAlchemy 2 typed declarative models.

Layer: store (adapter). Imports sqlalchemy and the standard library only. Nothing outside
``knit.store`` should touch these classes: the query modules turn rows into the frozen
records of ``knit.store.records``, so no actor ever holds an ORM object or a session.

Conventions (every table):

* ids are ``str`` (time-ordered hex made in Python; node ids come from the agent). No table
  has an autoincrement key: Core ``insert()`` of a list is then one fast statement.
* timestamps are ``float`` seconds since the Unix epoch (UTC), as ``time.time()`` gives.
* JSON columns hold plain ``dict``/``list`` values (``JSONB`` on PostgreSQL).
* Events and tasks carry ids of other entities without foreign keys: they are history and
  outlive what they mention.
"""

from __future__ import annotations

from typing import TypeAlias

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Double,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA_VERSION = 4
"""The integer schema version of the head revision (``knit.store.migrations``), kept in the
``schema_version`` table for Knit releases from before Alembic, which refuse a file newer
than themselves. A revision that changes the schema raises it by one."""

JSONValue: TypeAlias = str | int | float | bool | list["JSONValue"] | dict[str, "JSONValue"] | None
"""Any value a JSON column can hold."""

ID_LENGTH = 64
_Json = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    """Declarative base of every Knit table."""


class SchemaVersion(Base):
    """One row: the integer schema version (:data:`SCHEMA_VERSION`), which Knit before
    Alembic reads; the revision itself is in Alembic's ``alembic_version``."""

    __tablename__ = "schema_version"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    applied_at: Mapped[float] = mapped_column(Double)


class Node(Base):
    """A worker host (spec 4 ``Node``), upserted from its heartbeats."""

    __tablename__ = "nodes"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    last_heartbeat: Mapped[float | None] = mapped_column(Double)
    eligible: Mapped[bool] = mapped_column(Boolean)
    labels: Mapped[dict[str, str]] = mapped_column(_Json)
    cpus: Mapped[float] = mapped_column(Double)
    memory_bytes: Mapped[int] = mapped_column(BigInteger)
    docker_version: Mapped[str] = mapped_column(String(64))
    agent_version: Mapped[str] = mapped_column(String(64))
    public_key: Mapped[str] = mapped_column(String(128))
    address: Mapped[str | None] = mapped_column(String(64))
    registered_at: Mapped[float] = mapped_column(Double)

    __table_args__ = (Index("ix_nodes_status_heartbeat", "status", "last_heartbeat"),)


class RegistryCredentials(Base):
    """Credentials of a private registry; the password only as ciphertext (knit.secrets)."""

    __tablename__ = "registry_credentials"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    url: Mapped[str] = mapped_column(String(512))
    username: Mapped[str] = mapped_column(String(255))
    password_encrypted: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[float] = mapped_column(Double)


class Deployment(Base):
    """The desired state of a set of containers (spec 4 ``Deployment``).

    ``name`` is unique among deployments that are not ``deleted`` (a partial unique index):
    a deleted deployment keeps its row until its instances are gone, and its name may be
    reused meanwhile.
    """

    __tablename__ = "deployments"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    image: Mapped[str] = mapped_column(String(1024))
    registry_credentials_id: Mapped[str | None] = mapped_column(
        String(ID_LENGTH), ForeignKey("registry_credentials.id", ondelete="RESTRICT")
    )
    network_attachments: Mapped[list[str]] = mapped_column(_Json)
    templates: Mapped[list[dict[str, str]]] = mapped_column(_Json)
    env: Mapped[dict[str, str]] = mapped_column(_Json)
    command: Mapped[list[str] | None] = mapped_column(_Json)
    replicas: Mapped[int] = mapped_column(Integer)
    ports: Mapped[list[dict[str, JSONValue]]] = mapped_column(_Json)
    node_selector: Mapped[dict[str, str]] = mapped_column(_Json)
    lost_after: Mapped[float] = mapped_column(Double)
    restart_policy: Mapped[dict[str, JSONValue]] = mapped_column(_Json)
    pending_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[float] = mapped_column(Double)
    generation: Mapped[int] = mapped_column(Integer)
    deleted: Mapped[bool] = mapped_column(Boolean)
    # Schema 2 (columns added to existing files by revision 0002: hence the server
    # defaults, which fill the rows written before).
    version: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    update: Mapped[dict[str, JSONValue]] = mapped_column(_Json, server_default=text("'{}'"))
    health_check: Mapped[dict[str, JSONValue] | None] = mapped_column(_Json)
    rollout: Mapped[dict[str, JSONValue] | None] = mapped_column(_Json)
    # Schema 3: what each instance reserves (``{"cpu": cores, "memory": bytes}``, either
    # None; None: nothing) and how placement ranks nodes.
    resources: Mapped[dict[str, JSONValue] | None] = mapped_column(_Json)
    strategy: Mapped[str] = mapped_column(String(16), server_default=text("'spread'"))

    __table_args__ = (
        Index(
            "uq_deployments_live_name",
            "name",
            unique=True,
            sqlite_where=deleted == false(),
            postgresql_where=deleted == false(),
        ),
        Index("ix_deployments_credentials", "registry_credentials_id"),
    )


class DeploymentSecret(Base):
    """A deployment's ``secret_env``: the names in clear, the values only as ciphertext.

    ``env_encrypted`` is the JSON object of names and values encrypted with the server's
    ``knit.secrets.SecretBox``, the deployment id as associated data (a ciphertext copied to
    another deployment's row does not open). One row per deployment that has any; deleted
    with the deployment (the deletion removes it at once, the foreign key when the row goes).
    """

    __tablename__ = "deployment_secrets"

    deployment_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("deployments.id", ondelete="CASCADE"), primary_key=True
    )
    names: Mapped[list[str]] = mapped_column(_Json)
    env_encrypted: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Double)


class DeploymentVersion(Base):
    """One version of a deployment's spec: version 1 when it is created, one more for each
    change of anything but ``replicas`` (``PUT /deployments/{id}``, a rollback).

    ``spec`` is the spec in the shape of ``POST /deployments``, ``secret_env`` as the list of
    its names; the values are in ``secrets_encrypted`` (the same ciphertext as the
    ``deployment_secrets`` row of that version, bound to the deployment id). ``stable``: its
    rollout completed once.
    """

    __tablename__ = "deployment_versions"

    deployment_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("deployments.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    spec: Mapped[dict[str, JSONValue]] = mapped_column(_Json)
    created_at: Mapped[float] = mapped_column(Double)
    stable: Mapped[bool] = mapped_column(Boolean)
    secrets_encrypted: Mapped[str | None] = mapped_column(Text)


class ContainerInstance(Base):
    """One container of a deployment (spec 4 ``ContainerInstance``).

    ``id`` is Knit's instance id; ``container_id`` is Docker's, known once created.
    """

    __tablename__ = "container_instances"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    container_id: Mapped[str | None] = mapped_column(String(128))
    node_id: Mapped[str | None] = mapped_column(
        String(ID_LENGTH), ForeignKey("nodes.id", ondelete="SET NULL")
    )
    deployment_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("deployments.id", ondelete="CASCADE")
    )
    index: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    desired: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[float] = mapped_column(Double)
    # Schema 2 (see ``Deployment.version``).
    version: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    health: Mapped[str] = mapped_column(String(16), server_default=text("'none'"))
    restarts: Mapped[int] = mapped_column(Integer, server_default=text("0"))

    __table_args__ = (
        Index("ix_instances_deployment", "deployment_id", "index"),
        Index("ix_instances_node", "node_id"),
    )


class Network(Base):
    """A Knit network (spec 4 ``Network``); it exists on many nodes, so the id is Knit's."""

    __tablename__ = "networks"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    driver: Mapped[str] = mapped_column(String(32))
    subnet: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Double)


class NodeNetwork(Base):
    """Docker's id of a Knit network on one node."""

    __tablename__ = "node_networks"

    node_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True
    )
    network_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("networks.id", ondelete="CASCADE"), primary_key=True
    )
    docker_id: Mapped[str] = mapped_column(String(128))
    updated_at: Mapped[float] = mapped_column(Double)

    __table_args__ = (Index("ix_node_networks_network", "network_id"),)


class Task(Base):
    """A unit of work sent to an agent (deploy or stop one instance), with its state."""

    __tablename__ = "tasks"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    instance_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    deployment_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    node_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    state: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[float] = mapped_column(Double)

    __table_args__ = (
        Index("ix_tasks_state", "state"),
        Index("ix_tasks_instance", "instance_id"),
        Index("ix_tasks_deployment", "deployment_id"),
    )


class Event(Base):
    """Something that happened, for the event log; listed newest first."""

    __tablename__ = "events"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    at: Mapped[float] = mapped_column(Double)
    kind: Mapped[str] = mapped_column(String(64))
    node_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    deployment_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    instance_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    task_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    message: Mapped[str] = mapped_column(Text)

    __table_args__ = (
        Index("ix_events_at", "at", "id"),
        Index("ix_events_deployment_at", "deployment_id", "at", "id"),
        Index("ix_events_node_at", "node_id", "at", "id"),
    )


class ClusterSecret(Base):
    """A secret of the cluster itself (the server's keys), encrypted under the secret key."""

    __tablename__ = "cluster_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value_encrypted: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Double)


class NodeKey(Base):
    """A node's keys, pinned when it joined: what proves its messages and its connection.

    No foreign key to ``nodes``: a node joins before its first heartbeat makes its row.
    """

    __tablename__ = "node_keys"

    node_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    public_key: Mapped[str] = mapped_column(String(128))
    nats_key: Mapped[str] = mapped_column(String(64), unique=True)
    join_token_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    joined_at: Mapped[float] = mapped_column(Double)


class RevokedNode(Base):
    """A removed node's bus identity, refused by NATS from its removal on."""

    __tablename__ = "revoked_nodes"

    nats_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    node_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    revoked_at: Mapped[float] = mapped_column(Double)


class MeshMember(Base):
    """A node's place in the WireGuard mesh: its address (handed out once, for ever: the row
    of a removed node stays, with ``removed_at``), its WireGuard public key and endpoint."""

    __tablename__ = "mesh_members"

    node_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    address: Mapped[str] = mapped_column(String(15), unique=True)
    public_key: Mapped[str] = mapped_column(String(44))
    endpoint: Mapped[str | None] = mapped_column(String(262))
    joined_at: Mapped[float] = mapped_column(Double)
    removed_at: Mapped[float | None] = mapped_column(Double)


class ApiToken(Base):
    """A token of the REST API: only the SHA-256 of its secret is kept (never the secret).

    A revoked token's row is deleted. ``role`` is ``read``, ``deploy`` or ``admin``.
    """

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Double)
    expires_at: Mapped[float | None] = mapped_column(Double)


class JoinToken(Base):
    """A token that admits up to ``uses`` agents (``POST /join``) until ``expires_at``.

    Only the SHA-256 of its secret is kept. A revoked token keeps its row (``revoked``) so
    that an agent presenting it is told why it is refused.
    """

    __tablename__ = "join_tokens"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    uses: Mapped[int] = mapped_column(Integer)
    used: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[float] = mapped_column(Double)
    created_at: Mapped[float] = mapped_column(Double)
    revoked: Mapped[bool] = mapped_column(Boolean)


class Lease(Base):
    """A lease some server holds until ``expires_at`` (PostgreSQL's clock): the row named
    ``leader`` says which server leads (``knit.store.leases``; decision 0024).

    ``holder`` is the server's id and one start's nonce (``NAME/nonce``); ``epoch`` grows by
    one with each new holder, and the leader's writes are fenced by it.
    """

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    epoch: Mapped[int] = mapped_column(BigInteger)
    acquired_at: Mapped[float] = mapped_column(Double)
    expires_at: Mapped[float] = mapped_column(Double)


class Server(Base):
    """A Knit server that uses this database (``knit servers``): written at its start and
    every few seconds after, so a row not seen for a while is a server gone."""

    __tablename__ = "servers"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    api_url: Mapped[str] = mapped_column(String(512))
    version: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[float] = mapped_column(Double)
    last_seen: Mapped[float] = mapped_column(Double)
