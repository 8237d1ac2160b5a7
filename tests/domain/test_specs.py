"""Tests of knit.domain.specs: the API input models, their rules and the error body."""

from __future__ import annotations

from typing import Any, get_args

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from knit.domain.mesh import MESH_HOST_IP
from knit.domain.resources import format_bytes, parse_memory
from knit.domain.specs import (
    DeploymentSpec,
    InstanceStatus,
    NetworkSpec,
    NodeStatus,
    RegistryCredentialsSpec,
    TaskState,
    registry_server,
)
from knit.domain.templates import MAX_TEMPLATE_BYTES, MAX_TEMPLATES
from knit.domain.validation import (
    check_network_attachments,
    check_references,
    check_registry,
    check_replicas,
    check_subnet_overlap,
    check_template_syntax,
    errors_from_pydantic,
)
from knit.wire.messages import InstanceStatusName, TaskStateName

pytestmark = pytest.mark.unit


def errors_of(model: type[pydantic.BaseModel], data: dict[str, Any]) -> dict[str, str]:
    """The ``{field: message}`` of validating ``data``; fails if it validates."""
    with pytest.raises(pydantic.ValidationError) as info:
        model.model_validate(data)
    return {e["field"]: e["message"] for e in errors_from_pydantic(info.value)}


def deployment(**fields: Any) -> dict[str, Any]:
    return {"name": "web", "image": "busybox:latest", **fields}


# --- DeploymentSpec ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("memory", "size"),
    [
        ("256MiB", 256 * 2**20),
        ("1GiB", 2**30),
        ("512M", 512 * 2**20),
        ("512mb", 512 * 2**20),
        ("1.5GiB", 3 * 2**29),
        ("8192k", 8 * 2**20),
        ("16 MiB", 16 * 2**20),
        ("7000000", 7_000_000),
        (7_000_000, 7_000_000),
    ],
)
def test_memory_is_bytes_or_a_binary_size(memory: object, size: int) -> None:
    spec = DeploymentSpec.model_validate(deployment(resources={"memory": memory}))
    assert spec.resources is not None and spec.resources.memory == size
    assert parse_memory(format_bytes(size)) == size


def test_resources_and_strategy_default_to_none_and_spread() -> None:
    spec = DeploymentSpec.model_validate(deployment())
    assert spec.resources is None and spec.strategy == "spread"
    full = DeploymentSpec.model_validate(
        deployment(resources={"cpu": 0.5, "memory": "256MiB"}, strategy="binpack")
    )
    assert full.model_dump(mode="json")["resources"] == {"cpu": 0.5, "memory": 256 * 2**20}
    assert full.strategy == "binpack"
    assert DeploymentSpec.model_validate(deployment(resources={"cpu": 2})).resources.cpu == 2.0  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("resources", "field", "message"),
    [
        ({"cpu": 0}, "resources.cpu", "must be between 0.01 and 4096 cores"),
        ({"cpu": -1.0}, "resources.cpu", "must be between 0.01 and 4096 cores"),
        ({"cpu": "half"}, "resources.cpu", "must be a number of CPU cores, e.g. 0.5"),
        ({"cpu": True}, "resources.cpu", "must be a number of CPU cores, e.g. 0.5"),
        ({"memory": "lots"}, "resources.memory", "is not a size"),
        ({"memory": "1.1k"}, "resources.memory", "is not a whole number of bytes"),
        ({"memory": "1MiB"}, "resources.memory", "must be at least 6MiB"),
        ({"memory": -5}, "resources.memory", "must be at least 6MiB"),
        ({"gpu": 1}, "resources.gpu", "is not a known field"),
    ],
)
def test_bad_resources_are_rejected_by_field(resources: object, field: str, message: str) -> None:
    errors = errors_of(DeploymentSpec, deployment(resources=resources))
    assert message in errors[field]


def test_strategy_is_spread_or_binpack() -> None:
    assert "strategy" in errors_of(DeploymentSpec, deployment(strategy="pack"))


