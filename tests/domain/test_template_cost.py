"""Which templates are provably cheap (rendered in the agent's process): the classification."""

from __future__ import annotations

import pytest

from knit.domain.template_cost import (
    IN_PROCESS_BUDGET,
    IN_PROCESS_MAX_CHARS,
    cheap_weight,
    context_size,
    renders_in_process,
)

pytestmark = pytest.mark.unit

CHEAP = [
    "plain text, no expression\n",
    "port={{ env.PORT }}",
    "{{ env['MY-VAR'] }} {{ node.labels.zone }} {{ instance.index }}",
    "{{ deployment.name|upper }}-{{ instance.index|string }}",
    "{{ env.MISSING|default('none') }}",
    "{{ env.A ~ '-' ~ env.B }}",
    "{% if env.DEBUG %}debug=1{% elif env.TRACE %}trace=1{% else %}quiet{% endif %}",
    "{{ 'yes' if env.X == 'a' else 'no' }}",
    "{% if env.X is defined and not env.Y %}x{% endif %}",
    "{{ node.labels|length }} {{ env.NAME|trim|lower }}",
    "{# a comment #}text",
]

NOT_CHEAP = [
    "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
    "{{ ((2**4096)**4096)**4096 }}",
    "{{ 'x' * 10**9 }}",
    "{{ 'x'|center(1000000000) }}",
    "{{ env.A|replace('a', 'aaaaaaaaaaaaaaaa') }}",
    "{{ env.A|join(',') }}",
    "{{ env.A|tojson }}",
    "{{ env.A|indent(1000000) }}",
    "{{ '%s'|format(env.A) }}",
    "{{ env.items() }}",
    "{{ lipsum(10000) }}",
    "{% set x = 1 %}{{ x }}",
    "{% macro m() %}x{% endmacro %}{{ m() }}",
    "{% filter upper %}x{% endfilter %}",
    "{{ env.A[1:100] }}",
    "{{ env.A < env.B }}",
    "{{ env.A + env.B }}",
    "{{ [env.A, env.B] }}",
    "{{ env.A is divisibleby 3 }}",
    "{% if %}broken",
    "{{ " + "(" * 2000 + "1" + ")" * 2000 + " }}",
    "{{ env.A }}" * (IN_PROCESS_MAX_CHARS // 11 + 1),  # too long to be classified at all
]


@pytest.mark.parametrize("content", CHEAP)
def test_cheap_templates_have_a_weight(content: str) -> None:
    assert cheap_weight(content) is not None


@pytest.mark.parametrize("content", NOT_CHEAP)
def test_other_templates_have_none(content: str) -> None:
    assert cheap_weight(content) is None


def test_plain_text_weighs_nothing_and_each_lookup_something() -> None:
    assert cheap_weight("text") == 0
    one, two = cheap_weight("{{ env.A }}"), cheap_weight("{{ env.A }}{{ env.B }}")
    assert one is not None and two is not None and 0 < one < two
    plain, filtered = cheap_weight("{{ env.A }}"), cheap_weight("{{ env.A|upper|upper }}")
    assert plain is not None and filtered is not None and filtered > plain


def test_a_cheap_template_renders_in_process_only_within_the_budget() -> None:
    content = "{{ env.A }}" * 20
    weight = cheap_weight(content)
    assert weight is not None
    assert renders_in_process(content, 1_000)
    assert not renders_in_process(content, IN_PROCESS_BUDGET // weight)
    assert not renders_in_process("{% for x in y %}{% endfor %}", 0)


def test_too_many_nodes_are_not_cheap() -> None:
    content = "{{ env.A }}" * 300  # 3,300 characters, over 400 nodes
    assert len(content) <= IN_PROCESS_MAX_CHARS and cheap_weight(content) is None


def test_context_size_counts_every_string() -> None:
    context = {
        "env": {"PORT": "8080"},
        "node": {"id": "n1", "labels": {"zone": "eu"}},
        "instance": {"index": 2},
    }
    assert context_size(context) == 3 + 4 + 4 + 4 + 2 + 2 + 6 + 4 + 2 + 8 + 5 + 24
