"""What the API attack tests share: a real ``knit server`` (no agent), the route table,
tokens of each role, and a certificate authority made on the spot for TLS.

Nothing here imports Knit's server code: the server runs as a child process
(``tests.support.knit_processes``) and is driven over HTTP and the ``knit`` command only.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.knit import KnitCluster
from tests.support.knit_api import KnitApi
from tests.support.knit_processes import KnitServer, trust

ROLES = ("read", "deploy", "admin")


@dataclass(frozen=True)
class Route:
    """One route of the API: a request that changes nothing if let in (bodies that fail
    validation, unknown ids), and the weakest role allowed."""

    method: str
    path: str
    role: str
    body: Any = None

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


ROUTES = [
    Route("GET", "/nodes", "read"),
    Route("GET", "/nodes/nope", "read"),
    Route("GET", "/mesh", "read"),
    Route("POST", "/nodes/nope/drain", "admin"),
    Route("POST", "/nodes/nope/eligible", "admin"),
    Route("DELETE", "/nodes/nope", "admin"),
    Route("GET", "/registries", "read"),
    Route("POST", "/registries", "admin", {}),
    Route("DELETE", "/registries/nope", "admin"),
    Route("GET", "/networks", "read"),
    Route("POST", "/networks", "admin", {}),
    Route("DELETE", "/networks/nope", "admin"),
    Route("GET", "/deployments", "read"),
    Route("POST", "/deployments", "deploy", {}),
    Route("GET", "/deployments/nope", "read"),
    Route("DELETE", "/deployments/nope", "deploy"),
    Route("PUT", "/deployments/nope", "deploy", {}),
    Route("POST", "/deployments/nope/scale", "deploy", {}),
    Route("POST", "/deployments/nope/rollback", "deploy", {}),
    Route("GET", "/deployments/nope/versions", "read"),
    Route("GET", "/deployments/nope/logs", "read"),
    Route("GET", "/instances/nope/logs", "read"),
    Route("GET", "/instances", "read"),
    Route("GET", "/events", "read"),
    Route("GET", "/status", "read"),
    Route("GET", "/servers", "read"),
    Route("GET", "/metrics", "read"),
    Route("GET", "/openapi.json", "read"),
    Route("GET", "/tokens", "admin"),
    Route("POST", "/tokens", "admin", {}),
    Route("DELETE", "/tokens/nope", "admin"),
    Route("GET", "/join-tokens", "admin"),
    Route("POST", "/join-tokens", "admin", {"uses": 0}),
    Route("DELETE", "/join-tokens/nope", "admin"),
    Route("POST", "/bus-credentials", "admin", {}),
    Route("GET", "/no/such/route", "read"),
    Route("POST", "/no/such/route", "admin", {}),
]
"""Every route of the API (the unknown ones too); ``POST /join`` is checked by its own
tests (a join token, not an API token, lets it in) and ``GET /healthz`` needs nothing."""

NOT_API_TOKEN_ROUTES = {("post", "/join"), ("get", "/healthz")}


def docker_host() -> str:
    """The Engine the server is told about (a server alone never calls it)."""
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


@contextlib.contextmanager
def api_server(workdir: Path, **server: Any) -> Iterator[KnitCluster]:
    """A started ``knit server`` without agents; ``server`` goes to ``KnitServer``."""
    cluster = KnitCluster(workdir, docker_host())
    if server:
        cluster.server = KnitServer(workdir, docker_host(), **server)
        cluster.watch.processes[0] = cluster.server
        cluster.api.close()
        cluster.api = KnitApi(
            cluster.server.api_url,
            cluster.watch,
            token_file=cluster.server.token_file,
            verify=cluster.server.ca_file,
        )
    try:
        cluster.start(agents=())
        yield cluster
    finally:
        cluster.close()


def make_token(cluster: KnitCluster, role: str, name: str, ttl: float | None = None) -> str:
    """A new API token of ``role`` (made with the admin token); its secret."""
    body: dict[str, Any] = {"name": name, "role": role}
    if ttl is not None:
        body["ttl"] = ttl
    created = cluster.api.ok(cluster.api.post("/tokens", body), 201)
    assert isinstance(created, dict)
    return str(created["token"])


def call(
    cluster: KnitCluster,
    route: Route,
    token: str | None,
    *,
    authorization: str | None = None,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """``route`` sent with ``token`` (none: no Authorization header; ``authorization``: that
    header as given) and ``headers`` on a fresh client."""
    headers = dict(headers or {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if authorization is not None:
        headers["Authorization"] = authorization
    verify = trust(cluster.server.ca_file)
    with httpx.Client(base_url=cluster.server.api_url, timeout=15, verify=verify) as http:
        return http.request(route.method, route.path, json=route.body, headers=headers, **kwargs)


# -- TLS ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tls:
    """A CA, and a server certificate for 127.0.0.1 and localhost it signed (PEM files)."""

    ca: Path
    cert: Path
    key: Path


def make_tls(folder: Path) -> Tls:
    """Make a throwaway CA and a server certificate under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "knit test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    tls = Tls(ca=folder / "ca.pem", cert=folder / "server.pem", key=folder / "server.key")
    tls.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    tls.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    tls.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    tls.key.chmod(0o600)
    return tls
