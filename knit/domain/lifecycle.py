"""What users submit to change a running deployment besides its spec: scale it, roll it back.

Layer: domain. Pure: imports pydantic and ``knit.domain.spec_rules``.

- :class:`ScaleSpec` (``POST /deployments/{id}/scale``): the new number of replicas.
- :class:`RollbackSpec` (``POST /deployments/{id}/rollback``): the version to go back to, or
  none (an empty body): the newest stable version before the current one.

A new spec is a whole ``knit.domain.specs.DeploymentSpec`` (``PUT /deployments/{id}``).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from knit.domain.spec_rules import MAX_REPLICAS


class ScaleSpec(BaseModel):
    """``POST /deployments/{id}/scale``: instances of the current version to run (a server
    allows at most its ``--max-replicas``)."""

    model_config = ConfigDict(extra="forbid")

    replicas: Annotated[StrictInt, Field(ge=0, le=MAX_REPLICAS)]


class RollbackSpec(BaseModel):
    """``POST /deployments/{id}/rollback``: ``version`` to go back to (None: the newest
    stable version before the current one)."""

    model_config = ConfigDict(extra="forbid")

    version: Annotated[StrictInt, Field(ge=1)] | None = None


__all__ = ["RollbackSpec", "ScaleSpec"]
