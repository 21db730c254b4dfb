"""Typed, path-aware reading of a parsed configuration tree that collects every error.

Theory of operation: the loader walks the tree produced by YAML/JSON with one
`Reader`.  Each getter takes a block (a dict), a key and the block's path; it
substitutes ``${VAR}`` in string scalars (`core.envsubst`), coerces and checks the
value, and returns it, the default when the key is absent or null, or `INVALID`
after recording ``"<path>.<key>: <problem>"``.  Nothing raises, so one pass finds
every problem; the loader raises once at the end if `Reader.errors` is non-empty.

Strings from ``${VAR}`` are all the environment can give, and JSON has no
unquoted scalars, so integers, numbers and booleans are also accepted as strings
(``"8080"``, ``"true"``/``"no"``/``"1"``, case-insensitive); anything else of the
wrong type is an error: ``ssl_verify: 1`` is not a boolean.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Collection, Mapping
from typing import Any, Final

from core.envsubst import SubstitutionError, Substituted, substitute

__all__ = ["INVALID", "Reader", "any_invalid", "join"]


class _Invalid:
    """The value of a field that failed validation (its error is already recorded)."""

    def __repr__(self) -> str:
        return "INVALID"


INVALID: Final = _Invalid()
_INTEGER = re.compile(r"[+-]?[0-9]+")
_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})


def join(path: str, key: str | int) -> str:
    """``models.x`` + ``retry`` -> ``models.x.retry``; + 2 -> ``models.x[2]``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _describe(value: Any) -> str:
    kinds = {dict: "a mapping", list: "a list"}
    return kinds.get(type(value), repr(value))


class Reader:
    """Collects errors while reading values; `env` feeds ``${VAR}`` substitution."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.errors: list[str] = []

    def error(self, path: str, message: str) -> _Invalid:
        self.errors.append(f"{path}: {message}" if path else message)
        return INVALID

    # -- structure ---------------------------------------------------------------------

    def block(self, node: Any, path: str, keys: Collection[str] | None) -> dict[str, Any] | None:
        """`node` as a mapping with only `keys` (any string key if None; null counts as empty)."""
        if node is None:
            return {}
        if not isinstance(node, dict):
            self.error(path, f"expected a mapping, got {_describe(node)}")
            return None
        for key in node:
            if not isinstance(key, str):
                self.error(join(path, repr(key)), "keys must be strings (quote it)")
            elif keys is not None and key not in keys:
                self.error(join(path, key), "unknown key" + _suggestion(key, keys))
        return node

    def items(self, node: Any, path: str) -> list[Any] | None:
        """`node` as a list (null counts as empty), else None."""
        if node is None:
            return []
        if not isinstance(node, list):
            self.error(path, f"expected a list, got {_describe(node)}")
            return None
        return node

    def require(self, block: Mapping[str, Any], key: str, path: str) -> bool:
        if block.get(key) is None:
            self.error(join(path, key), "required key is missing")
            return False
        return True

    # -- scalars -----------------------------------------------------------------------

    def sourced(self, value: Any, path: str) -> Substituted | _Invalid:
        """A string scalar after substitution, with the variables it came from."""
        if not isinstance(value, str):
            return self.error(path, f"expected a string, got {_describe(value)}")
        try:
            return substitute(value, self.env)
        except SubstitutionError as exc:
            for problem in exc.problems:
                self.error(path, problem)
            return INVALID

    def text(self, block: Mapping[str, Any], key: str, path: str, default: Any = None) -> Any:
        value = block.get(key)
        if value is None:
            return default
        result = self.sourced(value, join(path, key))
        return result if result is INVALID else result.value

    def _scalar(self, value: Any, path: str) -> Any:
        """Substitute first when `value` is a string; numbers and booleans pass as they are."""
        if isinstance(value, str):
            result = self.sourced(value, path)
            return result if result is INVALID else result.value.strip()
        return value

    def integer(
        self, block: Mapping[str, Any], key: str, path: str, default: Any, *, minimum: int, maximum: int | None = None
    ) -> Any:
        value = block.get(key)
        if value is None:
            return default
        path = join(path, key)
        scalar = self._scalar(value, path)
        if scalar is INVALID:
            return INVALID
        return self.as_integer(scalar, path, minimum=minimum, maximum=maximum, shown=value)

    def as_integer(self, scalar: Any, path: str, *, minimum: int, maximum: int | None, shown: Any) -> Any:
        """Check an already-substituted scalar (used for environment overrides too)."""
        if isinstance(scalar, str):
            scalar = scalar.strip()
            scalar = int(scalar) if _INTEGER.fullmatch(scalar) else scalar
        if isinstance(scalar, bool) or not isinstance(scalar, int) or scalar < minimum or (
            maximum is not None and scalar > maximum
        ):
            bounds = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            return self.error(path, f"expected an integer {bounds}, got {shown!r}")
        return scalar

    def number(
        self, block: Mapping[str, Any], key: str, path: str, default: Any, *, positive: bool = True
    ) -> Any:
        """A finite number, > 0 when `positive`, else >= 0; returned as a float."""
        value = block.get(key)
        if value is None:
            return default
        path = join(path, key)
        scalar = self._scalar(value, path)
        if scalar is INVALID:
            return INVALID
        number = _to_float(scalar)
        if number is None or not math.isfinite(number) or number < 0 or (positive and number == 0):
            return self.error(path, f"expected a number {'> 0' if positive else '>= 0'}, got {value!r}")
        return number

    def boolean(self, block: Mapping[str, Any], key: str, path: str, default: bool) -> Any:
        value = block.get(key)
        if value is None:
            return default
        path = join(path, key)
        scalar = self._scalar(value, path)
        if isinstance(scalar, bool) or scalar is INVALID:
            return scalar
        if isinstance(scalar, str) and scalar.lower() in _TRUE | _FALSE:
            return scalar.lower() in _TRUE
        return self.error(path, f"expected a boolean (true or false), got {value!r}")

    def choice(
        self, block: Mapping[str, Any], key: str, path: str, default: Any, choices: Collection[str]
    ) -> Any:
        """One of `choices`, compared case-insensitively and returned lower-case."""
        if block.get(key) is None:
            return default
        value = self.text(block, key, path)
        if value is INVALID:
            return INVALID
        return self.check_choice(value.strip().lower(), join(path, key), choices, shown=value)

    def check_choice(self, value: str, path: str, choices: Collection[str], *, shown: Any) -> Any:
        if value in choices:
            return value
        return self.error(path, f"expected one of {', '.join(choices)}, got {shown!r}")

    def resolve(self, value: Any, path: str) -> Any:
        """Substitute in every string of a JSON-like value (lists and mappings included)."""
        if isinstance(value, str):
            result = self.sourced(value, path)
            return result if result is INVALID else result.value
        if isinstance(value, list):
            resolved = [self.resolve(item, join(path, i)) for i, item in enumerate(value)]
            return INVALID if INVALID in resolved else resolved
        if isinstance(value, dict):
            pairs = {k: self.resolve(item, join(path, str(k))) for k, item in value.items()}
            return INVALID if INVALID in pairs.values() else pairs
        return value


def _to_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _suggestion(key: str, keys: Collection[str]) -> str:
    close = difflib.get_close_matches(key, list(keys), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def any_invalid(*values: Any) -> bool:
    """True when any value failed to read (its error is already recorded)."""
    return any(value is INVALID for value in values)
