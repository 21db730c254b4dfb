"""Configuration loading (core.config): defaults, substitution, every error with its path, overrides."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Mapping

import attrs
import pytest
import yaml

from core.config import (
    Config,
    ConfigError,
    Deployment,
    LoggingConfig,
    ModelConfig,
    RetryPolicy,
    ServerConfig,
    UpstreamPoolConfig,
    load_config,
    secrets,
)
from core.auth import ClientAuth
from core.headers import DEFAULT_POLICY, DEFAULT_RESPONSE_POLICY, HeaderPolicy
from core.transforms import EMPTY_TRANSFORMS, JsonPathAdd, JsonPathDrop, RegexTransform

OPENAI_KEY = "sk-proj-0123456789abcdef"
ANTHROPIC_KEY = "sk-ant-api03-abcdef"


def load(text: str, env: Mapping[str, str] | None = None, fmt: str = "yaml") -> Config:
    return load_config(textwrap.dedent(text), fmt=fmt, env=env or {}, source="test.yaml")  # type: ignore[arg-type]


def errors(text: str, env: Mapping[str, str] | None = None, fmt: str = "yaml") -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(text, env, fmt)
    return info.value.errors


MINIMAL = """
models:
  echo: {backend_type: mock}
"""

# Everything set, as a user of several vendors would write it.
FULL = """
server:
  host: 0.0.0.0
  port: 9090
  max_body_bytes: 1048576
  upstream: {client: httpx, max_connections_per_origin: 20, keepalive_expiry_seconds: 5}
  auth: {allow_unauthenticated: true}    # no client keys on 0.0.0.0 must be explicit (issue 7)
logging: {level: DEBUG, format: json}
models:
  gpt-4o-mini:
    backend_type: openai
    endpoint: https://api.openai.com/v1/
    api_key: ${OPENAI_API_KEY:-}
    upstream_model: gpt-4o-mini-2024-07-18
    ssl_verify: false
    timeout_seconds: 120
    connect_timeout_seconds: 2.5
    first_byte_timeout_seconds: 30
    idle_timeout_seconds: 15
    deadline_seconds: 300
    default_max_tokens: 1024
    retry: {max_attempts: 5, backoff_ms: 100, max_backoff_ms: 2000, jitter: false, max_retry_after_seconds: 10}
    fallbacks: [claude-sonnet]
    cooldown_after_failures: 2
    cooldown_seconds: 12.5
    headers:
      mode: blacklist
      deny: [x-stainless-*]
      drop: [user-agent]
      add: {X-Team: platform}
      force: {OpenAI-Organization: "${OPENAI_ORG:-org-default}"}
    response_headers: {mode: whitelist, allow: [x-ratelimit-*, retry-after, x-request-id]}
    transforms:
      request:
        - {type: jsonpath_drop, path: $.metadata}
        - {type: jsonpath_add, path: $.user, value: team-a}
      response:
        - {type: regex, pattern: "sk-[A-Za-z0-9]+", replacement: "[key]"}
  claude-sonnet:
    deployments:
      - {backend_type: anthropic, endpoint: "https://api.anthropic.com", api_key: "${ANTHROPIC_API_KEY}", weight: 3}
      - backend_type: anthropic
        endpoint: https://eu.example.com/anthropic
        api_key: ${ANTHROPIC_EU_KEY:-}
        upstream_model: claude-sonnet-4-5
        ssl_verify: "no"
  "llama*":
    backend_type: ollama
    endpoint: http://localhost:11434
  "*": {backend_type: mock}
