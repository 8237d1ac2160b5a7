"""A small synchronous client of Knit's REST API, used by the CLI.

Layer: adapter (HTTP client); imports httpx and the standard library.

It sends an API token as ``Authorization: Bearer``; :func:`find_token` says which one the
CLI uses: ``--token``, else ``KNIT_TOKEN``, else the file named by ``KNIT_TOKEN_FILE``, else
``.knit/admin.token`` in the current folder (where ``knit dev`` writes the first admin
token). An ``https`` API is checked against the system's CAs, or the ``--ca-file`` given
(``KNIT_CA_FILE``).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx

from knit.errors import KnitError

JSON = dict[str, Any]
TOKEN_ENV = "KNIT_TOKEN"
TOKEN_FILE_ENV = "KNIT_TOKEN_FILE"
CA_FILE_ENV = "KNIT_CA_FILE"
DEV_TOKEN_FILE = Path(".knit") / "admin.token"


@dataclass(frozen=True)
class FoundToken:
    """An API token and where it came from (for messages; never the token itself)."""

    secret: str
    source: str


def read_token_file(path: Path) -> str:
    """The token held in ``path`` (its first line, stripped).

    Raises:
        KnitError: the file cannot be read or is empty.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not text"
        raise KnitError(f"cannot read the token file {path}: {reason}") from exc
    lines = text.strip().splitlines()
    if not lines or not lines[0].strip():
        raise KnitError(f"the token file {path} is empty")
    return lines[0].strip()


def find_token(
    given: str | None, environ: Mapping[str, str] = os.environ, cwd: Path | None = None
) -> FoundToken | None:
    """The API token to send: ``given`` (``--token``), else ``KNIT_TOKEN``, else the file
    named by ``KNIT_TOKEN_FILE``, else ``.knit/admin.token`` under ``cwd`` (the current
    folder) if it exists; None if there is none.

    Raises:
        KnitError: ``KNIT_TOKEN_FILE`` (or ``.knit/admin.token``) cannot be read.
    """
    if given:
        return FoundToken(given.strip(), "--token")
    if environ.get(TOKEN_ENV, "").strip():
        return FoundToken(environ[TOKEN_ENV].strip(), TOKEN_ENV)
    named = environ.get(TOKEN_FILE_ENV, "").strip()
    if named:
        return FoundToken(read_token_file(Path(named)), f"{TOKEN_FILE_ENV}={named}")
    dev = (cwd or Path.cwd()) / DEV_TOKEN_FILE
    if dev.is_file():
        return FoundToken(read_token_file(dev), str(DEV_TOKEN_FILE))
    return None


def tls_verify(ca_file: str | None) -> ssl.SSLContext | bool:
    """What httpx checks an ``https`` server with: the CA file given, else the system's.

    Raises:
        KnitError: ``ca_file`` cannot be read or holds no certificate.
    """
    if not ca_file:
        return True
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise KnitError(f"cannot use the CA file {ca_file}: {exc}") from exc


