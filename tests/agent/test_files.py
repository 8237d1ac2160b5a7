"""Rendered template files: where they go, their modes, their removal, and the paths refused."""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from knit.agent.files import TemplateFiles
from knit.agent.paths import PathRefused
from knit.errors import TemplateError
from knit.ids import new_id

pytestmark = [pytest.mark.unit, pytest.mark.anyio]

I1 = new_id()
CONTEXT = {
    "env": {"PORT": "8080"},
    "node": {"id": "n1", "hostname": "host-1", "labels": {"zone": "eu"}},
    "deployment": {"id": "d1", "name": "web", "image": "busybox"},
    "instance": {"id": I1, "index": 2},
}


@pytest.fixture
async def files(tmp_path: Path) -> AsyncIterator[TemplateFiles]:
    made = TemplateFiles(tmp_path / "agent")
    yield made
    await made.aclose()


async def test_files_are_rendered_into_a_private_folder_and_mounted_read_only(
    files: TemplateFiles,
) -> None:
    mounts = await files.render_all(
        I1,
        [
            (
                "port={{ env.PORT }} zone={{ node.labels.zone }} #{{ instance.index }}",
                "/etc/app.conf",
            )
        ],
        CONTEXT,
    )
    (mount,) = mounts
    assert mount.target == "/etc/app.conf" and mount.read_only
    assert Path(mount.source).read_text() == "port=8080 zone=eu #2"
    assert Path(mount.source).parent == files.folder(I1)
    assert stat.S_IMODE(os.stat(files.folder(I1)).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(files.root).st_mode) == 0o700


async def test_a_render_error_writes_nothing(files: TemplateFiles) -> None:
    with pytest.raises(TemplateError, match="/x: "):
        await files.render_all(I1, [("{{ env.MISSING }}", "/x")], CONTEXT)
    assert not files.folder(I1).exists()


async def test_stale_folders_go_but_young_and_kept_ones_stay(files: TemplateFiles) -> None:
    gone, kept, young = new_id(), new_id(), new_id()
    for instance_id in (gone, kept, young):
        await files.render_all(instance_id, [("x", "/x")], CONTEXT)
    old = 1_000_000.0
    os.utime(files.folder(gone), (old, old))
    os.utime(files.folder(kept), (old, old))
    removed = await files.remove_stale({kept}, older_than=60)
    assert removed == [gone]
    assert files.folder(kept).exists() and files.folder(young).exists()
    await files.remove(kept)
    assert not files.folder(kept).exists()


@pytest.mark.parametrize("bad", ["/", "../../etc", "/etc/cron.d", "..", ".", "", "I1"])
async def test_an_id_that_is_not_knits_is_refused_before_anything_is_touched(
    files: TemplateFiles, tmp_path: Path, bad: str
) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("precious")
    with pytest.raises(PathRefused, match="not a Knit id"):
        await files.render_all(bad, [("x", "/x")], CONTEXT)
    with pytest.raises(PathRefused, match="not a Knit id"):
        await files.remove(bad)
    assert (victim / "keep").read_text() == "precious"
    assert not files.root.exists()


async def test_an_instance_folder_that_is_a_link_is_neither_written_nor_deleted(
    files: TemplateFiles, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("precious")
    files.root.mkdir(parents=True)
    (files.root / I1).symlink_to(victim)
    with pytest.raises(PathRefused, match="symbolic link"):
        await files.render_all(I1, [("owned", "/keep")], CONTEXT)
    with pytest.raises(PathRefused, match="symbolic link"):
        await files.remove(I1)
    assert sorted(p.name for p in victim.iterdir()) == ["keep"]
    assert (victim / "keep").read_text() == "precious"


async def test_an_instances_root_that_is_a_link_is_refused(
    files: TemplateFiles, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    (victim / I1).mkdir(parents=True)
    files.root.parent.mkdir(parents=True)
    files.root.symlink_to(victim)
    with pytest.raises(PathRefused):
        await files.remove(I1)
    with pytest.raises(PathRefused):
        await files.render_all(I1, [("x", "/x")], CONTEXT)
    assert (victim / I1).is_dir()
    old = 1_000_000.0
    os.utime(victim / I1, (old, old))
    assert await files.remove_stale(set(), older_than=0) == []
    assert (victim / I1).is_dir()


async def test_a_file_planted_as_a_link_is_not_followed(
    files: TemplateFiles, tmp_path: Path
) -> None:
    target = tmp_path / "target"
    target.write_text("precious")
    await files.render_all(I1, [("first", "/etc/app.conf")], CONTEXT)
    planted = files.folder(I1) / "0-app.conf"
    planted.unlink()
    planted.symlink_to(target)
    with pytest.raises(PathRefused, match="outside"):
        await files.render_all(I1, [("second", "/etc/app.conf")], CONTEXT)
    (files.folder(I1) / "0-app.conf.tmp").symlink_to(target)
    planted.unlink()
    await files.render_all(I1, [("third", "/etc/app.conf")], CONTEXT)
    assert target.read_text() == "precious"
    assert planted.read_text() == "third" and not planted.is_symlink()


async def test_the_sweep_leaves_whatever_is_not_an_instance_folder(
    files: TemplateFiles, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    files.root.mkdir(parents=True)
    (files.root / "not-an-id").mkdir()
    (files.root / new_id()).write_text("a file")
    linked = new_id()
    (files.root / linked).symlink_to(victim)
    old = 1_000_000.0
    for entry in files.root.iterdir():
        os.utime(entry, (old, old), follow_symlinks=False)
    files.renders += 1  # as if something had been rendered since the last sweep
    assert await files.remove_stale(set(), older_than=0) == []
    assert len(list(files.root.iterdir())) == 3 and victim.is_dir()
