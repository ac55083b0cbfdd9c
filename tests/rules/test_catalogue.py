"""docs/rules.md must match the built-in rule registry."""

from __future__ import annotations

from qrewrite.rules import builtin_rules
from qrewrite.rules.catalogue import CATALOGUE_PAGE, catalogue_page, render_catalogue
from qrewrite.rules.qdq_removal import QDQ_REMOVAL_RULES


def test_rule_catalogue_is_current():
    expected = catalogue_page()
    actual = CATALOGUE_PAGE.read_text() if CATALOGUE_PAGE.exists() else ""
    assert actual == expected, "docs/rules.md is stale: run python -m qrewrite.rules.catalogue"


def test_catalogue_lists_every_rule():
    text = catalogue_page()
    for rule in (*builtin_rules(), *QDQ_REMOVAL_RULES):
        assert f"`{rule.name}`" in text


def test_catalogue_example_runs():
    text = render_catalogue(builtin_rules())
    example = text.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(example, "docs/rules.md", "exec"), {})
