"""``knit deploy`` (create, then update and follow), ``scale``, ``history`` and ``rollback``
against a real server: the in-process cluster of ``tests.support.cluster`` (real server,
NATS, SQLite and HTTP API; agents on the simulated runtime).

Each command runs ``knit.cli.main`` in a worker thread (the server answers on the event
loop meanwhile); the Ctrl-C test runs ``python -m knit.cli`` as a child process.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from knit.cli import main
from knit.natsd import free_port
from simulations.profile import SimProfile
from tests.support.cluster import Cluster, open_cluster

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

GOOD = "knit-test/web:1"
BETTER = "knit-test/web:2"
MISSING = "knit-test/missing:1"
"""An image the simulated registry does not hold: its instances never run."""
FAST = {"max_parallel": 1, "min_healthy_time": 0.3, "healthy_deadline": 3.0}
FOLLOWING = {"deploy", "scale", "rollback"}


@dataclass
class Ran:
    code: int
    out: str
    err: str


@dataclass
class Scene:
    cluster: Cluster
    tmp: Path
    capsys: pytest.CaptureFixture[str]

    @property
    def api(self) -> str:
        return str(self.cluster.api.base_url)

    @property
    def token(self) -> str:
        return str(self.cluster.api.headers["Authorization"]).removeprefix("Bearer ")

    async def knit(self, *args: str) -> Ran:
        """``knit ARGS --api URL --token T``, as a user types it; its exit code and output."""
        self.capsys.readouterr()
        argv = [*args, "--api", self.api, "--token", self.token]
        if args[0] in FOLLOWING and "--timeout" not in args:
            argv += ["--timeout", "20"]  # the thread outlives a test that times out: bound it
        code = await anyio.to_thread.run_sync(main, argv)
        out = self.capsys.readouterr()
        return Ran(code, out.out, out.err)

    def spec_file(self, name: str = "web", **fields: Any) -> Path:
        spec: dict[str, Any] = {"name": name, "image": GOOD, "replicas": 2, "update": FAST}
        spec.update(fields)
        path = self.tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(spec))
        return path

    async def deployment(self, name: str = "web") -> dict[str, Any]:
        [found] = [d for d in await self.cluster.get("/deployments") if d["name"] == name]
        data: dict[str, Any] = await self.cluster.deployment(found["id"])
        return data


@asynccontextmanager
async def scene(
    nats_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> AsyncIterator[Scene]:
    async with open_cluster(nats_url, tmp_path) as cluster:
        cluster.profile = SimProfile(registry_images=frozenset({GOOD, BETTER}))
        await cluster.add_agent({"zone": "a"})
        await cluster.add_agent({"zone": "b"})
        yield Scene(cluster, tmp_path, capsys)


async def test_deploy_creates_then_updates_following_the_rollout_then_sees_no_change(
    nats_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with scene(nats_url, tmp_path, capsys) as s:
        created = await s.knit("deploy", "-f", str(s.spec_file()))
        assert created.code == 0, created
        assert created.out.startswith("deployment web created: ")
        assert created.out.rstrip().endswith("rollout complete: version 1")
        assert len([i for i in (await s.deployment())["instances"] if i["status"] == "running"])

        updated = await s.knit("deploy", "-f", str(s.spec_file(image=BETTER)))
        assert updated.code == 0, updated
        lines = updated.out.splitlines()
        assert lines[0] == "deployment web updated: version 2 (was 1)"
        assert lines[-1] == "rollout complete: version 2"
        assert any(x.startswith("version 2: ") and "updated" in x for x in lines[1:-1]), lines
        data = await s.deployment()
        assert data["version"] == 2 and data["rollout"]["state"] == "complete"
        assert {i["version"] for i in data["instances"] if i["desired"]} == {2}

        started = time.monotonic()
        same = await s.knit("deploy", "-f", str(s.spec_file(image=BETTER)))
        assert same.code == 0, same
        assert same.out == "deployment web unchanged (version 2)\n"
        assert time.monotonic() - started < 5  # returned at once: nothing to follow


async def test_scale_history_and_rollback_by_number(
    nats_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with scene(nats_url, tmp_path, capsys) as s:
        assert (await s.knit("deploy", "-f", str(s.spec_file()))).code == 0
        assert (await s.knit("deploy", "-f", str(s.spec_file(image=BETTER)))).code == 0
        before = {i["instance_id"] for i in (await s.deployment())["instances"]}

        scaled = await s.knit("scale", "web", "3")
        assert scaled.code == 0, scaled
        assert scaled.out.splitlines()[0] == "deployment web scaled to 3 (was 2; version 2)"
        assert scaled.out.rstrip().endswith("deployment web running: 3/3 (version 2)")
        after = {i["instance_id"] for i in (await s.deployment())["instances"]}
        assert before < after  # the running ones were kept

        history = await s.knit("history", "web")
        assert history.code == 0, history
        head, *rows = history.out.splitlines()
        assert head.split() == ["VERSION", "CREATED_AT", "STABLE", "IMAGE", "CHANGES"]
        assert rows[0].split()[:2] == ["2", "(current)"] and BETTER in rows[0]
        assert rows[1].split()[0] == "1" and GOOD in rows[1] and "(first)" in rows[1]
        assert [r.split()[3 if i == 0 else 2] for i, r in enumerate(rows)] == ["yes", "yes"]

        back = await s.knit("rollback", "web", "--version", "1")
        assert back.code == 0, back
        assert back.out.splitlines()[0] == "deployment web: version 3 has the spec of version 1"
        assert back.out.rstrip().endswith("rollout complete: version 3")
        data = await s.deployment()
        assert data["version"] == 3 and data["image"] == GOOD and data["replicas"] == 3

        listed = await s.knit("history", data["id"], "--json")  # by id, as JSON
        assert [v["version"] for v in json.loads(listed.out)] == [3, 2, 1]

        # The file with only ``replicas`` changed is a scale: no new version.
        more = await s.knit("deploy", "-f", str(s.spec_file(replicas=4)))
        assert more.code == 0, more
        assert more.out.splitlines()[0] == "deployment web scaled to 4 (was 3; version 3)"
        assert more.out.rstrip().endswith("deployment web running: 4/4 (version 3)")


async def test_a_rollout_that_never_gets_healthy_exits_non_zero_with_the_reason(
    nats_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with scene(nats_url, tmp_path, capsys) as s:
        assert (await s.knit("deploy", "-f", str(s.spec_file()))).code == 0
        paused = await s.knit("deploy", "-f", str(s.spec_file(image=MISSING)))
        assert paused.code == 1, paused
        assert "rollout paused: version 2" in paused.out
        assert paused.err.startswith("knit: the rollout of version 2 paused: ")
        assert "Traceback" not in paused.err

        rolling = {**FAST, "on_failure": "rollback"}
        back = await s.knit("deploy", "-f", str(s.spec_file(image=MISSING, update=rolling)))
        assert back.code == 1, back
        assert "rolled back to version 1" in back.out
        assert back.err.startswith("knit: the rollout of version 3 was rolled back: ")
        data = await s.deployment()
        assert data["image"] == GOOD  # version 1's spec is back
        assert all(i["version"] == 1 for i in data["instances"] if i["desired"])


async def test_a_new_deployment_that_never_runs_exits_non_zero_with_the_reason(
    nats_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with scene(nats_url, tmp_path, capsys) as s:
        ran = await s.knit("deploy", "-f", str(s.spec_file(image=MISSING, replicas=1)))
        assert ran.code == 1, ran
        assert "instance 0: error: pull: " in ran.out  # why, as soon as it is known
        assert ran.err.startswith("knit: the rollout of version 1 paused: ")


async def test_detach_and_json_return_the_deployment_at_once(
    nats_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with scene(nats_url, tmp_path, capsys) as s:
        made = await s.knit("deploy", "-f", str(s.spec_file()), "--json", "--detach")
        assert made.code == 0, made
        body = json.loads(made.out)
        assert (body["name"], body["version"]) == ("web", 1)
        followed = await s.knit("deploy", "-f", str(s.spec_file(image=BETTER)), "--json")
        assert followed.code == 0, followed
        assert json.loads(followed.out)["version"] == 2  # standard output: the JSON alone
        assert "rollout complete: version 2" in followed.err  # the progress: beside it


async def test_a_new_deployment_that_cannot_be_placed_says_why_and_gives_up(
    nats_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with scene(nats_url, tmp_path, capsys) as s:
        patient = {**FAST, "healthy_deadline": 60.0}
        path = s.spec_file("mars", node_selector={"zone": "mars"}, update=patient)
        ran = await s.knit("deploy", "-f", str(path), "--timeout", "2")
        assert ran.code == 1, ran
        assert "pending: " in ran.out and "zone" in ran.out
        assert ran.err.startswith("knit: nothing changed for 2 s: version 1: "), ran
        assert "; pending: " in ran.err


async def test_api_errors_name_the_field_and_unknown_names_are_one_line(
    nats_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with scene(nats_url, tmp_path, capsys) as s:
        assert (await s.knit("deploy", "-f", str(s.spec_file()))).code == 0
        bad = await s.knit("deploy", "-f", str(s.spec_file(update={"max_parallel": 0})))
        assert bad.code == 1 and "HTTP 422" in bad.err and "update.max_parallel" in bad.err
        for args in (["scale", "nope", "2"], ["history", "nope"], ["rollback", "nope"]):
            ran = await s.knit(*args)
            assert ran.code == 1 and ran.err == "knit: no deployment named or with id 'nope'\n"
        missing = await s.knit("rollback", "web", "--version", "9")
        assert missing.code == 1 and "HTTP 404" in missing.err, missing
        assert "Traceback" not in bad.err + missing.err


def test_an_unreachable_server_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["scale", "web", "3", "--api", f"http://127.0.0.1:{free_port()}"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("knit: cannot reach the Knit API at http://127.0.0.1:")
    assert err.count("\n") == 1


def interrupt_after_first_line(argv: list[str]) -> tuple[int, str, str]:
    """Run ``knit ARGV``, send it SIGINT once it printed a progress line; its exit code and
    output."""
    with subprocess.Popen(
        [sys.executable, "-m", "knit.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    ) as child:
        assert child.stdout is not None and child.stderr is not None
        first = child.stdout.readline()  # "deployment web updated: ..."
        second = child.stdout.readline()  # a progress line: it follows
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=30)
        return child.returncode, first + second + out, err


async def test_ctrl_c_stops_following_and_leaves_the_rollout_running(
    nats_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with scene(nats_url, tmp_path, capsys) as s:
        assert (await s.knit("deploy", "-f", str(s.spec_file()))).code == 0
        slow = {**FAST, "min_healthy_time": 2.0, "healthy_deadline": 30.0}
        path = s.spec_file(image=BETTER, update=slow)
        argv = ["deploy", "-f", str(path), "--api", s.api, "--token", s.token]
        code, out, err = await anyio.to_thread.run_sync(interrupt_after_first_line, argv)
        assert code == 130, (out, err)
        assert out.startswith("deployment web updated: version 2 (was 1)\n")
        assert "stopped following; the rollout of version 2 goes on" in err
        assert "Traceback" not in err

        async def complete() -> bool:
            rollout = (await s.deployment())["rollout"]
            return bool(rollout and rollout["version"] == 2 and rollout["state"] == "complete")

        await s.cluster.wait_for(complete, timeout=30, what="the rollout to go on alone")
