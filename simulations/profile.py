"""How a simulated host behaves: ``SimProfile``, shared by many ``SimRuntime``s, and the
image reference helpers both use.

Layer: simulations. Standard library only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

Latency = float | tuple[float, float]
"""Seconds: fixed, or ``(low, high)`` for a uniform random delay."""

_STEPS = ("pull", "create", "start", "stop")


def normalize_image(image: str) -> str:
    """Return ``image`` with Docker's implicit ``:latest`` tag (a digest is kept as is)."""
    if "@" in image or ":" in image.rsplit("/", 1)[-1]:
        return image
    return f"{image}:latest"


def registry_of(image: str) -> str:
    """Return the registry host an image reference names ("docker.io" when none)."""
    first, slash, _ = image.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


@dataclass(frozen=True)
class SimProfile:
    """How a simulated host behaves; one profile is shared by many ``SimRuntime``s.

    Attributes:
        pull_latency: seconds a pull takes; also ``create_latency``, ``start_latency`` and
            ``stop_latency``. Fixed, or ``(low, high)`` for a uniform random delay.
        pull_failure_rate: probability (0-1) that an otherwise valid pull fails; also
            ``create_failure_rate``, ``start_failure_rate`` (the container stays as it was)
            and ``stop_failure_rate`` (it keeps running).
        auth: registry host → (username, password) that registry requires.
        registry_images: the images the registries hold; None: every reference pulls.
        preloaded_images: images present on every host from the start.
        stop_exit_code: exit code of a container stopped by SIGTERM (stop, engine restart).
        seed: seeds each runtime's generator together with the runtime's name, so hosts
            differ yet runs repeat; None for a nondeterministic run.
        cpus: CPUs reported by ``info``; ``memory_bytes`` and ``version`` likewise.
    """

    pull_latency: Latency = 0.0
    create_latency: Latency = 0.0
    start_latency: Latency = 0.0
    stop_latency: Latency = 0.0
    pull_failure_rate: float = 0.0
    create_failure_rate: float = 0.0
    start_failure_rate: float = 0.0
    stop_failure_rate: float = 0.0
    auth: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    registry_images: frozenset[str] | None = None
    preloaded_images: frozenset[str] = frozenset()
    stop_exit_code: int = 0
    seed: int | None = 0
    cpus: int = 4
    memory_bytes: int = 8 * 2**30
    version: str = "20.10.24+sim"

    def __post_init__(self) -> None:
        for step in _STEPS:
            latency = getattr(self, f"{step}_latency")
            low, high = latency if isinstance(latency, tuple) else (latency, latency)
            if not 0 <= low <= high < math.inf:
                raise ValueError(f"{step}_latency must be seconds >= 0, or [low, high]")
            if not 0 <= getattr(self, f"{step}_failure_rate") <= 1:
                raise ValueError(f"{step}_failure_rate must be between 0 and 1")
        if self.cpus < 1 or self.memory_bytes < 1:
            raise ValueError("cpus and memory_bytes must be positive")
        # Compare references the way Docker does ("app" is "app:latest").
        preloaded = frozenset(map(normalize_image, self.preloaded_images))
        object.__setattr__(self, "preloaded_images", preloaded)
        if self.registry_images is not None:
            known = frozenset(map(normalize_image, self.registry_images))
            object.__setattr__(self, "registry_images", known)


__all__ = ["Latency", "SimProfile", "normalize_image", "registry_of"]
