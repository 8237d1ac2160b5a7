"""Tests of knit.domain.templates: syntax check, sandboxed rendering, the context."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from knit.domain import templates
from knit.domain.templates import (
    TemplateContext,
    TemplateRenderProblem,
    TemplateSyntaxProblem,
    check_syntax,
    render,
)
from knit.errors import TemplateError

pytestmark = pytest.mark.unit


@pytest.fixture
def context() -> TemplateContext:
    return TemplateContext.build(
        env={"PORT": "8080", "MY-VAR": "dash"},
        node_id="n1",
        hostname="host-a",
        labels={"zone": "eu"},
        deployment_id="d1",
        deployment_name="web",
        image="busybox:latest",
        instance_id="i1",
        instance_index=2,
    )


def test_context_exposes_env_node_deployment_instance(context: TemplateContext) -> None:
    source = (
        "{{ env.PORT }} {{ env['MY-VAR'] }} {{ node.id }} {{ node.hostname }} "
        "{{ node.labels.zone }} {{ deployment.id }} {{ deployment.name }} "
        "{{ deployment.image }} {{ instance.id }} {{ instance.index }}"
    )
    assert render(source, context) == "8080 dash n1 host-a eu d1 web busybox:latest i1 2"


def test_a_plain_mapping_works_as_context(context: TemplateContext) -> None:
    assert render("{{ env.PORT }}", context.as_dict()) == "8080"


def test_trailing_newline_is_kept_and_nothing_is_escaped(context: TemplateContext) -> None:
    assert render('<a href="{{ env.PORT }}">&</a>\n', context) == '<a href="8080">&</a>\n'


def test_loops_and_filters_work(context: TemplateContext) -> None:
    source = "{% for k, v in env | dictsort %}{{ k }}={{ v | upper }};{% endfor %}"
    assert render(source, context) == "MY-VAR=DASH;PORT=8080;"


def test_syntax_error_names_the_line() -> None:
    with pytest.raises(TemplateSyntaxProblem) as info:
        check_syntax("line one\nline two\n{% for x in %}\n")
    assert info.value.line == 3
    assert str(info.value).startswith("line 3: ")
    assert isinstance(info.value, TemplateError)


def test_unknown_filter_is_a_syntax_error() -> None:
    with pytest.raises(TemplateError, match="No filter named 'nosuch'"):
        check_syntax("{{ env.PORT | nosuch }}")


def test_valid_template_passes_the_check() -> None:
    check_syntax("{% if env.PORT %}{{ env.PORT }}{% endif %}")


def test_undefined_variable_is_an_error_with_its_line(context: TemplateContext) -> None:
    with pytest.raises(TemplateRenderProblem) as info:
        render("a\n{{ env.MISSING }}\n", context)
    assert info.value.line == 2
    assert "MISSING" in str(info.value)
    with pytest.raises(TemplateError, match="'nothing' is undefined"):
        render("{{ nothing }}", context)


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ env.__class__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ range.__self__ }}",
    ],
)
def test_sandbox_refuses_unsafe_access(source: str, context: TemplateContext) -> None:
    with pytest.raises(TemplateError):
        render(source, context)


def test_huge_results_are_refused(context: TemplateContext) -> None:
    with pytest.raises(TemplateRenderProblem, match="too large"):
        render("{{ 'x' * 100000000 }}", context)
    with pytest.raises(TemplateRenderProblem, match="too large"):
        render("{{ 9 ** 999999999 }}", context)
    with pytest.raises(TemplateRenderProblem, match="longer than"):
        loops = "{% for i in range(100000) %}{% for j in range(100) %}x{% endfor %}{% endfor %}"
        render(loops, context)


def test_errors_raised_by_expressions_become_template_errors(context: TemplateContext) -> None:
    with pytest.raises(TemplateRenderProblem, match="ZeroDivisionError"):
        render("{{ 1 / 0 }}", context)


def test_compiled_templates_are_cached(context: TemplateContext) -> None:
    source = "cached {{ instance.index }} {{ env.PORT }}"
    render(source, context)
    before = templates.cache_info().hits
    for _ in range(10):
        render(source, context)
    assert templates.cache_info().hits >= before + 10


@given(st.text(alphabet=st.characters(exclude_characters="{}%#\r"), max_size=200))
def test_text_without_markup_renders_as_itself(text: str) -> None:
    # Jinja turns "\r\n" and "\r" into "\n": config files get Unix line ends.
    empty = TemplateContext.build(
        env={},
        node_id="n",
        hostname="h",
        labels={},
        deployment_id="d",
        deployment_name="w",
        image="i",
        instance_id="x",
        instance_index=0,
    )
    assert render(text, empty) == text


@given(
    st.dictionaries(st.from_regex(r"[A-Z_][A-Z0-9_]{0,10}", fullmatch=True), st.text(max_size=30))
)
def test_env_values_render_verbatim(env: dict[str, str]) -> None:
    context = TemplateContext.build(
        env=env,
        node_id="n",
        hostname="h",
        labels={},
        deployment_id="d",
        deployment_name="w",
        image="i",
        instance_id="x",
        instance_index=0,
    )
    source = "".join(f"{{{{ env.{key} }}}}|" for key in env)
    assert render(source, context) == "".join(f"{value}|" for value in env.values())
