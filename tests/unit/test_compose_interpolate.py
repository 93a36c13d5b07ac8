"""Compose interpolation: the Compose Specification's examples (12-interpolation.md) and
compose-go's own template tests (template/template_test.go, commit e70e961c), case for
case: the mapping ``DEFAULTS`` is theirs."""

from __future__ import annotations

import pytest

from fleet.compose.interpolate import InvalidTemplate, MissingRequired, has_variables, substitute, variables_in

DEFAULTS = {"FOO": "first", "BAR": "", "JSON": '{"json":2}'}


def sub(template: str, mapping=DEFAULTS, unset=None) -> str:
    return substitute(template, mapping.get, unset)


@pytest.mark.parametrize("template, expected", [
    ("$${foo}", "${foo}"),                                  # TestEscaped
    ("foo", "foo"),                                         # TestSubstituteNoMatch
    ("a $ string", "a $ string"),                           # TestUnescaped
    ("^REGEX$", "^REGEX$"),
    ("$}", "$}"),
    ("$", "$"),
    ("$FOO-bar", "first-bar"),                              # TestNonBraced (docker/compose#8601)
    ("This ${missing} var", "This  var"),                   # TestNoValueNoDefault
    ("This ${BAR} var", "This  var"),
    ("This $FOO var", "This first var"),                    # TestValueNoDefault
    ("This ${FOO} var", "This first var"),
    ("ok ${missing:-def}", "ok def"),                       # TestNoValueWithDefault
    ("ok ${missing-def}", "ok def"),
    ("${A:+${A},}B", "B"),                                  # TestLazyDefaultDoesNotWarn
    ("${A:-${B}}", ""),                                     # TestLazyDefaultWarnsWhenUsed
    ("ok ${BAR:-def}", "ok def"),                           # soft default on an empty value
    ("ok ${FOO:-def}", "ok first"),
    ("ok ${BAR-def}", "ok "),                               # hard default: empty is set
    ("ok ${UNSET_VAR:+presence_value}", "ok "),
    ("ok ${UNSET_VAR+presence_value}", "ok "),
    ("ok ${FOO:+presence_value}", "ok presence_value"),
    ("ok ${FOO+presence_value}", "ok presence_value"),
    ("ok ${BAR+presence_value}", "ok presence_value"),
    ("ok ${BAR:+presence_value}", "ok "),
    ("ok ${BAR:-/non:-alphanumeric}", "ok /non:-alphanumeric"),
    # TestInterpolationExternalInterference: operators in the outer text change nothing
    ("-ok ${BAR:-defaultValue}", "-ok defaultValue"),
    ("+ok ${UNSET:-${BAR-defaultValue}}", "+ok "),
    ("-ok ${FOO:-defaultValue}", "-ok first"),
    (":-ok ${UNSET-defaultValue}", ":-ok defaultValue"),
    (":-ok ${BAR-defaultValue}", ":-ok "),
    (":?ok ${BAR-defaultValue}", ":?ok "),
    (":?ok ${BAR:-defaultValue}", ":?ok defaultValue"),
    (":+ok ${BAR:-defaultValue}", ":+ok defaultValue"),
    ("+ok ${BAR-defaultValue}", "+ok "),
    ("?ok ${BAR:-defaultValue}", "?ok defaultValue"),
    # TestDefaultsWithNestedExpansion
    ("ok ${UNSET_VAR-$FOO}", "ok first"),
    ("ok ${UNSET_VAR-${FOO}}", "ok first"),
    ("ok ${UNSET_VAR-${FOO} ${FOO}}", "ok first first"),
    ("ok ${BAR:-$FOO}", "ok first"),
    ("ok ${BAR:-${FOO}}", "ok first"),
    ("ok ${BAR:-${FOO} ${FOO}}", "ok first first"),
    ("ok ${BAR+$FOO}", "ok first"),
    ("ok ${BAR+$FOO ${FOO:+second}}", "ok first second"),
    # TestDefaultsForMandatoryVariables
    ("ok ${FOO:?err}", "ok first"),
    ("ok ${FOO?err}", "ok first"),
    ("ok ${BAR?err}", "ok "),
    # TestPrecedence: the first operator wins
    ("${UNSET_VAR-myerror?msg}", "myerror?msg"),
    ("${FOO?bar-baz}", "first"),
    ("${BAR:-default_value_for_empty_var}", "default_value_for_empty_var"),
    ("${UNSET_VAR-default_value_for_unset_var}", "default_value_for_unset_var"),
    ("ok ${SUBDOMAIN:-redis}.${FOO:?}", "ok redis.first"),
    # TestNoValueWithCurlyBracesDefault / TestValueWithCurlyBracesDefault
    ('ok ${missing:-{"json":1}}', 'ok {"json":1}'),
    ('ok ${missing-{"json":1}}', 'ok {"json":1}'),
    ('ok ${JSON:-{"json":1}}', 'ok {"json":2}'),
    ('ok ${JSON-{"json":1}}', 'ok {"json":2}'),
    # names are [_a-z][_a-z0-9]*, any case; a $ before anything else stays
    ("$foo_BAR1x", ""),
    ("$1 and $-", "$1 and $-"),
    ("cost: $$5 and $$$FOO", "cost: $5 and $first"),
])
def test_compose_go_cases(template, expected):
    assert sub(template) == expected


