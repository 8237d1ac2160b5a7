"""Rendering an instance's templates: cheap ones in process, the others in the worker.

Layer: agent. Imports ``knit.domain.templates``, ``knit.domain.template_cost`` and
``knit.agent.render_worker``.

A provably cheap template (``knit.domain.template_cost.renders_in_process``: lookups, a few
filters, ``if``; its work bounded by the size of what it reads) renders on the event loop in
microseconds, as every template did before; placement throughput depends on it. Anything
else goes to the :class:`~knit.agent.render_worker.RenderWorker`, whose limits (2 s per
template, 256 MiB, 1 Mi characters per file) a template bomb runs into without the agent
noticing: its heartbeats keep flowing (decision 0013).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from knit.agent.render_worker import RenderWorker, TemplateFailed
from knit.domain.template_cost import context_size, renders_in_process
from knit.domain.templates import render
from knit.errors import TemplateError


class TemplateRenderer:
    """Decides where each template renders, and renders it there.

    Args:
        worker: the worker process for templates that are not cheap (default: a new
            :class:`RenderWorker`, whose child starts at the first such template).
    """

    def __init__(self, worker: RenderWorker | None = None) -> None:
        self.worker = worker if worker is not None else RenderWorker()
        self.in_process = 0  # templates rendered here, and in the worker (tests, metrics)
        self.in_worker = 0

    async def render(self, templates: Sequence[str], context: Mapping[str, Any]) -> list[str]:
        """Render every template with ``context``; their texts, in order.

        Raises:
            TemplateFailed: one failed (``index`` says which): a syntax or render error, or a
                limit of the worker reached.
        """
        if not templates:
            return []
        chars = context_size(context)
        texts: list[str | None] = [None] * len(templates)
        slow: list[int] = []
        for index, content in enumerate(templates):
            if not renders_in_process(content, chars):
                slow.append(index)
                continue
            try:
                texts[index] = render(content, context)
            except TemplateError as exc:
                raise TemplateFailed(index, str(exc)) from exc
            self.in_process += 1
        if slow:
            try:
                rendered = await self.worker.render([templates[i] for i in slow], context)
            except TemplateFailed as exc:
                index = slow[exc.index] if exc.index < len(slow) else slow[0]
                raise TemplateFailed(index, exc.reason) from exc
            if len(rendered) != len(slow):
                raise TemplateFailed(slow[0], "the render worker sent a malformed reply")
            self.in_worker += len(slow)
            for index, text in zip(slow, rendered, strict=True):
                texts[index] = text
        return [text if text is not None else "" for text in texts]

    async def aclose(self) -> None:
        """Stop the worker's child process, if one runs."""
        await self.worker.aclose()


__all__ = ["TemplateFailed", "TemplateRenderer"]
