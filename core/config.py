"""Loading the configuration: text -> validated, frozen `Config`, or every problem at once.

Theory of operation: `load_config` parses the text (YAML through a strict
`yaml.SafeLoader` subclass, or JSON), then walks the tree once with a
`core.config_reader.Reader`, which substitutes ``${VAR}`` in each string scalar
*after* parsing (a variable can never inject structure), checks types, ranges and
enums, and records a path-named message for each problem instead of stopping.
Cross-model rules (fallbacks) run after all models are read.  If anything was
recorded, `ConfigError` carries the complete list; otherwise the values are
built in one step, including the `Router`.  Environment overrides
(``LLM_PROXY_HOST``, ``LLM_PROXY_PORT``, ``LLM_PROXY_LOG_LEVEL``) beat the file.

The YAML loader differs from ``yaml.safe_load`` in two ways, both to stop silent
surprises: a key repeated in one mapping is an error (``safe_load`` keeps the
last, so a second ``gpt-4o:`` entry would quietly replace the first), and
timestamps stay strings (``anthropic-version: 2023-06-01`` is a header value,
not a date).

The per-model schema lives in `core.config_models`, the ``server:`` block's in
`core.config_server`, the ``logging.requests`` audit log's in `core.audit`; the
value classes in `core.config_schema` (re-exported here).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

import yaml

from core.audit import RequestLogConfig, read_request_log
from core.config_models import check_fallbacks, read_model
from core.config_server import read_server
from core.config_reader import INVALID, Reader, any_invalid, join
from core.config_schema import (
    LOG_FORMATS,
    LOG_LEVELS,
    Config,
    Deployment,
    LoggingConfig,
    ModelConfig,
    RetryPolicy,
    ServerConfig,
    UpstreamPoolConfig,
    logger_name_problem,
)
from core.headers import CREDENTIAL_HEADERS
from core.routing import Router

__all__ = [
    "Config",
    "ConfigError",
    "Deployment",
    "LoggingConfig",
    "ModelConfig",
    "RequestLogConfig",
    "RetryPolicy",
    "ServerConfig",
    "UpstreamPoolConfig",
    "load_config",
    "secrets",
]

_TOP_KEYS = ("server", "logging", "models")
_LOGGING_KEYS = ("level", "format", "loggers", "requests")


class ConfigError(Exception):
    """An invalid configuration; `errors` holds every problem, each naming its path.

    ``str()`` is the errors, one per line; `source` names the file they concern.
    """

    def __init__(self, errors: list[str], *, source: str = "<config>") -> None:
        self.errors = list(errors)
        self.source = source
        super().__init__("\n".join(self.errors))


def load_config(
    text: str, *, fmt: Literal["yaml", "json"], env: Mapping[str, str], source: str = "<config>"
) -> Config:
    """Parse, substitute, validate and build the configuration; raise `ConfigError` listing every problem."""
    reader = Reader(env)
    data = _parse(text, fmt, reader)
    if data is None:
        raise ConfigError(reader.errors or ["the configuration is empty"], source=source)
    config = _read_config(reader, data)
    if reader.errors or config is INVALID:
        raise ConfigError(reader.errors, source=source)
    return config


def secrets(config: Config) -> frozenset[str]:
    """Every configured secret (API keys, client keys, forced/added credential headers), for log redaction."""
    found: set[str] = set(config.server.auth.secrets())
    for model in config.models.values():
        found.update(d.api_key for d in model.deployments if d.api_key)
        for name, value in (*model.headers.add, *model.headers.force):
            if name in CREDENTIAL_HEADERS["request"] or name.startswith("proxy-"):
                found.add(value)
    found.discard("")
    return frozenset(found)


# -- parsing -------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that reports duplicate keys and keeps timestamps as strings."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[str] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # "<<: *anchor" entries may be overridden by explicit keys
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, str) and key in seen:
                mark = key_node.start_mark
                self.duplicates.append(f"line {mark.line + 1}, column {mark.column + 1}: duplicate key {key!r}")
            seen.add(key if isinstance(key, str) else id(key))
        return super().construct_mapping(node, deep=deep)


_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _parse(text: str, fmt: str, reader: Reader) -> Any:
    """The parsed tree, or None after recording why there is none."""
    if fmt not in ("yaml", "json"):
        reader.error("", f"unknown configuration format {fmt!r} (expected yaml or json)")
        return None
    if not text.strip():
        return None
    return _parse_yaml(text, reader) if fmt == "yaml" else _parse_json(text, reader)


def _parse_yaml(text: str, reader: Reader) -> Any:
    loader = _StrictLoader(text)
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        reader.error("", f"YAML syntax error: {where}{exc.problem or exc.context}")
        return None
    except yaml.YAMLError as exc:
        reader.error("", f"YAML syntax error: {exc}")
        return None
    finally:
        loader.dispose()
    for duplicate in loader.duplicates:
        reader.error("", duplicate)
    return data


def _parse_json(text: str, reader: Reader) -> Any:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in items]
        for key in sorted({k for k in keys if keys.count(k) > 1}):
            reader.error("", f"duplicate key {key!r} in a JSON object")
        return dict(items)

    try:
        return json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as exc:
        reader.error("", f"JSON syntax error: line {exc.lineno}, column {exc.colno}: {exc.msg}")
        return None


# -- top level -----------------------------------------------------------------------------


def _read_config(r: Reader, data: Any) -> Any:
    if not isinstance(data, dict):
        return r.error("", f"the configuration must be a mapping at the top level, got {type(data).__name__}")
    top = r.block(data, "", _TOP_KEYS)
    assert top is not None
    server = read_server(r, top.get("server"))
    logging = _read_logging(r, top.get("logging"))
    models = _read_models(r, top)
    if any_invalid(server, logging, models):
        return INVALID
    return Config(server=server, logging=logging, models=models, router=Router.build(models))


def _read_logging(r: Reader, node: Any) -> Any:
    block = r.block(node, "logging", _LOGGING_KEYS)
    if block is None:
        return INVALID
    fields = {
        "level": _read_root_level(r, block),
        "format": r.choice(block, "format", "logging", "pretty", LOG_FORMATS),
        "loggers": _read_loggers(r, block.get("loggers"), "logging.loggers"),
        "requests": read_request_log(r, block.get("requests"), "logging.requests"),
    }
    return INVALID if any_invalid(*fields.values()) else LoggingConfig(**fields)


def _read_root_level(r: Reader, block: Mapping[str, Any]) -> Any:
    """``logging.level``, which ``LLM_PROXY_LOG_LEVEL`` beats (the per-logger levels stay as written)."""
    level = r.choice(block, "level", "logging", "info", LOG_LEVELS)
    env_level = r.env.get("LLM_PROXY_LOG_LEVEL", "")
    if env_level.strip():
        level = r.check_choice(env_level.strip().lower(), "LLM_PROXY_LOG_LEVEL", LOG_LEVELS, shown=env_level)
    return level


def _read_loggers(r: Reader, node: Any, path: str) -> Any:
    """``logging.loggers``: logger name -> level, e.g. ``{llm_proxy.forward: debug, httpx: warning}``."""
    block = r.block(node, path, None)
    if block is None:
        return INVALID
    levels: dict[str, Any] = {}
    for name, value in block.items():
        if not isinstance(name, str):
            continue  # already reported by Reader.block
        problem = logger_name_problem(name)
        if problem:
            shown = name if name.strip() == name and name else repr(name)  # blank names need quotes
            levels[name] = r.error(join(path, shown), problem)
        elif not isinstance(value, str):  # null, a number, yaml's `off` (False)...
            levels[name] = r.error(join(path, name), f"expected one of {', '.join(LOG_LEVELS)}, got {_shown(value)}")
        else:
            levels[name] = r.choice(block, name, path, None, LOG_LEVELS)
    return INVALID if any_invalid(*levels.values()) or len(levels) != len(block) else levels


def _shown(value: Any) -> str:
    return "null" if value is None else repr(value)


def _read_models(r: Reader, top: dict[str, Any]) -> Any:
    if "models" not in top:
        return r.error("models", "required key is missing (configure at least one model)")
    block = r.block(top["models"], "models", None)
    if block is None:
        return INVALID
    if not block:
        return r.error("models", "at least one model is required")
    models: dict[str, ModelConfig] = {}
    fallbacks: dict[str, tuple[str, ...]] = {}
    for name, node in block.items():
        if not isinstance(name, str):
            continue  # already reported by Reader.block
        path = join("models", name)
        if not name.strip():
            r.error(join("models", repr(name)), "a model name must not be empty")
            continue
        model = read_model(r, name, node, path, fallbacks)
        if model is not INVALID:
            models[name] = model
    check_fallbacks(r, fallbacks, block)
    return models if len(models) == len(block) else INVALID
