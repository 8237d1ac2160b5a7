"""The test fixtures themselves work: real nats-server, Docker Engine, image, registry."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import anyio
import nats
import pytest

from tests.support.docker import DockerCLIError, docker
from tests.support.nats import NatsServer
from tests.support.registry import Registry, untag


@pytest.mark.integration
@pytest.mark.anyio
async def test_nats_url_serves_publish_and_subscribe(nats_url: str) -> None:
    client = await nats.connect(nats_url, connect_timeout=5, allow_reconnect=False)
    try:
        sub = await client.subscribe("knit.test.ping")
        await client.publish("knit.test.ping", b"hello")
        message = await sub.next_msg(timeout=5)
        assert message.data == b"hello"
    finally:
        with anyio.CancelScope(shield=True):
            await client.close()


@pytest.mark.integration
def test_nats_server_factory_restarts_on_the_same_port(
    nats_server_factory: Callable[[], NatsServer],
) -> None:
    server = nats_server_factory()
    server.start()
    first_pid, port = server.pid, server.port
    server.stop()
    assert not server.running
    server.start()
    assert server.running
    assert server.port == port
    assert server.pid != first_pid


@pytest.mark.e2e
def test_docker_host_answers(docker_host: str) -> None:
    version = docker("version", "--format", "{{.Server.Version}}", docker_host=docker_host)
    assert version.strip()


@pytest.mark.e2e
def test_busybox_image_runs_a_command(docker_host: str, busybox_image: str) -> None:
    out = docker("run", "--rm", busybox_image, "echo", "hi", docker_host=docker_host)
    assert out == "hi\n"


def _docker_config(folder: Path, registry: str, username: str, password: str) -> Path:
    """A DOCKER_CONFIG folder holding these credentials, as ``docker login`` would write it."""
    folder.mkdir()
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    (folder / "config.json").write_text(json.dumps({"auths": {registry: {"auth": token}}}))
    return folder


@pytest.mark.e2e
def test_registry_refuses_a_wrong_password(
    registry: Registry, docker_host: str, tmp_path: Path
) -> None:
    with pytest.raises(DockerCLIError, match=r"(?i)unauthorized"):
        docker(
            "login", "-u", registry.username, "--password-stdin", registry.url,
            docker_host=docker_host, stdin=b"wrong", config_dir=tmp_path / "login",
        )  # fmt: skip
    wrong = _docker_config(tmp_path / "wrong", registry.url, registry.username, "wrong")
    with pytest.raises(DockerCLIError, match="unauthorized"):
        docker("pull", registry.image, docker_host=docker_host, config_dir=wrong)
    anonymous = _docker_config(tmp_path / "anonymous", "other.invalid", "x", "y")
    with pytest.raises(DockerCLIError, match=r"no basic auth credentials|unauthorized"):
        docker("pull", registry.image, docker_host=docker_host, config_dir=anonymous)


@pytest.mark.e2e
def test_registry_serves_the_pushed_image_with_the_right_password(
    registry: Registry, docker_host: str, tmp_path: Path
) -> None:
    right = _docker_config(tmp_path / "right", registry.url, registry.username, registry.password)
    try:
        docker("pull", registry.image, docker_host=docker_host, config_dir=right)
        out = docker("run", "--rm", registry.image, "echo", "pulled", docker_host=docker_host)
        assert out == "pulled\n"
    finally:
        untag(registry.image, docker_host)