"""


def test_minimal_config_gets_every_default() -> None:
    config = load(MINIMAL)
    assert config.server == ServerConfig(
        host="127.0.0.1", port=8080, max_body_bytes=33554432,
        upstream=UpstreamPoolConfig(client="h11", max_connections_per_origin=100, keepalive_expiry_seconds=30),
    )
    assert config.logging == LoggingConfig(level="info", format="pretty")
    echo = config.models["echo"]
    assert echo == ModelConfig(
        name="echo", is_pattern=False, deployments=(Deployment("mock", "", label="echo"),),
        timeout_seconds=600, connect_timeout_seconds=10, first_byte_timeout_seconds=600, idle_timeout_seconds=300,
        deadline_seconds=None, default_max_tokens=4096,
        retry=RetryPolicy(
            max_attempts=3, backoff_ms=200, max_backoff_ms=10000, jitter=True, max_retry_after_seconds=60
        ),
        fallbacks=(), cooldown_after_failures=3, cooldown_seconds=30,
        headers=DEFAULT_POLICY, response_headers=DEFAULT_RESPONSE_POLICY, transforms=EMPTY_TRANSFORMS,
    )
    assert echo.headers is DEFAULT_POLICY and echo.transforms is EMPTY_TRANSFORMS  # the hot path can skip them
    assert config.router.route("echo") is echo


def test_full_config() -> None:
    config = load(FULL, {"OPENAI_API_KEY": OPENAI_KEY, "ANTHROPIC_API_KEY": ANTHROPIC_KEY})
    assert config.server == ServerConfig("0.0.0.0", 9090, 1048576, UpstreamPoolConfig("httpx", 20, 5.0),
                                         auth=ClientAuth(allow_unauthenticated=True))
    assert config.logging == LoggingConfig("debug", "json")
    gpt = config.models["gpt-4o-mini"]
    assert gpt.deployments == (
        Deployment("openai", "https://api.openai.com/v1", OPENAI_KEY, "OPENAI_API_KEY", "gpt-4o-mini-2024-07-18",
                   ssl_verify=False, weight=1.0, label="gpt-4o-mini"),
    )
    assert (gpt.timeout_seconds, gpt.connect_timeout_seconds, gpt.first_byte_timeout_seconds) == (120, 2.5, 30)
    assert (gpt.idle_timeout_seconds, gpt.deadline_seconds, gpt.default_max_tokens) == (15, 300, 1024)
    assert gpt.retry == RetryPolicy(5, 100, 2000, False, 10)
    assert gpt.fallbacks == ("claude-sonnet",)
    assert (gpt.cooldown_after_failures, gpt.cooldown_seconds) == (2, 12.5)
    assert gpt.headers == HeaderPolicy(
        mode="blacklist", deny=["x-stainless-*"], drop=["user-agent"], add={"x-team": "platform"},
        force={"openai-organization": "org-default"},
    )
    assert gpt.response_headers == HeaderPolicy(
        mode="whitelist", allow=["x-ratelimit-*", "retry-after", "x-request-id"], side="response"
    )
    assert gpt.transforms.request.steps == (JsonPathDrop("$.metadata"), JsonPathAdd("$.user", "team-a"))
    assert gpt.transforms.response.steps == (RegexTransform("sk-[A-Za-z0-9]+", "[key]"),)
    assert gpt.transforms.response.where == "models.gpt-4o-mini.transforms.response"
    claude = config.models["claude-sonnet"]
    assert claude.deployments == (
        Deployment("anthropic", "https://api.anthropic.com", ANTHROPIC_KEY, "ANTHROPIC_API_KEY", None, True, 3.0,
                   "claude-sonnet#0"),
        Deployment("anthropic", "https://eu.example.com/anthropic", None, "ANTHROPIC_EU_KEY", "claude-sonnet-4-5",
                   False, 1.0, "claude-sonnet#1"),
    )
    assert config.models["llama*"].is_pattern and config.router.route("llama3.1:8b") is config.models["llama*"]
    assert config.router.route("mistral") is config.models["*"]
    assert config.router.listed() == ("gpt-4o-mini", "claude-sonnet")


def test_json_and_yaml_give_the_same_config() -> None:
    env = {"OPENAI_API_KEY": OPENAI_KEY, "ANTHROPIC_API_KEY": ANTHROPIC_KEY}
    as_json = json.dumps(yaml.safe_load(textwrap.dedent(FULL)))
    assert load(as_json, env, fmt="json") == load(FULL, env)


def test_secrets_lists_every_key_and_forced_credential() -> None:
    config = load(
        """
        models:
          a: {backend_type: openai, endpoint: "https://x", api_key: "${K1}"}
          b:
            deployments:
              - {backend_type: openai, endpoint: "https://y", api_key: literal-key}
              - {backend_type: openai, endpoint: "https://z", api_key: "${EMPTY:-}"}
            headers: {force: {Authorization: "Bearer ${TEAM_TOKEN}", x-team: visible}}
          c: {backend_type: mock}
        """,
        {"K1": "sk-one", "TEAM_TOKEN": "tok-2"},
    )
    assert secrets(config) == frozenset({"sk-one", "literal-key", "Bearer tok-2"})


def test_deployment_repr_never_shows_the_key() -> None:
    config = load(FULL, {"OPENAI_API_KEY": OPENAI_KEY, "ANTHROPIC_API_KEY": ANTHROPIC_KEY})
    for text in (repr(config.models["gpt-4o-mini"]), repr(config.models["claude-sonnet"].deployments), repr(config)):
        assert OPENAI_KEY not in text and ANTHROPIC_KEY not in text
    assert "api_key_env='OPENAI_API_KEY'" in repr(config.models["gpt-4o-mini"].deployments[0])


def test_values_are_frozen() -> None:
    config = load(MINIMAL)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.server.port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.models["new"] = config.models["echo"]  # type: ignore[index]


# -- substitution --------------------------------------------------------------------------------


def test_substitution_reaches_every_string_scalar() -> None:
    config = load(
        """
        server: {host: "${HOST}", port: "${PORT}", auth: {allow_unauthenticated: "${OPEN}"}}
        logging: {level: "${LEVEL:-warning}"}
        models:
          m:
            backend_type: "${KIND:-openai-compatible}"
            endpoint: "http://${UPSTREAM_HOST}:11434/v1"
            ssl_verify: "${VERIFY:-TRUE}"
            timeout_seconds: "${TIMEOUT:-42.5}"
            retry: {max_attempts: "${ATTEMPTS}", jitter: "${JITTER}"}
            fallbacks: ["${FALLBACK}"]
            headers: {mode: whitelist, allow: ["${ALLOWED}", "x-*"], add: {x-env: "${STAGE}"}}
            transforms:
              request:
                - {type: jsonpath_add, path: "$.metadata", value: {team: "${TEAM}", tags: ["${STAGE}", 1]}}
          other: {backend_type: mock}
        """,
        {"HOST": "::", "PORT": "8443", "OPEN": "true", "UPSTREAM_HOST": "gpu-1", "ATTEMPTS": "7", "JITTER": "No",
         "FALLBACK": "other", "ALLOWED": "X-Trace", "STAGE": "prod", "TEAM": "core"},
    )
    assert (config.server.host, config.server.port, config.logging.level) == ("::", 8443, "warning")
    m = config.models["m"]
    assert m.deployments[0].backend_type == "openai-compatible"
    assert m.deployments[0].endpoint == "http://gpu-1:11434/v1"
    assert (m.deployments[0].ssl_verify, m.timeout_seconds) == (True, 42.5)
    assert (m.retry.max_attempts, m.retry.jitter, m.fallbacks) == (7, False, ("other",))
    assert m.headers.allow == ("x-trace", "x-*") and m.headers.add == (("x-env", "prod"),)
    assert m.transforms.request.steps[0].value == {"team": "core", "tags": ["prod", 1]}


def test_substituted_values_cannot_inject_structure() -> None:
    config = load(
        """
        models:
          m: {backend_type: mock, upstream_model: "${NAME}"}
        """,
        {"NAME": "x\nmodels: {evil: {backend_type: openai}}"},
    )
    assert list(config.models) == ["m"]
    assert config.models["m"].deployments[0].upstream_model == "x\nmodels: {evil: {backend_type: openai}}"


def test_escaped_dollar_brace_stays_literal() -> None:
    config = load(
        """
        models:
          m:
            backend_type: mock
            transforms: {request: [{type: regex, pattern: "\\\\$\\\\{", replacement: "$${literal}"}]}
        """
    )
    assert config.models["m"].transforms.request.steps[0].replacement == "${literal}"


def test_api_key_tracks_its_variable_even_when_empty() -> None:
    config = load("""
        models:
          m: {backend_type: openai, endpoint: "https://api.openai.com/v1", api_key: "${OPENAI_API_KEY:-}"}
          n: {backend_type: openai, endpoint: "https://api.openai.com/v1", api_key: "  "}
        """)
    assert attrs.astuple(config.models["m"].deployments[0])[2:4] == (None, "OPENAI_API_KEY")
    assert config.models["n"].deployments[0].api_key is None


# -- environment overrides -------------------------------------------------------------------------


def test_environment_overrides_beat_the_file() -> None:
    config = load(
        "server: {host: 127.0.0.1, port: 8080, auth: {allow_unauthenticated: true}}\nlogging: {level: info}\n"
        + MINIMAL,
        {"LLM_PROXY_HOST": "0.0.0.0", "LLM_PROXY_PORT": " 9000 ", "LLM_PROXY_LOG_LEVEL": "ERROR"},
    )
    assert (config.server.host, config.server.port, config.logging.level) == ("0.0.0.0", 9000, "error")


def test_empty_overrides_are_ignored() -> None:
    config = load(MINIMAL, {"LLM_PROXY_HOST": "", "LLM_PROXY_PORT": "", "LLM_PROXY_LOG_LEVEL": " "})
    assert (config.server.host, config.server.port, config.logging.level) == ("127.0.0.1", 8080, "info")


def test_overrides_are_validated_like_the_file() -> None:
    assert errors(MINIMAL, {"LLM_PROXY_PORT": "abc", "LLM_PROXY_LOG_LEVEL": "loud"}) == [
        "LLM_PROXY_PORT: expected an integer between 1 and 65535, got 'abc'",
        "LLM_PROXY_LOG_LEVEL: expected one of debug, info, warning, error, got 'loud'",
    ]
    assert errors(MINIMAL, {"LLM_PROXY_PORT": "70000"}) == [
        "LLM_PROXY_PORT: expected an integer between 1 and 65535, got '70000'"
    ]


# -- scalars from strings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("true", True), ("True", True), ("YES", True), ("1", True), ("false", False), ("No", False), ("0", False),
     (True, True), (False, False)],
)
def test_booleans(raw: object, expected: bool) -> None:
    config = load(json.dumps({"models": {"m": {"backend_type": "mock", "ssl_verify": raw}}}), fmt="json")
    assert config.models["m"].deployments[0].ssl_verify is expected


@pytest.mark.parametrize("raw", ["maybe", 1, 0, "", "on"])
def test_not_booleans(raw: object) -> None:
    text = json.dumps({"models": {"m": {"backend_type": "mock", "ssl_verify": raw}}})
    assert errors(text, fmt="json") == [f"models.m.ssl_verify: expected a boolean (true or false), got {raw!r}"]


def test_numbers_from_strings() -> None:
    text = json.dumps({"server": {"port": "8081"}, "models": {"m": {
        "backend_type": "mock", "timeout_seconds": "1e2", "retry": {"backoff_ms": " 50 "}}}})
    config = load(text, fmt="json")
    assert (config.server.port, config.models["m"].timeout_seconds, config.models["m"].retry.backoff_ms) == (
        8081, 100.0, 50)


# -- validation errors, each with its exact path ---------------------------------------------------------


def model_errors(fields: str, env: Mapping[str, str] | None = None) -> list[str]:
    return errors(f"models:\n  m: {{{fields}}}\n", env)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ("backend_type: mock, retry: {max_atempts: 3}",
         "models.m.retry.max_atempts: unknown key (did you mean 'max_attempts'?)"),
        ("backend_type: mock, colour: red", "models.m.colour: unknown key"),
        ("endpoint: 'https://x'",
         "models.m.backend_type: required key is missing (one of openai, openai-compatible, anthropic, ollama, mock)"),
        ("backend_type: bedrock",
         "models.m.backend_type: expected one of openai, openai-compatible, anthropic, ollama, mock, got 'bedrock'"),
        ("backend_type: openai", "models.m.endpoint: required key is missing (the backend's base URL)"),
        ("backend_type: ollama, endpoint: 'ftp://host'",
         "models.m.endpoint: expected an http:// or https:// URL, got 'ftp://host'"),
        ("backend_type: ollama, endpoint: 'localhost:11434'",
         "models.m.endpoint: expected an http:// or https:// URL, got 'localhost:11434'"),
        ("backend_type: ollama, endpoint: 'http://h:99999'",
         "models.m.endpoint: invalid URL 'http://h:99999': Port out of range 0-65535"),
        ("backend_type: openai, endpoint: 'https://h/v1?x=1'",
         "models.m.endpoint: expected a base URL without query, fragment or spaces, got 'https://h/v1?x=1'"),
        ("backend_type: mock, endpoint: 'nope'", "models.m.endpoint: expected an http:// or https:// URL, got 'nope'"),
        ("backend_type: anthropic, endpoint: 'https://api.anthropic.com', api_key: '${ANTHROPIC_API_KEY}'",
         "models.m.api_key: environment variable ANTHROPIC_API_KEY is not set "
         "(use ${ANTHROPIC_API_KEY:-} to allow it to be empty)"),
        ("backend_type: mock, api_key: 42", "models.m.api_key: expected a string, got 42"),
        ("backend_type: mock, upstream_model: ''",
         "models.m.upstream_model: must not be empty (omit it to send the requested name)"),
        ("backend_type: mock, timeout_seconds: 0", "models.m.timeout_seconds: expected a number > 0, got 0"),
        ("backend_type: mock, connect_timeout_seconds: -1",
         "models.m.connect_timeout_seconds: expected a number > 0, got -1"),
        ("backend_type: mock, first_byte_timeout_seconds: soon",
         "models.m.first_byte_timeout_seconds: expected a number > 0, got 'soon'"),
        ("backend_type: mock, idle_timeout_seconds: .inf",
         "models.m.idle_timeout_seconds: expected a number > 0, got inf"),
        ("backend_type: mock, deadline_seconds: false", "models.m.deadline_seconds: expected a number > 0, got False"),
        ("backend_type: mock, default_max_tokens: 0", "models.m.default_max_tokens: expected an integer >= 1, got 0"),
        ("backend_type: mock, default_max_tokens: 1.5",
         "models.m.default_max_tokens: expected an integer >= 1, got 1.5"),
        ("backend_type: mock, retry: {max_attempts: 0}",
         "models.m.retry.max_attempts: expected an integer >= 1, got 0"),
        ("backend_type: mock, retry: {backoff_ms: -5}", "models.m.retry.backoff_ms: expected an integer >= 0, got -5"),
        ("backend_type: mock, retry: {backoff_ms: 500, max_backoff_ms: 100}",
         "models.m.retry.max_backoff_ms: must be >= backoff_ms (500), got 100"),
        ("backend_type: mock, retry: {jitter: sometimes}",
         "models.m.retry.jitter: expected a boolean (true or false), got 'sometimes'"),
        ("backend_type: mock, retry: {max_retry_after_seconds: -1}",
         "models.m.retry.max_retry_after_seconds: expected a number >= 0, got -1"),
        ("backend_type: mock, retry: 3", "models.m.retry: expected a mapping, got 3"),
        ("backend_type: mock, cooldown_after_failures: 0",
         "models.m.cooldown_after_failures: expected an integer >= 1, got 0"),
        ("backend_type: mock, cooldown_seconds: -0.5", "models.m.cooldown_seconds: expected a number >= 0, got -0.5"),
        ("backend_type: mock, fallbacks: other", "models.m.fallbacks: expected a list, got 'other'"),
        ("backend_type: mock, fallbacks: [m]", "models.m.fallbacks[0]: a model cannot fall back to itself (m)"),
        ("backend_type: mock, fallbacks: [nope]",
         "models.m.fallbacks[0]: unknown model 'nope' (fallbacks must name configured models)"),
        ("backend_type: mock, headers: {mode: allowlist}",
         "models.m.headers.mode: expected one of passthrough, whitelist, blacklist, got 'allowlist'"),
        ("backend_type: mock, headers: {mode: whitelist, allow: ['bad name']}",
         "models.m.headers.allow[0]: invalid header name or pattern 'bad name'"),
        ("backend_type: mock, headers: {force: {'bad name': x}}",
         "models.m.headers.force.bad name: invalid header name 'bad name'"),
        ("backend_type: mock, headers: {force: {x-a: \"a\\r\\nx-b: c\"}}",
         "models.m.headers.force.x-a: invalid character '\\r' in header value (printable ASCII only, no CR/LF/NUL)"),
        ("backend_type: mock, headers: {add: {x-a: \"nul\\0\"}}",
         "models.m.headers.add.x-a: invalid character '\\x00' in header value (printable ASCII only, no CR/LF/NUL)"),
        ("backend_type: mock, headers: {add: {Content-Length: '3'}}",
         "models.m.headers.add.Content-Length: content-length is managed by the proxy and cannot be set"),
        ("backend_type: mock, response_headers: {force: {content-encoding: gzip}}",
         "models.m.response_headers.force.content-encoding:"
         " content-encoding is managed by the proxy and cannot be set"),
        ("backend_type: mock, headers: {force: {X-A: '1', x-a: '2'}}",
         "models.m.headers.force.x-a: x-a is set twice (names are case-insensitive)"),
        ("backend_type: mock, headers: {add: {x-n: 1}}", "models.m.headers.add.x-n: expected a string, got 1"),
        ("backend_type: mock, headers: {force: [a]}", "models.m.headers.force: expected a mapping, got a list"),
        ("backend_type: mock, headers: {deny: [x-a]}",
         "models.m.headers.deny: only used when mode is blacklist (mode is passthrough)"),
        ("backend_type: mock, headers: {mode: blacklist, allow: [x-a]}",
         "models.m.headers.allow[0]: only used when mode is whitelist (mode is blacklist); in other modes allow may"
         " only name credential headers to let them through (api-key, authorization, cookie, x-api-key)"),
        ("backend_type: mock, headers: {Mode: whitelist}", "models.m.headers.Mode: unknown key (did you mean 'mode'?)"),
        ("backend_type: mock, transforms: {request: [{type: regex, pattern: '(', replacement: ''}]}",
         "models.m.transforms.request[0].pattern: invalid regex: missing ), unterminated subpattern at position 0"),
        ("backend_type: mock, transforms: {response: [{type: regex, pattern: '(a)', replacement: '\\2'}]}",
         "models.m.transforms.response[0].replacement: invalid replacement: invalid group reference 2 at position 1"),
        ("backend_type: mock, transforms: {request: [{type: jsonpath_drop, path: '$.['}]}",
         "models.m.transforms.request[0].path: invalid JSONPath: Parse error near the end of string!"),
        ("backend_type: mock, transforms: {request: [{type: jsonpath_drop, path: '$'}]}",
         "models.m.transforms.request[0].path: cannot drop the whole body ('$')"),
        ("backend_type: mock, transforms: {request: [{type: jsonpath_add, path: $.x}]}",
         "models.m.transforms.request[0].value: required key is missing"),
        ("backend_type: mock, transforms: {request: [{type: jsonpath_add, path: $.x, value: .nan}]}",
         "models.m.transforms.request[0].value: not a JSON value: nan"),
        ("backend_type: mock, transforms: {request: [{type: regex, pattern: x}]}",
         "models.m.transforms.request[0].replacement: required key is missing"),
        ("backend_type: mock, transforms: {request: [{type: jsonpath_drop, path: $.x, value: 1}]}",
         "models.m.transforms.request[0].value: unknown key"),
        ("backend_type: mock, transforms: {request: [{path: $.x}]}",
         "models.m.transforms.request[0].type: required key is missing (one of regex, jsonpath_drop, jsonpath_add)"),
        ("backend_type: mock, transforms: {request: [{type: sed}]}",
         "models.m.transforms.request[0].type: expected one of regex, jsonpath_drop, jsonpath_add, got 'sed'"),
        ("backend_type: mock, transforms: {request: {type: regex}}",
         "models.m.transforms.request: expected a list, got a mapping"),
        ("backend_type: mock, transforms: {requests: []}",
         "models.m.transforms.requests: unknown key (did you mean 'request'?)"),
        ("backend_type: mock, deployments: [{backend_type: mock, weight: 1}]",
         "models.m.backend_type: not allowed next to deployments (set it in each deployment)"),
        ("deployments: [{backend_type: mock, weight: 0}]",
         "models.m.deployments[0].weight: expected a number > 0, got 0"),
        ("deployments: [{backend_type: openai}]",
         "models.m.deployments[0].endpoint: required key is missing (the backend's base URL)"),
        ("deployments: [{backend_type: mock, timeout_seconds: 3}]",
         "models.m.deployments[0].timeout_seconds: unknown key"),
        ("deployments: [mock]", "models.m.deployments[0]: expected a mapping, got 'mock'"),
        ("backend_type: mock, weight: 2", "models.m.weight: unknown key"),
    ],
)
def test_each_error_names_its_path(fields: str, expected: str) -> None:
    assert model_errors(fields) == [expected]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ["the configuration is empty"]),
        ("# only a comment\n", ["the configuration is empty"]),
        ("- a\n- b\n", ["the configuration must be a mapping at the top level, got list"]),
        ("server: {}\n", ["models: required key is missing (configure at least one model)"]),
        ("models: {}\n", ["models: at least one model is required"]),
        ("models: [a]\n", ["models: expected a mapping, got a list"]),
        ("models: {m: }\n", [
            "models.m.backend_type: required key is missing"
            " (one of openai, openai-compatible, anthropic, ollama, mock)"]),
        ("models: {m: mock}\n", ["models.m: expected a mapping, got 'mock'"]),
        ("models: {1.5: {backend_type: mock}}\n", ["models.1.5: keys must be strings (quote it)"]),
        ("models: {'': {backend_type: mock}}\n", ["models.'': a model name must not be empty"]),
        (MINIMAL + "servr: {}\n", ["servr: unknown key (did you mean 'server'?)"]),
        (MINIMAL + "server: {port: abc}\n", ["server.port: expected an integer between 1 and 65535, got 'abc'"]),
        (MINIMAL + "server: {port: 0}\n", ["server.port: expected an integer between 1 and 65535, got 0"]),
        (MINIMAL + "server: {port: true}\n", ["server.port: expected an integer between 1 and 65535, got True"]),
        (MINIMAL + "server: {host: ''}\n", ["server.host: must not be empty"]),
        (MINIMAL + "server: {max_body_bytes: 0}\n", ["server.max_body_bytes: expected an integer >= 1, got 0"]),
        (MINIMAL + "server: {upstream: {client: curl}}\n",
         ["server.upstream.client: expected one of h11, httpx, got 'curl'"]),
        (MINIMAL + "server: {upstream: {max_connections_per_origin: 0}}\n",
         ["server.upstream.max_connections_per_origin: expected an integer >= 1, got 0"]),
        (MINIMAL + "server: {upstream: {keepalive_expiry_seconds: -1}}\n",
         ["server.upstream.keepalive_expiry_seconds: expected a number >= 0, got -1"]),
        (MINIMAL + "logging: {level: verbose}\n",
         ["logging.level: expected one of debug, info, warning, error, got 'verbose'"]),
        (MINIMAL + "logging: {format: xml}\n", ["logging.format: expected one of pretty, json, got 'xml'"]),
        (MINIMAL + "logging: [info]\n", ["logging: expected a mapping, got a list"]),
    ],
)
def test_file_level_errors(text: str, expected: list[str]) -> None:
    assert errors(text) == expected


def test_yaml_syntax_error_has_line_and_column() -> None:
    assert errors("models:\n  m: {backend_type: mock\n") == [
        "YAML syntax error: line 3, column 1: expected ',' or '}', but got '<stream end>'"
    ]
    assert errors("models:\n  m:\n    backend_type: mock\n   bad: [\n") == [
        "YAML syntax error: line 4, column 4: expected <block end>, but found '<block mapping start>'"
    ]


def test_json_syntax_error_has_line_and_column() -> None:
    assert errors('{"models": {\n  "m": }', fmt="json") == [
        "JSON syntax error: line 2, column 8: Expecting value"
    ]


def test_duplicate_keys_are_errors_not_silent_overrides() -> None:
    text = """
        models:
          gpt-4o: {backend_type: openai, endpoint: "https://a"}
          gpt-4o: {backend_type: mock}
        """
    assert errors(text) == ["line 4, column 3: duplicate key 'gpt-4o'"]
    assert errors('{"models": {"m": {"backend_type": "mock"}, "m": {"backend_type": "mock"}}}', fmt="json") == [
        "duplicate key 'm' in a JSON object"
    ]


def test_yaml_merge_keys_may_be_overridden() -> None:
    config = load("""
        models:
          a: &base {backend_type: mock, timeout_seconds: 5}
          b: {<<: *base, timeout_seconds: 9}
        """)
    assert (config.models["a"].timeout_seconds, config.models["b"].timeout_seconds) == (5, 9)


def test_dates_stay_strings() -> None:
    config = load("""
        models:
          m: {backend_type: mock, headers: {force: {anthropic-version: 2023-06-01}}}
        """)
    assert config.models["m"].headers.force == (("anthropic-version", "2023-06-01"),)


def test_unknown_format() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(MINIMAL, fmt="toml", env={})  # type: ignore[arg-type]
    assert info.value.errors == ["unknown configuration format 'toml' (expected yaml or json)"]


def test_every_error_is_reported_not_only_the_first() -> None:
    text = """
        server: {port: abc, hots: x}
        logging: {level: loud}
        models:
          gpt-4o:
            backend_type: openai
            endpoint: ftp://x
            retry: {max_atempts: 3}
            fallbacks: [nope]
            headers: {force: {x-a: "${UNSET_TOKEN}"}}
            transforms: {request: [{type: regex, pattern: "(", replacement: ""}, {type: jsonpath_drop, path: "$.["}]}
          claude: {backend_type: anthropic, endpoint: "https://api.anthropic.com", api_key: "${ANTHROPIC_API_KEY}"}
          ok: {backend_type: mock, ssl_verify: maybe}
        """
    found = errors(text)
    assert found == [
        "server.hots: unknown key (did you mean 'host'?)",
        "server.port: expected an integer between 1 and 65535, got 'abc'",
        "logging.level: expected one of debug, info, warning, error, got 'loud'",
        "models.gpt-4o.endpoint: expected an http:// or https:// URL, got 'ftp://x'",
        "models.gpt-4o.retry.max_atempts: unknown key (did you mean 'max_attempts'?)",
        "models.gpt-4o.headers.force.x-a: environment variable UNSET_TOKEN is not set"
        " (use ${UNSET_TOKEN:-} to allow it to be empty)",
        "models.gpt-4o.transforms.request[0].pattern: invalid regex: missing ), unterminated subpattern at position 0",
        "models.gpt-4o.transforms.request[1].path: invalid JSONPath: Parse error near the end of string!",
        "models.claude.api_key: environment variable ANTHROPIC_API_KEY is not set"
        " (use ${ANTHROPIC_API_KEY:-} to allow it to be empty)",
        "models.ok.ssl_verify: expected a boolean (true or false), got 'maybe'",
        "models.gpt-4o.fallbacks[0]: unknown model 'nope' (fallbacks must name configured models)",
    ]
    with pytest.raises(ConfigError) as info:
        load(text)
    assert str(info.value) == "\n".join(found)
    assert info.value.source == "test.yaml"


# -- deployments and fallbacks ------------------------------------------------------------------------


def test_deployments_errors_are_all_reported() -> None:
    assert model_errors(
        "backend_type: mock, endpoint: 'https://x', deployments: [{backend_type: mock, weight: -1}, {backend_type: x}]"
    ) == [
        "models.m.backend_type: not allowed next to deployments (set it in each deployment)",
        "models.m.endpoint: not allowed next to deployments (set it in each deployment)",
        "models.m.deployments[0].weight: expected a number > 0, got -1",
        "models.m.deployments[1].backend_type: expected one of openai, openai-compatible, anthropic, ollama, mock,"
        " got 'x'",
    ]


def test_empty_deployments_list_means_the_inline_backend() -> None:
    config = load("models:\n  m: {backend_type: mock, deployments: []}\n")
    assert config.models["m"].deployments == (Deployment("mock", "", label="m"),)


FALLBACK_MODELS = """
models:
  a: {backend_type: mock, fallbacks: %s}
  b: {backend_type: mock, fallbacks: %s}
  c: {backend_type: mock, fallbacks: %s}
  "d*": {backend_type: mock}
