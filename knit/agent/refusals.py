"""Counting refused messages (forged, misaddressed, stale) with one log line a second at most:
a flood of forgeries must not flood the agent's log.

Layer: agent. Standard library only.
"""

from __future__ import annotations

import logging
import time


class Refusals:
    """The refusals of one intake: counted, and logged at most once a second (never the
    message itself, only ``why``)."""

    def __init__(self, log: logging.Logger) -> None:
        self.count = 0
        self._log = log
        self._logged = -1.0

    def add(self, why: str) -> None:
        """Count a refusal; log it unless a line was logged less than a second ago."""
        self.count += 1
        now = time.monotonic()
        if now - self._logged >= 1.0:
            self._logged = now
            self._log.warning("refused %s (%d refused so far)", why, self.count)


__all__ = ["Refusals"]
