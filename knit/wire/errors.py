"""Errors of the wire layer: a message that cannot be decoded.

Layer: wire. Imports ``knit.errors`` only.
"""

from __future__ import annotations

from knit.errors import KnitError


class WireError(KnitError):
    """A message could not be decoded: not JSON, wrong shape, or an unknown kind.

    Attributes:
        problems: ``{"field", "message"}`` pairs naming what was wrong (may be empty).
    """

    def __init__(self, message: str, problems: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.problems: list[dict[str, str]] = problems or []


class UnsupportedVersion(WireError):
    """A message carries a schema version this build does not speak (a newer peer).

    Attributes:
        version: the version found in the message.
        supported: the version this build speaks.
    """

    def __init__(self, version: object, supported: int) -> None:
        super().__init__(
            f"unsupported message schema version {version!r}: this build speaks v{supported}"
            " (upgrade this process to talk to newer peers)"
        )
        self.version = version
        self.supported = supported


__all__ = ["UnsupportedVersion", "WireError"]
