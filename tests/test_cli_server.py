"""``knit server`` options that need checking before the server starts."""

from __future__ import annotations

import pytest

from knit.cli import build_parser
from knit.config import DEFAULT_HISTORY_RETENTION

pytestmark = pytest.mark.unit


def test_history_retention_defaults_to_72_hours_and_takes_seconds() -> None:
    parser = build_parser()
    assert parser.parse_args(["server"]).history_retention == DEFAULT_HISTORY_RETENTION == 259200
    assert parser.parse_args(["server", "--history-retention", "0"]).history_retention == 0.0
    assert parser.parse_args(["server", "--history-retention", "90.5"]).history_retention == 90.5


@pytest.mark.parametrize("bad", ["-1", "soon", "nan", "inf"])
def test_a_bad_history_retention_is_refused_with_a_message(
    bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["server", "--history-retention", bad])
    assert exited.value.code == 2
    assert "--history-retention" in capsys.readouterr().err
