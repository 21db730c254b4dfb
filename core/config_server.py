"""Reading the ``server:`` block: listening, client keys, limits, CORS, shutdown.

Like `core.config_models`, each ``_read_*`` function takes the shared `Reader`,
the raw node and its path, records every problem it finds and returns the built
value or `INVALID`.  The value classes live in `core.config_schema`,
`core.auth`, `core.limits` and `core.cors`.

Two rules span fields, so they are checked here once both sides are known:
a proxy with no client keys must listen on a loopback address unless
``server.auth.allow_unauthenticated`` is true (`core.auth.exposure_problem`,
applied to the host *after* the ``LLM_PROXY_HOST`` override), and CORS
credentials never go with the ``*`` origin.  A client key's value never appears
in an error message.
"""

from __future__ import annotations

from typing import Any

from core.auth import Client, ClientAuth, ClientKey, exposure_problem, key_problem
from core.config_reader import INVALID, Reader, any_invalid, join
from core.config_schema import (
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_SHUTDOWN_GRACE_SECONDS,
    UPSTREAM_CLIENTS,
    ServerConfig,
    UpstreamPoolConfig,
)
from core.cors import DEFAULT_EXPOSE_HEADERS, DEFAULT_METHODS, CorsPolicy, origin_problem
from core.headers import name_problem, value_problem
from core.limits import RateLimit

__all__ = ["read_server"]

_SERVER_KEYS = (
    "host",
    "port",
    "max_body_bytes",
    "max_header_bytes",
    "max_concurrent_requests",
    "shutdown_grace_seconds",
    "upstream",
    "auth",
    "rate_limit",
    "cors",
)
_UPSTREAM_KEYS = ("client", "max_connections_per_origin", "keepalive_expiry_seconds")
_AUTH_KEYS = ("keys", "allow_unauthenticated")
_KEY_KEYS = ("key", "name", "models", "requests_per_minute")
_RATE_LIMIT_KEYS = ("requests_per_minute",)
_CORS_KEYS = ("allow_origins", "allow_headers", "allow_methods", "expose_headers", "max_age_seconds",
              "allow_credentials")


def read_server(r: Reader, node: Any) -> Any:
    block = r.block(node, "server", _SERVER_KEYS)
    if block is None:
        return INVALID
    host = _read_host(r, block)
    port = r.integer(block, "port", "server", 8080, minimum=1, maximum=65535)
    env_port = r.env.get("LLM_PROXY_PORT", "")
    if env_port.strip():
        port = r.as_integer(env_port, "LLM_PROXY_PORT", minimum=1, maximum=65535, shown=env_port)
    fields = {
        "max_body_bytes": r.integer(block, "max_body_bytes", "server", 32 * 1024 * 1024, minimum=1),
        "max_header_bytes": r.integer(block, "max_header_bytes", "server", DEFAULT_MAX_HEADER_BYTES, minimum=1024),
        "max_concurrent_requests": r.integer(block, "max_concurrent_requests", "server", None, minimum=1),
        "shutdown_grace_seconds": r.number(
            block, "shutdown_grace_seconds", "server", DEFAULT_SHUTDOWN_GRACE_SECONDS, positive=False),
        "upstream": _read_upstream(r, block.get("upstream")),
        "auth": _read_auth(r, block.get("auth")),
        "rate_limit": _read_rate_limit(r, block.get("rate_limit")),
        "cors": _read_cors(r, block.get("cors")),
    }
    if host is not INVALID and fields["auth"] is not INVALID:
        problem = exposure_problem(host, fields["auth"])
        if problem:
            r.error("server.auth", problem)
            return INVALID
    if any_invalid(host, port, *fields.values()):
        return INVALID
    return ServerConfig(host=host, port=port, **fields)


def _read_host(r: Reader, block: dict[str, Any]) -> Any:
    host = r.text(block, "host", "server", "127.0.0.1")
    if host is not INVALID and not host.strip():
        host = r.error("server.host", "must not be empty")
    env_host = r.env.get("LLM_PROXY_HOST", "").strip()
    return env_host or host


def _read_upstream(r: Reader, node: Any) -> Any:
    path = "server.upstream"
    block = r.block(node, path, _UPSTREAM_KEYS)
    if block is None:
        return INVALID
    fields = {
        "client": r.choice(block, "client", path, "h11", UPSTREAM_CLIENTS),
        "max_connections_per_origin": r.integer(block, "max_connections_per_origin", path, 100, minimum=1),
        "keepalive_expiry_seconds": r.number(block, "keepalive_expiry_seconds", path, 30.0, positive=False),
    }
    return INVALID if any_invalid(*fields.values()) else UpstreamPoolConfig(**fields)


# -- server.auth ---------------------------------------------------------------------------


def _read_auth(r: Reader, node: Any) -> Any:
    path = "server.auth"
    block = r.block(node, path, _AUTH_KEYS)
    if block is None:
        return INVALID
    items = r.items(block.get("keys"), join(path, "keys"))
    keys = [_read_key(r, item, join(join(path, "keys"), index), index) for index, item in enumerate(items or ())]
    allow = r.boolean(block, "allow_unauthenticated", path, False)
    if items is None:
        return INVALID
    duplicates = _duplicate_keys(r, keys, join(path, "keys"))
    if any_invalid(allow, *keys) or duplicates:
        return INVALID
    if keys and allow:
        return r.error(join(path, "allow_unauthenticated"),
                       "has no effect when keys are configured (every request then needs a key); remove it")
    return ClientAuth(keys=tuple(keys), allow_unauthenticated=allow)


