"""Path containment: the decisions of knit.agent.paths, as a table."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from knit.agent.paths import PathRefused, file_in, instance_folder, resolves_inside
from knit.ids import new_id

pytestmark = pytest.mark.unit

# Fixed ids: parametrised test ids must be the same in every xdist worker.
ID = "6b131f6c3fb18bda99285085c538a9bb"


@pytest.fixture
def world(tmp_path: Path) -> Path:
    """``root`` (resolved) with one real folder, links inside and out, and an outside."""
    root = tmp_path / "instances"
    (root / ID).mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (root / "in-link").symlink_to(root / ID)
    (root / "out-link").symlink_to(tmp_path / "outside")
    (root / ID / "escape").symlink_to("/etc")
    return root


@pytest.mark.parametrize(
    ("path", "inside"),
    [
        ("{root}", True),
        ("{root}/" + ID, True),
        ("{root}/" + ID + "/file", True),
        ("{root}/in-link", True),
        ("{root}/out-link", False),
        ("{root}/out-link/x", False),
        ("{root}/" + ID + "/escape", False),
        ("{root}/" + ID + "/escape/passwd", False),
        ("{root}/..", False),
        ("{root}/../instances-evil", False),
        ("{root}-evil", False),
        ("/", False),
        ("/etc/cron.d", False),
    ],
)
def test_resolves_inside(world: Path, path: str, inside: bool) -> None:
    assert resolves_inside(str(world), path.format(root=world)) is inside


@pytest.mark.parametrize(
    ("instance_id", "problem"),
    [
        (ID, None),
        ("6b131f6c3fb28758aae8b862e10a68f6", None),  # absent: fine, it will be made
        ("/", "not a Knit id"),
        ("../../etc", "not a Knit id"),
        ("/etc/cron.d", "not a Knit id"),
        (ID.upper(), "not a Knit id"),
        (ID + "\n", "not a Knit id"),
    ],
)
def test_instance_folder(world: Path, instance_id: str, problem: str | None) -> None:
    if problem is None:
        assert instance_folder(str(world), instance_id) == os.path.join(world, instance_id)
    else:
        with pytest.raises(PathRefused, match=problem):
            instance_folder(str(world), instance_id)


def test_instance_folder_refuses_a_link_even_to_inside(world: Path) -> None:
    linked = new_id()
    (world / linked).symlink_to(world / ID)
    with pytest.raises(PathRefused, match="symbolic link"):
        instance_folder(str(world), linked)
    plain = new_id()
    (world / plain).write_text("not a folder")
    with pytest.raises(PathRefused, match="not a folder"):
        instance_folder(str(world), plain)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("0-app.conf", None),
        ("0-..", None),
        ("..", "not a plain name"),
        (".", "not a plain name"),
        ("", "not a plain name"),
        ("a/b", "not a plain name"),
        ("escape", "outside"),
    ],
)
def test_file_in(world: Path, name: str, problem: str | None) -> None:
    folder = str(world / ID)
    if problem is None:
        assert file_in(folder, name) == os.path.join(folder, name)
    else:
        with pytest.raises(PathRefused, match=problem):
            file_in(folder, name)
