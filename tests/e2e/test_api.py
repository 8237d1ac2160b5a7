"""The REST API's contract over HTTP: what it accepts, what it refuses and how, what it hides.

Every bad request must answer 400 or 422 (malformed JSON: 400) with Knit's error body
``{"error": "...", "errors": [{"field": "...", "message": "..."}]}`` naming the field, and
must store nothing: the lists of deployments, registries, networks and instances are the same
before and after.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.knit import SLEEPER, KnitCluster, unique_name
from tests.support.knit_api import KnitApi
from tests.support.knit_docker import remove_docker_network, spare_subnet
from tests.support.waiting import holds_for

pytestmark = pytest.mark.e2e

BUSYBOX = "knit-test/busybox:latest"
STORED_NETWORK = unique_name("stored-net")
DROP = object()
"""A value in a case's changes that removes the field from the valid body."""


@dataclass(frozen=True)
class Stored:
    """What exists before each bad request: one registry and one network (with a subnet)."""

    registry_id: str
    network_name: str
    subnet: str


@pytest.fixture(scope="module")
def stored(cluster: KnitCluster, e2e_docker: str) -> Iterator[Stored]:
    """Created once, outside the per-test cleanup."""
    subnet = spare_subnet(e2e_docker)
    api = cluster.api
    registry = api.ok(
        api.post(
            "/registries",
            {"url": "127.0.0.1:5999", "username": "someone", "password": "s3cret-stored"},
        ),
        201,
    )
    network = api.ok(
        api.post("/networks", {"name": STORED_NETWORK, "driver": "bridge", "subnet": subnet}),
        201,
    )
    yield Stored(registry["id"], STORED_NETWORK, subnet)
    api.delete(f"/networks/{network['id']}")
    api.delete(f"/registries/{registry['id']}")
    remove_docker_network(e2e_docker, STORED_NETWORK)


def snapshot(api: KnitApi) -> dict[str, list[dict[str, Any]]]:
    """Everything a request could have stored."""
    return {p: api.listing(p) for p in ("/deployments", "/registries", "/networks", "/instances")}


