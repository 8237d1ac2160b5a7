"""Knit's one exception tree.

Layer: shared by every layer; imports nothing from Knit. Adapters (NATS, Docker, SQL, HTTP)
translate their library's errors into these with ``raise ... from exc`` at the boundary, so
callers only ever catch ``KnitError`` subclasses.
"""

from __future__ import annotations


class KnitError(Exception):
    """Root of every error Knit raises on purpose."""


class ValidationError(KnitError):
    """Input that breaks a rule; ``field`` names where (dotted path), ``message`` says what."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class Invalid(KnitError):
    """Several field errors at once: ``errors`` is a list of ``{"field", "message"}``."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))
        self.errors = errors


class NotFound(KnitError):
    """A referenced entity does not exist."""

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"{kind} {key!r} not found")
        self.kind = kind
        self.key = key


class Conflict(KnitError):
    """The request clashes with stored state (a duplicate name, an entity still in use)."""


class TemplateError(KnitError):
    """A configuration template failed to parse or render."""


class SecretError(KnitError):
    """A secret could not be encrypted, decrypted, sealed or unsealed."""


class RuntimeFailure(KnitError):
    """The container runtime (Docker Engine) refused or failed an operation.

    ``step`` names what was being done: "auth", "pull", "network", "create", "start", "stop",
    "remove", "inspect", "list".
    """

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step
        self.message = message


class RuntimeUnavailable(KnitError):
    """No container runtime answers (the Docker socket is absent or refuses connections)."""


class BusError(KnitError):
    """The message bus (NATS) failed: not connected, timed out, or refused a message."""


class NoResponders(BusError):
    """A request nobody subscribes to: NATS said so at once."""


class StoreError(KnitError):
    """The state store (SQLite) failed."""


class Fenced(StoreError):
    """A write of a leader that no longer holds the leader lease: refused, nothing written
    (``knit.store.leases``)."""


class Unauthorized(KnitError):
    """A credential (an API token, a join token) is missing, unknown, expired, revoked or
    used up; the API answers 401. The message is one line and never holds the secret."""
