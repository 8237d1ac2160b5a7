"""Rendered template files on the host, one folder per instance (spec 5.3).

Layer: agent. Imports the standard library, ``knit.agent.paths``, ``knit.agent.rendering``
and the runtime's ``Mount``. Folders live under ``<data dir>/instances/<instance id>/`` with
mode 0700; each rendered file is bind-mounted read-only at its destination and removed with
the container.

Every path written or deleted here is checked first (``knit.agent.paths``): an instance id
that is not one Knit makes, or a folder or file that resolves elsewhere through a symbolic
link, raises :class:`~knit.agent.paths.PathRefused` and nothing is touched. Files are
created with ``O_NOFOLLOW | O_EXCL``, so a link planted meanwhile is not followed either.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio

from knit.agent.paths import PathRefused, file_in, instance_folder, instances_root
from knit.agent.rendering import TemplateFailed, TemplateRenderer
from knit.errors import TemplateError
from knit.ids import is_id
from knit.runtime.base import Mount

log = logging.getLogger(__name__)

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class TemplateFiles:
    """Renders, writes and removes the template files of instances.

    Args:
        data_dir: the agent's data dir.
        renderer: renders templates under limits (default: a :class:`TemplateRenderer`,
            whose worker process starts at the first template that needs it).
    """

    def __init__(self, data_dir: Path, renderer: TemplateRenderer | None = None) -> None:
        self.data_dir = data_dir
        self.root = data_dir / "instances"
        self.renderer = renderer if renderer is not None else TemplateRenderer()
        # Renders started so far, and their number when a sweep last found no folder left:
        # while they are equal there is nothing to sweep, and no thread is used for it.
        self.renders = 0
        self.clean_at = -1

    def folder(self, instance_id: str) -> Path:
        """The folder holding one instance's files (it may not exist yet).

        Raises:
            PathRefused: the id is not a Knit id, or the folder is not the agent's own.
        """
        return Path(instance_folder(instances_root(self.data_dir), instance_id))

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
            knit.errors.TemplateError: a template failed to render (undefined variable, a
                limit reached, ...).
            PathRefused: the instance's folder is not the agent's own to write.
        """
        self.folder(instance_id)  # refused before any rendering work
        try:
            texts = await self.renderer.render([content for content, _ in templates], context)
        except TemplateFailed as exc:
            where = templates[exc.index][1] if exc.index < len(templates) else "a template"
            raise TemplateError(f"{where}: {exc.reason}") from exc
        if not texts:
            return []
        rendered = [(text, dest) for text, (_, dest) in zip(texts, templates, strict=True)]
        self.renders += 1
        return await anyio.to_thread.run_sync(self._write, instance_id, rendered)

    def _write(self, instance_id: str, rendered: list[tuple[str, str]]) -> list[Mount]:
        root = instances_root(self.data_dir)
        os.makedirs(root, mode=0o700, exist_ok=True)
        root = instances_root(self.data_dir)  # made by us, or checked again if it was there
        os.chmod(root, 0o700)
        folder = instance_folder(root, instance_id)
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            folder = instance_folder(root, instance_id)  # a folder, not a link, still
        os.chmod(folder, 0o700)
        mounts = []
        for number, (text, destination) in enumerate(rendered):
            path = file_in(folder, f"{number}-{Path(destination).name or 'file'}")
            tmp = path + ".tmp"
            # A leftover of an interrupted write goes (a link is removed, not followed).
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            fd = os.open(tmp, _CREATE, 0o644)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.chmod(tmp, 0o644, follow_symlinks=False)
            os.replace(tmp, path)
            mounts.append(Mount(source=path, target=destination, read_only=True))
        return mounts

    async def remove(self, instance_id: str) -> None:
        """Delete one instance's folder (nothing happens if it is absent).

        Raises:
            PathRefused: the id is not a Knit id, or the folder is not the agent's own
                (nothing is deleted).
        """
        folder = self.folder(instance_id)
        await anyio.to_thread.run_sync(lambda: shutil.rmtree(folder, ignore_errors=True))

    async def remove_stale(self, keep: set[str], older_than: float = 120.0) -> list[str]:
        """Delete the folders of instances not in ``keep`` (their containers are gone).

        Folders younger than ``older_than`` seconds are kept: a deploy renders its files
        before it creates the container. Entries that are not an instance's folder (a name
        that is not a Knit id, a symbolic link, a file) are left alone. Returns the instance
        ids removed. Once a sweep found no folder, later ones return at once until something
        is rendered again.
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
        try:
            root = instances_root(self.data_dir)
        except PathRefused as exc:
            log.warning("stale template folders not swept: %s", exc)
            return [], 0
        if not os.path.isdir(root):
            return [], 0
        cutoff = time.time() - older_than
        removed = []
        left = 0
        with os.scandir(root) as entries:
            for entry in entries:
                name = entry.name
                if not is_id(name) or not entry.is_dir(follow_symlinks=False):
                    continue  # not an instance's folder: not ours to delete
                if name in keep or entry.stat(follow_symlinks=False).st_mtime >= cutoff:
                    left += 1
                    continue
                try:
                    folder = instance_folder(root, name)
                except PathRefused as exc:
                    log.warning("stale folder left alone: %s", exc)
                    continue
                if stat.S_ISDIR(os.lstat(folder).st_mode):
                    shutil.rmtree(folder, ignore_errors=True)
                    removed.append(name)
        return removed, left

    async def aclose(self) -> None:
        """Stop the renderer's worker process, if it runs. Shielded from cancellation."""
        await self.renderer.aclose()