def changed(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    body = dict(base)
    for key, value in changes.items():
        if value is DROP:
            body.pop(key, None)
        else:
            body[key] = value
    return body


VALID: dict[str, dict[str, Any]] = {
    "/deployments": {"name": "bad-input", "image": BUSYBOX, "command": SLEEPER},
    "/registries": {"url": "127.0.0.1:5998", "username": "u", "password": "never-echoed-pw"},
    "/networks": {"name": "bad-net", "driver": "bridge", "subnet": "10.251.7.0/24"},
}


@dataclass(frozen=True)
class Case:
    """One bad request: ``changes`` to the valid body of ``path`` (or a ``raw`` body)."""

    id: str
    path: str
    field: str | None
    changes: dict[str, Any] | None = None
    raw: bytes | None = None
    statuses: tuple[int, ...] = (400, 422)
    mentions: str | None = None


def template(content: str = "x", destination: str = "/etc/x") -> dict[str, str]:
    return {"content": content, "destination": destination}


D, R, N = "/deployments", "/registries", "/networks"
CASES = [
    # deployments: required fields and types
    Case("deployment-missing-name", D, "name", {"name": DROP}),
    Case("deployment-missing-image", D, "image", {"image": DROP}),
    Case("deployment-name-not-a-string", D, "name", {"name": 42}),
    Case("deployment-image-not-a-string", D, "image", {"image": ["busybox"]}),
    Case("deployment-env-not-an-object", D, "env", {"env": ["A=1"]}),
    Case("deployment-env-value-not-a-string", D, "env", {"env": {"A": {"b": 1}}}),
    Case("deployment-command-not-a-list", D, "command", {"command": "sleep 1"}),
    Case("deployment-templates-not-a-list", D, "templates", {"templates": template()}),
    Case("deployment-node-selector-not-an-object", D, "node_selector", {"node_selector": ["a"]}),
    Case(
        "deployment-network-attachments-not-a-list",
        D,
        "network_attachments",
        {"network_attachments": STORED_NETWORK},
    ),
    Case("deployment-template-not-an-object", D, "templates.0", {"templates": [123]}),
    Case("deployment-ports-not-a-list", D, "ports", {"ports": "80"}),
    Case("deployment-command-item-not-a-string", D, "command.0", {"command": [1, 2]}),
    Case(
        "deployment-node-selector-value-not-a-string",
        D,
        "node_selector.disk",
        {"node_selector": {"disk": ["ssd"]}},
    ),
    Case(
        "deployment-network-name-not-a-string",
        D,
        "network_attachments.0",
        {"network_attachments": [1]},
    ),
    Case("deployment-replicas-a-string", D, "replicas", {"replicas": "2"}),
    Case("deployment-replicas-a-fraction", D, "replicas", {"replicas": 1.5}),
    # deployments: rules
    Case("deployment-replicas-negative", D, "replicas", {"replicas": -1}),
    Case("deployment-name-empty", D, "name", {"name": ""}),
    Case("deployment-name-64-chars", D, "name", {"name": "a" * 64}),
    Case("deployment-name-uppercase", D, "name", {"name": "Web"}),
    Case("deployment-name-underscore", D, "name", {"name": "web_1"}),
    Case("deployment-name-dot", D, "name", {"name": "web.1"}),
    Case(
        "deployment-template-destination-relative",
        D,
        "templates.0.destination",
        {"templates": [template(destination="etc/app.conf")]},
    ),
    Case(
        "deployment-template-destination-missing",
        D,
        "templates.0.destination",
        {"templates": [{"content": "x"}]},
    ),
    Case(
        "deployment-template-content-missing",
        D,
        "templates.0.content",
        {"templates": [{"destination": "/etc/x"}]},
    ),
    Case(
        "deployment-template-syntax-error",
        D,
        "templates.0.content",
        {"templates": [template(content="{{ env.X ")]},
    ),
    Case(
        "deployment-template-unclosed-block",
        D,
        "templates.0.content",
        {"templates": [template(content="{% if env.X %}yes")]},
    ),
    Case(
        "deployment-second-template-bad",
        D,
        "templates.1.destination",
        {"templates": [template(), template(destination="relative")]},
    ),
    Case(
        "deployment-port-missing-container-port",
        D,
        "ports.0.container_port",
        {"ports": [{"host_port": 8080, "protocol": "tcp"}]},
    ),
    Case(
        "deployment-port-container-port-a-string",
        D,
        "ports.0.container_port",
        {"ports": [{"container_port": "80", "protocol": "tcp"}]},
    ),
    Case(
        "deployment-port-out-of-range",
        D,
        "ports.0.container_port",
        {"ports": [{"container_port": 70000, "protocol": "tcp"}]},
    ),
    Case(
        "deployment-port-protocol-sctp",
        D,
        "ports.0.protocol",
        {"ports": [{"container_port": 80, "protocol": "sctp"}]},
    ),
    # deployments: references
    Case(
        "deployment-unknown-registry-credentials",
        D,
        "registry_credentials_id",
        {"registry_credentials_id": "no-such-credentials"},
    ),
    Case(
        "deployment-unknown-network",
        D,
        "network_attachments",
        {"network_attachments": ["no-such-network"]},
    ),
    # deployments: not JSON, not an object
    Case("deployment-malformed-json", D, None, raw=b'{"name": "x", ', statuses=(400,)),
    Case("deployment-body-a-list", D, None, raw=b"[]"),
    Case("deployment-body-empty", D, None, raw=b""),
    # registries
    Case("registry-missing-url", R, "url", {"url": DROP}),
    Case("registry-missing-username", R, "username", {"username": DROP}),
    Case("registry-missing-password", R, "password", {"password": DROP}),
    Case("registry-username-not-a-string", R, "username", {"username": 7}),
    Case("registry-password-not-a-string", R, "password", {"password": ["a"]}),
    Case("registry-malformed-json", R, None, raw=b"{url: nope}", statuses=(400,)),
    # networks
    Case("network-driver-overlay", N, "driver", {"driver": "overlay"}, mentions="overlay"),
    Case("network-missing-name", N, "name", {"name": DROP}),
    Case("network-name-invalid", N, "name", {"name": "Net_1"}),
    Case("network-subnet-not-a-subnet", N, "subnet", {"subnet": "not-a-subnet"}),
    Case("network-subnet-prefix-33", N, "subnet", {"subnet": "10.251.7.0/33"}),
    Case("network-subnet-not-a-string", N, "subnet", {"subnet": 10}),
    Case("network-subnet-overlaps-a-stored-one", N, "subnet", {"subnet": "OVERLAP"}),
    Case("network-malformed-json", N, None, raw=b'{"name": "n"', statuses=(400,)),
]


def field_named(errors: list[dict[str, Any]], field: str) -> dict[str, Any] | None:
    """The first error whose field is ``field`` or inside it (``env`` matches ``env.A``)."""
    for error in errors:
        name = str(error.get("field", ""))
        if name == field or name.startswith(field + "."):
            return error
    return None


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_naming_the_field_and_nothing_is_stored(
    knit: KnitCluster, stored: Stored, case: Case
) -> None:
    api = knit.api
    before = snapshot(api)
    if case.raw is not None:
        response = api.http.post(
            case.path, content=case.raw, headers={"content-type": "application/json"}
        )
        sent = case.raw.decode()
    else:
        changes = dict(case.changes or {})
        if changes.get("subnet") == "OVERLAP":
            changes["subnet"] = stored.subnet.replace(".0/24", ".128/25")
        body = changed(VALID[case.path], changes)
        response = api.post(case.path, body)
        sent = json.dumps(body)

    assert response.status_code in case.statuses, (
        f"POST {case.path} {sent}: HTTP {response.status_code} {response.text[:500]}"
    )
    assert response.headers.get("content-type", "").startswith("application/json")
    data = response.json()
    assert isinstance(data, dict) and isinstance(data.get("error"), str) and data["error"]
    if case.field is not None:
        errors = data.get("errors")
        assert isinstance(errors, list), f"no errors list: {data}"
        error = field_named(errors, case.field)
        assert error is not None, f"no error names {case.field!r}: {errors}"
        assert isinstance(error.get("message"), str) and error["message"]
    if case.mentions is not None:
        assert case.mentions in response.text
    assert "never-echoed-pw" not in response.text
    assert snapshot(api) == before, "a refused request stored something"


UNKNOWN = [
    ("GET", "/deployments/no-such-deployment"),
    ("DELETE", "/deployments/no-such-deployment"),
    ("DELETE", "/registries/no-such-registry"),
    ("DELETE", "/networks/no-such-network"),
]


@pytest.mark.parametrize(("method", "path"), UNKNOWN, ids=[f"{m} {p}" for m, p in UNKNOWN])
def test_unknown_id_answers_404_with_a_json_error(
    knit: KnitCluster, stored: Stored, method: str, path: str
) -> None:
    before = snapshot(knit.api)
    response = knit.api.http.request(method, path)
    assert response.status_code == 404, response.text
    assert isinstance(response.json().get("error"), str)
    assert snapshot(knit.api) == before


def test_registry_password_is_never_returned(knit: KnitCluster) -> None:
    password = "pw-" + unique_name("secret")
    response = knit.api.post(
        "/registries", {"url": "127.0.0.1:5997", "username": "alice", "password": password}
    )
    created = knit.api.ok(response, 201)
    knit.registries.append(created["id"])
    assert {"id", "url", "username"} <= created.keys()
    assert (created["url"], created["username"]) == ("127.0.0.1:5997", "alice")
    assert "password" not in created and password not in response.text

    listed = knit.api.get("/registries")
    assert created["id"] in [r["id"] for r in knit.api.ok(listed, 200)]
    assert password not in listed.text
    assert all("password" not in r for r in listed.json())

    assert knit.api.delete(f"/registries/{created['id']}").is_success
    assert created["id"] not in [r["id"] for r in knit.api.listing("/registries")]
    assert knit.api.delete(f"/registries/{created['id']}").status_code == 404
    assert password not in knit.log_text(), "the registry password shows in a log"
    assert knit.files_containing(password) == [], "the password is stored in clear"


def test_bridge_and_host_networks_are_stored_listed_and_deleted(
    knit: KnitCluster, e2e_docker: str, stored: Stored
) -> None:
    bridge_name, host_name = unique_name("br"), unique_name("hostnet")
    subnet = spare_subnet(e2e_docker, avoid=[stored.subnet])
    bridge = knit.create_network(bridge_name, subnet)
    assert (bridge["name"], bridge["driver"], bridge["subnet"]) == (bridge_name, "bridge", subnet)
    host = knit.create_network(host_name, None, driver="host")
    assert (host["name"], host["driver"]) == (host_name, "host")

    listed = {n["id"]: n for n in knit.api.listing("/networks")}
    assert listed[bridge["id"]]["subnet"] == subnet
    assert listed[host["id"]]["driver"] == "host"

    for network in (bridge, host):
        assert knit.api.delete(f"/networks/{network['id']}").is_success
        assert knit.api.delete(f"/networks/{network['id']}").status_code == 404
    remaining = {n["id"] for n in knit.api.listing("/networks")}
    assert not remaining & {bridge["id"], host["id"]}


def test_created_deployment_is_stored_with_defaults_and_listed(knit: KnitCluster) -> None:
    name = unique_name("stored")
    created = knit.create_deployment({"name": name, "image": BUSYBOX, "command": SLEEPER})
    assert created["name"] == name and created["image"] == BUSYBOX
    assert created["replicas"] == 1
    fetched = knit.api.deployment(created["id"])
    assert (fetched["id"], fetched["name"], fetched["replicas"]) == (created["id"], name, 1)
    assert isinstance(fetched["instances"], list)
    assert created["id"] in [d["id"] for d in knit.api.listing("/deployments")]


def test_boundary_values_are_accepted(knit: KnitCluster) -> None:
    name = ("edge-" + unique_name("x") + "-" * 63)[:62] + "z"
    assert len(name) == 63
    created = knit.create_deployment(
        {"name": name, "image": BUSYBOX, "replicas": 0, "command": SLEEPER}
    )
    assert (created["name"], created["replicas"]) == (name, 0)
    holds_for(
        lambda: knit.api.instances_of(created["id"]) == [],
        duration=1.5,
        what="a deployment of 0 replicas has no instances",
    )


def test_openapi_document_lists_every_path_of_the_contract(knit: KnitCluster) -> None:
    document = knit.api.ok(knit.api.get("/openapi.json"), 200)
    assert str(document.get("openapi", "")).startswith("3")
    paths = {re.sub(r"\{[^}]+\}", "{id}", p): ops for p, ops in document["paths"].items()}
    expected = {
        "/nodes": {"get"},
        "/registries": {"get", "post"},
        "/registries/{id}": {"delete"},
        "/networks": {"get", "post"},
        "/networks/{id}": {"delete"},
        "/deployments": {"get", "post"},
        "/deployments/{id}": {"get", "delete"},
        "/instances": {"get"},
    }
    for path, methods in expected.items():
        assert path in paths, f"{path} missing from /openapi.json: {sorted(paths)}"
        assert methods <= {m.lower() for m in paths[path]}, f"{path}: {sorted(paths[path])}"

    def resolve(schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            *_, name = schema["$ref"].split("/")
            schema = document["components"]["schemas"][name]
        return schema

    def fields(path: str, method: str) -> set[str]:
        operation = paths[path][method]
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        return set(resolve(schema).get("properties", {}))

    assert {
        "name",
        "image",
        "registry_credentials_id",
        "network_attachments",
        "templates",
        "env",
        "command",
        "replicas",
        "ports",
        "node_selector",
    } <= fields("/deployments", "post")
    assert {"url", "username", "password"} <= fields("/registries", "post")
    assert {"name", "driver", "subnet"} <= fields("/networks", "post")
    for method, path in (("post", "/registries"), ("get", "/registries")):
        response = paths[path][method]["responses"]
        ok = next(v for k, v in response.items() if k.startswith("2"))
        schema = resolve(ok["content"]["application/json"]["schema"])
        item = resolve(schema.get("items", schema))
        assert "password" not in item.get("properties", {}), f"{method} {path} shows a password"
