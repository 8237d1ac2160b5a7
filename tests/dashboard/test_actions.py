"""The dashboard's actions over a fake control plane: forms that submit, scale and delete
deployments and drain nodes, their errors, roles and cross-site refusals, and the log route."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from html import escape as html_escape
from typing import Any

import pytest

from knit.api.app import create_app
from knit.domain.auth import Principal, Role
from knit.domain.logs import LogQuery
from knit.domain.specs import DeploymentSpec
from knit.errors import Conflict, NotFound
from tests.dashboard.fakes import (
    ORIGIN,
    SESSIONS,
    SIGNED_IN,
    FakeControl,
    JSONDict,
    deployment,
    node,
    session_headers,
)

pytestmark = [pytest.mark.unit, pytest.mark.anyio]

DEPLOYER = Principal("t-deploy", "deployer", Role.DEPLOY)
READER = Principal("t-read", "viewer", Role.READ)
WRITE = {**SIGNED_IN, **ORIGIN}
"""An admin's session from a page of this server."""


@dataclass
class ActingControl(FakeControl):
    """The fake control plane, with the writes the dashboard's actions call."""

    calls: list[tuple[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tokens["knit_fake-deploy-token"] = DEPLOYER

    def _find(self, deployment_id: str) -> JSONDict:
        for d in self.deployments:
            if d["id"] == deployment_id:
                return d
        raise NotFound("deployment", deployment_id)

    async def create_deployment(self, spec: DeploymentSpec) -> JSONDict:
        if any(d["name"] == spec.name for d in self.deployments):
            raise Conflict(f"a deployment named {spec.name!r} already exists")
        made = deployment(spec.name, spec.replicas, image=spec.image)
        self.deployments.append(made)
        self.calls.append(("create", spec.name))
        return made

    async def update_deployment(self, deployment_id: str, spec: DeploymentSpec) -> JSONDict:
        found = self._find(deployment_id)
        if found["name"] != spec.name:
            raise Conflict(f"a deployment named {spec.name!r} already exists")
        found.update(image=spec.image, replicas=spec.replicas, version=found["version"] + 1)
        self.calls.append(("update", spec.name))
        return found

    async def scale_deployment(self, deployment_id: str, replicas: int) -> JSONDict:
        found = self._find(deployment_id)
        if found["status"] == "deleting":
            raise Conflict(f"deployment {deployment_id!r} is being deleted")
        found["replicas"] = replicas
        self.calls.append(("scale", replicas))
        return found

    async def delete_deployment(self, deployment_id: str) -> JSONDict:
        found = self._find(deployment_id)
        found["status"] = "deleting"
        self.calls.append(("delete", deployment_id))
        return found

    async def set_node_eligible(self, node_id: str, eligible: bool) -> JSONDict:
        for n in self.nodes:
            if n["id"] == node_id:
                n["eligible"] = eligible
                self.calls.append(("eligible", eligible))
                return n
        raise NotFound("node", node_id)


class FakeLogs:
    """A LogSource answering two lines for any deployment it knows."""

    def __init__(self, control: FakeControl) -> None:
        self.control = control
        self.queries: list[LogQuery] = []

    async def open_logs(
        self,
        query: LogQuery,
        *,
        deployment_id: str | None = None,
        instance_id: str | None = None,
        index: int | None = None,
    ) -> AsyncIterator[bytes]:
        await self.control.get_deployment(deployment_id or "")
        self.queries.append(query)

        async def lines() -> AsyncIterator[bytes]:
            yield b"[0] hello\n"
            yield b"[1] world\n"

        return lines()


def scene() -> tuple[ActingControl, Any]:
    control = ActingControl(nodes=[node(0)], deployments=[deployment("web", 1)])
    app = create_app(control, sessions=SESSIONS, logs=FakeLogs(control))
    return control, app.test_client()


async def text(response: Any) -> str:
    return str(await response.get_data(as_text=True))


async def test_the_new_deployment_form_creates_and_redirects_to_its_page() -> None:
    control, client = scene()
    form = await client.get("/ui/deployments/new", headers=SIGNED_IN)
    assert form.status_code == 200 and 'name="spec"' in await text(form)
    overview = await text(await client.get("/ui/", headers=SIGNED_IN))
    assert 'href="/ui/deployments/new"' in overview
    spec = "name: api\nimage: knit-test/app:1\nreplicas: 2\n"
    response = await client.post("/ui/deployments/new", form={"spec": spec}, headers=WRITE)
    assert response.status_code == 303
    made = next(d for d in control.deployments if d["name"] == "api")
    assert response.headers["Location"] == f"/ui/deployments/{made['id']}?done=created"
    page = await text(await client.get(response.headers["Location"], headers=SIGNED_IN))
    assert "The deployment was created" in page and made["replicas"] == 2
    as_json = json.dumps({"name": "api2", "image": "knit-test/app:1"})
    again = await client.post("/ui/deployments/new", form={"spec": as_json}, headers=WRITE)
    assert again.status_code == 303 and ("create", "api2") in control.calls


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        ("name: api\nimage: x\nreplicas: -1\n", "replicas", "greater than or equal to 0"),
        ("image: x\n", "name", "is required"),
        ("name: api\nimage: x\nbogus: 1\n", "bogus", "is not a known field"),
        ("name: api\nimage: x\nports: [{container_port: 0}]\n", "ports.0.container_port", ""),
        ("name: [unclosed\n", "body", "is neither valid YAML nor JSON"),
        ("- a list\n", "body", "must be one deployment"),
        ("a: &x [1]\nb: *x\n", "body", "anchors and aliases are not accepted"),
    ],
)
async def test_a_spec_error_is_shown_next_to_its_field_and_the_text_is_kept(
    spec: str, field: str, message: str
) -> None:
    control, client = scene()
    response = await client.post("/ui/deployments/new", form={"spec": spec}, headers=WRITE)
    assert response.status_code == 422
    html = await text(response)
    errors = html.split('id="spec-errors"', 1)[1].split("</ul>", 1)[0]
    assert f'data-field="{field}">{field}: ' in errors and message in errors, errors
    assert 'aria-invalid="true"' in html
    kept = html.split('name="spec"', 1)[1].split("</textarea>", 1)[0]
    assert html_escape(spec, quote=False) in kept
    assert control.calls == []