class ApiError(KnitError):
    """The API answered with an error, or could not be reached."""

    def __init__(self, message: str, status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class ApiUnreachable(ApiError):
    """No answer from the API: nothing listens there, or the connection failed."""


class ApiClient:
    """Talks to one Knit server. Every call raises :class:`ApiError` on failure.

    Args:
        base_url: the API's URL (``http://`` or ``https://``).
        token: the API token to send, if any.
        ca_file: a PEM file of the CA (or the self-signed certificate) to trust for an
            ``https`` API, instead of the system's.
        timeout: seconds per request.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: FoundToken | None = None,
        ca_file: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        headers = {"Authorization": f"Bearer {token.secret}"} if token is not None else {}
        self._http = httpx.Client(
            base_url=self.base_url, timeout=timeout, headers=headers, verify=tls_verify(ca_file)
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _call(
        self, method: str, path: str, body: Any = None, params: Mapping[str, Any] | None = None
    ) -> Any:
        try:
            response = self._http.request(method, path, json=body, params=params)
        except httpx.HTTPError as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                raise ApiError(
                    f"the Knit API at {self.base_url} has a certificate this machine does "
                    "not trust: give its CA with --ca-file FILE (or KNIT_CA_FILE)"
                ) from exc
            raise ApiUnreachable(
                f"cannot reach the Knit API at {self.base_url} ({type(exc).__name__}): "
                "is `knit dev` or `knit server` running? (--api URL or KNIT_API set it)"
            ) from exc
        if response.status_code == 204 or not response.content:
            if response.is_error:
                raise ApiError(
                    f"{method} {path}: HTTP {response.status_code}", response.status_code
                )
            return None
        try:
            data = response.json()
        except ValueError as exc:
            raise ApiError(
                f"{method} {path}: HTTP {response.status_code}, not JSON", response.status_code
            ) from exc
        if response.is_error:
            raise ApiError(
                self._explain(method, path, response.status_code, data), response.status_code, data
            )
        return data

    def _explain(self, method: str, path: str, status: int, body: Any) -> str:
        """One line for an error answer: what went wrong and what to do about it."""
        said = describe_error(body, status)
        if status == 401:
            reason = said.removeprefix(f"HTTP {status}: ")
            if self.token is None:
                return (
                    f"the server wants an API token (HTTP 401: {reason}): pass --token, set "
                    f"KNIT_TOKEN or KNIT_TOKEN_FILE, or run from the folder holding "
                    f"{DEV_TOKEN_FILE}"
                )
            return (
                f"the server refused the token from {self.token.source} (HTTP 401: {reason}): "
                "set --token or KNIT_TOKEN to a valid one"
            )
        if status == 403:
            return f"{said} (ask an admin for a token with that role: knit token create)"
        if status == 404 and isinstance(body, dict) and "requested URL" in str(body.get("error")):
            # Quart's own 404: no such route, not an unknown entity.
            return (
                f"the server at {self.base_url} has no {method} {path.split('?')[0]} "
                "(HTTP 404): is it an older Knit than this client?"
            )
        return said

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """Any request: the JSON answer (None if empty).

        Raises:
            ApiError: the API refused it or could not be reached.
        """
        return self._call(method, path, body)

    def nodes(self) -> list[JSON]:
        """``GET /nodes``."""
        return cast(list[JSON], self._call("GET", "/nodes"))

    def deployments(self) -> list[JSON]:
        """``GET /deployments``."""
        return cast(list[JSON], self._call("GET", "/deployments"))

    def deployment(self, deployment_id: str) -> JSON:
        """``GET /deployments/{id}``."""
        return cast(JSON, self._call("GET", f"/deployments/{deployment_id}"))

    def create_deployment(self, spec: JSON) -> JSON:
        """``POST /deployments``."""
        return cast(JSON, self._call("POST", "/deployments", spec))

    def update_deployment(self, deployment_id: str, spec: JSON) -> JSON:
        """``PUT /deployments/{id}``: a full spec; a changed one makes a new version."""
        return cast(JSON, self._call("PUT", f"/deployments/{deployment_id}", spec))

    def scale_deployment(self, deployment_id: str, replicas: int) -> JSON:
        """``POST /deployments/{id}/scale``."""
        body = {"replicas": replicas}
        return cast(JSON, self._call("POST", f"/deployments/{deployment_id}/scale", body))

    def deployment_versions(self, deployment_id: str) -> list[JSON]:
        """``GET /deployments/{id}/versions``: newest first."""
        return cast(list[JSON], self._call("GET", f"/deployments/{deployment_id}/versions"))

    def rollback_deployment(self, deployment_id: str, version: int | None = None) -> JSON:
        """``POST /deployments/{id}/rollback``: to ``version``, or (None) to the latest
        stable version before the current one. Answers the deployment at its new version."""
        body = None if version is None else {"version": version}
        return cast(JSON, self._call("POST", f"/deployments/{deployment_id}/rollback", body))

    def delete_deployment(self, deployment_id: str) -> None:
        """``DELETE /deployments/{id}``."""
        self._call("DELETE", f"/deployments/{deployment_id}")

    def instances(self) -> list[JSON]:
        """``GET /instances``."""
        return cast(list[JSON], self._call("GET", "/instances"))

    def stream_text(self, path: str, params: Mapping[str, str]) -> Iterator[str]:
        """``GET path`` answered as a text stream: its pieces as they arrive, without a
        read deadline (a followed stream is quiet as long as its source is).

        Raises:
            ApiError: the API refused it or could not be reached (also mid-stream).
        """
        timeout = httpx.Timeout(self._http.timeout.connect, read=None)
        try:
            with self._http.stream("GET", path, params=dict(params), timeout=timeout) as response:
                if response.is_error:
                    response.read()
                    try:
                        body: Any = response.json()
                    except ValueError:
                        body = response.text
                    status = response.status_code
                    raise ApiError(self._explain("GET", path, status, body), status, body)
                yield from response.iter_text()
        except httpx.HTTPError as exc:
            raise ApiUnreachable(
                f"the log stream from {self.base_url} broke ({type(exc).__name__})"
            ) from exc

    def find_deployment(self, name: str) -> JSON | None:
        """The live deployment named ``name`` (one being deleted is not), or None."""
        return next((d for d in self.deployments() if d.get("name") == name), None)

    def events(
        self, *, limit: int = 100, deployment_id: str | None = None, node_id: str | None = None
    ) -> list[JSON]:
        """``GET /events``: the newest ``limit`` events, newest first."""
        query: dict[str, str | int] = {"limit": limit}
        if deployment_id:
            query["deployment_id"] = deployment_id
        if node_id:
            query["node_id"] = node_id
        return cast(list[JSON], self._call("GET", "/events", params=query))


def describe_error(body: Any, status: int) -> str:
    """Turn an API error body (``{"error": ..., "errors": [{field, message}]}``) into a line."""
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list) and errors:
            parts = [
                f"{e.get('field', '?')}: {e.get('message', '?')}"
                for e in errors
                if isinstance(e, dict)
            ]
            return f"HTTP {status}: " + "; ".join(parts)
        if "error" in body:
            return f"HTTP {status}: {body['error']}"
    return f"HTTP {status}: {body!r}"
