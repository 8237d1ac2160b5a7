"""Rendered template files on the host, one folder per instance (spec 5.3).

Layer: agent. Imports the standard library, ``knit.domain.templates`` and the runtime's
``Mount``. Folders live under ``<data dir>/instances/<instance id>/`` with mode 0700; each
rendered file is bind-mounted read-only at its destination and removed with the container.
"""

from __future__ import annotations

import os
import shutil
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

    def known_instances(self) -> list[str]:
        """The instance ids that have a folder (to clean up after containers that are gone)."""
        if not self.root.is_dir():
            return []
        return [p.name for p in self.root.iterdir() if p.is_dir()]
