"""Declarative body transforms: regex over JSON text, JSONPath drop and add.

Theory of operation: each model has two `TransformChain`s, ``request`` (applied
to the body exactly as it will be sent upstream, in the backend's protocol) and
``response`` (applied to what the client receives, in the client's protocol; for
a stream, to each SSE event's JSON payload).  A chain is a tuple of steps,
compiled once at configuration load; an invalid regex, replacement template or
JSONPath raises `TransformSpecError` naming the offending field, which the loader
turns into a configuration error with its path.

The three steps:

* `RegexTransform` runs `re.sub` over the *compact JSON text* of the value
  (``json.dumps(separators=(",", ":"), ensure_ascii=False)``), so the pattern sees
  ``"role":"user"``, escaped quotes as ``\\"`` and newlines as ``\\n``.  The
  result must parse as JSON again, else `TransformError`.
* `JsonPathDrop` removes every match (jsonpath-ng's ``filter``).
* `JsonPathAdd` sets ``value`` at every match.  When the path ends in a plain key
  (``$.metadata.user_id``, ``$.messages[*].name``), the key is created in every
  object the rest of the path matches; intermediate objects are not created.
  Any other path (``$.a[0]``, ``$..x``) only replaces existing matches.  Each
  match gets its own deep copy of ``value``.

jsonpath-ng is the engine (``jsonpath_ng.ext`` syntax, filters included); we only
do the final assignment ourselves because its ``update_or_create`` creates
intermediate objects of the wrong type and fails on non-objects.

Mutation: `TransformChain.apply` may mutate its argument in place *and* may return
a different object (after a regex step); callers pass a freshly parsed value they
own and use the return value.  An empty chain returns its argument untouched;
check `is_empty` to skip parsing the body at all.
"""

from __future__ import annotations

import copy
import json
import math
import re
from typing import Any, ClassVar, Literal, Union

import attrs
from jsonpath_ng import JSONPath, Root
from jsonpath_ng.exceptions import JSONPathError
from jsonpath_ng.ext import parse as parse_jsonpath
from jsonpath_ng.jsonpath import Child, Fields

from core.errors import ProxyError

__all__ = [
    "EMPTY_TRANSFORMS",
    "JsonPathAdd",
    "JsonPathDrop",
    "RegexTransform",
    "Transform",
    "TransformChain",
    "TransformError",
    "TransformSpecError",
    "Transforms",
]

Side = Literal["request", "response"]