async def test_the_form_answers_the_same_errors_as_the_api() -> None:
    _control, client = scene()
    body = {"name": "api", "image": "x", "replicas": -1, "env": {"A=B": "1"}}
    api = await client.post(
        "/deployments", json=body, headers={"Authorization": "Bearer knit_fake-admin-token"}
    )
    assert api.status_code == 422
    form = await client.post("/ui/deployments/new", form={"spec": json.dumps(body)}, headers=WRITE)
    html = await text(form)
    for error in (await api.get_json())["errors"]:
        escaped = error["message"].replace("'", "&#39;").replace('"', "&#34;")
        assert f"{error['field']}: {escaped}" in html, error


async def test_a_taken_name_is_a_409_at_the_name_field() -> None:
    control, client = scene()
    spec = "name: web\nimage: knit-test/app:1\n"
    response = await client.post("/ui/deployments/new", form={"spec": spec}, headers=WRITE)
    assert response.status_code == 409
    assert "name: a deployment named &#39;web&#39; already exists" in await text(response)
    assert len(control.deployments) == 1


async def test_a_taken_name_offers_to_update_that_deployment() -> None:
    control, client = scene()
    web = control.deployments[0]
    spec = "name: web\nimage: knit-test/app:2\nreplicas: 3\n"
    refused = await client.post("/ui/deployments/new", form={"spec": spec}, headers=WRITE)
    html = await text(refused)
    assert f'name="update" value="{web["id"]}"' in html and "Update web" in html
    form = {"spec": spec, "update": web["id"]}
    response = await client.post("/ui/deployments/new", form=form, headers=WRITE)
    assert response.status_code == 303
    assert response.headers["Location"] == f"/ui/deployments/{web['id']}?done=updated"
    assert (web["image"], web["replicas"], web["version"]) == ("knit-test/app:2", 3, 2)
    other = {"spec": "name: api\nimage: x\n", "update": web["id"]}
    clash = await client.post("/ui/deployments/new", form=other, headers=WRITE)
    assert clash.status_code == 409 and 'name="update"' not in await text(clash)
    assert control.calls == [("update", "web")]


async def test_scale_changes_replicas_and_redirects() -> None:
    control, client = scene()
    web = control.deployments[0]
    page = await text(await client.get(f"/ui/deployments/{web['id']}", headers=SIGNED_IN))
    assert f'action="/ui/deployments/{web["id"]}/scale"' in page
    path = f"/ui/deployments/{web['id']}/scale"
    response = await client.post(path, form={"replicas": "3"}, headers=WRITE)
    assert response.status_code == 303
    assert response.headers["Location"] == f"/ui/deployments/{web['id']}?done=scaled"
    assert web["replicas"] == 3