def test_minimal_deployment_gets_defaults() -> None:
    spec = DeploymentSpec.model_validate(deployment())
    assert spec.replicas == 1
    assert spec.templates == [] and spec.ports == [] and spec.network_attachments == []
    assert spec.env == {} and spec.node_selector == {} and spec.command is None
    assert spec.lost_after == 0
    assert spec.restart_policy.mode == "always"
    assert spec.restart_policy.max_restarts is None


def test_full_deployment_round_trips_through_json() -> None:
    data = deployment(
        registry_credentials_id="r1",
        network_attachments=["backend", "front-1"],
        templates=[{"content": "port={{ env.PORT }}\n", "destination": "/etc/app.conf"}],
        env={"PORT": "8080"},
        command=["sh", "-c", "sleep 1"],
        replicas=3,
        ports=[
            {"container_port": 80, "host_port": 8080, "host_ip": "127.0.0.1", "protocol": "tcp"}
        ],
        node_selector={"zone": "eu"},
        lost_after=30,
        restart_policy={"mode": "on-failure", "backoff": 2.5, "max_restarts": 5},
    )
    spec = DeploymentSpec.model_validate(data)
    again = DeploymentSpec.model_validate_json(spec.model_dump_json())
    assert again == spec
    assert spec.model_dump(mode="json")["restart_policy"]["mode"] == "on-failure"


def test_required_fields_are_named() -> None:
    assert errors_of(DeploymentSpec, {}) == {"name": "is required", "image": "is required"}


def test_unknown_fields_are_rejected() -> None:
    assert errors_of(DeploymentSpec, deployment(replica=2)) == {"replica": "is not a known field"}


@pytest.mark.parametrize("name", ["", "Web", "web_1", "a" * 64, "wéb", "web app"])
def test_bad_names_are_rejected(name: str) -> None:
    assert "name" in errors_of(DeploymentSpec, deployment(name=name))


@pytest.mark.parametrize("name", ["a", "web-1", "0", "-", "a" * 63])
def test_good_names_are_accepted(name: str) -> None:
    assert DeploymentSpec.model_validate(deployment(name=name)).name == name


@pytest.mark.parametrize("replicas", [-1, "3", 1.5, True, None])
def test_replicas_must_be_a_non_negative_integer(replicas: object) -> None:
    assert "replicas" in errors_of(DeploymentSpec, deployment(replicas=replicas))


def test_zero_replicas_is_allowed() -> None:
    assert DeploymentSpec.model_validate(deployment(replicas=0)).replicas == 0


@pytest.mark.parametrize("image", ["", "   ", "bad image"])
def test_image_must_be_a_reference(image: str) -> None:
    assert "image" in errors_of(DeploymentSpec, deployment(image=image))


@pytest.mark.parametrize("destination", ["etc/app.conf", "", "/etc/", "/etc/../passwd", "/a/./b"])
def test_template_destination_must_be_an_absolute_file_path(destination: str) -> None:
    errors = errors_of(
        DeploymentSpec, deployment(templates=[{"content": "x", "destination": destination}])
    )
    assert list(errors) == ["templates.0.destination"]


def test_template_syntax_error_names_the_line() -> None:
    spec = DeploymentSpec.model_validate(
        deployment(
            templates=[
                {"content": "fine", "destination": "/a"},
                {"content": "ok\n{% if %}\n", "destination": "/b"},
            ]
        )
    )
    [error] = check_template_syntax(spec)
    assert error["field"] == "templates.1.content" and "line 2" in error["message"]


@pytest.mark.parametrize(
    "content",
    [
        "{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}",
        "{% if x %}" * 3000 + "{% endif %}" * 3000,
        "{{ x" + ".a" * 20000 + " }}",
    ],
    ids=["parentheses", "ifs", "attributes"],
)
def test_a_template_nested_too_deeply_is_a_syntax_error_not_a_crash(content: str) -> None:
    spec = DeploymentSpec.model_validate(
        deployment(templates=[{"content": content, "destination": "/a"}])
    )
    [error] = check_template_syntax(spec)
    assert error["field"] == "templates.0.content" and "nested too deeply" in error["message"]


