"""The CLI's pure parts: short ids, tables, finding what the user named (names, ids, id
prefixes), the rows of ``deployments``/``ps``/``nodes``, and what it says on errors."""

from __future__ import annotations

import argparse
import json
from typing import Any

import pytest

from knit.cli import build_parser
from knit.client import ApiClient, FoundToken
from knit.commands.access import node_rows
from knit.commands.deployments import deployment_rows, instance_rows
from knit.commands.inspect import find
from knit.commands.output import Column, emit, short_ids, table
from knit.commands.resolve import Ambiguous, NoMatch, resolve

pytestmark = pytest.mark.unit

# Two ids made in the same millisecond (knit.ids): the same first 13 characters.
SAME_MS_A = "019ae9a1b2c37a1f0000000000000001"
SAME_MS_B = "019ae9a1b2c37b2e0000000000000002"
OTHER = "019ae9a1b2d17c3d0000000000000003"


@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        ([], {}),
        (["abc"], {"abc": "abc"}),  # shorter than 12: as it is
        ([OTHER], {OTHER: OTHER[:12]}),
        ([SAME_MS_A, OTHER], {SAME_MS_A: SAME_MS_A[:12], OTHER: OTHER[:12]}),
        (
            [SAME_MS_A, SAME_MS_B, OTHER],
            {SAME_MS_A: SAME_MS_A[:14], SAME_MS_B: SAME_MS_B[:14], OTHER: OTHER[:12]},
        ),
        ([SAME_MS_A, SAME_MS_A], {SAME_MS_A: SAME_MS_A[:12]}),  # a repeat is not a clash
        (
            ["aaaaaaaaaaaaaaaa1", "aaaaaaaaaaaaaaaa"],
            {"aaaaaaaaaaaaaaaa1": "aaaaaaaaaaaaaaaa1", "aaaaaaaaaaaaaaaa": "aaaaaaaaaaaaaaaa"},
        ),
    ],
)
def test_short_ids_are_12_characters_or_as_many_as_tell_them_apart(
    ids: list[str], expected: dict[str, str]
) -> None:
    assert short_ids(ids) == expected


def test_a_table_shortens_its_id_columns_unless_no_trunc() -> None:
    rows: list[dict[str, Any]] = [
        {"id": SAME_MS_A, "name": "web", "node": OTHER, "ok": True},
        {"id": SAME_MS_B, "name": "db", "node": None, "ok": False},
    ]
    columns: list[str | Column] = [Column("id", id=True), "name", Column("node", "NODE", id=True)]
    columns.append("ok")
    assert table(rows, columns) == [
        "ID              NAME  NODE          OK",
        f"{SAME_MS_A[:14]}  web   {OTHER[:12]}  yes",
        f"{SAME_MS_B[:14]}  db                  no",
    ]
    whole = table(rows, columns, no_trunc=True)
    assert SAME_MS_A in whole[1] and OTHER in whole[1]
    assert table([], columns) == ["ID  NAME  NODE  OK"]


def test_json_output_is_the_rows_as_they_are(capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"id": SAME_MS_A, "name": "web"}]
    emit(argparse.Namespace(json=False, output="json", no_trunc=False), rows, ["id"])
    assert json.loads(capsys.readouterr().out) == rows


DEPLOYMENTS = [
    {"id": SAME_MS_A, "name": "web"},
    {"id": SAME_MS_B, "name": "db"},
    {"id": OTHER, "name": SAME_MS_A[:3]},  # a name that looks like an id prefix
]


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("web", "web"),
        (SAME_MS_B, "db"),  # a whole id
        (SAME_MS_A[:14], "web"),  # a unique prefix
        (SAME_MS_B[:14], "db"),
        (OTHER[:12], SAME_MS_A[:3]),
        (SAME_MS_A[:3], SAME_MS_A[:3]),  # the name wins over the prefix of three ids
    ],
)
def test_resolve_by_name_whole_id_or_unique_prefix(text: str, found: str) -> None:
    assert resolve(text, DEPLOYMENTS, "deployment", names=("name",))["name"] == found


def test_an_ambiguous_prefix_lists_the_candidates() -> None:
    with pytest.raises(Ambiguous) as caught:
        resolve(SAME_MS_A[:12], DEPLOYMENTS, "deployment", names=("name",))
    message = str(caught.value)
    assert message.startswith(f"'{SAME_MS_A[:12]}' matches 2 deployments: ")
    assert f"{SAME_MS_A} (web)" in message and f"{SAME_MS_B} (db)" in message
    assert len(caught.value.candidates) == 2
    many = [{"id": f"{SAME_MS_A[:30]}{i:02d}"} for i in range(8)]
    with pytest.raises(Ambiguous, match=r"matches 8 nodes: .* and 3 more; give more"):
        resolve(SAME_MS_A[:20], many, "node")


def test_nothing_matching_names_what_was_looked_for() -> None:
    with pytest.raises(NoMatch, match=r"^no deployment 'nope'$"):
        resolve("nope", DEPLOYMENTS, "deployment", names=("name",))
    with pytest.raises(NoMatch, match="no node ''"):
        resolve("", DEPLOYMENTS, "node")
    instances = [{"instance_id": OTHER, "container_id": None}]
    assert resolve(OTHER[:5], instances, "instance", id_keys=("instance_id", "container_id"))
    with pytest.raises(NoMatch):  # a missing container id matches nothing
        resolve("x", instances, "instance", id_keys=("instance_id", "container_id"))


