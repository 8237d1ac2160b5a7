"""Tests of the registry (lookup by name) and introspection (snapshot, supervisors)."""

from __future__ import annotations

import anyio
import pytest

from actors import ActorInfo, Strategy, open_actor_system
from tests.actors.support import Block, Crash, Journal, wait_until, worker

pytestmark = [pytest.mark.anyio, pytest.mark.unit]


async def test_lookup_finds_actors_by_name() -> None:
    journal = Journal()
    async with open_actor_system() as system:
        ref = await system.spawn(worker(journal), name="node/42")
        assert system.lookup("node/42") is ref
        assert system.lookup("node/43") is None


async def test_duplicate_names_are_refused_with_value_error() -> None:
    journal = Journal()
    async with open_actor_system() as system:
        await system.spawn(worker(journal), name="w")
        with pytest.raises(ValueError, match="already exists"):
            await system.spawn(worker(journal), name="w")
        await system.spawn_supervisor("s")
        with pytest.raises(ValueError, match="already exists"):
            await system.spawn_supervisor("s")
        # actors and supervisors have separate namespaces, as Knit's server relies on
        await system.spawn_supervisor("w")
        await system.spawn(worker(journal), name="s")
    assert journal.count("started", "w") == 1


async def test_snapshot_reports_mailbox_depth_restarts_and_state() -> None:
    journal = Journal()
    release = anyio.Event()
    async with open_actor_system(backoff_base=0.001) as system:
        sup = await system.spawn_supervisor("sup")
        busy = await system.spawn(worker(journal), name="busy", supervisor=sup)
        flaky = await system.spawn(worker(journal), name="flaky")
        await busy.tell(Block(release))
        await wait_until(lambda: journal.count("blocked", "busy") == 1)
        for i in range(3):
            await busy.tell(i)
        for _ in range(2):
            await flaky.tell(Crash())
        await wait_until(lambda: journal.count("started", "flaky") == 3)
        infos = {info.name: info for info in system.snapshot()}
        assert infos["busy"] == ActorInfo(
            name="busy",
            supervisor="sup",
            mailbox_depth=3,
            restarts=0,
            state="running",
            mailbox_size=1024,
            dropped=0,
        )
        assert infos["flaky"].restarts == 2 and infos["flaky"].supervisor == "system"
        assert busy.mailbox_depth == 3
        release.set()
        await wait_until(lambda: busy.mailbox_depth == 0)


async def test_supervisors_lists_the_tree_root_first() -> None:
    async with open_actor_system("server") as system:
        sup = await system.spawn_supervisor("nodes", strategy=Strategy.ONE_FOR_ALL)
        await system.spawn_supervisor("inner", parent=sup)
        listed = [(s.name, s.parent, s.strategy, s.state) for s in system.supervisors()]
        assert listed == [
            ("server", None, Strategy.ONE_FOR_ONE, "running"),
            ("nodes", "server", Strategy.ONE_FOR_ALL, "running"),
            ("inner", "nodes", Strategy.ONE_FOR_ONE, "running"),
        ]
        assert system.root.name == "server" and system.lookup_supervisor("nodes") is sup


async def test_snapshot_of_many_actors_is_complete() -> None:
    journal = Journal()
    async with open_actor_system() as system:
        for i in range(300):
            await system.spawn(worker(journal), name=f"w{i}")
        names = {info.name for info in system.snapshot()}
        assert names == {f"w{i}" for i in range(300)}
        assert all(info.state == "running" for info in system.snapshot())


async def test_the_root_and_foreign_refs_cannot_be_stopped_with_stop() -> None:
    journal = Journal()
    async with open_actor_system("one") as one, open_actor_system("two") as two:
        ref = await two.spawn(worker(journal), name="w")
        with pytest.raises(ValueError, match="root"):
            await one.stop(one.root)
        with pytest.raises(ValueError, match="another actor system"):
            await one.stop(ref)
        with pytest.raises(ValueError, match="another actor system"):
            await one.spawn(worker(journal), name="x", supervisor=two.root)
        assert ref.alive and repr(ref) == "<ActorRef 'w'>"
    assert repr(ref) == "<ActorRef 'w' (stopped)>"
