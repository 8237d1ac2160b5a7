"""The REST API as a user calls it, with the admin token the server wrote
(``<data dir>/admin.token``), read once it exists."""

from __future__ import annotations

import json
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import httpx

from tests.support.knit_processes import TOKEN_FILES, read_admin_token, trust
from tests.support.waiting import T, Watched, wait_until

JSON = dict[str, Any]


class AdminToken(httpx.Auth):
    """Sends ``Authorization: Bearer`` with the token in ``path``, read at the first
    request after the server wrote it (clients are made before their server starts)."""

    def __init__(self, path: Path | None, token: str | None = None) -> None:
        self.path = path
        self.token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Add the header (none while the file does not exist yet)."""
        if self.token is None and self.path is not None:
            self.token = read_admin_token(self.path)
        if self.token is not None:
            request.headers["Authorization"] = f"Bearer {self.token}"
        yield request


class KnitApi:
    """A thin httpx client of one Knit server's REST API, with the waits tests need.

    ``watch`` makes every wait fail fast when a process dies and show the logs when it fails.
    ``token_file`` is the server's ``admin.token``: its token is sent with every request
    (``token`` sends that one instead). ``verify`` is the CA an ``https`` server is checked
    with.
    """

    def __init__(
        self,
        base_url: str,
        watch: Watched | None = None,
        *,
        token_file: Path | None = None,
        token: str | None = None,
        verify: Path | None = None,
    ) -> None:
        self.base_url = base_url
        self.watch = watch
        auth: httpx.Auth | None = None
        if token is None and token_file is None:
            token_file = TOKEN_FILES.get(base_url)
        if token is not None or token_file is not None:
            auth = AdminToken(token_file, token)
        self.http = httpx.Client(base_url=base_url, timeout=15, auth=auth, verify=trust(verify))

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    def logs(self) -> str:
        """The watched processes' log tails ("" without a watch)."""
        return self.watch.logs() if self.watch is not None else ""

    def get(self, path: str) -> httpx.Response:
        """``GET path``."""
        return self.http.get(path)

    def post(self, path: str, body: Any) -> httpx.Response:
        """``POST path`` with ``body`` as JSON."""
        return self.http.post(path, json=body)

    def delete(self, path: str) -> httpx.Response:
        """``DELETE path``."""
        return self.http.delete(path)

    def ok(self, response: httpx.Response, *statuses: int) -> Any:
        """Assert the status (default: any 2xx) and return the JSON body (None if empty)."""
        good = response.status_code in statuses if statuses else response.is_success
        assert good, (
            f"{response.request.method} {response.request.url.path}: "
            f"HTTP {response.status_code} {response.text[:2000]}{self.logs()}"
        )
        return response.json() if response.content else None

    def listing(self, path: str) -> list[JSON]:
        """``GET path`` → the JSON list, asserting 200."""
        data = self.ok(self.get(path), 200)
        assert isinstance(data, list), f"GET {path} is not a JSON list: {data!r}"
        return data

    def nodes(self) -> list[JSON]:
        """``GET /nodes``."""
        return self.listing("/nodes")

    def deployment(self, deployment_id: str) -> JSON:
        """``GET /deployments/{id}``, asserting 200."""
        data = self.ok(self.get(f"/deployments/{deployment_id}"), 200)
        assert isinstance(data, dict)
        return data

    def instances_of(self, deployment_id: str) -> list[JSON]:
        """The ``instances`` of ``GET /deployments/{id}``."""
        instances = self.deployment(deployment_id).get("instances")
        assert isinstance(instances, list), f"deployment {deployment_id} has no instances list"
        return instances

    def wait(
        self,
        predicate: Callable[[], T | None],
        *,
        timeout: float = 30.0,
        what: str,
        describe: Callable[[], str] | None = None,
    ) -> T:
        """``wait_until`` with this API's watch."""
        return wait_until(
            predicate, timeout=timeout, what=what, watch=self.watch, describe=describe
        )

    def describe_instances(self, deployment_id: str) -> str:
        """The deployment's instances as JSON, for failure messages."""
        return json.dumps(self.instances_of(deployment_id))

    def wait_healthy_nodes(self, count: int, timeout: float = 30.0) -> list[JSON]:
        """Wait until at least ``count`` nodes are healthy; return the healthy ones."""

        def healthy() -> list[JSON] | None:
            nodes = [n for n in self.nodes() if n.get("status") == "healthy"]
            return nodes if len(nodes) >= count else None

        return self.wait(healthy, timeout=timeout, what=f"{count} healthy node(s)")

    def wait_instances(
        self,
        deployment_id: str,
        status: str,
        count: int = 1,
        timeout: float = 60.0,
    ) -> list[JSON]:
        """Wait until exactly ``count`` instances exist and all have ``status``; return them.

        Fails at once when an instance reaches ``error`` while another status is awaited.
        """

        def reached() -> list[JSON] | None:
            instances = self.instances_of(deployment_id)
            if status != "error":
                failed = [i for i in instances if i.get("status") == "error"]
                assert not failed, (
                    f"deployment {deployment_id}: instance in error while waiting for "
                    f"{status}: {failed}{self.logs()}"
                )
            if len(instances) == count and all(i.get("status") == status for i in instances):
                return instances
            return None

        return self.wait(
            reached,
            timeout=timeout,
            what=f"deployment {deployment_id}: {count} instance(s) {status}",
            describe=lambda: self.describe_instances(deployment_id),
        )

    def wait_gone(self, deployment_id: str, timeout: float = 30.0) -> None:
        """Wait until ``GET /deployments/{id}`` answers 404."""
        self.wait(
            lambda: self.get(f"/deployments/{deployment_id}").status_code == 404,
            timeout=timeout,
            what=f"deployment {deployment_id} gone (404)",
        )
