"""Rendered template files: where they go, their modes, and their removal."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from knit.agent.files import TemplateFiles
from knit.errors import TemplateError

pytestmark = [pytest.mark.unit, pytest.mark.anyio]

CONTEXT = {
    "env": {"PORT": "8080"},
    "node": {"id": "n1", "hostname": "host-1", "labels": {"zone": "eu"}},
    "deployment": {"id": "d1", "name": "web", "image": "busybox"},
    "instance": {"id": "i1", "index": 2},
}


async def test_files_are_rendered_into_a_private_folder_and_mounted_read_only(
    tmp_path: Path,
) -> None:
    files = TemplateFiles(tmp_path)
    mounts = await files.render_all(
        "i1",
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
    assert stat.S_IMODE(os.stat(files.folder("i1")).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "instances").st_mode) == 0o700


async def test_a_render_error_writes_nothing(tmp_path: Path) -> None:
    files = TemplateFiles(tmp_path)
    with pytest.raises(TemplateError):
        await files.render_all("i1", [("{{ env.MISSING }}", "/x")], CONTEXT)
    assert not files.folder("i1").exists()


async def test_stale_folders_go_but_young_and_kept_ones_stay(tmp_path: Path) -> None:
    files = TemplateFiles(tmp_path)
    for instance_id in ("gone", "kept", "young"):
        await files.render_all(instance_id, [("x", "/x")], CONTEXT)
    old = 1_000_000.0
    os.utime(files.folder("gone"), (old, old))
    os.utime(files.folder("kept"), (old, old))
    removed = await files.remove_stale({"kept"}, older_than=60)
    assert removed == ["gone"]
    assert files.folder("kept").exists() and files.folder("young").exists()
    await files.remove("kept")
    assert not files.folder("kept").exists()
