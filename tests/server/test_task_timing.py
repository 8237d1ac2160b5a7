"""A task's deadlines: the acceptance deadline may come from the server's environment."""

from __future__ import annotations

import pytest

from knit.server.tasks import TaskTiming

pytestmark = pytest.mark.unit


def test_the_acceptance_deadline_comes_from_the_environment() -> None:
    assert TaskTiming.from_environ({}).accept == TaskTiming().accept
    assert TaskTiming.from_environ({"KNIT_TASK_ACCEPT_TIMEOUT": "0.5"}).accept == 0.5
    with pytest.raises(ValueError):
        TaskTiming.from_environ({"KNIT_TASK_ACCEPT_TIMEOUT": "0"})
