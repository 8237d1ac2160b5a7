"""``knit server --tls-cert --tls-key``: the API over HTTPS only, clients that trust a given
CA (``--ca-file``, ``KNIT_CA_FILE``) and refuse a server they cannot verify, a Secure
session cookie, and clear errors for a half or unreadable configuration.

A CA and a certificate for 127.0.0.1 are made in the test (``cryptography``).
"""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.security.api_support import Tls, api_server, make_tls
from tests.support.knit import KnitCluster
from tests.support.knit_processes import run_cli, trust

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def knit(tls: Tls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KnitCluster]:
    workdir = tmp_path_factory.mktemp("api-tls")
    with api_server(workdir, tls=(tls.cert, tls.key), ca_file=tls.ca) as cluster:
        yield cluster


def test_the_api_answers_over_https_to_a_client_trusting_the_ca(
    knit: KnitCluster, tls: Tls
) -> None:
    assert knit.server.api_url.startswith("https://127.0.0.1:")
    nodes = knit.api.ok(knit.api.get("/nodes"), 200)
    assert nodes == []
    with httpx.Client(verify=ssl.create_default_context(cafile=str(tls.ca))) as http:
        assert http.get(f"{knit.server.api_url}/nodes").status_code == 401
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{knit.server.api_url}/healthz")
    plain = knit.server.api_url.replace("https://", "http://")
    with pytest.raises(httpx.HTTPError):  # no plain HTTP on the TLS port
        httpx.get(f"{plain}/healthz", timeout=5)


def test_the_cli_trusts_the_ca_it_is_given(knit: KnitCluster, tls: Tls) -> None:
    api = knit.server.api_url
    given = run_cli("nodes", "--api", api, "--ca-file", str(tls.ca))
    assert given.returncode == 0, given.stderr
    assert "HOSTNAME" in given.stdout
    from_env = run_cli("ps", "--api", api, env={"KNIT_CA_FILE": str(tls.ca)})
    assert from_env.returncode == 0, from_env.stderr
    untrusted = run_cli("nodes", "--api", api)
    assert untrusted.returncode != 0
    assert "--ca-file" in untrusted.stderr and "Traceback" not in untrusted.stderr
    missing = run_cli("nodes", "--api", api, "--ca-file", "/nonexistent/ca.pem")
    assert missing.returncode != 0 and "CA file" in missing.stderr


def test_the_session_cookie_is_secure_over_tls(knit: KnitCluster, tls: Tls) -> None:
    with httpx.Client(base_url=knit.server.api_url, verify=trust(tls.ca)) as http:
        response = http.post(
            "/ui/sign-in",
            data={"token": knit.server.admin_token},
            headers={"Origin": knit.server.api_url},
        )
    assert response.status_code == 303
    assert "; secure" in response.headers["set-cookie"].lower()


def server_exit(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "server",
        "--http",
        "127.0.0.1:0",
        "--data-dir",
        str(tmp_path / "server"),
        "--nats-listen",
        "127.0.0.1:0",
        *flags,
        timeout=30,
    )


def test_a_half_or_unreadable_tls_configuration_is_refused_clearly(
    tls: Tls, tmp_path: Path
) -> None:
    half = server_exit(tmp_path, "--tls-cert", str(tls.cert))
    assert half.returncode != 0 and "--tls-cert and --tls-key go together" in half.stderr
    other_half = server_exit(tmp_path, "--tls-key", str(tls.key))
    assert other_half.returncode != 0 and "go together" in other_half.stderr
    absent = server_exit(tmp_path, "--tls-cert", str(tls.cert), "--tls-key", "/nope/key.pem")
    assert absent.returncode != 0 and "--tls-key /nope/key.pem: cannot read it" in absent.stderr
    swapped = server_exit(tmp_path, "--tls-cert", str(tls.key), "--tls-key", str(tls.cert))
    assert swapped.returncode != 0 and "not a PEM certificate and its key" in swapped.stderr
    for done in (half, other_half, absent, swapped):
        assert "Traceback" not in done.stderr