def test_a_syntax_check_evaluates_nothing() -> None:
    # Jinja2 would fold this constant while compiling: 300 MB before the fix.
    spec = DeploymentSpec.model_validate(
        deployment(templates=[{"content": "{{ 'x'|center(300000000) }}", "destination": "/a"}])
    )
    assert check_template_syntax(spec) == []


def test_templates_are_bounded_in_size_and_number() -> None:
    big = "x" * (MAX_TEMPLATE_BYTES + 1)
    errors = errors_of(
        DeploymentSpec, deployment(templates=[{"content": big, "destination": "/a"}])
    )
    assert errors == {"templates.0.content": "a template may hold at most 64 KiB"}
    wide = "é" * (MAX_TEMPLATE_BYTES // 2 + 1)  # few characters, more bytes
    assert list(
        errors_of(DeploymentSpec, deployment(templates=[{"content": wide, "destination": "/a"}]))
    ) == ["templates.0.content"]
    fits = "x" * MAX_TEMPLATE_BYTES
    assert DeploymentSpec.model_validate(
        deployment(templates=[{"content": fits, "destination": "/a"}])
    )
    many = [{"content": "x", "destination": f"/f{i}"} for i in range(MAX_TEMPLATES + 1)]
    assert errors_of(DeploymentSpec, deployment(templates=many)) == {
        "templates": f"a deployment may have at most {MAX_TEMPLATES} templates"
    }
    assert DeploymentSpec.model_validate(deployment(templates=many[:MAX_TEMPLATES]))


def test_secret_env_follows_the_rules_of_env_and_never_shows_its_values() -> None:
    spec = DeploymentSpec.model_validate(deployment(secret_env={"DB_PASSWORD": "hunter2"}))
    assert spec.secret_env["DB_PASSWORD"].get_secret_value() == "hunter2"
    assert "hunter2" not in repr(spec) and "hunter2" not in spec.model_dump_json()
    assert errors_of(DeploymentSpec, deployment(secret_env={"A=B": "x"})) == {
        "secret_env": "variable name 'A=B' must be non-empty, without '='"
    }
    assert list(errors_of(DeploymentSpec, deployment(secret_env={"A": "x\x00"}))) == [
        "secret_env.A"
    ]
    assert list(errors_of(DeploymentSpec, deployment(secret_env={"A": 1}))) == ["secret_env.A"]
    with pytest.raises(pydantic.ValidationError) as info:
        DeploymentSpec.model_validate(deployment(secret_env={"A": ["hunter2"]}))
    assert "hunter2" not in str(info.value)


def test_a_variable_is_either_secret_or_not() -> None:
    errors = errors_of(
        DeploymentSpec,
        deployment(env={"DB_PASSWORD": "x", "PORT": "1"}, secret_env={"DB_PASSWORD": "y"}),
    )
    assert errors == {
        "secret_env.DB_PASSWORD": "'DB_PASSWORD' is also in env: a variable is either secret or not"
    }


def test_two_templates_cannot_share_a_destination() -> None:
    templates = [{"content": "a", "destination": "/x"}, {"content": "b", "destination": "/x"}]
    errors = errors_of(DeploymentSpec, deployment(templates=templates))
    assert errors == {"templates.1.destination": "'/x' is already the destination of templates.0"}


@pytest.mark.parametrize(
    ("port", "field"),
    [
        ({"container_port": 0}, "ports.0.container_port"),
        ({"container_port": 65536}, "ports.0.container_port"),
        ({"container_port": "80"}, "ports.0.container_port"),
        ({"container_port": 80, "host_port": 70000}, "ports.0.host_port"),
        ({"container_port": 80, "protocol": "sctp"}, "ports.0.protocol"),
        ({"container_port": 80, "host_ip": "localhost"}, "ports.0.host_ip"),
        ({"container_port": 80, "host_ip": "MESH"}, "ports.0.host_ip"),
        ({"container_port": 80, "host_ip": "mesh0"}, "ports.0.host_ip"),
        ({}, "ports.0.container_port"),
    ],
)
def test_port_rules(port: dict[str, Any], field: str) -> None:
    assert field in errors_of(DeploymentSpec, deployment(ports=[port]))


def test_port_defaults_and_ipv6_host_ip() -> None:
    spec = DeploymentSpec.model_validate(
        deployment(ports=[{"container_port": 53, "protocol": "udp", "host_ip": "::1"}])
    )
    assert spec.ports[0].host_port is None
    assert spec.ports[0].host_ip == "::1"


def test_a_port_may_be_published_on_the_mesh_address() -> None:
    spec = DeploymentSpec.model_validate(
        deployment(
            ports=[
                {"container_port": 80, "host_port": 8080, "host_ip": MESH_HOST_IP},
                {"container_port": 80, "host_port": 8080, "host_ip": "127.0.0.1"},
            ]
        )
    )
    assert [p.host_ip for p in spec.ports] == ["mesh", "127.0.0.1"]
    twice = deployment(ports=[{"container_port": p, "host_port": 8080, "host_ip": "mesh"}
                              for p in (80, 81)])  # fmt: skip
    assert "ports.1.host_port" in errors_of(DeploymentSpec, twice)
    assert (
        "'mesh'"
        in errors_of(DeploymentSpec, deployment(ports=[{"container_port": 80, "host_ip": "x"}]))[
            "ports.0.host_ip"
        ]
    )


def test_a_host_port_cannot_be_bound_twice() -> None:
    ports = [
        {"container_port": 80, "host_port": 8080},
        {"container_port": 81, "host_port": 8080},
        {"container_port": 82, "host_port": 8080, "protocol": "udp"},
    ]
    errors = errors_of(DeploymentSpec, deployment(ports=ports))
    assert list(errors) == ["ports.1.host_port"]


@pytest.mark.parametrize(
    ("env", "field"),
    [({"A": 1}, "env.A"), ({"": "x"}, "env"), ({"A=B": "x"}, "env"), ({"A": "x\x00"}, "env.A")],
)
def test_env_keys_and_values_are_strings(env: dict[str, Any], field: str) -> None:
    assert field in errors_of(DeploymentSpec, deployment(env=env))


def test_command_is_a_list_of_strings() -> None:
    assert "command.1" in errors_of(DeploymentSpec, deployment(command=["sh", 1]))
    assert "command" in errors_of(DeploymentSpec, deployment(command="sh -c"))


def test_network_attachments_are_names_listed_once() -> None:
    errors = errors_of(DeploymentSpec, deployment(network_attachments=["a", "Bad", "a"]))
    assert "network_attachments.1" in errors
    errors = errors_of(DeploymentSpec, deployment(network_attachments=["a", "a"]))
    assert errors == {"network_attachments.1": "network 'a' is listed twice"}


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        ({"mode": "sometimes"}, "restart_policy.mode"),
        ({"backoff": -1}, "restart_policy.backoff"),
        ({"max_restarts": -1}, "restart_policy.max_restarts"),
        ({"mode": "never", "unknown": 1}, "restart_policy.unknown"),
    ],
)
def test_restart_policy_rules(policy: dict[str, Any], field: str) -> None:
    assert field in errors_of(DeploymentSpec, deployment(restart_policy=policy))


