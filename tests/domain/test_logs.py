"""knit.domain.logs: the query parameters of the logs routes."""

from __future__ import annotations

import pytest

from knit.domain.logs import DEFAULT_TAIL, LogQuery, parse_duration, parse_log_query, parse_since
from knit.errors import Invalid

pytestmark = pytest.mark.unit

NOW = 1_700_000_000.0


def test_defaults_are_the_last_hundred_lines_without_following() -> None:
    assert parse_log_query({}) == (LogQuery(tail=DEFAULT_TAIL), None)


def test_every_parameter_is_read() -> None:
    query, index = parse_log_query(
        {"follow": "1", "tail": "5", "since": "10m", "timestamps": "true", "instance": "2"},
        now=NOW,
    )
    assert query == LogQuery(follow=True, tail=5, since=NOW - 600, timestamps=True)
    assert index == 2


@pytest.mark.parametrize("tail", ["all", "-1"])
def test_tail_all_sends_everything(tail: str) -> None:
    assert parse_log_query({"tail": tail})[0].tail is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("10m", 600), ("1h30m", 5400), ("250ms", 0.25), ("2d", 172800)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


def test_since_takes_a_duration_a_unix_time_or_an_rfc3339_time() -> None:
    assert parse_since("1m", now=NOW) == NOW - 60
    assert parse_since("1699999000", now=NOW) == 1_699_999_000
    assert parse_since("2023-11-14T22:13:20Z", now=NOW) == NOW


def test_malformed_parameters_are_each_named() -> None:
    with pytest.raises(Invalid) as caught:
        parse_log_query({"follow": "maybe", "tail": "x", "since": "soon", "instance": "-1"})
    assert [e["field"] for e in caught.value.errors] == ["follow", "tail", "since", "instance"]


def test_a_time_without_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="time zone"):
        parse_since("2023-11-14T22:13:20", now=NOW)
