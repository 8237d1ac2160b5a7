"""Leader election's decisions (knit.domain.leadership): table tests."""

from __future__ import annotations

import pytest

from knit.domain.leadership import (
    LeaseTiming,
    Presence,
    acting_deadline,
    check_lease_ttl,
    check_server_id,
    default_server_id,
    fit_to_lead,
    presence,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("ttl", "renew_every", "margin", "retry"),
    [
        (10.0, 10 / 3, 1.0, 1.0),
        (3.0, 1.0, 0.6, 0.6),
        (1.0, 1 / 3, 0.2, 0.2),
        (300.0, 100.0, 1.0, 1.0),
    ],
)
def test_the_rhythm_of_a_lease(ttl: float, renew_every: float, margin: float, retry: float) -> None:
    timing = LeaseTiming(ttl)
    assert timing.renew_every == pytest.approx(renew_every)
    assert timing.margin == pytest.approx(margin)
    assert timing.retry == pytest.approx(retry)
    # Two renewals may fail and the leader still acts until the lease's end (less a margin).
    assert 2 * timing.renew_every < ttl - timing.margin


@pytest.mark.parametrize(
    ("asked_at", "ttl", "deadline"),
    [(100.0, 10.0, 109.0), (0.0, 3.0, 2.4), (50.0, 1.0, 50.8)],
)
def test_a_leader_acts_until_before_its_lease_ends_by_its_own_clock(
    asked_at: float, ttl: float, deadline: float
) -> None:
    assert acting_deadline(asked_at, LeaseTiming(ttl)) == pytest.approx(deadline)


@pytest.mark.parametrize(
    ("last_seen", "now", "expected"),
    [
        (100.0, 100.0, Presence.ALIVE),
        (100.0, 106.9, Presence.ALIVE),  # three announcements (2 s) and a second
        (100.0, 107.1, Presence.GONE),
        (100.0, 99.0, Presence.ALIVE),  # (read before it wrote)
    ],
)
def test_a_server_is_gone_after_three_missed_announcements(
    last_seen: float, now: float, expected: Presence
) -> None:
    assert presence(last_seen, now, LeaseTiming(10.0)) is expected


@pytest.mark.parametrize(
    ("ttl", "problem"),
    [
        (10.0, None),
        (1.0, None),
        (300.0, None),
        (0.5, "must be between 1 and 300 seconds"),
        (301.0, "must be between 1 and 300 seconds"),
        (float("nan"), "must be between 1 and 300 seconds"),
    ],
)
def test_lease_ttls(ttl: float, problem: str | None) -> None:
    assert check_lease_ttl(ttl) == problem


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("a", True),
        ("server-1.example", True),
        ("s_1", True),
        ("", False),
        ("-a", False),
        ("a/b", False),
        ("a b", False),
        ("x" * 64, False),
    ],
)
def test_server_ids(text: str, ok: bool) -> None:
    assert (check_server_id(text) is None) is ok


@pytest.mark.parametrize(
    ("hostname", "expected"),
    [("vm", "vm"), ("host.example.org", "host.example.org"), ("a b/c", "a-b-c"), ("..", "server")],
)
def test_a_server_is_named_after_its_host(hostname: str, expected: str) -> None:
    assert default_server_id(hostname) == expected
    assert check_server_id(default_server_id(hostname)) is None


@pytest.mark.parametrize(
    ("connected", "disconnected_at", "now", "fit"),
    [
        (True, 0.0, 100.0, True),
        (True, 99.0, 100.0, True),  # (reconnected since)
        (False, 95.0, 100.0, True),  # away for less than a lease: a blip
        (False, 90.0, 100.0, False),  # a whole lease: another server should lead
    ],
)
def test_a_server_without_its_bus_for_a_whole_lease_does_not_lead(
    connected: bool, disconnected_at: float, now: float, fit: bool
) -> None:
    assert fit_to_lead(connected, disconnected_at, now, LeaseTiming(10.0)) is fit
