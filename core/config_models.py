"""Reading one ``models:`` entry (backends, timeouts, retry, headers, transforms) and fallbacks.

Each ``read_*`` function takes the shared `Reader`, the raw node and its path,
records every problem it finds and returns the built value or `INVALID`.  See
`core.config_schema` for the meaning and defaults of each field.

A model either has its backend keys inline (``backend_type``, ``endpoint``,
``api_key``, ``upstream_model``, ``ssl_verify``) or a ``deployments:`` list of
such blocks (each with an optional ``weight``), never both; either way the result
is a non-empty tuple of `Deployment`, so the adapter sees one shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from core.config_reader import INVALID, Reader, any_invalid, join
from core.config_schema import BACKEND_TYPES, Deployment, ModelConfig, RetryPolicy
from core.headers import (
    CREDENTIAL_HEADERS,
    DEFAULT_POLICY,
    DEFAULT_RESPONSE_POLICY,
    MODES,
    HeaderPolicy,
    Side,
    managed_problem,
    name_problem,
    pattern_problem,
    value_problem,
)
from core.routing import is_pattern
from core.transforms import (
    EMPTY_TRANSFORMS,
    JsonPathAdd,
    JsonPathDrop,
    RegexTransform,
    TransformChain,
    Transforms,
    TransformSpecError,
)

__all__ = ["check_fallbacks", "read_model"]

_BACKEND_KEYS = ("backend_type", "endpoint", "api_key", "upstream_model", "ssl_verify")
_MODEL_KEYS = (
    *_BACKEND_KEYS,
    "timeout_seconds",
    "connect_timeout_seconds",
    "first_byte_timeout_seconds",
    "idle_timeout_seconds",
    "deadline_seconds",
    "default_max_tokens",
    "retry",
    "fallbacks",
    "deployments",
    "cooldown_after_failures",
    "cooldown_seconds",
    "headers",
    "response_headers",
    "transforms",
)
_RETRY_KEYS = ("max_attempts", "backoff_ms", "max_backoff_ms", "jitter", "max_retry_after_seconds")
_HEADER_KEYS = ("mode", "allow", "deny", "drop", "add", "force")
_TRANSFORM_FIELDS = {
    "regex": ("pattern", "replacement"),
    "jsonpath_drop": ("path",),
    "jsonpath_add": ("path", "value"),
}
_ANY_TRANSFORM_FIELD = ("pattern", "replacement", "path", "value")


def read_model(r: Reader, name: str, node: Any, path: str, fallbacks: dict[str, tuple[str, ...]]) -> Any:
    """One ``models.<name>`` entry as a `ModelConfig`, or `INVALID`.

    Its fallbacks, when readable, go into `fallbacks` even if another field is
    invalid, so `check_fallbacks` can still report a bad target.
    """
    block = r.block(node, path, _MODEL_KEYS)
    if block is None:
        return INVALID
    fields = {
        "deployments": _read_deployments(r, name, block, path),
        "timeout_seconds": r.number(block, "timeout_seconds", path, 600.0),
        "connect_timeout_seconds": r.number(block, "connect_timeout_seconds", path, 10.0),
        "first_byte_timeout_seconds": r.number(block, "first_byte_timeout_seconds", path, 600.0),
        "idle_timeout_seconds": r.number(block, "idle_timeout_seconds", path, 300.0),
        "deadline_seconds": r.number(block, "deadline_seconds", path, None),
        "default_max_tokens": r.integer(block, "default_max_tokens", path, 4096, minimum=1),
        "retry": _read_retry(r, block.get("retry"), join(path, "retry")),
        "fallbacks": _read_fallbacks(r, name, block, path),
        "cooldown_after_failures": r.integer(block, "cooldown_after_failures", path, 3, minimum=1),
        "cooldown_seconds": r.number(block, "cooldown_seconds", path, 30.0, positive=False),
        "headers": _read_headers(r, block.get("headers"), join(path, "headers"), "request"),
        "response_headers": _read_headers(
            r, block.get("response_headers"), join(path, "response_headers"), "response"
        ),
        "transforms": _read_transforms(r, block.get("transforms"), join(path, "transforms")),
    }
    if fields["fallbacks"] is not INVALID:
        fallbacks[name] = fields["fallbacks"]
    if any_invalid(*fields.values()):
        return INVALID
    return ModelConfig(name=name, is_pattern=is_pattern(name), **fields)


# -- backends ------------------------------------------------------------------------------


def _read_deployments(r: Reader, name: str, block: dict[str, Any], path: str) -> Any:
    items = r.items(block.get("deployments"), join(path, "deployments"))
    if items is None:
        return INVALID
    if not items:  # absent, null or []: the model's own backend keys
        single = _read_backend(r, block, path, label=name, weight=1.0)
        return INVALID if single is INVALID else (single,)
    found: list[Any] = []
    for key in _BACKEND_KEYS:
        if key in block:
            found.append(r.error(join(path, key), "not allowed next to deployments (set it in each deployment)"))
    for index, item in enumerate(items):
        item_path = join(join(path, "deployments"), index)
        sub = r.block(item, item_path, (*_BACKEND_KEYS, "weight"))
        if sub is None:
            found.append(INVALID)
            continue
        weight = r.number(sub, "weight", item_path, 1.0)
        found.append(_read_backend(r, sub, item_path, label=f"{name}#{index}", weight=weight))
    return INVALID if any_invalid(*found) else tuple(found)


def _read_backend(r: Reader, block: dict[str, Any], path: str, *, label: str, weight: Any) -> Any:
    backend = r.choice(block, "backend_type", path, None, BACKEND_TYPES)
    if backend is None:
        backend = r.error(join(path, "backend_type"), f"required key is missing (one of {', '.join(BACKEND_TYPES)})")
    endpoint = _read_endpoint(r, block, path, required=backend not in ("mock", INVALID))
    key, key_env = _read_api_key(r, block, path)
    upstream_model = r.text(block, "upstream_model", path)
    if isinstance(upstream_model, str) and not upstream_model.strip():
        upstream_model = r.error(join(path, "upstream_model"), "must not be empty (omit it to send the requested name)")
    ssl_verify = r.boolean(block, "ssl_verify", path, True)
    if any_invalid(backend, endpoint, key, upstream_model, ssl_verify, weight):
        return INVALID
    return Deployment(
        backend_type=backend,
        endpoint=endpoint,
        api_key=key,
        api_key_env=key_env,
        upstream_model=upstream_model,
        ssl_verify=ssl_verify,
        weight=weight,
        label=label,
    )


def _read_endpoint(r: Reader, block: dict[str, Any], path: str, *, required: bool) -> Any:
    """An http(s) base URL without a trailing ``/``; ``""`` when absent and not required."""
    url = r.text(block, "endpoint", path)
    where = join(path, "endpoint")
    if url is None:
        return r.error(where, "required key is missing (the backend's base URL)") if required else ""
    if url is INVALID:
        return INVALID
    url = url.strip().rstrip("/")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        return r.error(where, f"invalid URL {url!r}: {exc}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return r.error(where, f"expected an http:// or https:// URL, got {url!r}")
    if parts.query or parts.fragment or any(c.isspace() for c in url):
        return r.error(where, f"expected a base URL without query, fragment or spaces, got {url!r}")
    return url


def _read_api_key(r: Reader, block: dict[str, Any], path: str) -> tuple[Any, str | None]:
    """(key or None when empty, the environment variable it came from)."""
    raw = block.get("api_key")
    if raw is None:
        return None, None
    found = r.sourced(raw, join(path, "api_key"))
    if found is INVALID:
        return INVALID, None
    return (found.value.strip() or None), (found.variables[0] if found.variables else None)


# -- retry and fallbacks ---------------------------------------------------------------------


def _read_retry(r: Reader, node: Any, path: str) -> Any:
    block = r.block(node, path, _RETRY_KEYS)
    if block is None:
        return INVALID
    fields = {
        "max_attempts": r.integer(block, "max_attempts", path, 3, minimum=1),
        "backoff_ms": r.integer(block, "backoff_ms", path, 200, minimum=0),
        "max_backoff_ms": r.integer(block, "max_backoff_ms", path, 10_000, minimum=0),
        "jitter": r.boolean(block, "jitter", path, True),
        "max_retry_after_seconds": r.number(block, "max_retry_after_seconds", path, 60.0, positive=False),
    }
    if any_invalid(*fields.values()):
        return INVALID
    if fields["max_backoff_ms"] < fields["backoff_ms"]:
        return r.error(
            join(path, "max_backoff_ms"),
            f"must be >= backoff_ms ({fields['backoff_ms']}), got {fields['max_backoff_ms']}",
        )
    return RetryPolicy(**fields)


def _read_fallbacks(r: Reader, name: str, block: dict[str, Any], path: str) -> Any:
    path = join(path, "fallbacks")
    items = r.items(block.get("fallbacks"), path)
    if items is None:
        return INVALID
    names = [r.sourced(item, join(path, i)) for i, item in enumerate(items)]
    if any_invalid(*names):
        return INVALID
    result: list[str] = []
    for index, found in enumerate(names):
        if found.value == name:
            r.error(join(path, index), f"a model cannot fall back to itself ({name})")
        elif found.value in result:
            r.error(join(path, index), f"{found.value} is listed twice")
        result.append(found.value)
    return INVALID if name in result or len(set(result)) != len(result) else tuple(result)


def check_fallbacks(r: Reader, fallbacks: Mapping[str, tuple[str, ...]], configured: Mapping[str, Any]) -> None:
    """Each fallback must name a configured exact model, and no chain may loop."""
    for name, targets in fallbacks.items():
        for index, target in enumerate(targets):
            where = join(join(join("models", name), "fallbacks"), index)
            if target not in configured:
                r.error(where, f"unknown model {target!r} (fallbacks must name configured models)")
            elif is_pattern(target):
                r.error(where, f"{target!r} is a pattern; fallbacks must name exact models")
    for cycle in _cycles(fallbacks):
        r.error(join(join("models", cycle[0]), "fallbacks"), "fallback cycle " + " -> ".join(cycle))


def _cycles(graph: Mapping[str, tuple[str, ...]]) -> list[list[str]]:
    """Each loop of the fallback graph once, as ``[a, b, a]`` (depth-first, config order)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                found.append([*stack[stack.index(nxt) :], nxt])
            elif nxt in graph and nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node)
    return found


