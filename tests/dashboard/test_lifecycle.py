"""The dashboard's view of a deployment's lifecycle over a fake control plane: its version,
its rollout's progress, its versions, and each instance's version and health."""

from __future__ import annotations

import re
from typing import Any

import pytest

from knit.api.app import create_app
from knit.dashboard.present import digest, health, rollout_view, version_rows
from tests.dashboard.fakes import (
    SESSIONS,
    SIGNED_IN,
    FakeControl,
    deployment,
    instance,
    node,
    version,
)

pytestmark = [pytest.mark.unit]

HOSTILE = '<script>alert("knit")</script>'
ESCAPED = "&lt;script&gt;alert(&#34;knit&#34;)&lt;/script&gt;"
SECRET = "hunter2-do-not-show"


def rollout(state: str, updated: int, healthy: int, **extra: Any) -> dict[str, Any]:
    return {
        "version": 2,
        "state": state,
        "desired": 3,
        "updated": updated,
        "healthy": healthy,
        "message": "",
        "started_at": 1.0,
        "failed_version": None,
        **extra,
    }


def mid_rollout(**rollout_fields: Any) -> tuple[FakeControl, str]:
    """``web`` at version 2, its rollout at 2/3 updated, 1 healthy; instances of 1 and 2."""
    control = FakeControl()
    host = node(1)
    control.nodes = [host]
    web = deployment(
        "web",
        3,
        image="web:2",
        version=2,
        rollout=rollout("running", 2, 1, **rollout_fields),
        health_check={
            "command": ["CMD", "wget", "-q", "-O-", "http://127.0.0.1:8080/"],
            "interval": 2.0,
            "timeout": 1.0,
            "retries": 3,
            "start_period": 0.0,
        },
    )
    control.deployments = [web]
    control.instances = [
        instance(web["id"], host["id"], 0, version=2, health="healthy"),
        instance(web["id"], host["id"], 1, version=2, health="starting", restarts=2),
        instance(web["id"], host["id"], 2, version=1, health="unhealthy"),
    ]
    v1 = {"name": "web", "image": "web:1", "env": {"DB_PASSWORD": SECRET}}
    v2 = {**v1, "image": "web:2"}
    control.versions = {web["id"]: [version(2, v2, stable=False), version(1, v1)]}
    return control, str(web["id"])


async def page(control: FakeControl, path: str) -> str:
    response = (
        await create_app(control, sessions=SESSIONS).test_client().get(path, headers=SIGNED_IN)
    )
    assert response.status_code == 200, path
    return await response.get_data(as_text=True)


def cells(html: str, table_class: str) -> list[list[str]]:
    """The text of each body row's cells of the first ``<table class=table_class>``."""
    body = html.split(f'<table class="{table_class}">', 1)[1].split("</table>", 1)[0]
    body = body.split("<tbody>", 1)[1]
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)
    return [
        [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)]
        for r in rows
    ]


@pytest.mark.anyio
async def test_the_deployment_page_shows_its_version_rollout_and_versions() -> None:
    control, web = mid_rollout(message="replacing instance 2")
    html = await page(control, f"/ui/deployments/{web}")
    assert '<span class="version" title="version">v2</span>' in html
    assert "Rollout of version 2" in html and 'class="badge r-running">running</span>' in html
    assert '<progress class="updated" max="3" value="2">' in html
    assert '<progress class="healthy" max="3" value="1">' in html
    assert "<strong>2/3</strong>" in html and "<strong>1/3</strong>" in html
    assert "replacing instance 2" in html
    rows = cells(html, "versions")
    assert [[r[0], r[2], r[3]] for r in rows] == [
        ["2 current", "no", "web:2"],
        ["1", "yes", "web:1"],
    ]
    assert all(r[1].endswith(" ago") for r in rows)  # created, as on the other tables
    assert '<tr class="current">' in html
    assert "wget" in html and "every 2.0 s" in html  # the health check
    assert "stop_first, 1 at a time" in html  # the update policy
    assert SECRET not in html  # versions' specs hold env values: never shown


