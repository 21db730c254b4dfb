"""The configuration as values: frozen, validated on construction, built in one step.

These classes are the proxy's public configuration contract; `core.config` builds
them from a YAML/JSON file (reporting every problem with its path), and tests or
embedders may build them directly.  Defaults here are the documented defaults.
Every constructor re-checks its invariants, so an invalid value cannot exist even
when built by hand.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

import attrs
from attrs import validators as v

from core.audit import RequestLogConfig
from core.auth import ClientAuth
from core.cors import CorsPolicy
from core.headers import DEFAULT_POLICY, DEFAULT_RESPONSE_POLICY, HeaderPolicy
from core.limits import RateLimit
from core.transforms import EMPTY_TRANSFORMS, Transforms

if TYPE_CHECKING:
    from core.routing import Router

__all__ = [
    "BACKEND_TYPES",
    "DEFAULT_MAX_HEADER_BYTES",
    "DEFAULT_SHUTDOWN_GRACE_SECONDS",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "UPSTREAM_CLIENTS",
    "Config",
    "Deployment",
    "LoggingConfig",
    "ModelConfig",
    "RetryPolicy",
    "ServerConfig",
    "UpstreamPoolConfig",
    "logger_name_problem",
]

BackendType = Literal["openai", "openai-compatible", "anthropic", "ollama", "mock"]
BACKEND_TYPES: tuple[BackendType, ...] = ("openai", "openai-compatible", "anthropic", "ollama", "mock")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("pretty", "json")
UPSTREAM_CLIENTS = ("h11", "httpx")
DEFAULT_MAX_HEADER_BYTES = 16 * 1024  # hypercorn's own default for an HTTP/1.1 request head
DEFAULT_SHUTDOWN_GRACE_SECONDS = 20.0  # leaves room under Kubernetes' default 30 s termination grace


def _positive(_: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < math.inf):
        raise ValueError(f"{attribute.name} must be a finite number > 0, got {value!r}")


def _non_negative(_: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 <= value < math.inf):
        raise ValueError(f"{attribute.name} must be a finite number >= 0, got {value!r}")


def _int_at_least(minimum: int, maximum: int | None = None) -> Any:
    def check(_: Any, attribute: attrs.Attribute[Any], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{attribute.name} must be an integer >= {minimum}, got {value!r}")
        if maximum is not None and value > maximum:
            raise ValueError(f"{attribute.name} must be an integer <= {maximum}, got {value!r}")

    return check


@attrs.frozen
class UpstreamPoolConfig:
    """``server.upstream``: the upstream HTTP client pool."""

    client: Literal["h11", "httpx"] = attrs.field(default="h11", validator=v.in_(UPSTREAM_CLIENTS))
    max_connections_per_origin: int = attrs.field(default=100, validator=_int_at_least(1))
    keepalive_expiry_seconds: float = attrs.field(default=30.0, validator=_non_negative)


@attrs.frozen
class ServerConfig:
    """``server``: where the proxy listens, who may call it and how much it accepts.

    `auth`, `rate_limit` and `cors` are the values of `core.auth`, `core.limits`
    and `core.cors`; `max_concurrent_requests` None means unlimited;
    `max_header_bytes` bounds a request head (hypercorn answers 431 beyond it);
    `shutdown_grace_seconds` is how long in-flight requests and streams may run
    on after SIGTERM/SIGINT.  Whether `host` may be served without keys is the
    loader's check (`core.auth.exposure_problem`), not an invariant of this value.
    """

    host: str = attrs.field(default="127.0.0.1", validator=v.min_len(1))
    port: int = attrs.field(default=8080, validator=_int_at_least(1, 65535))
    max_body_bytes: int = attrs.field(default=32 * 1024 * 1024, validator=_int_at_least(1))
    upstream: UpstreamPoolConfig = attrs.field(factory=UpstreamPoolConfig)
    auth: ClientAuth = attrs.field(factory=ClientAuth, validator=v.instance_of(ClientAuth))
    max_concurrent_requests: int | None = attrs.field(default=None, validator=v.optional(_int_at_least(1)))
    max_header_bytes: int = attrs.field(default=DEFAULT_MAX_HEADER_BYTES, validator=_int_at_least(1024))
    rate_limit: RateLimit | None = attrs.field(default=None, validator=v.optional(v.instance_of(RateLimit)))
    cors: CorsPolicy | None = attrs.field(default=None, validator=v.optional(v.instance_of(CorsPolicy)))
    shutdown_grace_seconds: float = attrs.field(default=DEFAULT_SHUTDOWN_GRACE_SECONDS, validator=_non_negative)


def logger_name_problem(name: Any) -> str | None:
    """Why `name` cannot be a ``logging.loggers`` key, or None."""
    if not isinstance(name, str) or not name.strip():
        return "a logger name must be a non-empty string"
    if name != name.strip():
        return "a logger name must not start or end with whitespace"
    if name == "root":  # logging.getLogger("root") is the root logger
        return "the root logger's level is logging.level"
    return None


def _check_loggers(_: Any, attribute: attrs.Attribute[Any], value: Mapping[str, str]) -> None:
    for name, level in value.items():
        problem = logger_name_problem(name)
        if problem:
            raise ValueError(f"{attribute.name}: {name!r}: {problem}")
        if level not in LOG_LEVELS:
            raise ValueError(f"{attribute.name}: {name!r}: level must be one of {LOG_LEVELS}, got {level!r}")


@attrs.frozen
class LoggingConfig:
    """``logging``: level and output format, per-logger levels, and the request audit log.

    `level` is the root logger's; `loggers` maps a logger name (``llm_proxy.forward``,
    ``httpx``) to its own level, which applies to it and its children whatever
    `level` says, in either direction.  `requests` is the ``logging.requests``
    audit log (`core.audit.RequestLogConfig`, off by default).
    """

    level: Literal["debug", "info", "warning", "error"] = attrs.field(default="info", validator=v.in_(LOG_LEVELS))
    format: Literal["pretty", "json"] = attrs.field(default="pretty", validator=v.in_(LOG_FORMATS))
    requests: RequestLogConfig = attrs.field(factory=RequestLogConfig, validator=v.instance_of(RequestLogConfig))
    loggers: Mapping[str, str] = attrs.field(
        factory=dict, converter=lambda m: MappingProxyType(dict(m)), validator=_check_loggers,
        hash=False,  # a mapping proxy is unhashable; equality still compares it
    )


@attrs.frozen
class RetryPolicy:
    """``retry``: attempts include the first; delays in milliseconds."""

    max_attempts: int = attrs.field(default=3, validator=_int_at_least(1))
    backoff_ms: int = attrs.field(default=200, validator=_int_at_least(0))
    max_backoff_ms: int = attrs.field(default=10_000, validator=_int_at_least(0))
    jitter: bool = attrs.field(default=True, validator=v.instance_of(bool))
    max_retry_after_seconds: float = attrs.field(default=60.0, validator=_non_negative)

    def __attrs_post_init__(self) -> None:
        if self.max_backoff_ms < self.backoff_ms:
            raise ValueError("max_backoff_ms must be >= backoff_ms")


@attrs.frozen
class Deployment:
    """One backend a model can be served by.

    `api_key` is None when empty and never shown by repr; `api_key_env` is the
    environment variable it was read from (for "set OPENAI_API_KEY" errors);
    `label` names the deployment in logs (``gpt-4o`` or ``gpt-4o#1``).
    """

    backend_type: BackendType = attrs.field(validator=v.in_(BACKEND_TYPES))
    endpoint: str = attrs.field(validator=v.instance_of(str))
    api_key: str | None = attrs.field(default=None, repr=False, converter=lambda key: key or None)
    api_key_env: str | None = None
    upstream_model: str | None = None
    ssl_verify: bool = attrs.field(default=True, validator=v.instance_of(bool))
    weight: float = attrs.field(default=1.0, validator=_positive)
    label: str = ""

    def __attrs_post_init__(self) -> None:
        if self.backend_type != "mock" and not self.endpoint:
            raise ValueError(f"a {self.backend_type} deployment needs an endpoint")
        if self.endpoint.endswith("/"):
            raise ValueError("endpoint must be stored without a trailing '/'")


@attrs.frozen
class ModelConfig:
    """A ``models:`` entry: how requests for `name` (an exact name or a glob) are served."""

    name: str
    is_pattern: bool
    deployments: tuple[Deployment, ...] = attrs.field(converter=tuple, validator=v.min_len(1))
    timeout_seconds: float = attrs.field(default=600.0, validator=_positive)
    connect_timeout_seconds: float = attrs.field(default=10.0, validator=_positive)
    first_byte_timeout_seconds: float = attrs.field(default=600.0, validator=_positive)
    idle_timeout_seconds: float = attrs.field(default=300.0, validator=_positive)
    deadline_seconds: float | None = attrs.field(default=None, validator=v.optional(_positive))
    default_max_tokens: int = attrs.field(default=4096, validator=_int_at_least(1))
    retry: RetryPolicy = attrs.field(factory=RetryPolicy)
    fallbacks: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    cooldown_after_failures: int = attrs.field(default=3, validator=_int_at_least(1))
    cooldown_seconds: float = attrs.field(default=30.0, validator=_non_negative)
    headers: HeaderPolicy = attrs.field(default=DEFAULT_POLICY)
    response_headers: HeaderPolicy = attrs.field(default=DEFAULT_RESPONSE_POLICY)
    transforms: Transforms = attrs.field(default=EMPTY_TRANSFORMS)

    def __attrs_post_init__(self) -> None:
        if self.name in self.fallbacks:
            raise ValueError(f"model {self.name} lists itself as a fallback")
        if self.headers.side != "request" or self.response_headers.side != "response":
            raise ValueError("headers must be a request-side policy, response_headers a response-side one")


@attrs.frozen
class Config:
    """The whole configuration; `router` is built from `models` at load time."""

    server: ServerConfig
    logging: LoggingConfig
    models: Mapping[str, ModelConfig] = attrs.field(converter=lambda m: MappingProxyType(dict(m)))
    router: Router = attrs.field(repr=False)
