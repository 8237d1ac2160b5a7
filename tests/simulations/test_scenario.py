"""Scenarios: the shipped files load with the issue's numbers; bad files give clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from simulations.profile import SimProfile
from simulations.scenario import (
    SCENARIOS_DIR,
    Fault,
    Scenario,
    ScenarioError,
    list_scenarios,
    load_scenario,
    parse_scenario,
)

pytestmark = pytest.mark.unit

SHIPPED = ("smoke", "c10k", "nodes10k", "failover", "api", "rollout")


def minimal(**settings: Any) -> dict[str, Any]:
    return {"name": "t", "agents": 10, "duration_s": 30, **settings}


def problems_of(data: dict[str, Any]) -> str:
    with pytest.raises(ScenarioError) as failure:
        parse_scenario(data, source="bad.toml")
    message = str(failure.value)
    assert message.startswith("bad.toml: invalid scenario:")
    return message


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_scenario_loads_by_name_and_by_path(name: str) -> None:
    scenario = load_scenario(name)
    assert scenario.name == name
    assert scenario.description
    assert load_scenario(SCENARIOS_DIR / f"{name}.toml") == scenario
    assert load_scenario(str(SCENARIOS_DIR / f"{name}.toml")) == scenario
    assert name in list_scenarios()


def test_shipped_scenarios_have_the_numbers_of_the_issue() -> None:
    smoke, c10k, nodes10k = load_scenario("smoke"), load_scenario("c10k"), load_scenario("nodes10k")
    failover, api = load_scenario("failover"), load_scenario("api")
    assert (smoke.agents, smoke.containers) == (100, 1_000)
    assert (c10k.agents, c10k.containers) == (1_000, 100_000)
    assert (nodes10k.agents, nodes10k.heartbeat_interval, nodes10k.duration_s) == (10_000, 5, 300)
    assert (failover.agents, failover.containers) == (500, 20_000)
    [fault] = failover.faults
    assert (fault.kind, fault.percent) == ("kill", 10)
    assert (api.agents, sum(g.count for g in api.deployments), api.api_clients) == (
        1_000,
        10_000,
        50,
    )


def test_the_rollout_scenario_updates_100_instances_over_10_agents_10_at_a_time() -> None:
    rollout = load_scenario("rollout")
    assert (rollout.agents, rollout.containers) == (10, 100)
    assert [(u.policy.order, u.policy.max_parallel) for u in rollout.updates] == [
        ("stop_first", 10),
        ("start_first", 10),
    ]
    assert {u.name_prefix for u in rollout.updates} == {rollout.deployments[0].name_prefix}
    assert all(u.policy.min_healthy_time in (1, 2) for u in rollout.updates)
    assert rollout.updates[0].env != rollout.updates[1].env  # two versions, two rollouts
    group_policy = rollout.deployments[0].update  # version 1's own rollout
    assert group_policy is not None and group_policy.min_healthy_time == 1
    assert load_scenario("smoke").deployments[0].update is None  # the server's default


def test_the_smoke_scenario_fits_the_ci_budget_even_at_every_deadline() -> None:
    smoke = load_scenario("smoke")
    t = smoke.timeouts
    worst = t.start_s + t.registration_s + t.placement_s + smoke.duration_s + t.shutdown_s
    assert worst <= 30
    assert not smoke.faults


def test_a_file_becomes_typed_settings_with_defaults(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(
        """
agents = 250
duration_s = 60
agent_labels = [{ percent = 20, labels = { zone = "a" } }]

[profile]
pull_latency = [0.1, 0.5]
start_failure_rate = 0.01
preloaded_images = ["knit-sim/app:1"]
auth = { "registry.test:5000" = ["knit", "pw"] }

[[deployments]]
count = 3
replicas = 4
node_selector = { zone = "a" }

[[faults]]
at_s = 10
partition_agents_percent = 5
heal_after_s = 20

