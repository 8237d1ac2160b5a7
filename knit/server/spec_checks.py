"""The checks a submitted deployment spec passes beyond its model, and the references they
need (the registry credentials and networks a spec may name), kept in memory.

Layer: server. Used by the ``ServerPlane`` for ``POST /deployments`` and ``PUT``.
"""

from __future__ import annotations

import anyio

from knit.domain.specs import DeploymentSpec
from knit.domain.validation import (
    check_network_attachments,
    check_references,
    check_registry,
    check_replicas,
    check_template_syntax,
)
from knit.errors import Invalid
from knit.server.repo import Repo

SYNTAX_CHECKS = 1
"""Deployments whose templates are syntax-checked at once (each in a thread: a check holds
the interpreter's lock most of its time, so more at once would only slow the event loop)."""


class SpecChecks:
    """``check`` a spec against this server's limit and the stored references.

    Args:
        repo: the store.
        max_replicas: ``--max-replicas``.
    """

    def __init__(self, repo: Repo, max_replicas: int) -> None:
        self.repo = repo
        self.max_replicas = max_replicas
        self._references: tuple[dict[str, str], dict[str, str]] | None = None
        self._references_token: object = None
        self._syntax_checks = anyio.CapacityLimiter(SYNTAX_CHECKS)

    def forget_references(self) -> None:
        """The credentials or networks changed: read them again next time."""
        self._references = None
        self._references_token = None  # a read under way must not keep what it read

    async def references(self) -> tuple[dict[str, str], dict[str, str]]:
        """The registry credentials' URLs by id and the networks' drivers by name, that
        deployments may name.

        Kept in memory between changes: the plane makes every change to them, and each
        forgets the copy (before and after its write: a read racing the write cannot keep
        a stale one); another server's change is told (``ServerPlane.take_notice``). Reading
        both tables on every ``POST /deployments`` was a third of the reads while 10,000
        deployments were created.
        """
        cached = self._references
        if cached is None:
            token = object()
            self._references_token = token
            cached = (await self.repo.credential_urls(), await self.repo.network_drivers())
            if self._references_token is token:
                self._references = cached
        return cached

    async def check(self, spec: DeploymentSpec) -> None:
        """``replicas`` within ``--max-replicas``, credentials and networks that exist and
        fit, templates that parse.

        Raises:
            Invalid: every problem found.
        """
        registries, networks = await self.references()
        errors = (
            check_replicas(spec, self.max_replicas)
            + check_references(spec, registries, networks)
            + check_network_attachments(spec, networks)
            + check_registry(spec, registries)
        )
        if spec.templates:
            # Up to 16 x 64 KiB to parse and compile: outside the event loop, one at a time.
            errors += await anyio.to_thread.run_sync(
                check_template_syntax, spec, limiter=self._syntax_checks
            )
        if errors:
            raise Invalid(errors)


__all__ = ["SYNTAX_CHECKS", "SpecChecks"]
