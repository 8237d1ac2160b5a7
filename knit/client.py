"""A small synchronous client of Knit's REST API, used by the CLI.

Layer: adapter (HTTP client); imports httpx and the standard library.
"""

from __future__ import annotations

from typing import Any, cast

import httpx

from knit.errors import KnitError

JSON = dict[str, Any]


class ApiError(KnitError):
    """The API answered with an error, or could not be reached."""

    def __init__(self, message: str, status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class ApiClient:
    """Talks to one Knit server. Every call raises :class:`ApiError` on failure."""

    def __init__(self, base_url: str, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            response = self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise ApiError(
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
            raise ApiError(describe_error(data, response.status_code), response.status_code, data)
        return data

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

    def delete_deployment(self, deployment_id: str) -> None:
        """``DELETE /deployments/{id}``."""
        self._call("DELETE", f"/deployments/{deployment_id}")

    def instances(self) -> list[JSON]:
        """``GET /instances``."""
        return cast(list[JSON], self._call("GET", "/instances"))

    def resolve_deployment(self, name_or_id: str) -> JSON:
        """Find a deployment by id, or else by name.

        Raises:
            ApiError: no deployment has that id or name.
        """
        for deployment in self.deployments():
            if name_or_id in (deployment.get("id"), deployment.get("name")):
                return deployment
        raise ApiError(f"no deployment named or with id {name_or_id!r}", 404)


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
