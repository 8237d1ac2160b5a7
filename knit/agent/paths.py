"""Where the agent may write and delete: only inside ``<data dir>/instances/``.

Layer: agent. Imports the standard library, ``knit.errors`` and ``knit.ids``. The agent names
folders after the instance ids in tasks; a forged id (``/``, ``../../etc``, ``/etc/cron.d``)
must never become a path outside its own folder, and neither may a symbolic link planted
inside it. Tasks are refused at decoding already (``knit.wire.messages.KnitId``); these checks
are the second line, at the filesystem itself: every path is resolved (``os.path.realpath``,
symbolic links followed) and must land where it was meant to, or nothing is touched.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from knit.errors import KnitError
from knit.ids import is_id

INSTANCES = "instances"
"""The folder of the agent's data dir that holds one folder per instance."""


class PathRefused(KnitError):
    """A path the agent was asked to write or delete is not its own; nothing was touched.

    Attributes:
        reason: why, in words for the task's error.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def resolves_inside(root: str, path: str) -> bool:
    """Whether ``path``, with every symbolic link resolved, is ``root`` or below it.

    Args:
        root: a folder, already resolved (``os.path.realpath``).
        path: any path (relative paths are taken from the current folder).
    """
    real = os.path.realpath(path)
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def _folder_or_absent(path: str, refusal: str) -> str:
    """``path``, if it is a real folder (not a link) or does not exist yet.

    Raises:
        PathRefused: something else is there; ``refusal`` ends the message.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return path
    if not stat.S_ISDIR(mode):
        raise PathRefused(f"{path} is not a folder{refusal}")
    return path


def instances_root(data_dir: Path) -> str:
    """The resolved ``<data dir>/instances`` (the data dir itself may be a link; this folder
    may not).

    Raises:
        PathRefused: ``instances`` exists and is a symbolic link or not a folder.
    """
    root = os.path.join(os.path.realpath(data_dir), INSTANCES)
    return _folder_or_absent(root, " (a symbolic link?): refusing to use it")


def instance_folder(root: str, instance_id: str) -> str:
    """The folder of one instance's files: ``root/<instance id>``, checked.

    Args:
        root: the resolved instances folder (:func:`instances_root`).
        instance_id: the id from the task.

    Raises:
        PathRefused: the id is not one Knit makes, or the folder is (or resolves through) a
            symbolic link, or is not a folder.
    """
    if not is_id(instance_id):
        raise PathRefused(f"instance id {instance_id[:80]!r} is not a Knit id: refusing the path")
    folder = os.path.join(root, instance_id)
    if os.path.realpath(folder) != folder:
        raise PathRefused(f"{folder} resolves elsewhere (a symbolic link): refusing it")
    return _folder_or_absent(folder, ": refusing it")


def file_in(folder: str, name: str) -> str:
    """The path of a file named ``name`` directly in ``folder``, checked.

    Raises:
        PathRefused: ``name`` is empty, ``.``/``..`` or holds a separator, or the path
            resolves outside ``folder``.
    """
    if not name or name in (".", "..") or os.sep in name or "\x00" in name:
        raise PathRefused(f"file name {name[:80]!r} is not a plain name: refusing it")
    path = os.path.join(folder, name)
    if not resolves_inside(folder, path):
        raise PathRefused(f"{path} resolves outside {folder}: refusing it")
    return path


__all__ = [
    "INSTANCES",
    "PathRefused",
    "file_in",
    "instance_folder",
    "instances_root",
    "resolves_inside",
]