def test_lost_after_is_non_negative_seconds() -> None:
    assert "lost_after" in errors_of(DeploymentSpec, deployment(lost_after=-1))
    assert DeploymentSpec.model_validate(deployment(lost_after=0.5)).lost_after == 0.5


def test_every_problem_is_reported_at_once() -> None:
    errors = errors_of(
        DeploymentSpec,
        {
            "name": "Bad",
            "image": "",
            "replicas": -2,
            "templates": [{"content": "{{", "destination": "x"}],
        },
    )
    # (The syntax of templates is checked after the model: check_template_syntax.)
    assert set(errors) == {"name", "image", "replicas", "templates.0.destination"}


# --- NetworkSpec ---------------------------------------------------------------------------


def test_bridge_network_with_subnet_is_normalized() -> None:
    spec = NetworkSpec.model_validate(
        {"name": "backend", "driver": "bridge", "subnet": "fd00:0::/64"}
    )
    assert spec.subnet == "fd00::/64"
    assert NetworkSpec.model_validate({"name": "b"}).driver == "bridge"


def test_overlay_is_rejected_with_the_supported_drivers() -> None:
    errors = errors_of(NetworkSpec, {"name": "n", "driver": "overlay"})
    assert errors == {"driver": "unsupported driver 'overlay': Knit supports bridge and host"}


