"""``knit events``: its lines, and following on scripted pages of ``GET /events`` (no server)."""

from __future__ import annotations

from typing import Any

import pytest

from knit.client import ApiError, ApiUnreachable
from knit.commands.events import Unseen, event_line, follow_events, header

pytestmark = pytest.mark.unit

DEPLOYMENT = "019ae9a1b2c37a1f0000000000000001"


def event(n: int, **fields: Any) -> dict[str, Any]:
    return {
        "id": f"e{n}",
        "at": f"2026-12-04T17:00:{n:02d}.123456Z",
        "kind": "instance.running",
        "message": f"instance {n} runs",
        "deployment_id": DEPLOYMENT,
        "node_id": None,
        **fields,
    }


def test_an_event_is_one_line_of_fixed_columns() -> None:
    line = event_line(event(1))
    assert line == (
        f"2026-12-04T17:00:01Z  instance.running        {DEPLOYMENT[:12]}  -             "
        "instance 1 runs"
    )
    assert header().index("MESSAGE") == line.index("instance 1 runs")
    whole = event_line(event(1), no_trunc=True)
    assert DEPLOYMENT in whole
    assert header(no_trunc=True).index("MESSAGE") == whole.index("instance 1 runs")


def test_unseen_gives_new_events_oldest_first_once() -> None:
    unseen = Unseen()
    first, missed = unseen.take([event(2), event(1)])  # newest first, as the API lists
    assert [e["id"] for e in first] == ["e1", "e2"] and not missed
    later, missed = unseen.take([event(4), event(3), event(2)])
    assert [e["id"] for e in later] == ["e3", "e4"] and not missed
    assert unseen.take([event(4), event(3)]) == ([], False)
    # An event stored late (older than one seen) is still printed, once.
    late, _ = unseen.take([event(4), event(0)])
    assert [e["id"] for e in late] == ["e0"]
    gap, missed = unseen.take([event(9), event(8)])
    assert missed and [e["id"] for e in gap] == ["e8", "e9"]


def test_unseen_remembers_a_bounded_number_of_ids() -> None:
    unseen = Unseen(remembered=3)
    unseen.take([event(n) for n in range(5, 0, -1)])
    assert [e["id"] for e in unseen.take([event(2), event(1)])[0]] == ["e1", "e2"]


class Pages:
    """Answers ``events()`` from a list, one per call: a page or an error."""

    def __init__(self, *answers: list[dict[str, Any]] | ApiError) -> None:
        self.answers = list(answers)
        self.asked: list[dict[str, Any]] = []

    def events(self, **query: Any) -> list[dict[str, Any]]:
        self.asked.append(query)
        answer = self.answers.pop(0)
        if isinstance(answer, ApiError):
            raise answer
        return answer


def test_following_prints_new_events_and_rides_out_an_unreachable_server(
    capsys: pytest.CaptureFixture[str],
) -> None:
    unseen = Unseen()
    unseen.take([event(1)])
    pages = Pages(
        [event(2), event(1)],
        ApiUnreachable("cannot reach the Knit API at http://x"),
        ApiError("HTTP 503: busy", 503),
        [event(3), event(2)],
    )
    shown: list[str] = []
    sleeps: list[float] = []
    follow_events(
        pages,
        lambda e: shown.append(e["id"]),
        deployment_id=DEPLOYMENT,
        unseen=unseen,
        page=2,
        sleep=sleeps.append,
        polls=4,
    )
    assert shown == ["e2", "e3"]
    assert sleeps == [1.0] * 4
    assert pages.asked[0] == {"limit": 2, "deployment_id": DEPLOYMENT, "node_id": None}
    err = capsys.readouterr().err
    assert err == (
        "knit: cannot reach the Knit API at http://x; trying again\nknit: the API answers again\n"
    )


def test_following_says_when_a_whole_page_was_new(capsys: pytest.CaptureFixture[str]) -> None:
    unseen = Unseen()
    unseen.take([event(1)])
    shown: list[str] = []
    follow_events(
        Pages([event(5), event(4)]),
        lambda e: shown.append(e["id"]),
        unseen=unseen,
        page=2,
        sleep=lambda _: None,
        polls=1,
    )
    assert shown == ["e4", "e5"]
    assert "more than 2 events since the last read" in capsys.readouterr().err


def test_following_stops_on_a_refusal() -> None:
    pages = Pages(ApiError("the server refused the token", 401))
    with pytest.raises(ApiError, match="refused"):
        follow_events(pages, print, unseen=Unseen(), sleep=lambda _: None, polls=3)