def test_specification_examples():
    env = {"VARIABLE": "set", "FOO": "foo"}
    assert sub("${VARIABLE:-${FOO}}", env) == "set"
    assert sub("${UNSET:-${FOO}}", env) == "foo"
    assert sub("${VARIABLE?$FOO}", env) == "set"
    assert sub("${UNSET:-${FOO:-default}}", {}) == "default"
    assert sub("$$VAR_NOT_INTERPOLATED_BY_COMPOSE", env) == "$VAR_NOT_INTERPOLATED_BY_COMPOSE"
    with pytest.raises(MissingRequired, match="required variable UNSET is missing a value: foo"):
        sub("${UNSET?$FOO}", env)


@pytest.mark.parametrize("template", ["${", "${}", "${ }", "${ foo}", "${foo }", "${foo!}", "ok ${a b}"])
def test_invalid_templates(template):
    with pytest.raises(InvalidTemplate) as err:
        sub(template)
    assert err.value.template == template and "escape any $ with another $" in str(err.value)


@pytest.mark.parametrize("template, message", [
    ("not ok ${UNSET_VAR:?Mandatory Variable Unset}", "required variable UNSET_VAR is missing a value: Mandatory Variable Unset"),
    ("not ok ${BAR:?Mandatory Variable Empty}", "required variable BAR is missing a value: Mandatory Variable Empty"),
    ("not ok ${UNSET_VAR:?}", "required variable UNSET_VAR is missing a value"),
    ("not ok ${UNSET_VAR?Mandatory Variable Unset}", "required variable UNSET_VAR is missing a value: Mandatory Variable Unset"),
    ("not ok ${UNSET_VAR?}", "required variable UNSET_VAR is missing a value"),
    ("not ok ${UNSET_VAR:?Mandatory Variable ${FOO}}", "required variable UNSET_VAR is missing a value: Mandatory Variable first"),
    ("not ok ${UNSET_VAR?Mandatory Variable ${FOO}}", "required variable UNSET_VAR is missing a value: Mandatory Variable first"),
    ("${UNSET_VAR?bar-baz}", "required variable UNSET_VAR is missing a value: bar-baz"),
])
def test_required(template, message):
    with pytest.raises(MissingRequired) as err:
        sub(template)
    assert str(err.value) == message
    assert err.value.variable in ("UNSET_VAR", "BAR")


def test_unset_is_reported_only_when_used():
    seen = []
    assert sub("${A:+${A},}B", unset=seen.append) == "B" and seen == []      # lazy: not used
    assert sub("${A:-${B}}", unset=seen.append) == "" and seen == ["B"]     # used: reported
    seen.clear()
    assert sub("${A?${B}}", {"A": "value"}, unset=seen.append) == "value" and seen == []


def test_variables_are_found_without_evaluating():
    assert variables_in("${A:+${B}} $C $$D ${E:?x} $$$F") == ["A", "B", "C", "E", "F"]
    assert has_variables("${A}") and has_variables("${") and not has_variables("$$A and $1")


def test_bounded_on_long_and_deep_input():
    """compose-go interpolates the text after each braced default recursively; here it is
    a loop, so a long value cannot exhaust Python's stack, and nesting is capped."""
    import time

    start = time.monotonic()
    assert sub("${a:-x}" * 100_000) == "x" * 100_000
    assert time.monotonic() - start < 10
    with pytest.raises(InvalidTemplate, match="nested more than 50 deep"):
        sub("${a:-" * 60 + "x" + "}" * 60)
    assert sub("${a:-" * 10 + "x" + "}" * 10) == "x"


def test_line_breaks_as_compose_go_regexp():
    """Go's "." stops at a line break: a braced default cannot span lines."""
    assert sub("${A:-x}\n${B:-y}\n$FOO") == "x\ny\nfirst"
    with pytest.raises(InvalidTemplate):
        sub("${A:-x\ny}")
    assert sub("${A:-{x}}} tail}") == "{x}} tail}"