[[faults]]
at_s = 40
restart_nats = true
"""
    )
    scenario = load_scenario(path)
    assert scenario.name == "mine"
    assert (scenario.heartbeat_interval, scenario.node_ttl) == (5.0, 15.0)
    assert scenario.containers == 12
    assert scenario.agent_labels[0].labels == {"zone": "a"}
    assert scenario.profile == SimProfile(
        pull_latency=(0.1, 0.5),
        start_failure_rate=0.01,
        preloaded_images=frozenset({"knit-sim/app:1"}),
        auth={"registry.test:5000": ("knit", "pw")},
    )
    assert scenario.deployments[0].node_selector == {"zone": "a"}
    assert [(f.kind, f.percent) for f in scenario.faults] == [
        ("partition", 5),
        ("restart_nats", None),
    ]
    assert scenario.churn.deploy_per_s == 0 and scenario.api_clients == 0
    assert isinstance(scenario, Scenario) and isinstance(scenario.faults[0], Fault)


def test_an_unknown_name_lists_the_shipped_scenarios() -> None:
    with pytest.raises(ScenarioError, match="no scenario 'nope'") as failure:
        load_scenario("nope")
    for name in SHIPPED:
        assert name in str(failure.value)
    with pytest.raises(ScenarioError, match="not a file"):
        load_scenario("/absent/dir/x.toml")


def test_a_file_that_is_not_toml_names_the_file_and_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("agents = 10\nduration_s = = 3\n")
    with pytest.raises(ScenarioError, match=r"broken\.toml: not valid TOML: .*line 2"):
        load_scenario(path)


def test_errors_name_the_file_and_every_offending_setting(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        'agents = 0\nduration_s = 10\ncolour = "red"\n'
        "[[deployments]]\ncount = 1\nreplicas = -1\n"
        "[profile]\npull_latency = 'slow'\nbogus = 1\n"
    )
    with pytest.raises(ScenarioError) as failure:
        load_scenario(path)
    lines = str(failure.value).splitlines()
    assert lines[0] == f"{path}: invalid scenario:"
    assert "  agents: Input should be greater than 0" in lines
    assert "  colour: unknown setting" in lines
    assert "  deployments[0].replicas: Input should be greater than 0" in lines
    assert "  profile.bogus: unknown setting" in lines
    assert any(line.startswith("  profile.pull_latency: Input should be") for line in lines)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"agents": None}, "agents: Input should be a valid integer"),
        ({"duration_s": -1}, "duration_s: Input should be greater than 0"),
        ({"heartbeat_interval": 5, "node_ttl": 5}, "node_ttl must be longer"),
        ({"processes": 20}, "processes must not outnumber agents"),
        ({"profile": {"start_latency": [2, 1]}}, "profile: start_latency must be"),
        ({"profile": {"create_failure_rate": 2}}, "profile: create_failure_rate must be"),
        ({"deployments": [{"count": 1, "name_prefix": "Bad_Name"}]}, "name_prefix: String"),
        ({"deployments": [{"count": 1}, {"count": 2}]}, "distinct name_prefix"),
        ({"faults": [{"at_s": 1}]}, "faults[0]: a fault sets exactly one of"),
        (
            {"faults": [{"at_s": 1, "kill_agents_percent": 5, "restart_nats": True}]},
            "exactly one of",
        ),
        ({"faults": [{"at_s": 1, "kill_agents_percent": 150}]}, "less than or equal to 100"),
        ({"faults": [{"at_s": 31, "restart_nats": True}]}, "falls after duration_s"),
        ({"faults": [{"at_s": 1, "restart_nats": True, "heal_after_s": 3}]}, "heal_after_s"),
        ({"churn": {"deploy_per_s": -1}}, "churn.deploy_per_s: Input should be greater"),
        ({"timeouts": {"placement": 10}}, "timeouts.placement: unknown setting"),
        (
            {"updates": [{"at_s": 1, "name_prefix": "app", "env": {"V": "2"}}]},
            "names 'app', which no [[deployments]] group is",
        ),
        (
            {
                "deployments": [{"count": 1, "name_prefix": "app"}],
                "updates": [{"at_s": 30, "name_prefix": "app", "env": {"V": "2"}}],
            },
            "an update at 30 s falls after duration_s",
        ),
        (
            {"updates": [{"at_s": 1, "name_prefix": "app"}]},
            "updates[0]: an update changes env or image",
        ),
        (
            {"updates": [{"at_s": 1, "name_prefix": "app", "policy": {"parallel": 2}}]},
            "updates[0].policy.parallel: unknown setting",
        ),
        (
            {"updates": [{"at_s": 1, "name_prefix": "app", "policy": {"order": "sideways"}}]},
            "updates[0].policy.order: Input should be 'stop_first' or 'start_first'",
        ),
    ],
)
def test_a_broken_rule_is_reported_clearly(settings: dict[str, Any], expected: str) -> None:
    assert expected in problems_of(minimal(**settings))


def test_a_missing_required_setting_is_named() -> None:
    assert "duration_s: required setting is missing" in problems_of({"name": "t", "agents": 1})
