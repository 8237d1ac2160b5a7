-- The schema 2 of Knit's store (as Knit before issue 13 created it on SQLite), for the
-- test of the upgrade to schema 3 (tests/store/test_upgrade.py).
CREATE TABLE schema_version (
	version INTEGER NOT NULL,
	applied_at DOUBLE NOT NULL,
	PRIMARY KEY (version)
);
CREATE TABLE nodes (
	id VARCHAR(64) NOT NULL,
	hostname VARCHAR(255) NOT NULL,
	status VARCHAR(16) NOT NULL,
	last_heartbeat DOUBLE,
	eligible BOOLEAN NOT NULL,
	labels JSON NOT NULL,
	cpus DOUBLE NOT NULL,
	memory_bytes BIGINT NOT NULL,
	docker_version VARCHAR(64) NOT NULL,
	agent_version VARCHAR(64) NOT NULL,
	public_key VARCHAR(128) NOT NULL,
	address VARCHAR(64),
	registered_at DOUBLE NOT NULL,
	PRIMARY KEY (id)
);
CREATE INDEX ix_nodes_status_heartbeat ON nodes (status, last_heartbeat);
CREATE TABLE registry_credentials (
	id VARCHAR(64) NOT NULL,
	url VARCHAR(512) NOT NULL,
	username VARCHAR(255) NOT NULL,
	password_encrypted TEXT NOT NULL,
	created_at DOUBLE NOT NULL,
	updated_at DOUBLE NOT NULL,
	PRIMARY KEY (id)
);
CREATE TABLE networks (
	id VARCHAR(64) NOT NULL,
	name VARCHAR(255) NOT NULL,
	driver VARCHAR(32) NOT NULL,
	subnet VARCHAR(64),
	created_at DOUBLE NOT NULL,
	PRIMARY KEY (id),
	UNIQUE (name)
);
CREATE TABLE tasks (
	id VARCHAR(64) NOT NULL,
	kind VARCHAR(16) NOT NULL,
	instance_id VARCHAR(64) NOT NULL,
	deployment_id VARCHAR(64) NOT NULL,
	node_id VARCHAR(64),
	state VARCHAR(16) NOT NULL,
	attempt INTEGER NOT NULL,
	error TEXT,
	created_at DOUBLE NOT NULL,
	updated_at DOUBLE NOT NULL,
	PRIMARY KEY (id)
);
CREATE INDEX ix_tasks_state ON tasks (state);
CREATE INDEX ix_tasks_deployment ON tasks (deployment_id);
CREATE INDEX ix_tasks_instance ON tasks (instance_id);
CREATE TABLE events (
	id VARCHAR(64) NOT NULL,
	at DOUBLE NOT NULL,
	kind VARCHAR(64) NOT NULL,
	node_id VARCHAR(64),
	deployment_id VARCHAR(64),
	instance_id VARCHAR(64),
	task_id VARCHAR(64),
	message TEXT NOT NULL,
	PRIMARY KEY (id)
);
CREATE INDEX ix_events_deployment_at ON events (deployment_id, at, id);
CREATE INDEX ix_events_node_at ON events (node_id, at, id);
CREATE INDEX ix_events_at ON events (at, id);
CREATE TABLE cluster_secrets (
	name VARCHAR(64) NOT NULL,
	value_encrypted TEXT NOT NULL,
	created_at DOUBLE NOT NULL,
	PRIMARY KEY (name)
);
CREATE TABLE node_keys (
	node_id VARCHAR(64) NOT NULL,
	public_key VARCHAR(128) NOT NULL,
	nats_key VARCHAR(64) NOT NULL,
	join_token_id VARCHAR(64),
	joined_at DOUBLE NOT NULL,
	PRIMARY KEY (node_id),
	UNIQUE (nats_key)
);
CREATE TABLE revoked_nodes (
	nats_key VARCHAR(64) NOT NULL,
	node_id VARCHAR(64) NOT NULL,
	revoked_at DOUBLE NOT NULL,
	PRIMARY KEY (nats_key)
);
CREATE TABLE mesh_members (
	node_id VARCHAR(64) NOT NULL,
	address VARCHAR(15) NOT NULL,
	public_key VARCHAR(44) NOT NULL,
	endpoint VARCHAR(262),
	joined_at DOUBLE NOT NULL,
	removed_at DOUBLE,
	PRIMARY KEY (node_id),
	UNIQUE (address)
);
CREATE TABLE api_tokens (
	id VARCHAR(64) NOT NULL,
	name VARCHAR(63) NOT NULL,
	role VARCHAR(16) NOT NULL,
	token_hash VARCHAR(64) NOT NULL,
	created_at DOUBLE NOT NULL,
	expires_at DOUBLE,
	PRIMARY KEY (id),
	UNIQUE (name),
	UNIQUE (token_hash)
);
CREATE TABLE join_tokens (
	id VARCHAR(64) NOT NULL,
	token_hash VARCHAR(64) NOT NULL,
	uses INTEGER NOT NULL,
	used INTEGER NOT NULL,
	expires_at DOUBLE NOT NULL,
	created_at DOUBLE NOT NULL,
	revoked BOOLEAN NOT NULL,
	PRIMARY KEY (id),
	UNIQUE (token_hash)
);
CREATE TABLE deployments (
	id VARCHAR(64) NOT NULL,
	name VARCHAR(255) NOT NULL,
	image VARCHAR(1024) NOT NULL,
	registry_credentials_id VARCHAR(64),
	network_attachments JSON NOT NULL,
	templates JSON NOT NULL,
	env JSON NOT NULL,
	command JSON,
	replicas INTEGER NOT NULL,
	ports JSON NOT NULL,
	node_selector JSON NOT NULL,
	lost_after DOUBLE NOT NULL,
	restart_policy JSON NOT NULL,
	pending_reason TEXT,
	created_at DOUBLE NOT NULL,
	updated_at DOUBLE NOT NULL,
	generation INTEGER NOT NULL,
	deleted BOOLEAN NOT NULL,
	version INTEGER DEFAULT 1 NOT NULL,
	"update" JSON DEFAULT '{}' NOT NULL,
	health_check JSON,
	rollout JSON,
	PRIMARY KEY (id),
	FOREIGN KEY(registry_credentials_id) REFERENCES registry_credentials (id) ON DELETE RESTRICT
);
CREATE INDEX ix_deployments_credentials ON deployments (registry_credentials_id);
CREATE UNIQUE INDEX uq_deployments_live_name ON deployments (name) WHERE deleted = 0;
CREATE TABLE node_networks (
	node_id VARCHAR(64) NOT NULL,
	network_id VARCHAR(64) NOT NULL,
	docker_id VARCHAR(128) NOT NULL,
	updated_at DOUBLE NOT NULL,
	PRIMARY KEY (node_id, network_id),
	FOREIGN KEY(node_id) REFERENCES nodes (id) ON DELETE CASCADE,
	FOREIGN KEY(network_id) REFERENCES networks (id) ON DELETE CASCADE
);
CREATE INDEX ix_node_networks_network ON node_networks (network_id);
CREATE TABLE deployment_secrets (
	deployment_id VARCHAR(64) NOT NULL,
	names JSON NOT NULL,
	env_encrypted TEXT NOT NULL,
	created_at DOUBLE NOT NULL,
	PRIMARY KEY (deployment_id),
	FOREIGN KEY(deployment_id) REFERENCES deployments (id) ON DELETE CASCADE
);
CREATE TABLE deployment_versions (
	deployment_id VARCHAR(64) NOT NULL,
	version INTEGER NOT NULL,
	spec JSON NOT NULL,
	created_at DOUBLE NOT NULL,
	stable BOOLEAN NOT NULL,
	secrets_encrypted TEXT,
	PRIMARY KEY (deployment_id, version),
	FOREIGN KEY(deployment_id) REFERENCES deployments (id) ON DELETE CASCADE
);
CREATE TABLE container_instances (
	id VARCHAR(64) NOT NULL,
	container_id VARCHAR(128),
	node_id VARCHAR(64),
	deployment_id VARCHAR(64) NOT NULL,
	"index" INTEGER NOT NULL,
	status VARCHAR(16) NOT NULL,
	error TEXT,
	exit_code INTEGER,
	desired BOOLEAN NOT NULL,
	created_at DOUBLE NOT NULL,
	updated_at DOUBLE NOT NULL,
	version INTEGER DEFAULT 1 NOT NULL,
	health VARCHAR(16) DEFAULT 'none' NOT NULL,
	restarts INTEGER DEFAULT 0 NOT NULL,
	PRIMARY KEY (id),
	FOREIGN KEY(node_id) REFERENCES nodes (id) ON DELETE SET NULL,
	FOREIGN KEY(deployment_id) REFERENCES deployments (id) ON DELETE CASCADE
);
CREATE INDEX ix_instances_deployment ON container_instances (deployment_id, "index");
CREATE INDEX ix_instances_node ON container_instances (node_id);
