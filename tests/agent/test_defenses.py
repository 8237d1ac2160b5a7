"""The agent defends itself: forged ids, paths that are not its own, credentials for another
registry, sealed secrets bound to another node, task or registry, host networking it was not
allowed, and template bombs. On SimRuntime with an in-memory bus."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from knit.ids import new_id
from knit.secrets import NodeKeyPair, env_aad, registry_aad, seal
from knit.wire.messages import (
    DeployTask,
    NetworkAttachment,
    SealedCredentials,
    StopTask,
    TaskDeployment,
    TaskTemplate,
    encode,
)
from simulations.profile import SimProfile
from tests.agent.support import Agent, open_agent
from tests.support.spies import spy_on_creates

pytestmark = [pytest.mark.unit, pytest.mark.anyio]

REGISTRY = "127.0.0.1:5000"
IMAGE = f"{REGISTRY}/knit/app:1"
PROFILE = SimProfile(preloaded_images=frozenset({"app:1"}), auth={REGISTRY: ("u", "pw")})


def task(**deployment: Any) -> DeployTask:
    fields: dict[str, Any] = {"id": new_id(), "name": "web", "image": "app:1", **deployment}
    return DeployTask(
        task_id=new_id(),
        instance_id=new_id(),
        instance_index=0,
        deployment=TaskDeployment(**fields),
    )


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` and its content (to prove nothing changed)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# --- ids and paths -------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["/", "../../etc", "/etc/cron.d", "..", "A" * 32])
async def test_a_forged_stop_task_with_a_path_for_an_id_is_dropped_and_touches_nothing(
    tmp_path: Path, bad: str
) -> None:
    async with open_agent(tmp_path / "agent") as agent:
        victim = tmp_path / "victim"
        victim.mkdir()
        (victim / "keep").write_text("precious")
        kept = await deploy_ok(agent, task())
        before, statuses = tree(tmp_path), agent.bus.sent_statuses()
        body = json.loads(encode(StopTask(task_id=new_id(), instance_id=new_id())))
        body["instance_id"] = bad
        await agent.send_raw(json.dumps(body).encode())
        body = json.loads(encode(kept))
        body["kind"], body["instance_id"] = "stop", bad
        await agent.send_raw(json.dumps(body).encode())
        await agent.settle()
        assert agent.bus.sent_statuses() == statuses  # dropped: not even accepted
        assert tree(tmp_path) == before
        assert agent.runtime.count("running") == 1


async def test_a_stop_task_whose_folder_is_a_link_fails_at_files_before_stopping(
    tmp_path: Path,
) -> None:
    async with open_agent(tmp_path / "agent") as agent:
        victim = tmp_path / "victim"
        victim.mkdir()
        (victim / "keep").write_text("precious")
        deployed = task(templates=[TaskTemplate(content="x", destination="/etc/x")])
        await deploy_ok(agent, deployed)
        folder = agent.ctx.files.folder(deployed.instance_id)
        for child in folder.iterdir():
            child.unlink()
        folder.rmdir()
        folder.symlink_to(victim)
        stop = StopTask(task_id=new_id(), instance_id=deployed.instance_id)
        await agent.send(stop)
        final = await agent.final(stop)
        assert (final.state, final.step) == ("failed", "files")
        assert "symbolic link" in (final.error or "")
        assert (victim / "keep").read_text() == "precious"
        assert agent.runtime.count("running") == 1  # refused before anything was stopped


# --- registry credentials ------------------------------------------------------------------


def credentials(keys: NodeKeyPair, node: str, task_id: str, server: str) -> SealedCredentials:
    sealed = seal("pw", keys.public_key_b64, registry_aad(node, task_id, server))
    return SealedCredentials(server=server, username="u", sealed_password=sealed)


async def test_credentials_go_to_their_own_registry_only(tmp_path: Path) -> None:
    async with open_agent(tmp_path, profile=PROFILE) as agent:
        keys = agent.ctx.keys
        good = task(image=IMAGE)
        good = good.model_copy(
            update={"credentials": credentials(keys, "n1", good.task_id, REGISTRY)}
        )
        await deploy_ok(agent, good)

        elsewhere = task(image="127.0.0.1:5001/knit/app:1")
        elsewhere = elsewhere.model_copy(
            update={"credentials": credentials(keys, "n1", elsewhere.task_id, REGISTRY)}
        )
        pulls = spy_on_pulls(agent)
        await agent.send(elsewhere)
        final = await agent.final(elsewhere)
        assert (final.state, final.step) == ("failed", "credentials")
        assert "only sent to their own registry" in (final.error or "")
        assert pulls == []


@pytest.mark.parametrize("changed", ["node", "task", "registry"])
async def test_a_sealed_password_bound_elsewhere_does_not_open(
    tmp_path: Path, changed: str
) -> None:
    async with open_agent(tmp_path, profile=PROFILE) as agent:
        deployed = task(image=IMAGE)
        node = "other-node" if changed == "node" else "n1"
        task_id = new_id() if changed == "task" else deployed.task_id
        server = "127.0.0.1:5001" if changed == "registry" else REGISTRY
        creds = credentials(agent.ctx.keys, node, task_id, server)
        # (The registry changed in the seal only: the task still names the right one.)
        creds = creds.model_copy(update={"server": REGISTRY})
        deployed = deployed.model_copy(update={"credentials": creds})
        await agent.send(deployed)
        final = await agent.final(deployed)
        assert (final.state, final.step) == ("failed", "credentials")
        assert "cannot open the sealed password" in (final.error or "")


# --- secret environment --------------------------------------------------------------------


async def test_secret_env_reaches_the_container_and_is_bound_to_node_and_task(
    tmp_path: Path,
) -> None:
    async with open_agent(tmp_path) as agent:
        created = spy_on_creates(agent)
        deployed = task(env={"PORT": "80"})
        plain = json.dumps({"DB_PASSWORD": "hunter2"})
        sealed = seal(plain, agent.ctx.keys.public_key_b64, env_aad("n1", deployed.task_id))
        await deploy_ok(agent, deployed.model_copy(update={"sealed_env": sealed}))
        assert created[-1].env == {"PORT": "80", "DB_PASSWORD": "hunter2"}
        assert "hunter2" not in repr(created[-1])
        assert "hunter2" not in repr(deployed.model_copy(update={"sealed_env": sealed}))

        replayed = task().model_copy(update={"sealed_env": sealed})  # another task id
        await agent.send(replayed)
        final = await agent.final(replayed)
        assert (final.state, final.step) == ("failed", "secrets")
        other = task()
        foreign = seal(plain, agent.ctx.keys.public_key_b64, env_aad("n2", other.task_id))
        other = other.model_copy(update={"sealed_env": foreign})
        await agent.send(other)
        assert (await agent.final(other)).step == "secrets"
        assert len(created) == 1


# --- host networking -----------------------------------------------------------------------


HOST = [NetworkAttachment(name="hostnet", driver="host")]


async def test_host_networking_is_refused_unless_allowed(tmp_path: Path) -> None:
    async with open_agent(tmp_path / "a") as agent:
        refused = task(network_attachments=HOST)
        await agent.send(refused)
        final = await agent.final(refused)
        assert (final.state, final.step) == ("failed", "network")
        assert "--allow-host-network" in (final.error or "")
        assert agent.runtime.count() == 0
    async with open_agent(tmp_path / "b", allow_host_network=True) as agent:
        created = spy_on_creates(agent)
        await deploy_ok(agent, task(network_attachments=HOST))
        assert created[0].network_mode == "host"


# --- template bombs ------------------------------------------------------------------------


async def test_a_template_bomb_fails_its_instance_and_heartbeats_keep_coming(
    tmp_path: Path,
) -> None:
    bomb = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    async with open_agent(tmp_path, heartbeat_interval=0.05) as agent:
        deployed = task(templates=[TaskTemplate(content=bomb, destination="/etc/bomb.conf")])
        began = time.monotonic()
        beats = agent.bus.heartbeats()
        await agent.send(deployed)
        with anyio.fail_after(10):
            final = await agent.final(deployed)
        took = time.monotonic() - began
        assert (final.state, final.step) == ("failed", "templates")
        assert "/etc/bomb.conf" in (final.error or "") and "stopped after 2 s" in (
            final.error or ""
        )
        # Beats every 0.05 s all along: at least a third of what the interval allows.
        assert agent.bus.heartbeats() - beats >= took / 0.05 / 3
        assert not agent.ctx.files.folder(deployed.instance_id).exists()
        await deploy_ok(agent, task(templates=[TaskTemplate(content="{{ 1 }}", destination="/x")]))


# --- helpers -------------------------------------------------------------------------------


async def deploy_ok(agent: Agent, deployed: DeployTask) -> DeployTask:
    await agent.send(deployed)
    final = await agent.final(deployed)
    assert final.state == "succeeded", final
    return deployed


def spy_on_pulls(agent: Agent) -> list[str]:
    pulled: list[str] = []
    real = agent.runtime.pull

    async def pull(image: str, auth: Any = None) -> None:
        pulled.append(image)
        await real(image, auth)

    agent.runtime.pull = pull  # type: ignore[method-assign]
    return pulled