# -- headers and transforms ------------------------------------------------------------------


def _read_headers(r: Reader, node: Any, path: str, side: Side) -> Any:
    block = r.block(node, path, _HEADER_KEYS)
    if block is None:
        return INVALID
    if not any(value is not None for value in block.values()):
        return DEFAULT_POLICY if side == "request" else DEFAULT_RESPONSE_POLICY
    mode = r.choice(block, "mode", path, "passthrough", MODES)
    lists = {key: _read_patterns(r, block, key, path) for key in ("allow", "deny", "drop")}
    pairs = {key: _read_header_values(r, block, key, path, side) for key in ("add", "force")}
    if any_invalid(mode, *lists.values(), *pairs.values()) or _unused_lists(r, mode, lists, path, side):
        return INVALID
    return HeaderPolicy(mode=mode, side=side, **lists, **pairs)


def _unused_lists(r: Reader, mode: str, lists: dict[str, tuple[str, ...]], path: str, side: Side) -> bool:
    """Report ``deny``/``allow`` entries the mode would silently ignore; True if any."""
    before = len(r.errors)
    if mode != "blacklist" and lists["deny"]:
        r.error(join(path, "deny"), f"only used when mode is blacklist (mode is {mode})")
    credentials = CREDENTIAL_HEADERS[side]
    for index, pattern in enumerate(lists["allow"] if mode != "whitelist" else ()):
        if pattern.lower() not in credentials:
            r.error(
                join(join(path, "allow"), index),
                f"only used when mode is whitelist (mode is {mode}); in other modes allow may only"
                f" name credential headers to let them through ({', '.join(sorted(credentials))})",
            )
    return len(r.errors) > before


