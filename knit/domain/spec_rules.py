"""Rules shared by the models of what users submit (``knit.domain.specs`` and its parts).

Layer: domain. Pure: imports pydantic and the standard library.

A model's validator raises :func:`problem`; ``knit.domain.validation.errors_from_pydantic``
turns it into ``{"field": ..., "message": ...}``, the field path extended by ``at``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field, StrictFloat
from pydantic_core import PydanticCustomError

MAX_REPLICAS = 1_000_000
"""The most replicas any deployment may ask for; a server allows fewer (``--max-replicas``)."""

INPUT = ConfigDict(extra="forbid")
"""The configuration of an input model: unknown fields are refused."""

Seconds = Annotated[StrictFloat, Field(ge=0, le=86_400)]
PositiveSeconds = Annotated[StrictFloat, Field(gt=0, le=86_400)]


def problem(message: str, at: str | None = None) -> PydanticCustomError:
    """A validation problem; ``at`` extends the field path (``"1.destination"``)."""
    ctx: dict[str, str] = {"reason": message}
    if at is not None:
        ctx["at"] = at
    return PydanticCustomError("knit", "{reason}", ctx)


__all__ = ["INPUT", "MAX_REPLICAS", "PositiveSeconds", "Seconds", "problem"]