def test_inspect_finds_one_kind_or_says_which_ones_match() -> None:
    def finder(items: list[dict[str, Any]], kind: str) -> Any:
        return lambda text: dict(resolve(text, items, kind, names=("name",)))

    finders = {
        "deployment": finder([{"id": SAME_MS_A, "name": "web"}], "deployment"),
        "node": finder([{"id": SAME_MS_B}], "node"),
    }
    assert find("web", finders) == ("deployment", {"id": SAME_MS_A, "name": "web"})
    assert find(SAME_MS_B[:14], finders)[0] == "node"
    with pytest.raises(Ambiguous, match=f"deployment {SAME_MS_A}, node {SAME_MS_B}: .*--type"):
        find(SAME_MS_A[:12], finders)
    with pytest.raises(NoMatch, match="no deployment or node named or with id 'zz'"):
        find("zz", finders)


def test_the_rows_of_deployments_ps_and_nodes() -> None:
    deployments = [
        {"id": SAME_MS_A, "name": "web", "replicas": 2, "rollout": {"state": "running"}},
        {"id": SAME_MS_B, "name": "db", "replicas": 1, "rollout": None},
    ]
    instances = [
        {
            "instance_id": "i3",
            "deployment_id": SAME_MS_A,
            "index": 1,
            "status": "running",
            "node_id": "n1",
            "desired": True,
        },
        {
            "instance_id": "i2",
            "deployment_id": SAME_MS_A,
            "index": 0,
            "status": "running",
            "node_id": "n1",
            "desired": False,
        },  # stopping: not counted
        {
            "instance_id": "i1",
            "deployment_id": SAME_MS_B,
            "index": 0,
            "status": "pending",
            "node_id": None,
            "desired": True,
        },
    ]
    rows = deployment_rows(deployments, instances)
    assert [(r["name"], r["running"], r["rollout_state"]) for r in rows] == [
        ("db", "0/1", None),
        ("web", "1/2", "running"),
    ]
    ps = instance_rows(instances, deployments)
    assert [(r["deployment"], r["index"]) for r in ps] == [("db", 0), ("web", 0), ("web", 1)]
    gib = 1024**3
    nodes = node_rows(
        [
            {"id": "n2", "hostname": "b"},
            {
                "id": "n1",
                "hostname": "a",
                "last_heartbeat": 0,
                "cpus": 2,
                "reserved_cpus": 0.5,
                "memory_bytes": 8 * gib,
                "reserved_memory_bytes": 256 * 1024**2,
            },
        ],
        instances,
    )
    assert [(n["id"], n["instances"]) for n in nodes] == [("n1", 1), ("n2", 0)]
    assert nodes[0]["last_heartbeat"] == "1970-01-01T00:00:00Z"
    assert (nodes[0]["cpu"], nodes[0]["memory"]) == ("0.5/2", "256MiB/8GiB")
    assert (nodes[1]["cpu"], nodes[1]["memory"]) == ("-/-", "-/-")


def explain(status: int, body: Any, token: FoundToken | None = None) -> str:
    client = ApiClient("http://127.0.0.1:1", token=token)
    try:
        return client._explain("GET", "/deployments/x/logs?tail=5", status, body)
    finally:
        client.close()


def test_errors_say_what_to_do() -> None:
    no_token = explain(401, {"error": "an API token is required"})
    assert no_token.startswith("the server wants an API token (HTTP 401: an API token is req")
    assert "--token" in no_token and "KNIT_TOKEN" in no_token
    wrong = explain(401, {"error": "invalid token"}, FoundToken("knit_x", "KNIT_TOKEN"))
    assert wrong == (
        "the server refused the token from KNIT_TOKEN (HTTP 401: invalid token): "
        "set --token or KNIT_TOKEN to a valid one"
    )
    assert "knit_x" not in wrong
    assert explain(404, {"error": "deployment 'x' not found"}) == (
        "HTTP 404: deployment 'x' not found"
    )
    route = explain(404, {"error": "The requested URL was not found on the server."})
    assert route == (
        "the server at http://127.0.0.1:1 has no GET /deployments/x/logs (HTTP 404): "
        "is it an older Knit than this client?"
    )
    assert "knit token create" in explain(403, {"error": "needs the deploy role"})


@pytest.mark.parametrize(
    "argv",
    [
        ["deployments", "-o", "json"],
        ["ps", "web", "--no-trunc"],
        ["ps"],
        ["nodes", "--json"],
        ["events", "-f", "-n", "5", "--deployment", "web"],
        ["drain", "node-1"],
        ["eligible", "node-1"],
        ["inspect", "web", "--type", "deployment"],
        ["history", "web", "-o", "json"],
        ["token", "ls", "-o", "json"],
    ],
)
def test_every_client_command_takes_output_and_no_trunc(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert args.output in ("table", "json") and args.no_trunc in (True, False)


def test_output_must_be_table_or_json(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["ps", "-o", "yaml"])
    assert "invalid choice: 'yaml'" in capsys.readouterr().err


def test_a_reader_that_leaves_ends_the_command_quietly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import knit.cli

    def gone(args: argparse.Namespace) -> int:
        raise BrokenPipeError

    monkeypatch.setattr(knit.cli, "run_client_command", gone)
    assert knit.cli.main(["events", "-f", "--api", "http://127.0.0.1:1"]) == 0
    assert capsys.readouterr().err == ""