class TransformSpecError(ValueError):
    """A transform that cannot be compiled; `field` names the offending key."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class TransformError(ProxyError):
    """A transform failed on a real body.

    Request side: 500 (our configuration broke the request).  Response side: 502
    (the upstream body could not be shaped into a valid answer).
    """

    def __init__(self, side: Side, message: str) -> None:
        super().__init__(500 if side == "request" else 502, message, type="api_error", code="transform_failed")
        self.side = side


class _Failed(Exception):
    """A step failed on a body; the chain adds which entry it was."""


def _compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


@attrs.frozen
class RegexTransform:
    """``{type: regex, pattern, replacement}``: `re.sub` over the compact JSON text."""

    pattern: str
    replacement: str
    _regex: re.Pattern[str] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        try:
            regex = re.compile(self.pattern)
        except re.error as exc:
            raise TransformSpecError("pattern", f"invalid regex: {exc}") from None
        _check_template(regex, self.replacement)
        object.__setattr__(self, "_regex", regex)

    kind: ClassVar[str] = "regex"

    def apply(self, obj: Any) -> Any:
        text, count = self._regex.subn(self.replacement, _compact(obj))
        if not count:
            return obj  # nothing matched: skip the re-parse (the common case on a stream)
        try:
            return json.loads(text)
        except ValueError as exc:
            raise _Failed(f"result is not valid JSON ({exc})") from None


def _check_template(regex: re.Pattern[str], replacement: str) -> None:
    """Reject a bad ``\\1``/``\\g<name>`` reference now, not on the first matching body.

    A stand-in pattern with the same groups (all matching the empty string) lets the
    public `Match.expand` validate the template without a real match.
    """
    names = {index: name for name, index in regex.groupindex.items()}
    groups = "".join(f"(?P<{names[i]}>)" if i in names else "()" for i in range(1, regex.groups + 1))
    stand_in = re.compile(groups).match("")
    assert stand_in is not None
    try:
        stand_in.expand(replacement)
    except (re.error, IndexError) as exc:
        raise TransformSpecError("replacement", f"invalid replacement: {exc}") from None


def _compile_path(path: str) -> JSONPath:
    try:
        return parse_jsonpath(path)
    except JSONPathError as exc:
        raise TransformSpecError("path", f"invalid JSONPath: {exc}") from None


@attrs.frozen
class JsonPathDrop:
    """``{type: jsonpath_drop, path}``: remove every match."""

    path: str
    _expr: JSONPath = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        expr = _compile_path(self.path)
        if isinstance(expr, Root):
            raise TransformSpecError("path", "cannot drop the whole body ('$')")
        object.__setattr__(self, "_expr", expr)

    kind: ClassVar[str] = "jsonpath_drop"

    def apply(self, obj: Any) -> Any:
        return self._expr.filter(lambda _: True, obj)


@attrs.frozen
class JsonPathAdd:
    """``{type: jsonpath_add, path, value}``: set `value` at every match (see module doc)."""

    path: str
    value: Any
    _expr: JSONPath = attrs.field(init=False, repr=False, eq=False)
    _parent: JSONPath | None = attrs.field(init=False, repr=False, eq=False)
    _key: str | None = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        problem = _json_problem(self.value)
        if problem:
            raise TransformSpecError("value", problem)
        expr = _compile_path(self.path)
        parent, key = None, None
        if isinstance(expr, Child) and isinstance(expr.right, Fields) and len(expr.right.fields) == 1:
            if expr.right.fields[0] != "*":
                parent, key = expr.left, expr.right.fields[0]
        object.__setattr__(self, "_expr", expr)
        object.__setattr__(self, "_parent", parent)
        object.__setattr__(self, "_key", key)

    kind: ClassVar[str] = "jsonpath_add"

    def apply(self, obj: Any) -> Any:
        if isinstance(self._expr, Root):
            return self._copy()
        if self._parent is not None:
            for match in self._parent.find(obj):
                if isinstance(match.value, dict):
                    match.value[self._key] = self._copy()
            return obj
        for match in self._expr.find(obj):
            if match.context is not None:
                match.path.update(match.context.value, self._copy())
        return obj

    def _copy(self) -> Any:
        return copy.deepcopy(self.value) if isinstance(self.value, (dict, list)) else self.value


def _json_problem(value: Any) -> str | None:
    """Why `value` is not a plain JSON value (YAML can produce others), or None."""
    if value is None or isinstance(value, (str, bool, int)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"not a JSON value: {value!r}"
    if isinstance(value, list):
        return next(filter(None, map(_json_problem, value)), None)
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            return "object keys must be strings"
        return next(filter(None, map(_json_problem, value.values())), None)
    return f"not a JSON value: {value!r}"


Transform = Union[RegexTransform, JsonPathDrop, JsonPathAdd]


@attrs.frozen
class TransformChain:
    """The ordered steps of one side; `where` labels errors (``models.x.transforms.request``)."""

    steps: tuple[Transform, ...] = attrs.field(default=(), converter=tuple)
    side: Side = attrs.field(default="request", validator=attrs.validators.in_(("request", "response")))
    where: str = attrs.field(default=attrs.Factory(lambda self: f"transforms.{self.side}", takes_self=True))

    @property
    def is_empty(self) -> bool:
        return not self.steps

    def apply(self, obj: Any) -> Any:
        """Run every step in order; raise `TransformError` naming the failing entry."""
        for index, step in enumerate(self.steps):
            try:
                obj = step.apply(obj)
            except _Failed as exc:
                raise TransformError(self.side, f"{self.where}[{index}] ({step.kind}): {exc}") from None
            except Exception as exc:  # noqa: BLE001 - the foreign-exception boundary
                # jsonpath-ng on a body shape it did not expect (or a filter's regex):
                # a clear error naming the entry, never a traceback.
                raise TransformError(self.side, f"{self.where}[{index}] ({step.kind}): {exc!r}") from None
        return obj


@attrs.frozen
class Transforms:
    """A model's ``transforms:`` block."""

    request: TransformChain = attrs.field(factory=TransformChain)
    response: TransformChain = attrs.field(factory=lambda: TransformChain(side="response"))


EMPTY_TRANSFORMS = Transforms()
