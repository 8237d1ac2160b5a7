"""``knit server`` options that need checking before the server starts."""

from __future__ import annotations

import pytest

from knit.cli import build_parser
from knit.config import DEFAULT_HISTORY_RETENTION, DEFAULT_MAX_REPLICAS

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


def test_max_replicas_defaults_to_1000() -> None:
    parser = build_parser()
    assert parser.parse_args(["server"]).max_replicas == DEFAULT_MAX_REPLICAS == 1000
    assert parser.parse_args(["server", "--max-replicas", "5"]).max_replicas == 5


@pytest.mark.parametrize("bad", ["0", "-3", "many", "1.5"])
def test_a_bad_max_replicas_is_refused_with_a_message(
    bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["server", "--max-replicas", bad])
    assert exited.value.code == 2
    assert "--max-replicas" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["agent", "dev"])
def test_host_networking_is_off_unless_asked_for(command: str) -> None:
    parser = build_parser()
    assert parser.parse_args([command]).allow_host_network is False
    assert parser.parse_args([command, "--allow-host-network"]).allow_host_network is True


def test_nats_urls_repeated_or_comma_separated_make_one_list() -> None:
    from knit.cli import build_parser, nats_urls

    args = build_parser().parse_args(
        ["server", "--nats", "nats://a:4222", "--nats", "nats://b:4222, nats://c:4222"]
    )
    assert nats_urls(args.nats) == "nats://a:4222,nats://b:4222,nats://c:4222"
    assert nats_urls(build_parser().parse_args(["server"]).nats) is None
    agent = build_parser().parse_args(["agent", "--nats", "nats://a:4222,nats://b:4222"])
    assert nats_urls(agent.nats) == "nats://a:4222,nats://b:4222"
