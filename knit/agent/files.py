"""Rendered template files on the host, one folder per instance (spec 5.3).

Layer: agent. Imports the standard library, ``knit.domain.templates`` and the runtime's
``Mount``. Folders live under ``<data dir>/instances/<instance id>/`` with mode 0700; each
rendered file is bind-mounted read-only at its destination and removed with the container.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio

from knit.domain.templates import render
from knit.runtime.base import Mount


class TemplateFiles:
    """Writes and removes the rendered files of instances.

    Args:
        data_dir: the agent's data dir.
    """

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "instances"
        # Renders started so far, and their number when a sweep last found no folder left:
        # while they are equal there is nothing to sweep, and no thread is used for it.
        self.renders = 0
        self.clean_at = -1

    def folder(self, instance_id: str) -> Path:
        """The folder holding one instance's files."""
        return self.root / instance_id

    async def render_all(
        self,
        instance_id: str,
        templates: Sequence[tuple[str, str]],
        context: Mapping[str, Any],
    ) -> list[Mount]:
        """Render ``(content, destination)`` pairs into files; return their read-only mounts.

        Rendering happens before anything is written, so a template error leaves no folder
        behind. Files are written in a worker thread (cancellation waits for it).

        Raises:
            knit.errors.TemplateError: a template failed to render (undefined variable, ...).
        """
        rendered = [(render(content, dict(context)), dest) for content, dest in templates]
        if not rendered:
            return []
        self.renders += 1
        return await anyio.to_thread.run_sync(self._write, instance_id, rendered)

    def _write(self, instance_id: str, rendered: list[tuple[str, str]]) -> list[Mount]:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        folder = self.folder(instance_id)
        folder.mkdir(exist_ok=True)
        os.chmod(folder, 0o700)
        mounts = []
        for number, (text, destination) in enumerate(rendered):
            path = folder / f"{number}-{Path(destination).name or 'file'}"
            tmp = path.with_suffix(path.suffix + ".tmp")
            with open(tmp, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
            mounts.append(Mount(source=str(path.resolve()), target=destination, read_only=True))
        return mounts

    async def remove(self, instance_id: str) -> None:
        """Delete one instance's folder (nothing happens if it is absent)."""
        await anyio.to_thread.run_sync(
            lambda: shutil.rmtree(self.folder(instance_id), ignore_errors=True)
        )

    async def remove_stale(self, keep: set[str], older_than: float = 120.0) -> list[str]:
        """Delete the folders of instances not in ``keep`` (their containers are gone).

        Folders younger than ``older_than`` seconds are kept: a deploy renders its files
        before it creates the container. Returns the instance ids removed. Once a sweep found
        no folder, later ones return at once until something is rendered again.
        """
        if self.clean_at == self.renders:
            return []
        renders = self.renders
        removed, left = await anyio.to_thread.run_sync(self._remove_stale, keep, older_than)
        if not left:
            self.clean_at = renders
        return removed

    def _remove_stale(self, keep: set[str], older_than: float) -> tuple[list[str], int]:
        """Sweep; return the instance ids removed and how many folders are left."""
        if not self.root.is_dir():
            return [], 0
        cutoff = time.time() - older_than
        removed = []
        left = 0
        for folder in self.root.iterdir():
            if folder.is_dir() and folder.name not in keep and folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder.name)
            else:
                left += 1
        return removed, left
