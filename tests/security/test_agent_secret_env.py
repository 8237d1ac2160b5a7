"""``secret_env`` end to end on a real container: the value reaches the container's
environment and nowhere else: not the database file, the API, the logs, the dashboard, or
any NATS payload. A real server, nats-server, agent and Docker Engine."""

from __future__ import annotations

import secrets
import sqlite3

import httpx
import pytest

from tests.security.agent_support import BUSYBOX
from tests.support.knit import SLEEPER, KnitCluster, unique_name
from tests.support.knit_docker import docker_exec, inspect_container
from tests.support.knit_wire import SubjectRecorder

pytestmark = pytest.mark.e2e


def test_secret_env_reaches_the_container_and_nothing_else(knit: KnitCluster) -> None:
    value = "s3cr3t-" + secrets.token_urlsafe(16)
    with SubjectRecorder(knit.nats_url, "knit.>") as wire:
        created = knit.create_deployment(
            {
                "name": unique_name("secret"),
                "image": BUSYBOX,
                "command": SLEEPER,
                "env": {"GREETING": "hello"},
                "secret_env": {"DB_PASSWORD": value},
                "templates": [{"content": "{{ env.GREETING }}", "destination": "/etc/g"}],
            }
        )
        [instance] = knit.api.wait_instances(created["id"], "running", count=1, timeout=60)
        container = inspect_container(knit.docker_host, instance["container_id"])
        code, out = docker_exec(knit.docker_host, instance["container_id"], "env")
        captured = wire.messages()

    assert f"DB_PASSWORD={value}" in container["Config"]["Env"]
    assert "GREETING=hello" in container["Config"]["Env"]
    assert code == 0 and f"DB_PASSWORD={value}" in out
    assert created["secret_env"] == ["DB_PASSWORD"]

    assert captured and not [m for m in captured if value.encode() in m], "in a NATS payload"
    deploys = [m for m in captured if b'"kind":"deploy"' in m]
    assert deploys and all(b'"sealed_env":"s1.' in m for m in deploys)

    api = knit.api
    for path in (
        "/deployments",
        f"/deployments/{created['id']}",
        "/instances",
        "/events?limit=1000",
        "/nodes",
    ):
        response = api.get(path)
        assert response.status_code == 200, (path, response.status_code)
        assert value not in response.text, f"GET {path} shows the value"
    url = knit.server.api_url
    with httpx.Client(base_url=url, timeout=15) as browser:  # the dashboard: signed in
        signed_in = browser.post(
            "/ui/sign-in", data={"token": knit.server.admin_token}, headers={"Origin": url}
        )
        assert signed_in.status_code == 303, signed_in.text
        for path in ("/ui/", f"/ui/deployments/{created['id']}", "/ui/events"):
            response = browser.get(path)
            assert response.status_code == 200, (path, response.status_code)
            assert value not in response.text, f"GET {path} shows the value"
    assert api.deployment(created["id"])["secret_env"] == ["DB_PASSWORD"]
    assert value not in knit.log_text(), "the value shows in a log"
    assert knit.files_containing(value) == [], "the value is stored in clear"

    response = api.delete(f"/deployments/{created['id']}")
    assert response.status_code == 200, response.text
    api.wait_gone(created["id"])
    knit.deployments.remove(created["id"])
    with sqlite3.connect(knit.server.data_dir / "knit.db") as db:
        assert db.execute("SELECT count(*) FROM deployment_secrets").fetchone() == (0,)
