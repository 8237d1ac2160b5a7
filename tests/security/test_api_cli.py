"""The ``knit`` command with tokens: where it finds one (``--token``, ``KNIT_TOKEN``,
``KNIT_TOKEN_FILE``, ``.knit/admin.token``), what it says on 401 and 403, and ``knit token``
and ``knit join-token``.

Against a real ``knit server``; every command runs as a child process.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.security.api_support import api_server, make_token
from tests.support.knit import KnitCluster, unique_name
from tests.support.knit_processes import run_cli

pytestmark = [pytest.mark.integration]

TOKEN_LINE = re.compile(r"knit_[A-Za-z0-9_-]{43}\n")


@pytest.fixture(scope="module")
def knit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KnitCluster]:
    with api_server(tmp_path_factory.mktemp("api-cli")) as cluster:
        yield cluster


def test_the_token_comes_from_the_flag_the_environment_a_file_or_the_dev_folder(
    knit: KnitCluster, tmp_path: Path
) -> None:
    api, admin = knit.server.api_url, knit.server.admin_token
    nowhere = tmp_path / "empty"
    nowhere.mkdir()
    none = run_cli("nodes", "--api", api, token="", cwd=nowhere)
    assert none.returncode == 1
    assert "HTTP 401" in none.stderr and "KNIT_TOKEN" in none.stderr
    assert "Traceback" not in none.stderr
    flag = run_cli("nodes", "--api", api, "--token", admin, token="", cwd=nowhere)
    assert flag.returncode == 0, flag.stderr
    env = run_cli("ps", "--api", api, token=admin, cwd=nowhere)
    assert env.returncode == 0, env.stderr
    named = run_cli(
        "nodes",
        "--api",
        api,
        token="",
        cwd=nowhere,
        env={"KNIT_TOKEN_FILE": str(knit.server.token_file)},
    )
    assert named.returncode == 0, named.stderr
    missing = run_cli(
        "nodes", "--api", api, token="", cwd=nowhere, env={"KNIT_TOKEN_FILE": "/nope/token"}
    )
    assert missing.returncode == 1 and "cannot read the token file /nope/token" in missing.stderr
    dev = tmp_path / "repo"
    (dev / ".knit").mkdir(parents=True)
    shutil.copy(knit.server.token_file, dev / ".knit" / "admin.token")
    found = run_cli("nodes", "--api", api, token="", cwd=dev)
    assert found.returncode == 0, found.stderr
    wrong = run_cli("nodes", "--api", api, "--token", "knit_nope", token="", cwd=dev)
    assert wrong.returncode == 1
    assert "HTTP 401" in wrong.stderr and "--token" in wrong.stderr  # the flag wins
    assert admin not in none.stderr + wrong.stderr + found.stdout + found.stderr


def test_a_role_too_weak_is_a_clear_error(knit: KnitCluster, tmp_path: Path) -> None:
    reader = make_token(knit, "read", unique_name("reader"))
    spec = tmp_path / "web.json"
    spec.write_text(json.dumps({"name": unique_name("web"), "image": "busybox:1"}))
    api = knit.server.api_url
    refused = run_cli("deploy", "-f", str(spec), "--api", api, token=reader)
    assert refused.returncode == 1
    assert "HTTP 403" in refused.stderr and "deploy" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert run_cli("ps", "--api", api, token=reader).returncode == 0


def test_knit_token_create_ls_rm(knit: KnitCluster) -> None:
    api = knit.server.api_url
    name = unique_name("ci")
    made = run_cli(
        "token", "create", "--role", "deploy", "--name", name, "--ttl", "600", "--api", api
    )
    assert made.returncode == 0, made.stderr
    assert TOKEN_LINE.fullmatch(made.stdout), made.stdout  # alone: T=$(knit token create ...)
    secret = made.stdout.strip()
    assert name in made.stderr and secret not in made.stderr
    usable = run_cli("ps", "--api", api, token=secret)
    assert usable.returncode == 0, usable.stderr
    listed = run_cli("token", "ls", "--api", api, "--json")
    assert listed.returncode == 0 and secret not in listed.stdout
    (mine,) = [t for t in json.loads(listed.stdout) if t["name"] == name]
    assert mine["role"] == "deploy" and mine["expires_at"]
    table = run_cli("token", "ls", "--api", api)
    assert name in table.stdout and "ROLE" in table.stdout
    removed = run_cli("token", "rm", mine["id"], "--api", api)
    assert removed.returncode == 0 and "revoked" in removed.stdout
    assert run_cli("ps", "--api", api, token=secret).returncode == 1
    again = run_cli("token", "rm", mine["id"], "--api", api)
    assert again.returncode == 1 and "HTTP 404" in again.stderr
    bad = run_cli("token", "create", "--role", "deploy", "--name", "Not OK", "--api", api)
    assert bad.returncode == 1 and "name:" in bad.stderr
    as_deployer = run_cli(
        "token", "create", "--role", "admin", "--name", "x", "--api", api, token=secret
    )
    assert as_deployer.returncode == 1


def test_knit_join_token_create_ls_rm(knit: KnitCluster) -> None:
    api = knit.server.api_url
    made = run_cli("join-token", "create", "--ttl", "120", "--uses", "2", "--api", api)
    assert made.returncode == 0, made.stderr
    assert re.fullmatch(r"knitjoin_[A-Za-z0-9_-]{43}\n", made.stdout), made.stdout
    secret = made.stdout.strip()
    listed = run_cli("join-token", "ls", "--api", api, "--json")
    assert listed.returncode == 0 and secret not in listed.stdout
    mine = json.loads(listed.stdout)[-1]
    assert (mine["uses"], mine["used"], mine["revoked"]) == (2, 0, False)
    plain = run_cli("join-token", "create", "--api", api)
    assert plain.returncode == 0 and plain.stdout.startswith("knitjoin_")
    removed = run_cli("join-token", "rm", mine["id"], "--api", api)
    assert removed.returncode == 0, removed.stderr
    after = {
        t["id"]: t for t in json.loads(run_cli("join-token", "ls", "--api", api, "--json").stdout)
    }
    assert after[mine["id"]]["revoked"] is True