def _read_patterns(r: Reader, block: dict[str, Any], key: str, path: str) -> Any:
    path = join(path, key)
    items = r.items(block.get(key), path)
    if items is None:
        return INVALID
    patterns = []
    for index, item in enumerate(items):
        found = r.sourced(item, join(path, index))
        problem = None if found is INVALID else pattern_problem(found.value.strip())
        patterns.append(r.error(join(path, index), problem) if problem else found)
    return INVALID if any_invalid(*patterns) else tuple(p.value.strip() for p in patterns)


def _read_header_values(r: Reader, block: dict[str, Any], key: str, path: str, side: Side) -> Any:
    path = join(path, key)
    mapping = r.block(block.get(key), path, None)
    if mapping is None:
        return INVALID
    pairs: dict[str, Any] = {}
    for name, raw in mapping.items():
        if not isinstance(name, str):
            pairs[repr(name)] = INVALID  # already reported by Reader.block
            continue
        pairs[name.lower()] = _read_header_value(r, name, raw, join(path, name), side, seen=pairs)
    return INVALID if any_invalid(*pairs.values()) else pairs


def _read_header_value(r: Reader, name: str, raw: Any, where: str, side: Side, *, seen: Mapping[str, Any]) -> Any:
    problem = name_problem(name) or managed_problem(name, side)
    if not problem and name.lower() in seen:
        problem = f"{name.lower()} is set twice (names are case-insensitive)"
    if problem:
        return r.error(where, problem)
    found = r.sourced(raw, where)
    if found is INVALID:
        return INVALID
    problem = value_problem(found.value.strip(" \t"))
    return r.error(where, problem) if problem else found.value


