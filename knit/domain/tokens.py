"""What users submit to make tokens, and the rule that admits a join token.

Layer: domain. Pure: imports pydantic, ``knit.domain.auth`` and ``knit.domain.specs``.

- :class:`TokenSpec` (``POST /tokens``): a name, a role, an optional time to live.
- :class:`JoinTokenSpec` (``POST /join-tokens``): a time to live (1 hour by default) and a
  number of uses (1 by default: one node).
- :func:`join_token_refusal`: why a join token cannot admit one more node, or None.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from knit.domain.auth import Role
from knit.domain.specs import Name

MAX_TTL = 10 * 365 * 24 * 3600.0
"""The longest time to live of a token, in seconds (ten years)."""
DEFAULT_JOIN_TTL = 3600.0
"""Seconds a join token lives unless told otherwise."""
MAX_JOIN_USES = 1_000_000
"""The most nodes one join token may admit."""

Ttl = Annotated[float, Field(strict=True, gt=0, le=MAX_TTL, allow_inf_nan=False)]


class TokenSpec(BaseModel):
    """``POST /tokens``: a new API token.

    Attributes:
        name: 1 to 63 of ``[a-z0-9-]``, unique among tokens.
        role: ``read``, ``deploy`` or ``admin``.
        ttl: seconds until it expires; ``None``: it never does.
    """

    model_config = ConfigDict(extra="forbid")

    name: Name
    role: Role
    ttl: Ttl | None = None


class JoinTokenSpec(BaseModel):
    """``POST /join-tokens``: a new join token.

    Attributes:
        ttl: seconds until it expires (1 hour by default).
        uses: how many nodes it may admit (1 by default).
    """

    model_config = ConfigDict(extra="forbid")

    ttl: Ttl = DEFAULT_JOIN_TTL
    uses: Annotated[StrictInt, Field(ge=1, le=MAX_JOIN_USES)] = 1


def join_token_refusal(
    *, revoked: bool, expires_at: float, uses: int, used: int, now: float
) -> str | None:
    """Why a join token cannot admit one more node at ``now``, or None if it can.

    The reasons are the one-line messages a refused agent shows: ``join token revoked``,
    ``join token expired``, ``join token used up`` (checked in that order).
    """
    if revoked:
        return "join token revoked"
    if now >= expires_at:
        return "join token expired"
    if used >= uses:
        return "join token used up"
    return None
