"""What ``knit history`` and ``knit deploy`` print, from the API's JSON (no server)."""

from __future__ import annotations

import pytest

from knit.commands.deployments import (
    history_rows,
    rollout_note,
    spec_changes,
    version_of,
)
from knit.commands.output import table, timestamp

pytestmark = pytest.mark.unit


def test_history_lists_versions_newest_first_with_what_changed() -> None:
    v1 = {"name": "web", "image": "web:1", "replicas": 3}
    v2 = {**v1, "env": {"A": "1"}}
    v3 = {**v2, "image": "web:2", "replicas": 5}
    versions = [
        {"version": 3, "spec": v3, "created_at": "2026-01-03T00:00:00Z", "stable": False},
        {"version": 2, "spec": v2, "created_at": "2026-01-02T00:00:00Z", "stable": True},
        {"version": 1, "spec": v1, "created_at": 1767225600.0, "stable": True},
    ]
    rows = history_rows(versions, current=2)
    assert [r["version"] for r in rows] == [3, "2 (current)", 1]
    assert [r["stable"] for r in rows] == ["no", "yes", "yes"]
    assert [r["image"] for r in rows] == ["web:2", "web:1", "web:1"]
    assert [r["changes"] for r in rows] == ["image, replicas", "env", "(first)"]
    assert rows[2]["created_at"] == "2026-01-01T00:00:00Z"  # seconds shown as ISO too
    lines = table(rows, ["version", "created_at", "stable", "image", "changes"])
    assert lines[0].split() == ["VERSION", "CREATED_AT", "STABLE", "IMAGE", "CHANGES"]
    assert lines[2].startswith("2 (current)  2026-01-02T00:00:00Z  yes     web:1")


def test_spec_changes_of_a_rollback_to_the_same_spec() -> None:
    assert spec_changes({"image": "a"}, {"image": "a"}) == "(same spec)"
    assert spec_changes({"image": "a"}, {"image": "a", "update": {}}) == "update"


def test_an_unfinished_rollout_is_mentioned_when_nothing_changed() -> None:
    assert rollout_note({"rollout": None}) == ""
    assert rollout_note({"rollout": {"state": "complete", "message": "ok"}}) == ""
    paused = {"rollout": {"state": "paused", "message": "instance 1 not healthy"}}
    assert rollout_note(paused) == "; its rollout is paused: instance 1 not healthy"


def test_a_deployment_without_a_version_is_at_version_1() -> None:
    assert version_of({}) == 1 and version_of({"version": 4}) == 4
    assert version_of({"version": True}) == 1


def test_times_are_shown_to_the_second_in_utc() -> None:
    assert timestamp("2026-12-04T16:58:14.788102Z") == "2026-12-04T16:58:14Z"
    assert timestamp("2026-12-04T17:58:14+01:00") == "2026-12-04T16:58:14Z"
    assert timestamp(0) == "1970-01-01T00:00:00Z"
    assert timestamp("soon") == "soon" and timestamp(None) is None
