"""Model-name routing: which configured model serves the name a client sent.

Theory of operation: configuration keys under ``models:`` are either exact names
(``gpt-4o-mini``) or fnmatch-style globs (``gpt-4o*``, ``claude-?-*``,
``llama[23]*``, ``*``).  `Router.route` answers, for a requested name:

1. the exact entry, if there is one (a dict hit);
2. else the most specific matching pattern: the longest literal prefix (the text
   before the first ``*``, ``?`` or ``[``) wins, then the pattern with more literal
   characters, then the one written first in the configuration.  ``"*"`` has no
   literal character at all, so it is the default route: it matches last;
3. else nothing (the caller answers 404).

Patterns are sorted by specificity once, at build time, so the first match is the
answer.  Pattern results (misses included) are cached per requested name in a
bounded dict, so a name that keeps coming back costs one dict lookup; the cache
is the only mutable state and is invisible from outside.  Matching is
case-sensitive, as model names are.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from core.config_schema import ModelConfig

__all__ = ["Router", "is_pattern", "specificity"]

_WILDCARDS = frozenset("*?[")
_CACHE_LIMIT = 4096


def is_pattern(name: str) -> bool:
    """True when a ``models:`` key is a glob rather than an exact model name."""
    return not _WILDCARDS.isdisjoint(name)


def specificity(pattern: str) -> tuple[int, int]:
    """(literal prefix length, literal character count) of a glob; higher is more specific.

    Follows `fnmatch.translate`: ``[...]`` is one class (``[!...]`` negated, a
    leading ``]`` is literal inside it); an unterminated ``[`` is a literal ``[``.
    """
    prefix: int | None = None
    literals = 0
    i = 0
    while i < len(pattern):
        end = _wildcard_end(pattern, i)
        if end is None:
            literals += 1
            i += 1
            continue
        if prefix is None:
            prefix = literals
        i = end
    return (literals if prefix is None else prefix, literals)


def _wildcard_end(pattern: str, i: int) -> int | None:
    """Index after the wildcard starting at `i`, or None if `pattern[i]` is literal."""
    char = pattern[i]
    if char in "*?":
        return i + 1
    if char != "[":
        return None
    j = i + 1
    if j < len(pattern) and pattern[j] == "!":
        j += 1
    if j < len(pattern) and pattern[j] == "]":
        j += 1
    close = pattern.find("]", j)
    return None if close == -1 else close + 1


_MISSING = object()


@attrs.frozen
class Router:
    """Routes requested model names to configured models; build with `Router.build`."""

    _exact: Mapping[str, ModelConfig]
    _patterns: tuple[tuple[re.Pattern[str], ModelConfig], ...]
    _listed: tuple[str, ...]
    _cache: dict[str, ModelConfig | None] = attrs.field(factory=dict, repr=False, eq=False, hash=False)

    @classmethod
    def build(cls, models: Mapping[str, ModelConfig]) -> Router:
        """Index `models` (name -> model, in configuration order) for routing."""
        exact = {name: model for name, model in models.items() if not is_pattern(name)}
        ordered = sorted(
            (name for name in models if is_pattern(name)),
            key=lambda name: specificity(name),
            reverse=True,  # sorted() is stable, so config order breaks ties
        )
        patterns = tuple((re.compile(fnmatch.translate(name)), models[name]) for name in ordered)
        return cls(exact, patterns, tuple(exact))

    def route(self, name: str) -> ModelConfig | None:
        """The model serving `name`, or None when nothing matches."""
        model = self._exact.get(name)
        if model is not None:
            return model
        cached = self._cache.get(name, _MISSING)
        if cached is not _MISSING:
            return cached  # type: ignore[return-value]
        found = next((model for regex, model in self._patterns if regex.match(name)), None)
        if len(self._cache) >= _CACHE_LIMIT:
            del self._cache[next(iter(self._cache))]  # evict the oldest entry
        self._cache[name] = found
        return found

    def listed(self) -> tuple[str, ...]:
        """The exact (non-pattern) model names, in configuration order, for ``GET /v1/models``."""
        return self._listed