@pytest.mark.parametrize(("value", "message"), [("-2", "greater than or equal"), ("x", "integer")])
async def test_a_bad_replicas_number_is_shown_next_to_the_field(value: str, message: str) -> None:
    control, client = scene()
    web = control.deployments[0]
    path = f"/ui/deployments/{web['id']}/scale"
    response = await client.post(path, form={"replicas": value}, headers=WRITE)
    assert response.status_code == 422
    html = await text(response)
    errors = html.split('id="scale-errors"', 1)[1].split("</ul>", 1)[0]
    assert "replicas: " in errors and message in errors
    assert "data-stream" not in html  # no live refresh: this URL is not a page to refetch
    assert web["replicas"] == 1 and control.calls == []


async def test_scaling_a_deleting_deployment_is_a_409_page() -> None:
    control, client = scene()
    web = control.deployments[0]
    web["status"] = "deleting"
    path = f"/ui/deployments/{web['id']}/scale"
    response = await client.post(path, form={"replicas": "3"}, headers=WRITE)
    assert response.status_code == 409
    html = await text(response)
    assert "is being deleted" in html and "Traceback" not in html
    assert web["replicas"] == 1


async def test_delete_asks_first_then_deletes() -> None:
    control, client = scene()
    web = control.deployments[0]
    confirm = await client.get(f"/ui/deployments/{web['id']}/delete", headers=SIGNED_IN)
    assert confirm.status_code == 200
    html = await text(confirm)
    assert f'method="post" action="/ui/deployments/{web["id"]}/delete"' in html
    assert control.calls == []  # asking changes nothing
    response = await client.post(f"/ui/deployments/{web['id']}/delete", headers=WRITE)
    assert response.status_code == 303 and response.headers["Location"] == "/ui/?done=deleting"
    assert web["status"] == "deleting"
    page = await text(await client.get("/ui/?done=deleting", headers=SIGNED_IN))
    assert "is being deleted" in page


async def test_an_unknown_deployment_is_a_404_page() -> None:
    _control, client = scene()
    for path in ("/ui/deployments/nope/delete", "/ui/deployments/nope/scale"):
        response = await client.post(path, form={"replicas": "1"}, headers=WRITE)
        assert response.status_code == 404, path
        assert "Not found" in await text(response)


async def test_drain_and_eligible_from_the_node_page_and_the_overview() -> None:
    control, client = scene()
    n = control.nodes[0]
    page = await text(await client.get(f"/ui/nodes/{n['id']}", headers=SIGNED_IN))
    assert f'action="/ui/nodes/{n["id"]}/drain"' in page
    overview = await text(await client.get("/ui/", headers=SIGNED_IN))
    assert f'action="/ui/nodes/{n["id"]}/drain"' in overview
    drained = await client.post(f"/ui/nodes/{n['id']}/drain", headers=WRITE)
    assert drained.status_code == 303
    assert drained.headers["Location"] == f"/ui/nodes/{n['id']}?done=drained"
    assert n["eligible"] is False
    page = await text(await client.get(drained.headers["Location"], headers=SIGNED_IN))
    assert "The node is drained" in page and f'action="/ui/nodes/{n["id"]}/eligible"' in page
    back = await client.post(f"/ui/nodes/{n['id']}/eligible", form={"next": "/ui/"}, headers=WRITE)
    assert back.headers["Location"] == "/ui/?done=eligible" and n["eligible"] is True
    anchored = await client.post(
        f"/ui/nodes/{n['id']}/drain", form={"next": "/ui/?nodes_page=2#nodes"}, headers=WRITE
    )
    assert anchored.headers["Location"] == "/ui/?nodes_page=2&done=drained"
    evil = await client.post(
        f"/ui/nodes/{n['id']}/drain", form={"next": "https://evil.example/"}, headers=WRITE
    )
    assert evil.headers["Location"] == "/ui/?done=drained"