def test_host_network_has_no_subnet() -> None:
    assert NetworkSpec.model_validate({"name": "host", "driver": "host"}).subnet is None
    errors = errors_of(NetworkSpec, {"name": "h", "driver": "host", "subnet": "10.0.0.0/24"})
    assert list(errors) == ["subnet"]


@pytest.mark.parametrize(
    ("subnet", "words"),
    [
        ("10.0.0.1/24", "did you mean 10.0.0.0/24"),
        ("10.0.0.0", "prefix length"),
        ("10.0.0.0/33", "not a valid"),
        ("banana/8", "not a valid"),
        ("10.0.0.0/31", "too small"),
    ],
)
def test_subnet_must_parse_in_strict_form(subnet: str, words: str) -> None:
    errors = errors_of(NetworkSpec, {"name": "n", "subnet": subnet})
    assert words in errors["subnet"]


def test_bridge_network_cannot_take_a_docker_network_name() -> None:
    assert list(errors_of(NetworkSpec, {"name": "bridge"})) == ["name"]
    assert list(errors_of(NetworkSpec, {"name": "none", "driver": "bridge"})) == ["name"]


# --- RegistryCredentialsSpec ---------------------------------------------------------------


def test_registry_password_never_shows() -> None:
    spec = RegistryCredentialsSpec.model_validate(
        {"url": "https://127.0.0.1:5000/v2/", "username": "u", "password": "hunter2"}
    )
    assert "hunter2" not in repr(spec) and "hunter2" not in spec.model_dump_json()
    assert spec.password.get_secret_value() == "hunter2"
    assert spec.server == "127.0.0.1:5000"


def test_registry_url_and_username_fit_the_stores_columns() -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        RegistryCredentialsSpec.model_validate(
            {"url": "r.example/" + "a" * 510, "username": "u" * 256, "password": "p"}
        )
    fields = {e["field"] for e in errors_from_pydantic(info.value)}
    assert fields == {"url", "username"}
    RegistryCredentialsSpec.model_validate(
        {"url": "r.example/" + "a" * 502, "username": "u" * 255, "password": "p"}
    )


def test_registry_errors_never_echo_the_input() -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        RegistryCredentialsSpec.model_validate({"url": "x", "username": "", "password": ""})
    assert "input_value" not in str(info.value)
    fields = {e["field"] for e in errors_from_pydantic(info.value)}
    assert fields == {"username", "password"}


@pytest.mark.parametrize(
    ("url", "server"),
    [
        ("127.0.0.1:5000", "127.0.0.1:5000"),
        ("http://registry.local", "registry.local"),
        ("https://r.example:443/v2/", "r.example:443"),
    ],
)
def test_registry_server_is_host_and_port(url: str, server: str) -> None:
    assert registry_server(url) == server


@pytest.mark.parametrize("url", ["ftp://r.example", "https://", "https:///v2", ":5000"])
def test_bad_registry_urls_are_rejected(url: str) -> None:
    assert "url" in errors_of(
        RegistryCredentialsSpec, {"url": url, "username": "u", "password": "p"}
    )


# --- checks against stored state -----------------------------------------------------------


def test_check_references_names_each_unknown_reference() -> None:
    spec = DeploymentSpec.model_validate(
        deployment(registry_credentials_id="r9", network_attachments=["a", "b", "c"])
    )
    assert check_references(spec, {"r1"}, {"b"}) == [
        {"field": "registry_credentials_id", "message": "registry credentials 'r9' not found"},
        {"field": "network_attachments.0", "message": "network 'a' not found"},
        {"field": "network_attachments.2", "message": "network 'c' not found"},
    ]
    assert check_references(spec, {"r9"}, {"a", "b", "c"}) == []