"""


@pytest.mark.parametrize(
    ("a", "b", "c", "expected"),
    [
        ("[b, c]", "[c]", "[]", []),
        ("[b]", "[a]", "[]", ["models.a.fallbacks: fallback cycle a -> b -> a"]),
        ("[b]", "[c]", "[a]", ["models.a.fallbacks: fallback cycle a -> b -> c -> a"]),
        ("[b]", "[c]", "[b]", ["models.b.fallbacks: fallback cycle b -> c -> b"]),
        ("[a]", "[]", "[]", ["models.a.fallbacks[0]: a model cannot fall back to itself (a)"]),
        ("[b, b]", "[]", "[]", ["models.a.fallbacks[1]: b is listed twice"]),
        ("['d*']", "[]", "[]", ["models.a.fallbacks[0]: 'd*' is a pattern; fallbacks must name exact models"]),
        ("[dx]", "[]", "[]", ["models.a.fallbacks[0]: unknown model 'dx' (fallbacks must name configured models)"]),
        ("[b]", "[a]", "[e]", [
            "models.c.fallbacks[0]: unknown model 'e' (fallbacks must name configured models)",
            "models.a.fallbacks: fallback cycle a -> b -> a",
        ]),
    ],
)
def test_fallbacks(a: str, b: str, c: str, expected: list[str]) -> None:
    text = FALLBACK_MODELS % (a, b, c)
    if expected:
        assert errors(text) == expected
    else:
        assert load(text).models["a"].fallbacks == ("b", "c")


def test_a_bad_fallback_is_reported_even_when_its_model_has_other_errors() -> None:
    assert model_errors("backend_type: mock, timeout_seconds: 0, fallbacks: [ghost]") == [
        "models.m.timeout_seconds: expected a number > 0, got 0",
        "models.m.fallbacks[0]: unknown model 'ghost' (fallbacks must name configured models)",
    ]


# -- the values check themselves too ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        lambda: Deployment("openai", ""),
        lambda: Deployment("openai", "https://x/"),
        lambda: Deployment("bedrock", "https://x"),
        lambda: Deployment("mock", "", weight=0),
        lambda: RetryPolicy(backoff_ms=500, max_backoff_ms=100),
        lambda: RetryPolicy(max_attempts=0),
        lambda: ServerConfig(port=70000),
        lambda: ModelConfig("m", False, deployments=()),
        lambda: ModelConfig("m", False, deployments=(Deployment("mock", ""),), fallbacks=("m",)),
        lambda: ModelConfig("m", False, deployments=(Deployment("mock", ""),), timeout_seconds=0),
        lambda: ModelConfig("m", False, deployments=(Deployment("mock", ""),), headers=DEFAULT_RESPONSE_POLICY),
    ],
)
def test_invalid_values_cannot_be_built_by_hand(build: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        build()  # type: ignore[operator]