def _read_transforms(r: Reader, node: Any, path: str) -> Any:
    block = r.block(node, path, ("request", "response"))
    if block is None:
        return INVALID
    request = _read_chain(r, block.get("request"), join(path, "request"), "request")
    response = _read_chain(r, block.get("response"), join(path, "response"), "response")
    if any_invalid(request, response):
        return INVALID
    if request.is_empty and response.is_empty:
        return EMPTY_TRANSFORMS
    return Transforms(request=request, response=response)


def _read_chain(r: Reader, node: Any, path: str, side: Side) -> Any:
    items = r.items(node, path)
    if items is None:
        return INVALID
    steps = [_read_step(r, item, join(path, index)) for index, item in enumerate(items)]
    return INVALID if any_invalid(*steps) else TransformChain(steps, side=side, where=path)


def _read_step(r: Reader, node: Any, path: str) -> Any:
    """One ``{type: ..., ...}`` entry as a compiled transform, or `INVALID`."""
    raw_kind = node.get("type") if isinstance(node, dict) else None
    fields = _TRANSFORM_FIELDS.get(raw_kind.strip().lower() if isinstance(raw_kind, str) else "")
    # Until the type is known, any transform field is accepted, so only the type is reported.
    block = r.block(node, path, ("type", *(fields if fields is not None else _ANY_TRANSFORM_FIELD)))
    if block is None:
        return INVALID
    kind = r.choice(block, "type", path, None, tuple(_TRANSFORM_FIELDS))
    if kind is None:
        return r.error(join(path, "type"), f"required key is missing (one of {', '.join(_TRANSFORM_FIELDS)})")
    if kind is INVALID:
        return INVALID
    values = _read_step_fields(r, block, path, _TRANSFORM_FIELDS[kind])
    if values is INVALID:
        return INVALID
    try:
        if kind == "regex":
            return RegexTransform(values["pattern"], values["replacement"])
        if kind == "jsonpath_drop":
            return JsonPathDrop(values["path"])
        return JsonPathAdd(values["path"], values["value"])
    except TransformSpecError as exc:
        return r.error(join(path, exc.field), exc.message)


def _read_step_fields(r: Reader, block: dict[str, Any], path: str, fields: tuple[str, ...]) -> Any:
    # `value` may be JSON null, so its presence is checked by key.
    missing = [f for f in fields if (f not in block if f == "value" else block.get(f) is None)]
    for field in missing:
        r.error(join(path, field), "required key is missing")
    if missing:
        return INVALID
    values = {f: (r.resolve(block[f], join(path, f)) if f == "value" else r.text(block, f, path)) for f in fields}
    return INVALID if any_invalid(*values.values()) else values