@pytest.mark.parametrize(
    ("path", "form"),
    [
        ("/ui/deployments/new", {"spec": "name: evil\nimage: x\n"}),
        ("/ui/deployments/{d}/scale", {"replicas": "9"}),
        ("/ui/deployments/{d}/delete", {}),
        ("/ui/nodes/{n}/drain", {}),
        ("/ui/nodes/{n}/eligible", {}),
    ],
)
async def test_a_cross_site_action_is_refused_and_changes_nothing(
    path: str, form: dict[str, str]
) -> None:
    control, client = scene()
    before = json.dumps([control.deployments, control.nodes], sort_keys=True)
    path = path.format(d=control.deployments[0]["id"], n=control.nodes[0]["id"])
    for headers in (
        {**SIGNED_IN, "Origin": "https://evil.example"},
        {**SIGNED_IN, "Referer": "https://evil.example/page"},
        SIGNED_IN,  # neither Origin nor Referer
    ):
        response = await client.post(path, form=form, headers=headers)
        assert response.status_code == 403, (path, headers)
    as_json = await client.post(path, json=form, headers=WRITE)
    assert as_json.status_code == 415
    unsigned = await client.post(path, form=form, headers=ORIGIN)
    assert unsigned.status_code == 303 and "/ui/sign-in" in unsigned.headers["Location"]
    assert control.calls == []
    assert json.dumps([control.deployments, control.nodes], sort_keys=True) == before


async def test_roles_match_the_api_and_a_weaker_session_gets_a_403_page() -> None:
    control, client = scene()
    d, n = control.deployments[0]["id"], control.nodes[0]["id"]
    reader = {**session_headers(SESSIONS, READER), **ORIGIN}
    deployer = {**session_headers(SESSIONS, DEPLOYER), **ORIGIN}
    page = await text(await client.get(f"/ui/deployments/{d}", headers=reader))
    assert "/scale" not in page and "/delete" not in page  # forms hidden
    overview = await text(await client.get("/ui/", headers=reader))
    assert "/drain" not in overview and "/ui/deployments/new" not in overview
    for method, path, form in (
        ("GET", "/ui/deployments/new", None),
        ("POST", "/ui/deployments/new", {"spec": "name: x\nimage: y\n"}),
        ("POST", f"/ui/deployments/{d}/scale", {"replicas": "5"}),
        ("GET", f"/ui/deployments/{d}/delete", None),
        ("POST", f"/ui/deployments/{d}/delete", {}),
        ("POST", f"/nodes/{n}/drain", None),
    ):
        if path.startswith("/nodes"):
            continue
        response = await client.open(path, method=method, form=form, headers=reader)
        assert response.status_code == 403, path
        assert response.headers["content-type"].startswith("text/html")
        assert "needs the deploy role" in await text(response)
    # deploy may change deployments, not nodes (as POST /nodes/{id}/drain needs admin)
    scaled = await client.post(
        f"/ui/deployments/{d}/scale", form={"replicas": "2"}, headers=deployer
    )
    assert scaled.status_code == 303
    drain = await client.post(f"/ui/nodes/{n}/drain", headers=deployer)
    assert drain.status_code == 403 and "needs the admin role" in await text(drain)
    assert control.calls == [("scale", 2)] and control.nodes[0]["eligible"] is True


async def test_the_logs_route_streams_lines_to_a_session_only() -> None:
    control, client = scene()
    d = control.deployments[0]["id"]
    page = await text(await client.get(f"/ui/deployments/{d}", headers=SIGNED_IN))
    assert f'data-src="/ui/deployments/{d}/logs?tail=100&amp;follow=1"' in page
    response = await client.get(f"/ui/deployments/{d}/logs?follow=1&tail=5", headers=SIGNED_IN)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert await text(response) == "[0] hello\n[1] world\n"
    # Without a session: 401 (the script then reloads the page, which leads to sign-in).
    refused = await client.get(f"/ui/deployments/{d}/logs?follow=1", headers={})
    assert refused.status_code == 401 and "hello" not in await text(refused)
    expired = session_headers(SESSIONS, Principal("t-gone", "gone", Role.ADMIN, time.time() - 1))
    assert (await client.get(f"/ui/deployments/{d}/logs", headers=expired)).status_code == 401
    bearer = {"Authorization": "Bearer knit_fake-admin-token"}
    assert (await client.get(f"/ui/deployments/{d}/logs", headers=bearer)).status_code == 401
    bad = await client.get(f"/ui/deployments/{d}/logs?tail=x", headers=SIGNED_IN)
    assert bad.status_code == 422 and "tail: " in await text(bad)
    missing = await client.get("/ui/deployments/nope/logs", headers=SIGNED_IN)
    assert missing.status_code == 404


async def test_the_logs_route_without_a_log_source_is_503() -> None:
    control = ActingControl(deployments=[deployment("web", 1)])
    client = create_app(control, sessions=SESSIONS).test_client()
    d = control.deployments[0]["id"]
    response = await client.get(f"/ui/deployments/{d}/logs", headers=SIGNED_IN)
    assert response.status_code == 503
