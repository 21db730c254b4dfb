"""The exchange decides what goes upstream and what the client gets, with no I/O."""

from __future__ import annotations

import json

import pytest

from core.config import load_config
from core.errors import ProxyError
from core.exchange import ClientProtocol, Exchange, Ids

OPENAI, ANTHROPIC = ClientProtocol.OPENAI, ClientProtocol.ANTHROPIC
IDS = Ids(token="tok", created=1700000000)
ENDPOINTS = {"openai": "http://up/v1", "openai-compatible": "http://up/v1", "anthropic": "http://up",
             "ollama": "http://up", "mock": ""}


def exchange(client, backend, body, *, headers=(), key="sk-up", env=None, count_tokens=False, **extra):
    entry = {"backend_type": backend, **({"endpoint": ENDPOINTS[backend]} if ENDPOINTS[backend] else {}),
             **({"api_key": key} if key is not None else {}), **extra}
    config = load_config(json.dumps({"models": {"m": entry}}), fmt="json", env=env or {})
    model = config.router.route("m")
    raw = json.dumps(body).encode()
    return Exchange(client=client, body=body, raw=raw, model_name="m", model=model,
                    deployment=model.deployments[0], client_headers=list(headers), ids=IDS,
                    count_tokens=count_tokens)


CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
CLIENT_HEADERS = [("Authorization", "Bearer sk-client"), ("X-Api-Key", "sk-client"), ("User-Agent", "sdk"),
                  ("X-Stainless-Lang", "python"), ("Anthropic-Beta", "b1"), ("Connection", "keep-alive"),
                  ("Accept-Encoding", "gzip"), ("Content-Type", "application/json; charset=utf-8")]


@pytest.mark.parametrize(("client", "backend", "body", "path"), [
    (OPENAI, "openai", CHAT, "/chat/completions"),
    (OPENAI, "anthropic", CHAT, "/v1/messages"),
    (OPENAI, "ollama", CHAT, "/api/chat"),
    (ANTHROPIC, "openai-compatible", MESSAGES, "/chat/completions"),
    (ANTHROPIC, "anthropic", MESSAGES, "/v1/messages"),
    (ANTHROPIC, "ollama", MESSAGES, "/api/chat"),
])
def test_every_route_sends_the_backend_credential_and_never_the_clients(client, backend, body, path):
    up = exchange(client, backend, body, headers=CLIENT_HEADERS).upstream_request()
    headers = dict(up.headers)
    assert up.path == path
    assert len(up.headers) == len(headers), "no header is sent twice"
    assert "sk-client" not in json.dumps(up.headers)
    assert headers["accept-encoding"] == "identity"
    assert headers["content-type"] == "application/json"
    assert "connection" not in headers
    if backend == "anthropic":
        assert headers["x-api-key"] == "sk-up" and "authorization" not in headers
    else:
        assert headers["authorization"] == "Bearer sk-up"
    wire = {"openai-compatible": "openai"}.get(backend, backend)
    translating = client.value != wire
    # SDK telemetry and the other vendor's headers are not sent across protocols
    assert ("x-stainless-lang" in headers) == (not translating)
    assert ("anthropic-beta" in headers) == (wire == "anthropic" or not translating)


def test_anthropic_version_is_the_clients_else_the_default():
    up = exchange(ANTHROPIC, "anthropic", MESSAGES, headers=[("anthropic-version", "2024-01-01")]).upstream_request()
    assert dict(up.headers)["anthropic-version"] == "2024-01-01"
    up = exchange(OPENAI, "anthropic", CHAT).upstream_request()
    assert dict(up.headers)["anthropic-version"] == "2023-06-01"


def test_pass_through_body_is_untouched_unless_aliased():
    body = {"model": "m", "messages": [], "unknown_field": {"kept": True}}
    ex = exchange(OPENAI, "openai", body)
    assert ex.upstream_request().body is ex.raw
    aliased = exchange(OPENAI, "openai", body, upstream_model="gpt-real").upstream_request()
    assert json.loads(aliased.body) == {**body, "model": "gpt-real"}


def test_translated_bodies_carry_the_upstream_model_name():
    up = exchange(OPENAI, "anthropic", CHAT, upstream_model="claude-real").upstream_request()
    sent = json.loads(up.body)
    assert sent["model"] == "claude-real" and sent["max_tokens"] == 4096
    up = exchange(ANTHROPIC, "ollama", {**MESSAGES, "stream": True}).upstream_request()
    assert json.loads(up.body)["model"] == "m" and up.stream


