"""``knit logs``: its options become the logs route's query; the stream is printed as it
comes (no server: a fake client)."""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from typing import Any, cast

import pytest

from knit.cli import build_parser
from knit.client import ApiClient
from knit.commands.logs import run_logs

pytestmark = pytest.mark.unit


class FakeClient:
    def __init__(self) -> None:
        self.asked: list[tuple[str, dict[str, str]]] = []

    def deployments(self) -> list[dict[str, Any]]:
        return [{"id": "d1", "name": "web"}, {"id": "d2", "name": "db"}]

    def stream_text(self, path: str, params: Mapping[str, str]) -> Iterator[str]:
        self.asked.append((path, dict(params)))
        yield "[0] a\n[1] b\n"
        yield "[0] c\n"


def run(*argv: str) -> tuple[FakeClient, str]:
    args = build_parser().parse_args(["logs", *argv])
    client, out = FakeClient(), io.StringIO()
    run_logs(args, cast(ApiClient, client), out=out)
    return client, out.getvalue()


def test_logs_prints_the_stream_as_it_comes() -> None:
    client, printed = run("web")
    assert printed == "[0] a\n[1] b\n[0] c\n"
    assert client.asked == [("/deployments/d1/logs", {"tail": "100", "follow": "0"})]


def test_every_option_reaches_the_query() -> None:
    client, _ = run(
        "web", "-f", "--tail", "all", "--since", "10m", "--timestamps", "--instance", "2"
    )
    assert client.asked[0][1] == {
        "tail": "all",
        "follow": "1",
        "since": "10m",
        "timestamps": "1",
        "instance": "2",
    }


def test_a_deployment_is_found_by_an_id_prefix_too() -> None:
    client, _ = run("d2")
    assert client.asked[0][0] == "/deployments/d2/logs"


def test_a_negative_tail_is_refused_by_the_parser() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["logs", "web", "--tail", "-3"])
