"""``HealthCheck``: the health check a deployment asks Docker to run in its containers.

Layer: domain. Pure: imports pydantic, ``knit.domain.spec_rules`` and the standard library.
The agent turns it into Docker's ``Healthcheck`` (``knit.runtime.docker_translation``).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, StrictInt, field_validator

from knit.domain.spec_rules import INPUT, PositiveSeconds, Seconds, problem


class HealthCheck(BaseModel):
    """A health check Docker runs in the container (its ``Healthcheck``).

    ``command`` is run as is (exec form); ``["CMD-SHELL", "..."]`` runs a shell line, and a
    leading ``"CMD"`` is accepted too. Times are seconds.
    """

    model_config = INPUT

    command: Annotated[list[str], Field(min_length=1)]
    interval: PositiveSeconds = 10.0
    timeout: PositiveSeconds = 5.0
    retries: Annotated[StrictInt, Field(ge=1, le=1000)] = 3
    start_period: Seconds = 0.0

    @field_validator("command")
    @classmethod
    def _command(cls, value: list[str]) -> list[str]:
        if value[0] in ("NONE",):
            raise problem("to have no health check, leave health_check out")
        if value[0] in ("CMD", "CMD-SHELL") and len(value) < 2:
            raise problem(f"{value[0]!r} must be followed by the command")
        if any("\x00" in part for part in value):
            raise problem("must not contain NUL characters")
        return value


__all__ = ["HealthCheck"]
