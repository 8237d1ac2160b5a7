"""The loop that follows a deployment (``knit.commands.follow``) on scripted API answers and
a fake clock: what it prints, when it gives up, a server away for a while, Ctrl-C."""

from __future__ import annotations

import io
from typing import Any

import pytest

from knit.client import ApiError, ApiUnreachable
from knit.commands.follow import FollowFailed, follow
from knit.commands.progress import Outcome, Target

pytestmark = pytest.mark.unit

Answer = dict[str, Any] | BaseException


class Script:
    """Answers ``deployment()`` from a list, one per call; the last one forever after."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.calls = 0
        self.now = 0.0

    def deployment(self, deployment_id: str) -> dict[str, Any]:
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def web(state: str | None, updated: int = 0, healthy: int = 0, message: str = "") -> dict[str, Any]:
    rollout = None
    if state is not None:
        rollout = {
            "version": 2,
            "state": state,
            "desired": 2,
            "updated": updated,
            "healthy": healthy,
            "message": message,
        }
    return {
        "id": "d1",
        "name": "web",
        "version": 2,
        "replicas": 2,
        "status": "active",
        "pending_reason": None,
        "rollout": rollout,
        "instances": [],
    }


ROLLOUT_2 = Target(2, rollout=True)


def run(script: Script, target: Target = ROLLOUT_2, timeout: float = 30) -> str:
    out = io.StringIO()
    follow(script, "d1", target, out=out, timeout=timeout, clock=script.clock, sleep=script.sleep)
    return out.getvalue()


def test_a_rollout_is_printed_as_it_moves_and_ends_when_complete() -> None:
    script = Script(
        web(None),
        web("running", 0, 0),
        web("running", 0, 0),
        web("running", 1, 0),
        web("running", 1, 1),
        web("complete", 2, 2),
    )
    assert run(script).splitlines() == [
        "version 2: 0/2 updated, 0 healthy",
        "version 2: 1/2 updated, 0 healthy",
        "version 2: 1/2 updated, 1 healthy",
        "rollout complete: version 2",
    ]
    assert script.calls == 6 and script.now == 2.5  # every 0.5 s


def test_a_paused_rollout_fails_with_its_message() -> None:
    script = Script(web("running", 1, 0), web("paused", 1, 0, "instance 0 never healthy"))
    out = io.StringIO()
    with pytest.raises(FollowFailed) as failed:
        follow(script, "d1", Target(2, True), out=out, clock=script.clock, sleep=script.sleep)
    assert failed.value.outcome is Outcome.PAUSED
    assert str(failed.value) == "the rollout of version 2 paused: instance 0 never healthy"
    assert out.getvalue().splitlines()[-1] == "rollout paused: version 2: 1/2 updated, 0 healthy"


def test_nothing_changing_for_the_timeout_gives_up_saying_where_things_stand() -> None:
    stuck = web(None)
    stuck.update(rollout=None, version=1, pending_reason="no node matches zone=mars")
    script = Script(stuck)
    with pytest.raises(FollowFailed, match="nothing changed for 30 s") as failed:
        run(script, Target(1, rollout=False), timeout=30)
    assert "pending: no node matches zone=mars" in str(failed.value)
    assert failed.value.outcome is None
    assert 30 <= script.now <= 31


def test_progress_resets_the_timeout() -> None:
    answers: list[Answer] = [web("running", 0, 0) for _ in range(50)]
    answers += [web("running", 1, 0) for _ in range(50)]
    script = Script(*answers, web("complete", 2, 2))
    run(script, timeout=30)  # 25 s, 25 s, then complete: never 30 s without a change
    assert script.now == 50


def test_a_server_away_for_a_while_is_waited_for_and_said_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    away = ApiUnreachable("cannot reach the Knit API at http://127.0.0.1:1 (ConnectError)")
    script = Script(
        web("running", 1, 0),
        away,
        away,
        ApiError("HTTP 503: the store is busy", 503),
        web("running", 1, 1),
        web("complete", 2, 2),
    )
    assert run(script).splitlines()[-1] == "rollout complete: version 2"
    err = capsys.readouterr().err
    assert err.count("cannot reach the Knit API") == 1
    assert "the API answers again" in err


def test_a_server_away_for_the_timeout_gives_up() -> None:
    script = Script(web("running", 1, 0), ApiUnreachable("cannot reach the Knit API"))
    with pytest.raises(FollowFailed, match="gave up after 30 s: cannot reach"):
        run(script, timeout=30)


def test_a_refusal_is_raised_as_is() -> None:
    script = Script(web("running", 1, 0), ApiError("HTTP 401: unauthorized", 401))
    with pytest.raises(ApiError, match="401"):
        run(script)


def test_a_deleted_deployment_ends_the_wait() -> None:
    script = Script(web("running", 1, 0), ApiError("HTTP 404: not found", 404))
    with pytest.raises(FollowFailed, match="was deleted") as failed:
        run(script)
    assert failed.value.outcome is Outcome.DELETED


def test_ctrl_c_says_the_rollout_goes_on(capsys: pytest.CaptureFixture[str]) -> None:
    script = Script(web("running", 1, 0), KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        run(script)
    err = capsys.readouterr().err
    assert "stopped following; the rollout of version 2 goes on" in err
    assert "version 2: 1/2 updated, 0 healthy" in err
