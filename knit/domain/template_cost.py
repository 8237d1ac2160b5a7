"""Which templates are provably cheap: they may render in the agent's own process.

Layer: domain. Pure: imports jinja2, ``knit.domain.templates`` and the standard library.

A template renders on the agent's event loop only when its cost is bounded by what it reads,
before it runs: its Jinja2 syntax tree holds nothing but plain text, variable, attribute and
item lookups, constants, ``if``/``else``, comparisons and boolean operators, ``~`` and a short
allow-list of filters (:data:`CHEAP_FILTERS`) and tests, each of which makes at most
:data:`GROWTH` characters of a character it reads. No loop, call, macro, assignment, ``*``,
``**``, ``range`` or ``format``. Such a template evaluates each of its expressions once, so
its work and output are at most ``len(template) + weight * context size`` characters
(:func:`cheap_weight`); the agent renders it in process when that bound is under
:data:`IN_PROCESS_BUDGET` (:func:`renders_in_process`) and anything else goes to the worker
process with hard limits (``knit.agent.render_worker``, decision 0013).

Parsing is the only work done on a template of unknown cost here, and only for templates of
at most :data:`IN_PROCESS_MAX_CHARS` characters (a few milliseconds at worst); the verdict is
cached by content, like compiled templates.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping

import jinja2
from jinja2 import nodes

from knit.domain.templates import CACHE_SIZE, environment

CHEAP_FILTERS = frozenset(
    {
        "capitalize",
        "count",
        "d",
        "default",
        "first",
        "float",
        "int",
        "last",
        "length",
        "lower",
        "string",
        "title",
        "trim",
        "upper",
    }
)
"""Filters whose output is at most :data:`GROWTH` characters per character of input, in time
linear in it (``join``, ``replace``, ``center``, ``indent``, ``format``, ``tojson``... are
left out: their output grows with an argument, or faster than that)."""

CHEAP_TESTS = frozenset(
    {"defined", "undefined", "none", "number", "string", "mapping", "true", "false", "boolean"}
)
"""Tests that look at a value's type or presence only."""

GROWTH = 3
"""The most characters a cheap filter makes of one character (``'ß'.upper()`` is ``'SS'``,
some characters upper-case to three)."""

LOOKUP = 10
"""The most characters a looked-up value's text makes of one character of the context (a
mapping or list is output as its ``repr``, which spells a non-printable character in up to
ten: ``\U0001f5ff``)."""

PER_EXPRESSION = 64
"""Characters allowed for what an expression outputs beyond what it reads (``True``, a
number, the repr of a method)."""

IN_PROCESS_MAX_CHARS = 4096
"""Longest template classified at all (longer ones go to the worker unparsed)."""

IN_PROCESS_MAX_NODES = 400
"""Most syntax-tree nodes of a template rendered in process (compiling costs ~50 µs each)."""

IN_PROCESS_BUDGET = 1 << 20
"""Most characters of work and output a template may cost to render in process."""

_WEIGHT_CAP = 1 << 40
_CHEAP_COMPARE = frozenset({"eq", "ne"})
_LOOKUPS = (nodes.Name, nodes.Getattr, nodes.Getitem)
_STATEMENTS = (nodes.Template, nodes.Output, nodes.If)


class _NotCheap(Exception):
    """The template has something whose cost is not bounded by what it reads."""


def cheap_weight(content: str) -> int | None:
    """How many characters per character of its context the template may cost, or None if
    it is not cheap.

    Rendering a cheap template costs (in work and in output) at most
    ``len(content) + weight * context_size(context) + PER_EXPRESSION * expressions``
    characters; :func:`renders_in_process` applies that bound.

    Args:
        content: the template source.

    Returns:
        The weight (0 for plain text), or None: too long, too big, not parseable, or holding a
        construct outside the allow-list.
    """
    if len(content) > IN_PROCESS_MAX_CHARS:
        return None
    return _weight(content)


