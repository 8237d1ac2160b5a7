"""Configuration templates (spec 5.3): Jinja2 in a sandbox, checked at submission.

Layer: domain. Pure: imports jinja2, ``knit.errors`` and the standard library only.

The spec's Go ``text/template`` is replaced by Jinja2 (decision 0001): ``{{ env.PORT }}``.
Templates run in a ``SandboxedEnvironment`` with ``StrictUndefined`` (a misspelt variable is
an error, never an empty string), autoescape off (these are config files, not HTML) and the
trailing newline kept (like all Jinja2 output, line ends come out as Unix newlines). The
server calls :func:`check_syntax` when a deployment is submitted; the agent calls
:func:`render` for each instance, with a :class:`TemplateContext`.

Compiled templates are cached (LRU keyed by the content), since every instance of a
deployment renders the same few templates. Rendering is CPU work: the output is capped at
:data:`MAX_OUTPUT_CHARS` and the sandbox refuses huge ``*``/``**`` results, but a template
can still loop or allocate for as long as it likes. The agent therefore renders only
provably cheap templates in its own process (``knit.domain.template_cost``) and every other
one in a worker process with hard limits (``knit.agent.render_worker``, decision 0013).

Nothing is evaluated while a template compiles: Jinja2 folds constant expressions at compile
time (``{{ 'x'|center(300000000) }}`` allocated 1.1 GB inside ``check_syntax``), which the
environment turns off (``optimized=False`` and a ``finalize`` that needs the evaluation
context, so no output expression counts as constant). Checking a template's syntax costs
what parsing and compiling it costs: up to ~0.7 s and ~100 MB for the worst 64 KiB template
measured (:data:`MAX_TEMPLATE_BYTES`), which is why the server runs it in a thread.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.nodes import EvalContext
from jinja2.sandbox import SandboxedEnvironment

from knit.errors import TemplateError

MAX_OUTPUT_CHARS = 1 << 20
"""Longest rendered file (characters, 1 Mi): past it, rendering stops with a TemplateError."""

MAX_TEMPLATE_BYTES = 64 * 1024
"""Longest template a deployment may carry (UTF-8 bytes)."""

MAX_TEMPLATES = 16
"""Most templates a deployment may carry."""

MAX_EXPONENT = 4096
"""Largest integer exponent ``**`` accepts inside a template."""

CACHE_SIZE = 512
"""How many compiled templates are kept."""

_TEMPLATE_FILE = "<template>"


class TemplateSyntaxProblem(TemplateError):
    """A template does not parse (or names an unknown filter or test).

    Attributes:
        line: the 1-based line of the problem, when known.
        reason: what is wrong, without the line prefix.
    """

    def __init__(self, reason: str, line: int | None) -> None:
        super().__init__(f"line {line}: {reason}" if line is not None else reason)
        self.line = line
        self.reason = reason


class TemplateRenderProblem(TemplateError):
    """A template failed while rendering (undefined variable, sandbox violation, ...).

    Attributes:
        line: the 1-based template line being rendered, when known.
        reason: what went wrong, without the line prefix.
    """

    def __init__(self, reason: str, line: int | None) -> None:
        super().__init__(f"line {line}: {reason}" if line is not None else reason)
        self.line = line
        self.reason = reason


class _KnitSandbox(SandboxedEnvironment):
    """The sandbox, plus limits on ``*`` and ``**`` so a template cannot exhaust memory."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: jinja2.runtime.Context, op: str, left: Any, right: Any) -> Any:
        if op == "**":
            if isinstance(right, int) and abs(right) > MAX_EXPONENT:
                raise SecurityError(f"exponent {right} is too large (at most {MAX_EXPONENT})")
            return operator.pow(left, right)
        for seq, times in ((left, right), (right, left)):
            sized = isinstance(seq, str | list | tuple) and isinstance(times, int)
            if sized and len(seq) * times > MAX_OUTPUT_CHARS:
                raise SecurityError("repetition result is too large")
        return operator.mul(left, right)


@jinja2.pass_eval_context
def _as_is(eval_ctx: EvalContext, value: Any) -> Any:
    """The output finalizer: the value unchanged. It asks for the evaluation context only so
    that Jinja2 cannot evaluate an output expression while compiling (see the module doc)."""
    return value


_ENV = _KnitSandbox(
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    keep_trailing_newline=True,
    cache_size=0,  # our own LRU below keys by content; Jinja's would key by name
    optimized=False,  # no constant folding at compile time
    finalize=_as_is,
)


def environment() -> SandboxedEnvironment:
    """The sandbox every template is parsed, compiled and rendered in."""
    return _ENV


@functools.lru_cache(maxsize=CACHE_SIZE)
def _compile(content: str) -> jinja2.Template:
    return _ENV.from_string(content)


def check_syntax(content: str) -> None:
    """Check that ``content`` is a valid template (parses and compiles); nothing is cached.

    Args:
        content: the template source.

    Raises:
        TemplateSyntaxProblem: a ``knit.errors.TemplateError`` naming the line and the problem.
    """
    _syntax_problems(lambda: _ENV.compile(content))


def _template(content: str) -> jinja2.Template:
    return _syntax_problems(lambda: _compile(content))


