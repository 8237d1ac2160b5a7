"""What each instance of a deployment reserves and may use: ``Resources`` (cpu, memory).

Layer: domain. Pure: imports pydantic, ``knit.domain.spec_rules`` and the standard library.

Memory sizes are read as Docker's ``--memory`` reads them: every unit is binary (decision
0019); :func:`format_bytes` writes them back.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, Field

from knit.domain.spec_rules import INPUT, problem

MIN_MEMORY_BYTES = 6 * 1024 * 1024
"""The smallest memory limit Docker accepts (6 MiB)."""
MIN_CPU = 0.01
"""The smallest CPU limit Docker accepts (a hundredth of a core)."""
MAX_CPU = 4096.0
_MEMORY_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*(?:([kmgt])(?:i?b)?|b)?$", re.IGNORECASE)
_MEMORY_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_memory(value: object) -> int:
    """A memory size in bytes: an integer (bytes), or a string ``"256MiB"``, ``"1GiB"``,
    ``"512M"``, ``"64k"``, ``"1048576"``.

    Every unit is binary, as Docker's ``--memory`` reads them: ``M``, ``MB`` and ``MiB`` all
    mean 2^20 bytes (decision 0019).

    Raises:
        ValueError: with a readable message.
    """
    if isinstance(value, bool):
        raise ValueError("must be a number of bytes or a size such as '256MiB'")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, str):
        raise ValueError("must be a number of bytes or a size such as '256MiB'")
    match = _MEMORY_RE.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"{value!r} is not a size: use bytes or a unit, e.g. '256MiB', '1GiB'")
    number, unit = match.group(1), (match.group(2) or "").lower()
    size = float(number) * _MEMORY_UNITS[unit]
    if not size.is_integer():
        raise ValueError(f"{value!r} is not a whole number of bytes")
    return int(size)


def format_bytes(size: int) -> str:
    """``size`` bytes in the largest binary unit that divides it (``"256MiB"``), else bytes."""
    for unit, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B" if size else "0"


def _memory(value: object) -> object:
    try:
        size = parse_memory(value)
    except ValueError as exc:
        raise problem(str(exc)) from None
    if size < MIN_MEMORY_BYTES:
        raise problem(
            f"must be at least {format_bytes(MIN_MEMORY_BYTES)} (Docker's smallest limit)"
        )
    return size


def _cpu(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise problem("must be a number of CPU cores, e.g. 0.5")
    if not MIN_CPU <= value <= MAX_CPU:
        raise problem(f"must be between {MIN_CPU} and {MAX_CPU:g} cores")
    return float(value)


class Resources(BaseModel):
    """What each instance of a deployment reserves on its node, and may use at most.

    Attributes:
        cpu: CPU cores (``0.5``: half a core); Docker's ``NanoCpus``. None: no limit.
        memory: bytes (given as ``"256MiB"``, ``"1GiB"``, ``"512M"`` or an integer);
            Docker's ``Memory``: a container above it is killed. None: no limit.
    """

    model_config = INPUT

    cpu: Annotated[float, BeforeValidator(_cpu), Field(ge=MIN_CPU, le=MAX_CPU)] | None = None
    memory: (
        Annotated[
            int,
            BeforeValidator(_memory),
            Field(
                ge=MIN_MEMORY_BYTES,
                json_schema_extra={"description": "bytes, or a size such as '256MiB'"},
            ),
        ]
        | None
    ) = None


__all__ = [
    "MAX_CPU",
    "MIN_CPU",
    "MIN_MEMORY_BYTES",
    "Resources",
    "format_bytes",
    "parse_memory",
]
