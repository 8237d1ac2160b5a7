"""``UpdatePolicy``: how a changed deployment spec is rolled out, and its enums.

Layer: domain. Pure: imports pydantic, ``knit.domain.spec_rules`` and the standard library.
The reconciler reads it through ``knit.domain.rollout``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, Field, StrictInt

from knit.domain.spec_rules import INPUT, MAX_REPLICAS, PositiveSeconds, Seconds


class UpdateOrder(StrEnum):
    """How a rollout replaces an instance: stop the old one first, or start the new one first."""

    STOP_FIRST = "stop_first"
    START_FIRST = "start_first"


class OnFailure(StrEnum):
    """What a rollout does when a batch is not healthy within ``healthy_deadline``."""

    PAUSE = "pause"
    ROLLBACK = "rollback"


class UpdatePolicy(BaseModel):
    """How a changed spec is rolled out (Nomad's ``update`` block, Swarm's ``update_config``).

    Attributes:
        max_parallel: instances replaced at a time (a batch).
        order: ``stop_first`` (stop an old instance, then start its replacement) or
            ``start_first`` (start the new one, stop the old one once the new one is healthy).
        min_healthy_time: seconds an instance without a health check must run to be healthy.
        healthy_deadline: seconds a batch has to become healthy.
        on_failure: ``pause`` the rollout, or ``rollback`` to the last stable version.
    """

    model_config = INPUT

    max_parallel: Annotated[StrictInt, Field(ge=1, le=MAX_REPLICAS)] = 1
    order: UpdateOrder = UpdateOrder.STOP_FIRST
    min_healthy_time: Seconds = 10.0
    healthy_deadline: PositiveSeconds = 300.0
    on_failure: OnFailure = OnFailure.PAUSE


__all__ = ["OnFailure", "UpdateOrder", "UpdatePolicy"]
