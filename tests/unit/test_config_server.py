"""The ``server:`` block (core.config_server): keys, limits, CORS, shutdown, and the open-relay rule."""

from __future__ import annotations

import hashlib
import json
import textwrap
from collections.abc import Mapping

import pytest
import yaml

from core.auth import Client, ClientAuth
from core.config import Config, ConfigError, ServerConfig, load_config, secrets
from core.cors import DEFAULT_EXPOSE_HEADERS, CorsPolicy
from core.limits import RateLimit

ALICE_KEY = "sk-proxy-alice-4f9c2e7a1b"
BOB_KEY = "sk-proxy-bob-8d3a0c5e62"
BOB_SHA = hashlib.sha256(BOB_KEY.encode()).hexdigest()
MODELS = "models:\n  echo: {backend_type: mock}\n"


def load(server: str, env: Mapping[str, str] | None = None, fmt: str = "yaml") -> Config:
    text = textwrap.dedent(server) + MODELS if fmt == "yaml" else server
    return load_config(text, fmt=fmt, env=env or {}, source="test.yaml")  # type: ignore[arg-type]


def errors(server: str, env: Mapping[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(server, env)
    return info.value.errors


PRODUCTION = f"""
server:
  host: 0.0.0.0
  port: 8080
  max_concurrent_requests: 200
  max_header_bytes: 32768
  shutdown_grace_seconds: 45
  rate_limit: {{requests_per_minute: 120}}
  auth:
    keys:
      - {{key: "${{ALICE_PROXY_KEY}}", name: alice, models: ["gpt-4o*", "claude-*"]}}
      - {{key: "sha256:{BOB_SHA}", name: ci-bot, requests_per_minute: 10}}
      - key: ${{ANON_KEY}}
  cors:
    allow_origins: ["https://chat.example.com", "http://localhost:5173"]
    allow_headers: [authorization, content-type, x-api-key, anthropic-version]
    max_age_seconds: 3600
"""
ENV = {"ALICE_PROXY_KEY": ALICE_KEY, "ANON_KEY": "sk-third"}


def test_defaults_change_nothing_for_a_loopback_proxy():
    server = load("").server
    assert server == ServerConfig()
    assert server.auth == ClientAuth() and not server.auth.required
    assert (server.max_concurrent_requests, server.rate_limit, server.cors) == (None, None, None)
    assert (server.max_header_bytes, server.shutdown_grace_seconds) == (16384, 20.0)


def test_a_production_server_block():
    server = load(PRODUCTION, ENV).server
    assert (server.host, server.max_concurrent_requests, server.max_header_bytes) == ("0.0.0.0", 200, 32768)
    assert server.shutdown_grace_seconds == 45.0 and server.rate_limit == RateLimit(120)
    alice, bot, third = (key.client for key in server.auth.keys)
    assert alice == Client("alice", models=("gpt-4o*", "claude-*"))
    assert bot == Client("ci-bot", requests_per_minute=10)
    assert third == Client("key-3")  # unnamed keys are numbered from 1
    assert server.auth.authenticate([(b"authorization", f"Bearer {ALICE_KEY}".encode())]) == alice
    assert server.auth.authenticate([(b"x-api-key", BOB_KEY.encode())]) == bot
    assert server.cors == CorsPolicy(
        allow_origins=("https://chat.example.com", "http://localhost:5173"),
        allow_headers=("authorization", "content-type", "x-api-key", "anthropic-version"),
        allow_methods=("GET", "POST", "OPTIONS"), expose_headers=DEFAULT_EXPOSE_HEADERS, max_age_seconds=3600)


def test_json_and_yaml_agree():
    as_json = json.dumps(yaml.safe_load(textwrap.dedent(PRODUCTION) + MODELS))
    assert load(as_json, ENV, fmt="json").server == load(PRODUCTION, ENV).server


def test_plain_client_keys_are_secrets_for_log_redaction():
    config = load(PRODUCTION, ENV)
    assert {ALICE_KEY, "sk-third"} <= secrets(config)
    assert ALICE_KEY not in repr(config) and BOB_SHA not in repr(config)


# -- the open-relay rule -------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "'::'", "10.0.0.7", "proxy.internal"])
def test_no_keys_on_a_non_loopback_host_is_a_load_error_naming_the_setting(host):
    [problem] = errors(f"server: {{host: {host}}}\n")
    assert problem.startswith("server.auth: no client keys are configured")
    assert "server.auth.allow_unauthenticated: true" in problem and "server.auth.keys" in problem


def test_the_rule_applies_to_the_host_after_the_environment_override():
    [problem] = errors("server: {host: 127.0.0.1}\n", {"LLM_PROXY_HOST": "0.0.0.0"})
    assert "'0.0.0.0'" in problem
    assert load("server: {host: 0.0.0.0}\n", {"LLM_PROXY_HOST": "localhost"}).server.host == "localhost"


def test_allow_unauthenticated_or_keys_lift_it():
    assert load("server: {host: 0.0.0.0, auth: {allow_unauthenticated: true}}\n").server.auth.allow_unauthenticated
    assert load("server: {host: '::', auth: {allow_unauthenticated: '${OPEN:-no}'}}\n",
                {"OPEN": "yes"}).server.host == "::"
    assert load(PRODUCTION, ENV).server.auth.required
    for host in ("127.0.0.1", "localhost", "'::1'", "127.0.0.53"):
        assert not load(f"server: {{host: {host}}}\n").server.auth.required


# -- errors, each with its path --------------------------------------------------------------------


@pytest.mark.parametrize(("server", "expected"), [
    ("server: {auth: {kyes: []}}", ["server.auth.kyes: unknown key (did you mean 'keys'?)"]),
    ("server: {auth: {keys: [{name: x}]}}",
     ["server.auth.keys[0].key: required key is missing (the client key: ${VAR}, or sha256:<hex digest>)"]),
    ("server: {auth: {keys: [{key: '${UNSET}'}]}}",
     ["server.auth.keys[0].key: environment variable UNSET is not set (use ${UNSET:-} to allow it to be empty)"]),
    ("server: {auth: {keys: [{key: '${EMPTY:-}'}]}}",
     ["server.auth.keys[0].key: is empty (is its environment variable set?)"]),
    ("server: {auth: {keys: [{key: 'sha256:abc'}]}}",
     ["server.auth.keys[0].key: a sha256: key must be followed by 64 hexadecimal digits (sha256sum of the key)"]),
    ("server: {auth: {keys: [{key: 'two words'}]}}",
     ["server.auth.keys[0].key: a key must be printable ASCII without spaces (it is sent in a header)"]),
    ("server: {auth: {keys: [{key: k1, models: []}]}}",
     ["server.auth.keys[0].models: an empty list allows no model at all; omit models to allow every model"]),
    ("server: {auth: {keys: [{key: k1, models: ['']}]}}", ["server.auth.keys[0].models[0]: must not be empty"]),
    ("server: {auth: {keys: [{key: k1, name: ''}]}}", ["server.auth.keys[0].name: must not be empty"]),
    ("server: {auth: {keys: [{key: k1, requests_per_minute: 0}]}}",
     ["server.auth.keys[0].requests_per_minute: expected an integer >= 1, got 0"]),
    ("server: {auth: {keys: [{key: k1, name: a}, {key: k2, name: a}]}}",
     ["server.auth.keys[1].name: 'a' is already the name of server.auth.keys[0]"]),
    ("server: {auth: {keys: [{key: k1, allow: x}], allow_unauthenticated: maybe}}",
     ["server.auth.keys[0].allow: unknown key", "server.auth.allow_unauthenticated: expected a boolean "
                                                "(true or false), got 'maybe'"]),
    ("server: {auth: {keys: [{key: k1}], allow_unauthenticated: true}}",
     ["server.auth.allow_unauthenticated: has no effect when keys are configured (every request then needs a "
      "key); remove it"]),
    ("server: {rate_limit: {}}", ["server.rate_limit.requests_per_minute: required key is missing"]),
    ("server: {rate_limit: {requests_per_minute: 0}}",
     ["server.rate_limit.requests_per_minute: expected an integer >= 1, got 0"]),
    ("server: {max_concurrent_requests: 0, max_header_bytes: 100, shutdown_grace_seconds: -1}",
     ["server.max_header_bytes: expected an integer >= 1024, got 100",
      "server.max_concurrent_requests: expected an integer >= 1, got 0",
      "server.shutdown_grace_seconds: expected a number >= 0, got -1"]),
    ("server: {cors: {allow_headers: ['*']}}", ["server.cors.allow_origins: required key is missing"]),
    ("server: {cors: {allow_origins: []}}",
     ["server.cors.allow_origins: list at least one origin (or '*'), or remove server.cors"]),
    ("server: {cors: {allow_origins: ['https://a.example/app']}}",
     ["server.cors.allow_origins[0]: expected '*' or an origin such as 'https://app.example.com' (no path), "
      "got 'https://a.example/app'"]),
    ("server: {cors: {allow_origins: ['*'], allow_credentials: true}}",
     ["server.cors.allow_credentials: cannot be true with the '*' origin (browsers refuse it): list the "
      "allowed origins"]),
    ("server: {cors: {allow_origins: ['*'], allow_headers: ['bad header'], allow_methods: ['GET', 'P O']}}",
     ["server.cors.allow_headers[0]: invalid header name 'bad header'",
      "server.cors.allow_methods[1]: invalid method 'P O'"]),
])
def test_errors_name_their_path(server, expected):
    assert errors(server + "\n", {"EMPTY": ""}) == expected


def test_a_key_value_never_appears_in_an_error():
    found = errors(f"server: {{auth: {{keys: [{{key: {ALICE_KEY}, name: a}}, {{key: {ALICE_KEY}, name: b}},"
                   " {key: 12345678}]}}\n")
    assert found == ["server.auth.keys[2].key: expected a string (quote the key, or better: take it from ${VAR})",
                     "server.auth.keys[1].key: the same key as server.auth.keys[0]"]
    assert not any(ALICE_KEY in e or "12345678" in e for e in found)
    [duplicate] = errors(f"server: {{auth: {{keys: [{{key: {ALICE_KEY}, name: a}}, "
                         f"{{key: 'sha256:{hashlib.sha256(ALICE_KEY.encode()).hexdigest()}', name: b}}]}}}}\n")
    assert duplicate == "server.auth.keys[1].key: the same key as server.auth.keys[0]"


def test_every_server_error_is_reported_at_once():
    found = errors("server: {host: 0.0.0.0, port: 0, rate_limit: {requests_per_minute: x}, "
                   "cors: {allow_origins: [nope]}}\n")
    assert [e.split(":")[0] for e in found] == [
        "server.port", "server.rate_limit.requests_per_minute", "server.cors.allow_origins[0]", "server.auth"]