@pytest.mark.anyio
async def test_each_instance_shows_its_version_and_health_in_its_own_style() -> None:
    control, web = mid_rollout()
    html = await page(control, f"/ui/deployments/{web}")
    for h in ("healthy", "starting", "unhealthy"):
        assert f'<span class="health h-{h}" title="health: {h}">{h}</span>' in html
    node_html = await page(control, f"/ui/nodes/{control.nodes[0]['id']}")
    assert 'class="health h-unhealthy"' in node_html and 'class="health h-healthy"' in node_html


@pytest.mark.anyio
async def test_a_paused_rollout_shows_its_reason_and_a_rollback_the_failed_version() -> None:
    control, web = mid_rollout()
    control.deployments[0]["rollout"] = rollout(
        "paused", 1, 0, message="instance 0 of version 2 not healthy within 30 s (unhealthy)"
    )
    html = await page(control, f"/ui/deployments/{web}")
    assert 'class="badge r-paused">paused</span>' in html
    assert 'class="rollout-message reason">instance 0 of version 2 not healthy' in html
    control.deployments[0]["version"] = 1
    control.deployments[0]["rollout"] = rollout(
        "rolled_back", 3, 3, version=1, failed_version=2, message="version 2 failed"
    )
    html = await page(control, f"/ui/deployments/{web}")
    assert 'class="badge r-rolled_back">rolled back</span>' in html
    assert "Version 2 failed: rolled back to version 1." in html


@pytest.mark.anyio
async def test_the_overview_shows_versions_and_unfinished_rollouts() -> None:
    control, _ = mid_rollout()
    calm = deployment("calm", 1, version=4, rollout=rollout("complete", 1, 1, version=4))
    control.deployments.append(calm)
    html = await page(control, "/ui/")
    assert 'class="badge r-running">running</span> <span class="muted">v2: 2/3</span>' in html
    assert "r-complete" not in html  # a finished rollout is not news on the list
    assert '<td class="num">4</td>' in html and '<td class="num">2</td>' in html


@pytest.mark.anyio
async def test_lifecycle_values_are_escaped() -> None:
    control, web = mid_rollout(message=HOSTILE)
    control.deployments[0]["rollout"]["state"] = HOSTILE
    control.instances[0]["health"] = HOSTILE
    control.versions[web][0]["spec"]["image"] = HOSTILE
    html = await page(control, f"/ui/deployments/{web}")
    assert HOSTILE not in html
    assert html.count(ESCAPED) >= 3  # the message, the state, the image
    assert 'class="health h-none"' in html  # an unknown health is shown as none


@pytest.mark.anyio
async def test_a_deployment_without_versions_or_rollout_still_renders() -> None:
    control = FakeControl()
    old = deployment("old", 1)
    for key in ("version", "rollout", "update", "health_check"):
        old.pop(key)
    control.deployments = [old]
    control.versions = {}
    html = await page(control, f"/ui/deployments/{old['id']}")
    assert "No versions recorded." in html and "Rollout of" not in html
    assert await page(control, "/ui/")


def test_rollout_view_and_version_rows() -> None:
    assert rollout_view({"rollout": None}) is None
    view = rollout_view({"rollout": rollout("rolling_back", 5, 1, failed_version=3)})
    assert view is not None
    assert (view.updated, view.desired, view.failed_version, view.active) == (3, 3, 3, True)
    rows = version_rows([version(2, {"image": "a:2"}), version(1, {"image": "a:1"})], 2)
    assert [(r["version"], r["current"], r["image"]) for r in rows] == [
        (2, True, "a:2"),
        (1, False, "a:1"),
    ]
    assert [health(h) for h in ("healthy", "weird", None)] == ["healthy", "none", "none"]


def test_the_digest_sees_health_versions_and_rollouts() -> None:
    control, _ = mid_rollout()
    nodes, deployments, instances = control.nodes, control.deployments, control.instances
    base = digest(nodes, deployments, instances, "e1")
    instances[1]["health"] = "healthy"
    assert digest(nodes, deployments, instances, "e1") != base
    moved = digest(nodes, deployments, instances, "e1")
    deployments[0]["rollout"] = rollout("running", 3, 1)
    assert digest(nodes, deployments, instances, "e1") != moved
    again = digest(nodes, deployments, instances, "e1")
    instances[2]["version"] = 2
    assert digest(nodes, deployments, instances, "e1") != again
