"""``${VAR}`` substitution (core.envsubst): every form, escapes, errors, variable tracking."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.envsubst import Substituted, SubstitutionError, substitute

EXPECTED_FORMS = "expected ${NAME} or ${NAME:-default} (write '$${' for a literal '${')"
ENV = {"OPENAI_API_KEY": "sk-live-123", "EMPTY": "", "PORT": "9000", "HOST": "0.0.0.0"}


@pytest.mark.parametrize(
    ("text", "value", "variables"),
    [
        ("plain text", "plain text", ()),
        ("${OPENAI_API_KEY}", "sk-live-123", ("OPENAI_API_KEY",)),
        ("Bearer ${OPENAI_API_KEY}", "Bearer sk-live-123", ("OPENAI_API_KEY",)),
        ("${HOST}:${PORT}", "0.0.0.0:9000", ("HOST", "PORT")),
        ("${PORT}-${PORT}", "9000-9000", ("PORT",)),  # each variable once, in order
        # defaults: used when unset or empty (the shell's ":-")
        ("${UNSET:-fallback}", "fallback", ("UNSET",)),
        ("${EMPTY:-fallback}", "fallback", ("EMPTY",)),
        ("${PORT:-8080}", "9000", ("PORT",)),
        ("${UNSET:-}", "", ("UNSET",)),
        ("${UNSET:-a b:c/d}", "a b:c/d", ("UNSET",)),
        ("${EMPTY}", "", ("EMPTY",)),  # set but empty is not an error
        # escapes and literal dollars
        ("$${HOME}", "${HOME}", ()),
        ("cost: $5, pa$$word, $", "cost: $5, pa$$word, $", ()),
        ("$$${PORT}", "$${PORT}", ()),
        ("a$${b}${PORT}", "a${b}9000", ("PORT",)),
        ("^sk-[a-z]+$", "^sk-[a-z]+$", ()),  # a regex's anchor is untouched
        ("${_UNDER_1:-x}", "x", ("_UNDER_1",)),
    ],
)
def test_substitution(text: str, value: str, variables: tuple[str, ...]) -> None:
    assert substitute(text, ENV) == Substituted(value, variables)


@pytest.mark.parametrize(
    ("text", "problems"),
    [
        (
            "${ANTHROPIC_API_KEY}",
            ["environment variable ANTHROPIC_API_KEY is not set (use ${ANTHROPIC_API_KEY:-} to allow it to be empty)"],
        ),
        (
            "${A}/${B}",
            [
                "environment variable A is not set (use ${A:-} to allow it to be empty)",
                "environment variable B is not set (use ${B:-} to allow it to be empty)",
            ],
        ),
        ("${UNCLOSED", ["unterminated '${' at '${UNCLOSED' (write '$${' for a literal '${')"]),
        ("${1BAD}", [f"invalid substitution '${{1BAD}}': {EXPECTED_FORMS}"]),
        ("${A-b}", [f"invalid substitution '${{A-b}}': {EXPECTED_FORMS}"]),
        ("${}", [f"invalid substitution '${{}}': {EXPECTED_FORMS}"]),
        ("${A:-${B}}", ["nested substitution in the default of ${A:-...} is not supported"]),
    ],
)
def test_errors_name_every_problem(text: str, problems: list[str]) -> None:
    with pytest.raises(SubstitutionError) as info:
        substitute(text, ENV)
    assert list(info.value.problems) == problems


def test_the_environment_is_only_read_not_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONLY_IN_OS_ENVIRON", "leak")
    with pytest.raises(SubstitutionError):
        substitute("${ONLY_IN_OS_ENVIRON}", {})


def test_a_value_is_not_substituted_again() -> None:
    # A variable whose value looks like a reference stays literal: no recursive expansion.
    assert substitute("${A}", {"A": "${B}", "B": "no"}).value == "${B}"


@settings(max_examples=200)
@given(st.text().filter(lambda t: "$" not in t))
def test_text_without_dollar_is_identity(text: str) -> None:
    assert substitute(text, ENV) == Substituted(text, ())


NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True)


@settings(max_examples=100)
@given(
    st.lists(
        st.tuples(NAMES, st.text(alphabet=st.characters(blacklist_characters="$}"), max_size=10)),
        min_size=1,
        max_size=4,
    ),
    st.text(alphabet=st.characters(blacklist_characters="$"), max_size=10),
)
def test_references_expand_to_their_values(pairs: list[tuple[str, str]], glue: str) -> None:
    env = dict(pairs)
    text = glue.join(f"${{{name}}}" for name, _ in pairs)
    result = substitute(text, env)
    assert result.value == glue.join(env[name] for name, _ in pairs)
    assert result.variables == tuple(dict.fromkeys(name for name, _ in pairs))
