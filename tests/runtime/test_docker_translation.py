"""``knit.runtime.docker_translation``: Knit's data to and from the Engine's JSON, without an
Engine: health checks, health statuses, event details."""

from __future__ import annotations

import json
from typing import Any

import pytest

from knit.runtime.base import ContainerSpec, HealthCheck
from knit.runtime.docker_translation import (
    container_config,
    event_from_json,
    healthcheck_config,
    state_from_inspect,
    state_from_list,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("command", "test"),
    [
        (("curl", "-f", "http://localhost/"), ["CMD", "curl", "-f", "http://localhost/"]),
        (("CMD", "true"), ["CMD", "true"]),
        (
            ("CMD-SHELL", "wget -q -O- localhost || exit 1"),
            ["CMD-SHELL", "wget -q -O- localhost || exit 1"],
        ),
        (("false",), ["CMD", "false"]),
        (("cmd", "x"), ["CMD", "cmd", "x"]),  # Docker's forms are upper case
    ],
)
def test_a_health_check_runs_in_exec_form_unless_it_names_its_form(
    command: tuple[str, ...], test: list[str]
) -> None:
    assert healthcheck_config(HealthCheck(command))["Test"] == test


def test_a_health_checks_times_are_nanoseconds() -> None:
    check = HealthCheck(("true",), interval=0.5, timeout=2.0, retries=4, start_period=1.25)
    assert healthcheck_config(check) == {
        "Test": ["CMD", "true"],
        "Interval": 500_000_000,
        "Timeout": 2_000_000_000,
        "Retries": 4,
        "StartPeriod": 1_250_000_000,
    }


def test_resources_become_nano_cpus_and_a_memory_limit_without_swap() -> None:
    spec = ContainerSpec(name="web", image="busybox", cpu=0.5, memory_bytes=16 * 2**20)
    host = container_config(spec)["HostConfig"]
    assert host["NanoCpus"] == 500_000_000
    assert host["Memory"] == host["MemorySwap"] == 16 * 2**20
    plain = container_config(ContainerSpec(name="web", image="busybox"))["HostConfig"]
    assert not {"NanoCpus", "Memory", "MemorySwap"} & set(plain)


def _listed(state: str, status: str) -> dict[str, Any]:
    return {"Id": "c1", "Names": ["/web"], "State": state, "Status": status, "Labels": {}}


@pytest.mark.parametrize(
    ("state", "status", "health", "exit_code"),
    [
        ("running", "Up 3 seconds (healthy)", "healthy", None),
        ("running", "Up 2 minutes (unhealthy)", "unhealthy", None),
        ("running", "Up Less than a second (health: starting)", "starting", None),
        ("running", "Up 3 seconds", "none", None),
        ("paused", "Up 3 seconds (Paused)", "none", None),
        ("exited", "Exited (137) 2 seconds ago", "none", 137),
        ("created", "Created", "none", None),
        ("running", "Up 1 second (healthy-ish)", "none", None),
    ],
)
def test_the_list_status_text_gives_the_health_and_exit_code(
    state: str, status: str, health: str, exit_code: int | None
) -> None:
    container = state_from_list(_listed(state, status))
    assert (container.state, container.health, container.exit_code) == (state, health, exit_code)


@pytest.mark.parametrize(
    ("status", "health_json", "health"),
    [
        ("running", {"Status": "starting", "FailingStreak": 0, "Log": []}, "starting"),
        ("running", {"Status": "healthy", "FailingStreak": 0, "Log": []}, "healthy"),
        ("running", {"Status": "unhealthy", "FailingStreak": 3, "Log": []}, "unhealthy"),
        ("running", None, "none"),
        # Docker keeps a stopped container's last status (it even says unhealthy at a stop):
        # its list shows none, and so does Knit.
        ("exited", {"Status": "unhealthy", "FailingStreak": 0, "Log": []}, "none"),
    ],
)
def test_inspect_gives_the_health_of_a_running_container_only(
    status: str, health_json: dict[str, Any] | None, health: str
) -> None:
    state: dict[str, Any] = {"Status": status, "ExitCode": 0}
    if health_json is not None:
        state["Health"] = health_json
    data = {"Id": "c1", "Name": "/web", "State": state, "Config": {"Labels": {}}}
    assert state_from_inspect(data).health == health


def _event(action: str, **attributes: str) -> bytes:
    return json.dumps(
        {
            "Type": "container",
            "Action": action,
            "Actor": {"ID": "c1", "Attributes": {"name": "web", "knit.node": "n1", **attributes}},
        }
    ).encode()


def test_a_health_status_event_keeps_its_detail() -> None:
    event = event_from_json(_event("health_status: healthy"))
    assert event is not None
    assert (event.action, event.detail, event.labels) == (
        "health_status",
        "healthy",
        {"knit.node": "n1"},
    )
    unhealthy = event_from_json(_event("health_status: unhealthy"))
    assert unhealthy is not None and unhealthy.detail == "unhealthy"


def test_an_event_without_detail_has_an_empty_one() -> None:
    event = event_from_json(_event("die", exitCode="3"))
    assert event is not None
    assert (event.action, event.detail, event.exit_code) == ("die", "", 3)


def test_the_execs_of_health_checks_are_not_reported() -> None:
    assert event_from_json(_event("exec_create: /bin/sh -c true", execID="e1")) is None
    assert event_from_json(_event("exec_start: /bin/sh -c true", execID="e1")) is None
    assert event_from_json(_event("exec_die", execID="e1", exitCode="0")) is None