@functools.lru_cache(maxsize=CACHE_SIZE)
def _weight(content: str) -> int | None:
    try:
        tree = environment().parse(content)
    except (jinja2.TemplateSyntaxError, RecursionError, MemoryError):
        return None  # the worker reports the problem
    try:
        if sum(1 for _ in tree.find_all(nodes.Node)) > IN_PROCESS_MAX_NODES:
            return None
        return min(_statements([tree]), _WEIGHT_CAP)
    except (_NotCheap, RecursionError):
        return None


def _statements(found: Iterable[nodes.Node]) -> int:
    total = 0
    for node in found:
        if isinstance(node, nodes.Template):
            total += _statements(node.body)
        elif isinstance(node, nodes.Output):
            for child in node.nodes:
                if not isinstance(child, nodes.TemplateData):
                    total += _expression(child) + 1
        elif isinstance(node, nodes.If):
            total += _expression(node.test) + 1
            total += _statements(node.body) + _statements(node.elif_) + _statements(node.else_)
        else:
            raise _NotCheap(type(node).__name__)
    return total


def _expression(node: nodes.Node) -> int:
    """The weight of one expression: how many context-sized strings it may make."""
    if isinstance(node, nodes.Const):
        return 0  # its text is part of the template's length
    if isinstance(node, nodes.Name):
        return LOOKUP if node.ctx == "load" else _refuse(node)
    if isinstance(node, nodes.Getattr):
        return _expression(node.node)
    if isinstance(node, nodes.Getitem):
        return _expression(node.node) + _expression(node.arg)
    if isinstance(node, nodes.Filter | nodes.Test):
        allowed = CHEAP_FILTERS if isinstance(node, nodes.Filter) else CHEAP_TESTS
        if node.name not in allowed or node.dyn_args is not None or node.dyn_kwargs is not None:
            _refuse(node)
        inner = _expression(node.node) if node.node is not None else 0
        extra = sum(_expression(a) for a in node.args)
        extra += sum(_expression(k.value) for k in node.kwargs)
        return min(GROWTH * inner + extra, _WEIGHT_CAP)
    if isinstance(node, nodes.Concat):
        return sum(_expression(n) for n in node.nodes)
    if isinstance(node, nodes.CondExpr):
        branches = [node.test, node.expr1] + ([node.expr2] if node.expr2 is not None else [])
        return sum(_expression(n) for n in branches)
    if isinstance(node, nodes.And | nodes.Or):
        return _expression(node.left) + _expression(node.right)
    if isinstance(node, nodes.Not):
        return _expression(node.node)
    if isinstance(node, nodes.Compare):
        if any(op.op not in _CHEAP_COMPARE for op in node.ops):
            _refuse(node)
        return _expression(node.expr) + sum(_expression(op.expr) for op in node.ops)
    return _refuse(node)


def _refuse(node: nodes.Node) -> int:
    raise _NotCheap(type(node).__name__)


def context_size(value: object) -> int:
    """Characters in a template context: every string (keys too), 24 per other scalar."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, Mapping):
        return sum(context_size(k) + context_size(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return sum(context_size(v) for v in value)
    return 24


def renders_in_process(content: str, context_chars: int) -> bool:
    """Whether ``content`` may render in the agent's own process for a context of
    ``context_chars`` characters (:func:`context_size`): cheap, and its bound within
    :data:`IN_PROCESS_BUDGET`."""
    weight = cheap_weight(content)
    if weight is None:
        return False
    bound = len(content) + weight * (context_chars + PER_EXPRESSION)
    return bound <= IN_PROCESS_BUDGET


__all__ = [
    "CHEAP_FILTERS",
    "CHEAP_TESTS",
    "GROWTH",
    "IN_PROCESS_BUDGET",
    "IN_PROCESS_MAX_CHARS",
    "IN_PROCESS_MAX_NODES",
    "LOOKUP",
    "cheap_weight",
    "context_size",
    "renders_in_process",
]
