"""What the agent attacks share: publishing forged tasks on NATS, proving nothing was lost
(containers still running, the agent's files outside ``instances/`` untouched, heartbeats
flowing), and sealing secrets as the server would.

Layer: tests. The attacker here publishes on the bus *and* proves its tasks as the server
does (a compromised or buggy server: the bus's checks pass, the agent's own must hold), on
the open nats-server of ``tests/security/conftest.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from knit.ids import new_id
from knit.secrets import NodeKeyPair
from tests.security.bus_support import Stolen, connect
from tests.support.knit import SLEEPER, KnitCluster, unique_name
from tests.support.knit_docker import inspect_container
from tests.support.knit_processes import KnitAgent
from tests.support.knit_wire import SubjectRecorder

BUSYBOX = "knit-test/busybox:latest"
JSON = dict[str, Any]


def publish(
    knit: KnitCluster, messages: Iterable[tuple[str, bytes]], *, prove: bool = True
) -> None:
    """Publish ``(subject, payload)`` pairs on the cluster's (open) NATS, and flush.

    With ``prove``, a task for one of the cluster's agents gets what the server would give
    it: its ``node_id`` and an ``expires_at`` (unless the task has them), and a MAC under
    the key that node shares with the server (read off its data dir). A task on the
    broadcast subject cannot be proved (the server's task key never leaves it).
    """
    nodes = {
        agent.node_id: Stolen.from_data_dir(agent.data_dir)
        for agent in knit.agents
        if agent.node_id is not None and (agent.data_dir / "identity.json").exists()
    }
    sent: list[tuple[str, bytes]] = []
    for subject, payload in messages:
        node_id = subject.removeprefix("knit.tasks.")
        node = nodes.get(node_id) if subject.startswith("knit.tasks.") else None
        if not prove or node is None:
            sent.append((subject, payload))
            continue
        with contextlib.suppress(ValueError):
            task = json.loads(payload)
            if isinstance(task, dict):
                task.setdefault("node_id", node_id)
                task.setdefault("expires_at", time.time() + 600)
                payload = json.dumps(task).encode()
        sent.append((subject, node.prove_task(subject, payload)))

    async def main() -> None:
        client = await connect(knit.nats_url)
        try:
            for subject, payload in sent:
                await client.publish(subject, payload)
            await client.flush(timeout=5)
        finally:
            await client.close()

    asyncio.run(main())


def deploy_task(**fields: Any) -> JSON:
    """A deploy task as JSON (valid unless ``fields`` make it not), to edit and publish."""
    deployment = {
        "id": new_id(),
        "name": unique_name("forged"),
        "image": BUSYBOX,
        "command": SLEEPER,
        **fields.pop("deployment", {}),
    }
    return {
        "v": 1,
        "msg_id": new_id(),
        "kind": "deploy",
        "task_id": new_id(),
        "instance_id": new_id(),
        "instance_index": 0,
        "deployment": deployment,
        **fields,
    }


def stop_task(**fields: Any) -> JSON:
    """A stop task as JSON."""
    return {
        "v": 1,
        "msg_id": new_id(),
        "kind": "stop",
        "task_id": new_id(),
        "instance_id": new_id(),
        "remove": True,
        **fields,
    }


def encoded(task: Mapping[str, Any]) -> bytes:
    return json.dumps(task).encode()


def files_outside_instances(data_dir: Path) -> dict[str, str]:
    """Every file of an agent's data dir but its rendered templates, with its SHA-256."""
    found: dict[str, str] = {}
    for path in sorted(data_dir.rglob("*")):
        relative = path.relative_to(data_dir)
        if relative.parts[0] == "instances" or not path.is_file():
            continue
        found[str(relative)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def listing(path: Path) -> list[str]:
    """The names in a folder, sorted ([] if it does not exist)."""
    return sorted(p.name for p in path.iterdir()) if path.is_dir() else []


def sleeper(knit: KnitCluster, **spec: Any) -> tuple[JSON, str]:
    """A running deployment of one sleeper (to prove it survives): its JSON and container."""
    created = knit.create_deployment(
        {"name": unique_name("bystander"), "image": BUSYBOX, "command": SLEEPER, **spec}
    )
    [instance] = knit.api.wait_instances(created["id"], "running", count=1, timeout=60)
    return created, str(instance["container_id"])


def still_running(docker_host: str, container_ids: Sequence[str]) -> None:
    """Assert that each container is running, and has not restarted."""
    for container_id in container_ids:
        state = inspect_container(docker_host, container_id)["State"]
        assert state["Running"], f"container {container_id[:12]} stopped: {state}"
        assert state.get("Restarting") is False


def node_key(agent: KnitAgent) -> str:
    """The agent's public key, as its heartbeats give it to anybody on the bus."""
    return NodeKeyPair.load_or_create(agent.data_dir).public_key_b64


def heartbeat_gaps(messages: Iterable[JSON], node_id: str) -> list[float]:
    """Seconds between the node's heartbeats in a capture, by their ``sent_at``."""
    times = sorted(
        float(m["sent_at"])
        for m in messages
        if m.get("kind") == "heartbeat" and m.get("node_id") == node_id
    )
    return [b - a for a, b in itertools.pairwise(times)]


def statuses_of(messages: Iterable[JSON], task_ids: Iterable[str]) -> list[JSON]:
    """The task statuses in a capture that are about ``task_ids``."""
    wanted = set(task_ids)
    return [m for m in messages if m.get("kind") == "task_status" and m.get("task_id") in wanted]


def wait_final(recorder: SubjectRecorder, task_id: str, timeout: float = 30.0) -> JSON:
    """The final status (succeeded/failed) of ``task_id`` in a recorder's capture."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in recorder.json_messages():
            if message.get("task_id") == task_id and message.get("state") in (
                "succeeded",
                "failed",
            ):
                return message
        time.sleep(0.05)
    raise AssertionError(f"no final status for task {task_id} in {timeout:g} s")