def test_missing_key_names_the_variable_and_is_not_retryable():
    with pytest.raises(ProxyError) as caught:
        exchange(OPENAI, "openai", CHAT, key="${OPENAI_API_KEY:-}").upstream_request()
    assert caught.value.status == 500
    assert "OPENAI_API_KEY" in caught.value.message
    assert caught.value.should_retry is False


def test_openai_compatible_and_ollama_need_no_key():
    up = exchange(OPENAI, "openai-compatible", CHAT, key=None).upstream_request()
    assert "authorization" not in dict(up.headers)
    assert exchange(OPENAI, "ollama", CHAT, key=None).upstream_request().path == "/api/chat"


def test_pass_through_response_and_errors_are_relayed_byte_for_byte():
    ex = exchange(OPENAI, "openai", CHAT)
    body = b'{"id": "x",   "choices": []}'
    reply = ex.response(200, [("content-type", "application/json")], body)
    assert (reply.status, reply.body) == (200, body)
    reply = ex.response(429, [("content-type", "text/plain")], b"slow down")
    assert (reply.status, reply.body, reply.headers) == (429, b"slow down", [("content-type", "text/plain")])


def test_anthropic_errors_reach_openai_clients_with_status_and_type():
    ex = exchange(OPENAI, "anthropic", CHAT)
    ex.upstream_request()
    upstream = json.dumps({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    reply = ex.response(529, [], upstream.encode())
    assert reply.status == 529
    assert json.loads(reply.body) == {"error": {"message": "Overloaded", "type": "overloaded_error",
                                                "param": None, "code": None}}


def test_openai_errors_reach_anthropic_clients_in_anthropic_shape():
    ex = exchange(ANTHROPIC, "openai", MESSAGES)
    reply = ex.response(429, [], b'{"error": {"message": "Rate limit", "type": "requests", "code": "rate"}}')
    assert reply.status == 429
    assert json.loads(reply.body) == {"type": "error", "error": {"type": "rate_limit_error",
                                                                 "message": "Rate limit"}}


def test_a_non_json_upstream_error_still_becomes_a_protocol_error():
    reply = exchange(ANTHROPIC, "ollama", MESSAGES).response(502, [], b"<html>bad gateway</html>")
    assert reply.status == 502
    assert json.loads(reply.body)["error"]["message"] == "<html>bad gateway</html>"


def test_translated_success_is_a_200_in_the_clients_shape():
    ex = exchange(OPENAI, "ollama", CHAT)
    ollama = {"model": "llama", "message": {"role": "assistant", "content": "hey"}, "done": True,
              "done_reason": "stop", "prompt_eval_count": 3, "eval_count": 1}
    reply = ex.response(200, [], json.dumps(ollama).encode())
    completion = json.loads(reply.body)
    assert completion["model"] == "m"
    assert completion["choices"][0]["message"]["content"] == "hey"
    assert completion["usage"] == {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}


def test_garbage_from_a_translated_upstream_is_a_502():
    with pytest.raises(ProxyError) as caught:
        exchange(OPENAI, "anthropic", CHAT).response(200, [], b"not json")
    assert caught.value.status == 502


def test_count_tokens_is_local_except_for_anthropic_backends():
    local = exchange(ANTHROPIC, "openai", MESSAGES, count_tokens=True)
    assert local.local_answer
    assert json.loads(local.local_response().body)["input_tokens"] > 0
    remote = exchange(ANTHROPIC, "anthropic", MESSAGES, count_tokens=True)
    assert not remote.local_answer
    assert remote.upstream_request().path == "/v1/messages/count_tokens"


def test_ollama_that_cannot_think_is_asked_again_without_think():
    ex = exchange(ANTHROPIC, "ollama", {**MESSAGES, "thinking": {"type": "enabled", "budget_tokens": 2048}})
    first = json.loads(ex.upstream_request().body)
    assert "think" in first
    retry = ex.retry_without_think(400, b'{"error": "\\"m\\" does not support thinking"}')
    assert retry is not None and "think" not in json.loads(retry.body)
    assert ex.retry_without_think(400, b'{"error": "other problem"}') is None