def _read_key(r: Reader, node: Any, path: str, index: int) -> Any:
    block = r.block(node, path, _KEY_KEYS)
    if block is None:
        return INVALID
    value = _read_key_value(r, block, path)
    name = r.text(block, "name", path, f"key-{index + 1}")
    if isinstance(name, str):
        name = name.strip()
        problem = "must not be empty" if not name else value_problem(name)
        if problem:
            name = r.error(join(path, "name"), problem)
    models = _read_model_globs(r, block, path)
    per_minute = r.integer(block, "requests_per_minute", path, None, minimum=1)
    if any_invalid(value, name, models, per_minute):
        return INVALID
    return ClientKey.parse(value, Client(name, models, per_minute))


def _read_key_value(r: Reader, block: dict[str, Any], path: str) -> Any:
    where = join(path, "key")
    raw = block.get("key")
    if raw is None:
        return r.error(where, "required key is missing (the client key: ${VAR}, or sha256:<hex digest>)")
    if not isinstance(raw, str):
        return r.error(where, "expected a string (quote the key, or better: take it from ${VAR})")  # never echo it
    found = r.sourced(raw, where)
    if found is INVALID:
        return INVALID
    value = found.value.strip()
    problem = key_problem(value)
    return r.error(where, problem) if problem else value


def _read_model_globs(r: Reader, block: dict[str, Any], path: str) -> Any:
    path = join(path, "models")
    if block.get("models") is None:
        return None  # every model
    items = r.items(block["models"], path)
    if items is None:
        return INVALID
    if not items:
        return r.error(path, "an empty list allows no model at all; omit models to allow every model")
    globs = [r.sourced(item, join(path, i)) for i, item in enumerate(items)]
    for index, found in enumerate(globs):
        if found is not INVALID and not found.value.strip():
            globs[index] = r.error(join(path, index), "must not be empty")
    return INVALID if any_invalid(*globs) else tuple(found.value.strip() for found in globs)


def _duplicate_keys(r: Reader, keys: list[Any], path: str) -> bool:
    """Report a name or a key used twice among the valid entries; True if any."""
    before = len(r.errors)
    names: dict[str, int] = {}
    digests: dict[bytes, int] = {}
    for index, key in enumerate(keys):
        if key is INVALID:
            continue
        where = join(path, index)
        first = names.setdefault(key.client.name, index)
        if first != index:
            r.error(join(where, "name"), f"{key.client.name!r} is already the name of {join(path, first)}")
        first = digests.setdefault(key.digest, index)
        if first != index:
            r.error(join(where, "key"), f"the same key as {join(path, first)}")
    return len(r.errors) > before


# -- server.rate_limit and server.cors -----------------------------------------------------


def _read_rate_limit(r: Reader, node: Any) -> Any:
    path = "server.rate_limit"
    if node is None:
        return None
    block = r.block(node, path, _RATE_LIMIT_KEYS)
    if block is None or not r.require(block, "requests_per_minute", path):
        return INVALID
    per_minute = r.integer(block, "requests_per_minute", path, None, minimum=1)
    return INVALID if per_minute is INVALID else RateLimit(per_minute)


def _read_cors(r: Reader, node: Any) -> Any:
    path = "server.cors"
    if node is None:
        return None
    block = r.block(node, path, _CORS_KEYS)
    if block is None:
        return INVALID
    origins = _read_words(r, block, "allow_origins", path, None, origin_problem)
    if origins == ():
        origins = r.error(join(path, "allow_origins"), "list at least one origin (or '*'), or remove server.cors")
    fields = {
        "allow_origins": origins,
        "allow_headers": _read_words(r, block, "allow_headers", path, ("*",), _header_or_star),
        "allow_methods": _read_words(r, block, "allow_methods", path, DEFAULT_METHODS, _method_problem),
        "expose_headers": _read_words(r, block, "expose_headers", path, DEFAULT_EXPOSE_HEADERS, _header_or_star),
        "max_age_seconds": r.integer(block, "max_age_seconds", path, 600, minimum=0),
        "allow_credentials": r.boolean(block, "allow_credentials", path, False),
    }
    if any_invalid(*fields.values()):
        return INVALID
    if fields["allow_credentials"] and "*" in fields["allow_origins"]:
        return r.error(join(path, "allow_credentials"),
                       "cannot be true with the '*' origin (browsers refuse it): list the allowed origins")
    return CorsPolicy(**fields)


def _header_or_star(value: str) -> str | None:
    return None if value == "*" else name_problem(value)


def _method_problem(value: str) -> str | None:
    return None if value == "*" else (name_problem(value) and f"invalid method {value!r}")


def _read_words(r: Reader, block: dict[str, Any], key: str, path: str, default: Any, check: Any) -> Any:
    """A list of strings, each passing `check`; `default` when absent."""
    path = join(path, key)
    if block.get(key) is None:
        return default if default is not None else r.error(path, "required key is missing")
    items = r.items(block[key], path)
    if items is None:
        return INVALID
    words = []
    for index, item in enumerate(items):
        found = r.sourced(item, join(path, index))
        problem = None if found is INVALID else check(found.value.strip())
        words.append(r.error(join(path, index), problem) if problem else found)
    return INVALID if any_invalid(*words) else tuple(found.value.strip() for found in words)
