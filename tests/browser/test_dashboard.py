"""The dashboard as a person uses it: chromium signs in, submits a deployment, scales it,
follows its logs, drains and un-drains the node and deletes the deployment, against a real
server, nats-server and agent on the Docker Engine. Screenshots of each page are kept
(``tests/browser/conftest.py``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.knit import KnitCluster, unique_name
from tests.support.knit_processes import read_admin_token

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.e2e

BUSYBOX = "knit-test/busybox:latest"
PRINTER = [
    "sh",
    "-c",
    "trap 'exit 0' TERM; i=0; while true; do echo line $i; i=$((i+1)); usleep 100000; done",
]
"""A line every 100 ms (busybox ``usleep``); stops at once on SIGTERM."""
WAIT_MS = 30_000

Shots = Callable[["Page", str], Path]


def sign_in(page: Page, cluster: KnitCluster) -> None:
    """Open the dashboard, which sends the browser to the sign-in form, and sign in."""
    token = read_admin_token(cluster.server.token_file)
    assert token
    page.goto(cluster.server.api_url + "/ui/")
    page.wait_for_url("**/ui/sign-in**")
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    page.wait_for_url("**/ui/")


def test_a_deployment_from_submit_to_delete(cluster: KnitCluster, page: Page, shots: Shots) -> None:
    from playwright.sync_api import expect

    sign_in(page, cluster)
    shots(page, "overview")
    node_id = str(cluster.api.nodes()[0]["id"])

    # submit
    page.click("text=New deployment")
    name = unique_name("browser")
    spec = {"name": name, "image": BUSYBOX, "replicas": 1, "command": PRINTER}
    page.fill("#spec", json.dumps(spec, indent=2))
    shots(page, "new-deployment")
    page.click("button:has-text('Create')")
    page.wait_for_url("**/ui/deployments/*?done=created")
    deployment_id = page.url.split("/ui/deployments/", 1)[1].split("?", 1)[0]
    expect(page.locator(".done")).to_contain_text("The deployment was created")
    expect(page.locator("main")).to_contain_text("1 running / 1 desired", timeout=WAIT_MS)
    shots(page, "deployment-running")

    # scale 1 → 2
    page.fill("#replicas", "2")
    page.click("button:has-text('Scale')")
    page.wait_for_url("**?done=scaled")
    expect(page.locator("main")).to_contain_text("2 running / 2 desired", timeout=WAIT_MS)
    shots(page, "deployment-scaled")

    # the log panel moves
    logs = page.locator("#log-lines")
    expect(logs).to_contain_text("line ", timeout=WAIT_MS)
    before = logs.inner_text()
    page.wait_for_function(
        "old => document.getElementById('log-lines').textContent !== old",
        arg=before,
        timeout=WAIT_MS,
    )
    assert "line " in logs.inner_text()
    expect(page.locator("#log-state")).to_have_text("following")
    shots(page, "deployment-logs")

    # drain the node, then make it eligible again
    page.goto(f"{cluster.server.api_url}/ui/nodes/{node_id}")
    page.click("button:has-text('Drain')")
    page.wait_for_url(f"**/ui/nodes/{node_id}?done=drained")
    expect(page.locator(".spec")).to_contain_text("no (drained)")
    assert cluster.api.nodes()[0]["eligible"] is False
    shots(page, "node-drained")
    page.click("button:has-text('Make eligible')")
    page.wait_for_url(f"**/ui/nodes/{node_id}?done=eligible")
    expect(page.locator(".spec")).not_to_contain_text("drained")
    assert cluster.api.nodes()[0]["eligible"] is True
    shots(page, "node-eligible")

    # delete, after the confirmation step
    page.goto(f"{cluster.server.api_url}/ui/deployments/{deployment_id}")
    page.click("text=Delete…")
    page.wait_for_url(f"**/ui/deployments/{deployment_id}/delete")
    shots(page, "confirm-delete")
    page.click(f"button:has-text('Delete {name}')")
    page.wait_for_url("**/ui/?done=deleting")
    expect(page.locator(".done")).to_contain_text("is being deleted")
    shots(page, "deleting")
    link = page.locator(f'a[href="/ui/deployments/{deployment_id}"]')
    expect(link).to_have_count(0, timeout=WAIT_MS)  # gone: the live refresh drops the row
    shots(page, "deleted")


def test_a_spec_error_is_shown_next_to_the_field(
    cluster: KnitCluster, page: Page, shots: Shots
) -> None:
    from playwright.sync_api import expect

    sign_in(page, cluster)
    page.goto(cluster.server.api_url + "/ui/deployments/new")
    text = json.dumps({"name": unique_name("bad"), "image": BUSYBOX, "replicas": -1})
    page.fill("#spec", text)
    page.click("button:has-text('Create')")
    errors = page.locator("#spec-errors")
    expect(errors).to_contain_text("replicas: Input should be greater than or equal to 0")
    expect(page.locator("#spec")).to_have_value(text)
    assert page.locator("#spec").get_attribute("aria-invalid") == "true"
    shots(page, "spec-error")