@pytest.mark.parametrize(
    ("replicas", "allowed", "problem"),
    [(0, 1000, False), (1000, 1000, False), (1001, 1000, True), (3, 2, True)],
)
def test_check_replicas_applies_the_servers_bound(
    replicas: int, allowed: int, problem: bool
) -> None:
    spec = DeploymentSpec.model_validate(deployment(replicas=replicas))
    errors = check_replicas(spec, allowed)
    assert [e["field"] for e in errors] == (["replicas"] if problem else [])
    if problem:
        assert str(allowed) in errors[0]["message"]


@pytest.mark.parametrize(
    ("image", "url", "fits"),
    [
        ("127.0.0.1:5000/knit/app:1", "127.0.0.1:5000", True),
        ("127.0.0.1:5000/knit/app:1", "http://127.0.0.1:5000/v2/", True),
        ("registry.example.com/app", "https://REGISTRY.example.com", True),
        ("busybox", "https://index.docker.io/v1/", True),
        ("127.0.0.1:5001/knit/app:1", "127.0.0.1:5000", False),
        ("evil.example.com/app", "https://registry.example.com", False),
        ("busybox", "https://registry.example.com", False),
        ("localhost:5000/app", "127.0.0.1:5000", False),
    ],
)
def test_check_registry_sends_credentials_to_their_own_registry_only(
    image: str, url: str, fits: bool
) -> None:
    spec = DeploymentSpec.model_validate(deployment(image=image, registry_credentials_id="r1"))
    errors = check_registry(spec, {"r1": url})
    assert [e["field"] for e in errors] == ([] if fits else ["image"])
    assert check_registry(spec, {}) == []  # unknown credentials: check_references says so


def test_host_network_excludes_other_networks_and_ports() -> None:
    drivers = {"host": "host", "backend": "bridge"}
    alone = DeploymentSpec.model_validate(deployment(network_attachments=["host"]))
    assert check_network_attachments(alone, drivers) == []
    mixed = DeploymentSpec.model_validate(
        deployment(network_attachments=["host", "backend"], ports=[{"container_port": 80}])
    )
    assert [e["field"] for e in check_network_attachments(mixed, drivers)] == [
        "network_attachments",
        "ports",
    ]


def test_subnet_overlap_is_found() -> None:
    existing = {"a": "10.1.0.0/16", "b": None, "c": "fd00::/64", "bad": "nonsense"}
    assert check_subnet_overlap("10.2.0.0/16", existing) is None
    assert check_subnet_overlap(None, existing) is None
    assert check_subnet_overlap("10.1.2.0/24", existing) == {
        "field": "subnet",
        "message": "10.1.2.0/24 overlaps network 'a' (10.1.0.0/16)",
    }
    assert check_subnet_overlap("10.0.0.0/8", existing) is not None
    assert check_subnet_overlap("fd00::/48", existing) is not None


@given(st.integers(0, 2**24 - 1), st.integers(8, 30), st.integers(0, 2**24 - 1), st.integers(8, 30))
def test_subnet_overlap_agrees_with_address_ranges(a: int, pa: int, b: int, pb: int) -> None:
    def net(n: int, prefix: int) -> tuple[str, int, int]:
        base = (10 << 24 | n) & ~((1 << (32 - prefix)) - 1) & 0xFFFFFFFF
        text = f"{base >> 24}.{base >> 16 & 255}.{base >> 8 & 255}.{base & 255}/{prefix}"
        return text, base, base + (1 << (32 - prefix)) - 1

    first, lo1, hi1 = net(a, pa)
    second, lo2, hi2 = net(b, pb)
    overlapping = lo1 <= hi2 and lo2 <= hi1
    assert (check_subnet_overlap(first, {"x": second}) is not None) == overlapping


# --- enums ---------------------------------------------------------------------------------


def test_status_enums_are_strings_matching_the_wire() -> None:
    assert str(NodeStatus.HEALTHY) == "healthy" and isinstance(NodeStatus.UNHEALTHY, str)
    assert {s.value for s in InstanceStatus} == set(get_args(InstanceStatusName))
    assert {s.value for s in TaskState} == set(get_args(TaskStateName))


def test_errors_from_pydantic_uses_body_for_the_whole_object() -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        DeploymentSpec.model_validate([1, 2])
    assert errors_from_pydantic(info.value)[0]["field"] == "body"