T = TypeVar("T")


def _syntax_problems(work: Callable[[], T]) -> T:
    """``work()``, its parse and compile errors raised as TemplateSyntaxProblem."""
    try:
        return work()
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateSyntaxProblem(exc.message or "invalid template", exc.lineno) from exc
    except RecursionError as exc:
        raise TemplateSyntaxProblem("nested too deeply", None) from exc
    except MemoryError as exc:
        raise TemplateSyntaxProblem("too large to compile", None) from exc


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """The node an instance runs on, as a template sees it (``node.*``)."""

    id: str
    hostname: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeploymentInfo:
    """The deployment, as a template sees it (``deployment.*``)."""

    id: str
    name: str
    image: str


@dataclass(frozen=True, slots=True)
class InstanceInfo:
    """The instance being rendered for (``instance.*``)."""

    id: str
    index: int


@dataclass(frozen=True, slots=True)
class TemplateContext:
    """Everything a template may read: ``env``, ``node``, ``deployment``, ``instance``.

    Build it with :meth:`build`; :func:`render` takes it as is.
    """

    env: Mapping[str, str]
    node: NodeInfo
    deployment: DeploymentInfo
    instance: InstanceInfo

    @classmethod
    def build(
        cls,
        *,
        env: Mapping[str, str],
        node_id: str,
        hostname: str,
        labels: Mapping[str, str],
        deployment_id: str,
        deployment_name: str,
        image: str,
        instance_id: str,
        instance_index: int,
    ) -> TemplateContext:
        """The context of one instance of one deployment on one node."""
        return cls(
            env=dict(env),
            node=NodeInfo(id=node_id, hostname=hostname, labels=dict(labels)),
            deployment=DeploymentInfo(id=deployment_id, name=deployment_name, image=image),
            instance=InstanceInfo(id=instance_id, index=instance_index),
        )

    def as_dict(self) -> dict[str, object]:
        """Plain dicts (so ``env.PORT`` and ``env["MY-VAR"]`` both work in a template)."""
        return {
            "env": dict(self.env),
            "node": {
                "id": self.node.id,
                "hostname": self.node.hostname,
                "labels": dict(self.node.labels),
            },
            "deployment": {
                "id": self.deployment.id,
                "name": self.deployment.name,
                "image": self.deployment.image,
            },
            "instance": {"id": self.instance.id, "index": self.instance.index},
        }


def render(content: str, context: TemplateContext | Mapping[str, object]) -> str:
    """Render ``content`` with ``context`` in the sandbox.

    Args:
        content: the template source.
        context: a :class:`TemplateContext`, or a mapping of the same shape.

    Returns:
        The rendered text (a trailing newline in the template is kept).

    Raises:
        TemplateSyntaxProblem: the template does not parse.
        TemplateRenderProblem: an undefined variable, a sandbox violation, an error raised by
            an expression, or an output longer than :data:`MAX_OUTPUT_CHARS`. Both are
            ``knit.errors.TemplateError``.
    """
    template = _template(content)
    values = context.as_dict() if isinstance(context, TemplateContext) else dict(context)
    chunks: list[str] = []
    size = 0
    try:
        for chunk in template.generate(values):
            size += len(chunk)
            if size > MAX_OUTPUT_CHARS:
                raise TemplateRenderProblem(
                    f"output is longer than {MAX_OUTPUT_CHARS} characters", None
                )
            chunks.append(chunk)
    except TemplateRenderProblem:
        raise
    except jinja2.UndefinedError as exc:
        raise TemplateRenderProblem(f"undefined: {exc.message}", _line_of(exc)) from exc
    except SecurityError as exc:
        raise TemplateRenderProblem(f"not allowed: {exc}", _line_of(exc)) from exc
    except jinja2.TemplateError as exc:
        raise TemplateRenderProblem(exc.message or type(exc).__name__, _line_of(exc)) from exc
    except MemoryError as exc:
        raise TemplateRenderProblem("ran out of memory", _line_of(exc)) from exc
    except RecursionError as exc:
        raise TemplateRenderProblem("recursed too deeply", _line_of(exc)) from exc
    except Exception as exc:  # an expression raised (1/0, a bad method call, ...)
        raise TemplateRenderProblem(f"{type(exc).__name__}: {exc}", _line_of(exc)) from exc
    return "".join(chunks)


def _line_of(exc: BaseException) -> int | None:
    """The template line in ``exc``'s traceback (Jinja rewrites frames to point at it)."""
    line: int | None = None
    tb: TracebackType | None = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == _TEMPLATE_FILE:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def cache_info() -> functools._CacheInfo:
    """Hits and misses of the compiled-template cache (for tests and introspection)."""
    return _compile.cache_info()


__all__ = [
    "CACHE_SIZE",
    "MAX_OUTPUT_CHARS",
    "MAX_TEMPLATES",
    "MAX_TEMPLATE_BYTES",
    "DeploymentInfo",
    "InstanceInfo",
    "NodeInfo",
    "TemplateContext",
    "TemplateRenderProblem",
    "TemplateSyntaxProblem",
    "cache_info",
    "check_syntax",
    "environment",
    "render",
]
