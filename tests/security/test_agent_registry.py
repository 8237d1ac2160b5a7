"""Registry credentials only ever reach their own registry, and a captured task's sealed
password opens nowhere else: not on another node, not under another task id, not for
another registry. A real server, nats-server, two agents, a registry, and a listener
standing in for an attacker's registry."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from knit.ids import new_id
from knit.secrets import registry_aad, seal
from tests.security.agent_support import (
    deploy_task,
    encoded,
    files_outside_instances,
    node_key,
    publish,
    still_running,
    wait_final,
)
from tests.support.knit import KnitCluster, cluster_for, unique_name
from tests.support.knit_wire import SubjectRecorder
from tests.support.nats import NatsServer
from tests.support.registry import Registry

pytestmark = pytest.mark.e2e


class Listener:
    """An HTTP server on 127.0.0.1 that asks for credentials and records every request."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str | None]] = []
        seen = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append((self.path, self.headers.get("Authorization")))
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="evil"')
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_HEAD = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Listener:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def cluster(
    attack_docker: str, open_bus: NatsServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KnitCluster]:
    """A server and two agents, zone=a and zone=b, on the open nats-server (conftest)."""
    with cluster_for(
        tmp_path_factory.mktemp("knit"),
        attack_docker,
        agents=[{"zone": "a"}, {"zone": "b"}],
        external_nats=open_bus.url,
    ) as started:
        yield started


@pytest.fixture
def listener() -> Iterator[Listener]:
    with Listener() as running:
        yield running


def test_an_image_from_another_registry_with_the_credentials_gets_422(
    knit: KnitCluster, registry: Registry, listener: Listener
) -> None:
    credentials = knit.create_registry(registry.url, registry.username, registry.password)
    for image in (f"{listener.host}/knit/busybox:1", "busybox", "localhost/knit/busybox:1"):
        response = knit.api.post(
            "/deployments",
            {
                "name": unique_name("elsewhere"),
                "image": image,
                "registry_credentials_id": credentials["id"],
            },
        )
        assert response.status_code == 422, response.text
        assert [e["field"] for e in response.json()["errors"]] == ["image"]
    assert listener.requests == []


def test_a_forged_task_sending_credentials_elsewhere_fails_at_credentials(
    knit: KnitCluster, registry: Registry, listener: Listener
) -> None:
    agent = knit.agents[0]
    task = deploy_task(deployment={"image": f"{listener.host}/knit/busybox:1"})
    sealed = seal(
        registry.password,
        node_key(agent),
        registry_aad(str(agent.node_id), task["task_id"], registry.url),
    )
    task["credentials"] = {
        "server": registry.url,
        "username": registry.username,
        "sealed_password": sealed,
    }
    with SubjectRecorder(knit.nats_url, "knit.task.status") as statuses:
        publish(knit, [(f"knit.tasks.{agent.node_id}", encoded(task))])
        final = wait_final(statuses, task["task_id"])
    assert (final["state"], final["step"]) == ("failed", "credentials")
    assert "only sent to their own registry" in final["error"]
    assert listener.requests == []
    assert registry.password not in knit.log_text()


def test_a_captured_task_replayed_elsewhere_reveals_nothing(
    knit: KnitCluster, registry: Registry, listener: Listener, tmp_path: Path
) -> None:
    first, second = knit.agents
    credentials = knit.create_registry(registry.url, registry.username, registry.password)
    with SubjectRecorder(knit.nats_url, "knit.tasks.>") as tasks:
        created = knit.create_deployment(
            {
                "name": unique_name("private"),
                "image": registry.image,
                "registry_credentials_id": credentials["id"],
                "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"],
                "node_selector": {"zone": "a"},
            }
        )
        [instance] = knit.api.wait_instances(created["id"], "running", count=1, timeout=90)
        captured = [t for t in tasks.json_messages() if t.get("kind") == "deploy"]
    [original] = [t for t in captured if t["deployment"]["id"] == created["id"]][:1]
    assert registry.password not in str(captured)
    before = {a.name: files_outside_instances(a.data_dir) for a in knit.agents}

    # Re-addressed to the other node, proved as the server's (``publish``): the bus's checks
    # pass; the password, sealed to the first node and its task, must still not open.
    to_other_node = dict(original, msg_id=new_id(), instance_id=new_id(), node_id=second.node_id)
    other_task_id = dict(original, msg_id=new_id(), task_id=new_id(), instance_id=new_id())
    other_registry = dict(
        other_task_id,
        task_id=new_id(),
        deployment=dict(original["deployment"], image=f"{listener.host}/knit/busybox:1"),
        credentials=dict(original["credentials"], server=listener.host),
    )
    replays = [
        (f"knit.tasks.{second.node_id}", to_other_node),
        (f"knit.tasks.{first.node_id}", other_task_id),
        (f"knit.tasks.{first.node_id}", other_registry),
    ]
    with SubjectRecorder(knit.nats_url, "knit.task.status") as statuses:
        publish(knit, [(subject, encoded(task)) for subject, task in replays])
        finals = [wait_final(statuses, task["task_id"]) for _, task in replays]

    for final in finals:
        assert (final["state"], final["step"]) == ("failed", "credentials"), final
    assert "cannot open the sealed password" in finals[0]["error"]
    assert "cannot open the sealed password" in finals[1]["error"]
    assert listener.requests == []
    still_running(knit.docker_host, [instance["container_id"]])
    assert {a.name: files_outside_instances(a.data_dir) for a in knit.agents} == before
    assert registry.password not in knit.log_text()
    assert knit.files_containing(registry.password) == []
