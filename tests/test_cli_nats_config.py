"""``knit nats-config`` (the configuration an external NATS cluster includes) and
``knit server --nats-operator-auth`` (the server on such a cluster): what they accept."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from knit.cli import build_parser, main
from knit.config import ServerConfig
from knit.errors import KnitError
from knit.server.main import check_nats_options
from tests.support.knit_processes import run_cli

pytestmark = pytest.mark.integration  # (SQLite)


@pytest.fixture(autouse=True)
def no_secret_key_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KNIT_SECRET_KEY", raising=False)
    monkeypatch.delenv("KNIT_DATABASE_URL", raising=False)


def nats_config(*args: str) -> None:
    assert main(["nats-config", *args]) == 0


def test_nats_config_writes_the_stores_trust_privately_and_the_same_each_time(
    tmp_path: Path,
) -> None:
    data = tmp_path / "server"
    first, second = tmp_path / "a.conf", tmp_path / "b.conf"
    nats_config("--data-dir", str(data), "--out", str(first))
    nats_config("--data-dir", str(data), "--out", str(second), "--resolver-dir", "/var/x")
    text = first.read_text()
    assert stat.S_IMODE(first.stat().st_mode) == 0o600
    assert "type: full" in text and 'dir: "knit-jwt"' in text and "allow_delete: false" in text
    assert 'dir: "/var/x"' in second.read_text()
    # Public JWTs only: no seed (S...) of any key.
    assert not re.search(r"\bS[OAU][A-Z2-7]{50,}", text)

    def operator_and_accounts(conf: str) -> tuple[str, list[str]]:
        operator = re.search(r"^operator: (\S+)$", conf, re.M)
        assert operator is not None
        return operator[1], sorted(re.findall(r"^  (A[A-Z2-7]{55}):", conf, re.M))

    # The keys made at the first run are kept in the store: the same operator (the same
    # JWT, byte for byte: a nats-server reload refuses a changed one) and accounts.
    assert operator_and_accounts(text) == operator_and_accounts(second.read_text())
    assert len(operator_and_accounts(text)[1]) == 2  # the system account and KNIT


def test_nats_config_prints_a_memory_resolver_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nats_config("--data-dir", str(tmp_path / "server"), "--resolver", "memory")
    out = capsys.readouterr().out
    assert "resolver: MEMORY" in out and "resolver_preload" in out and "type: full" not in out


def test_the_server_takes_nats_operator_auth_with_nats_urls() -> None:
    args = build_parser().parse_args(
        ["server", "--nats", "nats://a:4222,nats://b:4222", "--nats-operator-auth"]
    )
    assert args.nats_operator_auth is True
    assert build_parser().parse_args(["server"]).nats_operator_auth is False
    check_nats_options(ServerConfig(nats_url="nats://a:4222", nats_operator_auth=True))


def test_knit_server_says_what_is_wrong_with_operator_auth_without_nats(tmp_path: Path) -> None:
    done = run_cli("server", "--nats-operator-auth", "--data-dir", str(tmp_path / "server"))
    assert done.returncode == 1
    assert done.stderr.strip().endswith(
        "(without --nats the server runs its own nats-server, in operator mode already)"
    ), done.stderr
    assert not (tmp_path / "server").exists()  # refused before anything was written


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (ServerConfig(nats_operator_auth=True), "give its URLs with --nats"),
        (
            ServerConfig(nats_url="nats://a:4222", nats_operator_auth=True, insecure_bus=True),
            "contradict each other",
        ),
        (
            ServerConfig(
                nats_url="nats://a:4222", nats_operator_auth=True, nats_creds=Path("x.creds")
            ),
            "drop --nats-creds",
        ),
    ],
)
def test_nats_operator_auth_is_refused_with_options_that_contradict_it(
    config: ServerConfig, message: str
) -> None:
    with pytest.raises(KnitError, match=message):
        check_nats_options(config)
