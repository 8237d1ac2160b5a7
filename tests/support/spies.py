"""Spies on what an agent asks of its container runtime (the real agent code, on the
simulated runtime), for tests that check what a container would be made of."""

from __future__ import annotations

from typing import Any, Protocol

from knit.runtime.base import ContainerSpec


class HasRuntime(Protocol):
    """An agent of the tests: the real agent code on a runtime."""

    @property
    def runtime(self) -> Any: ...


def spy_on_creates(agent: HasRuntime) -> list[ContainerSpec]:
    """The specs of every container ``agent`` creates from now on (they are still created)."""
    created: list[ContainerSpec] = []
    real = agent.runtime.create

    async def create(spec: ContainerSpec) -> str:
        created.append(spec)
        result: str = await real(spec)
        return result

    agent.runtime.create = create
    return created
