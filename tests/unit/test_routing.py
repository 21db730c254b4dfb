"""Model routing (core.routing): exact beats pattern, most specific pattern wins, "*" is last."""

from __future__ import annotations

import fnmatch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.config_schema import Deployment, ModelConfig
from core.routing import Router, is_pattern, specificity


def model(name: str) -> ModelConfig:
    return ModelConfig(name=name, is_pattern=is_pattern(name), deployments=(Deployment("mock", "", label=name),))


def router(*names: str) -> Router:
    return Router.build({name: model(name) for name in names})


def routed(r: Router, name: str) -> str | None:
    found = r.route(name)
    return None if found is None else found.name


# A realistic multi-vendor table, in config order.
TABLE = router(
    "gpt-4o-mini",
    "gpt-4o*",
    "gpt-*",
    "claude-*",
    "claude-3-5-*",
    "claude-?-opus*",
    "llama[23]*",
    "*",
)


@pytest.mark.parametrize(
    ("requested", "served_by"),
    [
        ("gpt-4o-mini", "gpt-4o-mini"),  # exact beats every pattern that also matches
        ("gpt-4o-2024-08-06", "gpt-4o*"),  # longer literal prefix than "gpt-*"
        ("gpt-4.1", "gpt-*"),
        ("claude-3-5-sonnet-20241022", "claude-3-5-*"),  # "claude-3-5-" beats "claude-" and "claude-"+"?"
        ("claude-3-opus-20240229", "claude-?-opus*"),  # same prefix as claude-*, more literal characters
        ("claude-sonnet-4-5", "claude-*"),
        ("llama3.1:8b", "llama[23]*"),
        ("llama4", "*"),  # the class does not match: default route
        ("mistral-large", "*"),
        ("", "*"),
        ("GPT-4O-MINI", "*"),  # model names are case-sensitive
    ],
)
def test_precedence(requested: str, served_by: str) -> None:
    assert routed(TABLE, requested) == served_by


def test_no_default_route_means_no_match() -> None:
    assert routed(router("gpt-4o", "claude-*"), "mistral") is None


def test_config_order_breaks_ties_between_equally_specific_patterns() -> None:
    assert routed(router("a*b", "a?b*"), "axb") == "a*b"
    assert routed(router("a?b*", "a*b"), "axb") == "a?b*"


def test_literal_prefix_wins_over_literal_count() -> None:
    # "gpt-4o*" has the longer prefix (7) although "gpt*-mini-*-x" has more literals.
    assert routed(router("gpt*-mini-*-x", "gpt-4o*"), "gpt-4o-mini-a-x") == "gpt-4o*"


def test_star_entry_first_in_config_is_still_the_last_resort() -> None:
    assert routed(router("*", "claude-*"), "claude-3") == "claude-*"


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("*", (0, 0)),
        ("gpt-4o*", (6, 6)),
        ("claude-?-opus*", (7, 12)),
        ("llama[23]*", (5, 5)),
        ("x[!a]y", (1, 2)),
        ("x[]]y", (1, 2)),  # a leading "]" is literal inside a class
        ("abc[", (4, 4)),  # an unterminated "[" is a literal "["
        ("exact", (5, 5)),
    ],
)
def test_specificity(pattern: str, expected: tuple[int, int]) -> None:
    assert specificity(pattern) == expected


def test_listed_names_are_the_exact_models_in_config_order() -> None:
    assert TABLE.listed() == ("gpt-4o-mini",)
    assert router("b", "a*", "a", "c").listed() == ("b", "a", "c")


def test_cache_returns_the_same_answers_and_stays_bounded() -> None:
    r = router("claude-*", "*")
    first = [routed(r, f"claude-{i}") for i in range(5000)]
    again = [routed(r, f"claude-{i}") for i in range(5000)]
    assert first == again == ["claude-*"] * 5000
    assert routed(r, "gpt") == "*"
    assert len(r._cache) <= 4096  # noqa: SLF001 - the bound is the point of this test


def test_misses_are_cached_and_stay_misses() -> None:
    r = router("claude-*")
    assert r.route("gpt-4o") is None
    assert r.route("gpt-4o") is None


@settings(max_examples=150)
@given(
    st.lists(st.from_regex(r"[a-c]{0,3}[*?]?[a-c]{0,3}\*?", fullmatch=True), min_size=1, max_size=6, unique=True),
    st.from_regex(r"[a-c]{0,6}", fullmatch=True),
)
def test_the_answer_always_matches_and_no_more_specific_entry_was_skipped(
    names: list[str], requested: str
) -> None:
    r = Router.build({name: model(name) for name in names})
    found = routed(r, requested)
    matching = [n for n in names if fnmatch.fnmatchcase(requested, n)]
    if not matching:
        assert found is None
        return
    assert found in matching
    if requested in names:
        assert found == requested
    else:
        best = max(specificity(n) for n in matching)
        assert specificity(found) == best
        assert found == next(n for n in matching if specificity(n) == best)  # first in config order
