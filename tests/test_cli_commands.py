"""``knit deployments``, ``ps``, ``nodes``, ``events [-f]``, ``drain``, ``eligible`` and
``inspect`` against a real server: the in-process cluster of ``tests.support.cluster``, as
``tests/test_cli_lifecycle.py`` runs it (commands in a worker thread; ``events -f`` and the
quiet-logs check as child processes).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import anyio
import pytest

from tests.test_cli_lifecycle import Scene, scene

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

REPO = Path(__file__).resolve().parents[1]


async def deployed(s: Scene, name: str = "web", replicas: int = 2) -> dict[str, object]:
    ran = await s.knit("deploy", "-f", str(s.spec_file(name, replicas=replicas)))
    assert ran.code == 0, ran
    return await s.deployment(name)


async def test_listings_show_short_ids_whole_with_no_trunc_and_json(
    nats_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with scene(nats_url, tmp_path, capsys) as s:
        web = await deployed(s)
        web_id = str(web["id"])

        listed = await s.knit("deployments")
        assert listed.code == 0, listed
        head, *rows = listed.out.splitlines()
        assert head.split()[:6] == ["ID", "NAME", "IMAGE", "VERSION", "RUNNING", "STATUS"]
        [row] = rows
        assert row.split()[:5] == [web_id[:12], "web", "knit-test/web:1", "1", "2/2"]
        assert web_id not in listed.out
        assert web_id in (await s.knit("deployments", "--no-trunc")).out
        as_json = json.loads((await s.knit("deployments", "-o", "json")).out)
        assert [d["id"] for d in as_json] == [web_id]

        ps = await s.knit("ps", "web")
        assert ps.code == 0, ps
        head, *rows = ps.out.splitlines()
        assert head.split()[:4] == ["INSTANCE", "CONTAINER", "DEPLOYMENT", "INDEX"]
        instances = [i for i in web["instances"] if i["desired"]]  # type: ignore[attr-defined]
        assert len(rows) == len(instances) == 2
        shown = {r.split()[0] for r in rows}
        assert all(12 <= len(x) < 32 for x in shown)  # 12, or more to tell same-ms ids apart
        assert {i["instance_id"][: len(x)] for i in instances for x in shown} >= shown
        assert all(r.split()[2] == "web" and "running" in r.split() for r in rows)
        whole = await s.knit("ps", web_id[:12], "--no-trunc")
        assert all(i["instance_id"] in whole.out for i in instances)
        assert len(json.loads((await s.knit("ps", "-o", "json")).out)) == 2

        nodes = await s.knit("nodes")
        assert nodes.code == 0, nodes
        head, *rows = nodes.out.splitlines()
        assert head.split()[:5] == ["ID", "HOSTNAME", "STATUS", "ELIGIBLE", "INSTANCES"]
        assert len(rows) == 2 and all("healthy" in r.split() for r in rows)
        assert sum(int(r.split()[4]) for r in rows) == 2
        assert set(s.cluster.agents) == {
            n["id"] for n in json.loads((await s.knit("nodes", "--json")).out)
        }
        assert "INFO" not in listed.err + ps.err + nodes.err


async def test_ids_by_prefix_inspect_drain_and_eligible(
    nats_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with scene(nats_url, tmp_path, capsys) as s:
        web = await deployed(s, replicas=1)
        web_id = str(web["id"])

        scaled = await s.knit("scale", web_id[:14], "2")
        assert scaled.code == 0, scaled
        assert scaled.out.startswith("deployment web scaled to 2")

        by_name = json.loads((await s.knit("inspect", "web")).out)
        assert by_name["id"] == web_id and len(by_name["instances"]) >= 2
        assert json.loads((await s.knit("inspect", web_id[:14])).out)["id"] == web_id

        node_id = next(iter(s.cluster.agents))
        node = json.loads((await s.knit("inspect", node_id[:14], "--type", "node")).out)
        assert node["id"] == node_id and "hostname" in node
        instance = next(i for i in by_name["instances"] if i["status"] == "running")
        found = json.loads((await s.knit("inspect", instance["instance_id"])).out)
        assert found["instance_id"] == instance["instance_id"]

        # Every id here was made this hour: their first characters are the same time.
        vague = await s.knit("inspect", web_id[:3])
        assert vague.code == 1
        assert vague.err.startswith(f"knit: '{web_id[:3]}' matches ")
        assert "give more of the id" in vague.err and "Traceback" not in vague.err
        nothing = await s.knit("inspect", "nope")
        assert nothing.code == 1
        assert nothing.err == ("knit: no deployment or node or instance named or with id 'nope'\n")

        drained = await s.knit("drain", node_id[:14])
        assert drained.code == 0, drained
        assert drained.out.startswith(f"node {node_id} (") and "drained" in drained.out
        assert (await s.cluster.get(f"/nodes/{node_id}"))["eligible"] is False
        listed = (await s.knit("nodes")).out
        [line] = [x for x in listed.splitlines() if x.startswith(node_id[:12])]
        assert line.split()[3] == "no"
        again = await s.knit("eligible", node_id)
        assert again.code == 0 and "is eligible" in again.out, again
        assert (await s.cluster.get(f"/nodes/{node_id}"))["eligible"] is True
        unknown = await s.knit("drain", "nope")
        assert unknown.code == 1 and unknown.err == "knit: no node 'nope'\n"

        made = await s.knit("token", "create", "--role", "read", "--name", "ci", "--json")
        token_id = json.loads(made.out)["id"]
        tokens = await s.knit("token", "ls")
        assert token_id[:12] in tokens.out and token_id not in tokens.out
        revoked = await s.knit("token", "rm", token_id[:14])
        assert revoked.code == 0 and revoked.out == f"token {token_id} revoked\n", revoked


async def test_events_list_and_filter(
    nats_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with scene(nats_url, tmp_path, capsys) as s:
        web = await deployed(s, replicas=1)
        await deployed(s, "db", replicas=1)
        listed = await s.knit("events")
        assert listed.code == 0, listed
        head, *lines = listed.out.splitlines()
        assert head.split() == ["AT", "KIND", "DEPLOYMENT", "NODE", "MESSAGE"]
        assert lines and str(web["id"])[:12] in listed.out
        times = [line.split()[0] for line in lines]
        assert times == sorted(times)  # oldest first
        only = json.loads((await s.knit("events", "--deployment", "web", "-o", "json")).out)
        assert only and {e["deployment_id"] for e in only} == {web["id"]}
        two = json.loads((await s.knit("events", "-n", "2", "--json")).out)
        assert len(two) == 2


def follow_until(
    argv: list[str], env: dict[str, str], ready: threading.Event, marker: str
) -> tuple[int, list[str], str]:
    """Run ``knit events -f ...``; set ``ready`` once it printed its header and first event,
    send it SIGINT once a line holds ``marker``; its exit code, lines and standard error."""
    with subprocess.Popen(
        [sys.executable, "-m", "knit.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    ) as child:
        assert child.stdout is not None
        lines = [child.stdout.readline(), child.stdout.readline()]
        ready.set()
        while lines[-1] and marker not in lines[-1]:
            lines.append(child.stdout.readline())
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=20)
        return child.returncode, lines + out.splitlines(keepends=True), err


async def test_events_follow_prints_new_events_and_ends_on_ctrl_c(
    nats_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with scene(nats_url, tmp_path, capsys) as s:
        web = await deployed(s, replicas=1)
        env = {k: v for k, v in os.environ.items() if k != "KNIT_LOG_LEVEL"}
        argv = ["events", "-f", "-n", "1", "--api", s.api, "--token", s.token]
        ready = threading.Event()
        marker = "deployment web deleted"
        async with anyio.create_task_group() as tg:
            result: list[tuple[int, list[str], str]] = []

            async def run() -> None:
                result.append(
                    await anyio.to_thread.run_sync(follow_until, argv, env, ready, marker)
                )

            tg.start_soon(run)
            assert await anyio.to_thread.run_sync(ready.wait, 30)
            removed = await s.knit("rm", "web")
            assert removed.code == 0, removed
        [(code, lines, err)] = result
        assert code == 130, (lines, err)
        assert err == "", err  # no traceback, no log lines
        assert lines[0].split()[:2] == ["AT", "KIND"]
        [gone] = [x for x in lines if marker in x]
        assert gone.split()[1:3] == ["deployment.deleted", str(web["id"])[:12]]


async def test_errors_for_a_refused_token_and_library_logs_stay_off_stdout(
    nats_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with scene(nats_url, tmp_path, capsys) as s:
        env = {k: v for k, v in os.environ.items() if k not in ("KNIT_LOG_LEVEL", "KNIT_TOKEN")}
        env["PYTHONPATH"] = str(REPO)  # this checkout's knit, run from another folder

        def knit(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "knit.cli", *args, "--api", s.api],
                capture_output=True,
                text=True,
                env=env,
                cwd=tmp_path,
                timeout=60,
            )

        quiet = await anyio.to_thread.run_sync(lambda: knit("nodes", "--token", s.token))
        assert quiet.returncode == 0, quiet.stderr
        assert quiet.stderr == "" and quiet.stdout.startswith("ID ")
        assert "HTTP Request" not in quiet.stdout

        refused = await anyio.to_thread.run_sync(lambda: knit("ps", "--token", "knit_nope"))
        assert refused.returncode == 1
        assert refused.stderr.startswith(
            "knit: the server refused the token from --token (HTTP 401"
        )
        assert refused.stderr.count("\n") == 1 and "knit_nope" not in refused.stderr

        none = await anyio.to_thread.run_sync(lambda: knit("deployments"))
        assert none.returncode == 1
        assert none.stderr.startswith("knit: the server wants an API token (HTTP 401")
