"""Property tests of supervision: random trees under random crash schedules.

Whatever the tree and the schedule: once the system has exited, no task is left running, no
handler is still blocked, every incarnation that started either crashed or had its
``stopping()`` hook run, and no supervisor incarnation made more restarts than its intensity
allows (giving up only once it would have).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors import (
    ActorError,
    ActorRef,
    Restart,
    Strategy,
    SupervisorGaveUp,
    SupervisorRef,
    open_actor_system,
)
from tests.actors.support import Block, Crash, Finish, Journal, TaskCounter, worker

pytestmark = [pytest.mark.anyio, pytest.mark.unit]

ACTIONS = ("crash", "crash", "crash", "finish", "tell", "block", "stop", "ask")


@dataclass(frozen=True)
class SupSpec:
    parent: int  # index of an earlier supervisor, -1 for the root
    strategy: Strategy
    max_restarts: int


@dataclass(frozen=True)
class Tree:
    root_max_restarts: int
    supervisors: list[SupSpec]
    actors: list[tuple[int, Restart]]  # (supervisor index or -1, policy)
    steps: list[tuple[int, str]]  # (actor index, action)


@st.composite
def trees(draw: st.DrawFn) -> Tree:
    count = draw(st.integers(0, 3))
    sups = [
        SupSpec(
            parent=draw(st.integers(-1, i - 1)),
            strategy=draw(st.sampled_from(Strategy)),
            max_restarts=draw(st.integers(0, 3)),
        )
        for i in range(count)
    ]
    actors = draw(
        st.lists(
            st.tuples(st.integers(-1, count - 1), st.sampled_from(Restart)),
            min_size=1,
            max_size=6,
        )
    )
    steps = draw(
        st.lists(st.tuples(st.integers(0, len(actors) - 1), st.sampled_from(ACTIONS)), max_size=14)
    )
    return Tree(draw(st.integers(0, 3)), sups, actors, steps)


class Decisions(logging.Handler):
    """Collects the supervisors' restart and give-up decisions from their log records."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.events: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "event", None)
        if event in ("started", "restart", "gave_up"):
            self.events.append((getattr(record, "supervisor", "?"), event))


async def run_schedule(tree: Tree, journal: Journal, refs: list[ActorRef[object]]) -> bool:
    """Build the tree, play the schedule, exit. True if the root gave up."""
    try:
        async with open_actor_system(
            max_restarts=tree.root_max_restarts,
            within=60.0,
            grace=0.005,
            backoff_base=0.0005,
            backoff_cap=0.002,
        ) as system:
            sups: list[SupervisorRef] = []
            for i, spec in enumerate(tree.supervisors):
                parent = sups[spec.parent] if spec.parent >= 0 else None
                sups.append(
                    await system.spawn_supervisor(
                        f"s{i}",
                        parent=parent,
                        strategy=spec.strategy,
                        max_restarts=spec.max_restarts,
                        within=60.0,
                        grace=0.005,
                        backoff_base=0.0005,
                        backoff_cap=0.002,
                    )
                )
            for i, (sup, policy) in enumerate(tree.actors):
                refs.append(
                    await system.spawn(
                        worker(journal),
                        name=f"a{i}",
                        supervisor=sups[sup] if sup >= 0 else None,
                        restart=policy,
                    )
                )
            for index, action in tree.steps:
                ref = refs[index]
                try:
                    if action == "crash":
                        await ref.tell(Crash())
                    elif action == "finish":
                        await ref.tell(Finish())
                    elif action == "tell":
                        await ref.tell("hello")
                    elif action == "block":
                        ref.tell_nowait(Block())
                    elif action == "stop":
                        await system.stop(ref)
                    else:
                        await ref.ask("hello", timeout=0.01)
                except ActorError:
                    pass  # stopped, crashed, timed out: all fair under random crashes
                await anyio.sleep(0.001)
    except SupervisorGaveUp:
        return True
    return False


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(tree=trees())
async def test_random_crash_schedules_never_leave_orphans_and_respect_intensity(
    tree: Tree,
) -> None:
    journal = Journal()
    decisions = Decisions()
    logger = logging.getLogger("actors")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(decisions)
    tasks = TaskCounter()
    refs: list[ActorRef[object]] = []
    before = tasks.now()
    try:
        with anyio.fail_after(10):
            root_gave_up = await run_schedule(tree, journal, refs)
    finally:
        logger.removeHandler(decisions)
        logger.setLevel(level)

    # No orphans: no task left, no actor alive, no handler still blocked.
    assert tasks.now() == before
    assert not any(ref.alive for ref in refs)
    names = {f"a{i}" for i in range(len(tree.actors))}
    for name in names:
        assert journal.count("blocked", name) == journal.count("cancelled", name), name
        # Every incarnation that started ended through a crash or through stopping().
        started = journal.count("started", name)
        assert started == journal.count("crash", name) + journal.count("stopping", name), name

    # Intensity: each supervisor incarnation restarts at most max_restarts times, and gives
    # up only once one more restart would have exceeded that.
    limits = {"system": tree.root_max_restarts}
    limits.update({f"s{i}": spec.max_restarts for i, spec in enumerate(tree.supervisors)})
    restarts: dict[str, int] = defaultdict(int)
    for sup, event in decisions.events:
        if event == "started":
            restarts[sup] = 0  # a (re)started supervisor starts with a clean history
        elif event == "restart":
            restarts[sup] += 1
            assert restarts[sup] <= limits[sup], (sup, decisions.events)
        else:
            assert restarts[sup] == limits[sup], (sup, decisions.events)
    assert root_gave_up == (("system", "gave_up") in decisions.events)
