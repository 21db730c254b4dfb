"""Safe to expose (issue 7): client keys, limits, CORS, hot reload and graceful shutdown, end to end.

Every test runs the real app under hypercorn on 127.0.0.1 (the shutdown and
reload-by-signal tests run a real ``llm-proxy serve`` process) against fake
upstreams on other ports, and drives it with the official SDKs where they fit,
or with httpx where a test must hold a stream open or send exact headers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anthropic
import attrs
import httpx
import openai
import pytest
import trio
from hypercorn.trio import serve as hypercorn_serve

from core.config import Config, ConfigError, load_config
from io_trio.app import create_app
from io_trio.cli import hypercorn_config, main
from io_trio.state import ProxyState
from tests.integration.conftest import UPSTREAM_KEY, in_thread, model
from tests.support.servers import FakeUpstream, Reply, json_reply, sse_reply, start_server

ALICE = "sk-proxy-alice-4f9c2e7a1b"
BOB = "sk-proxy-bob-8d3a0c5e62"
KEY_ENV = {"ALICE_PROXY_KEY": ALICE, "BOB_PROXY_KEY": BOB}
KEYS = {"keys": [
    {"key": "${ALICE_PROXY_KEY}", "name": "alice", "models": ["gpt-4o*", "mock"]},
    {"key": "${BOB_PROXY_KEY}", "name": "bob"},
]}
APP_ORIGIN = "https://chat.example.com"
MESSAGES = [{"role": "user", "content": "say hi"}]


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-abc", "object": "chat.completion.chunk", "created": 1732600000, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}


def stream_events(text: str, pieces: int = 1) -> list[tuple[str | None, Any]]:
    return [(None, chunk({"role": "assistant", "content": ""})),
            *[(None, chunk({"content": text})) for _ in range(pieces)],
            (None, chunk({}, "stop")), (None, "[DONE]")]


COMPLETION = {
    "id": "chatcmpl-abc", "object": "chat.completion", "created": 1732600000, "model": "gpt-4o-mini",
    "choices": [{"index": 0, "logprobs": None, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "Hello!", "refusal": None}}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
}

# -- the proxy under test ------------------------------------------------------------------------


@attrs.define
class Proxy:
    url: str
    state: ProxyState


def load(config: dict[str, Any], env: dict[str, str] | None = None) -> Config:
    return load_config(json.dumps(config), fmt="json", env={**KEY_ENV, **(env or {})}, source="<test>")


@pytest.fixture
def serve_proxy(nursery: trio.Nursery) -> Callable[..., Any]:
    """`await serve_proxy(models, **server)` -> a `Proxy` on 127.0.0.1."""

    async def start(models: dict[str, Any], **server: Any) -> Proxy:
        app = create_app(load({"server": server, "models": models}))
        return Proxy(await start_server(nursery, app), app.extensions["llm_proxy"])

    return start


class HeldStream:
    """An OpenAI-protocol upstream whose streams send one chunk, then wait for `release`."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.requests: list[dict[str, Any]] = []
        self.release = trio.Event()
        self.url = ""

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": message["type"] + ".complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while (message := await receive()).get("more_body"):
            body += message.get("body", b"")
        self.requests.append(json.loads(body + message.get("body", b"")))
        first, *rest = [f"data: {json.dumps(data)}\n\n".encode() for _, data in stream_events(self.text)[:-1]]
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": first, "more_body": True})
        await self.release.wait()
        for piece in rest:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})


async def held_upstream(nursery: trio.Nursery, text: str) -> HeldStream:
    upstream = HeldStream(text)
    upstream.url = await start_server(nursery, upstream)
    return upstream


async def fake_upstream(nursery: trio.Nursery, script: list[Reply]) -> FakeUpstream:
    upstream = FakeUpstream(script)
    upstream.url = await start_server(nursery, upstream)
    return upstream


def openai_model(upstream: Any) -> dict[str, Any]:
    return model("openai", f"{upstream.url}/v1", api_key=UPSTREAM_KEY)


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@attrs.define
class StreamRead:
    """What a streaming client received so far; `first` is set at the first body bytes."""

    status: int = 0
    headers: dict[str, str] = attrs.Factory(dict)
    text: str = ""
    error: Exception | None = None
    first: trio.Event = attrs.Factory(trio.Event)
    done: trio.Event = attrs.Factory(trio.Event)

    def data(self) -> list[Any]:
        """The `data:` of each SSE event, parsed (``[DONE]`` kept as a string)."""
        found = []
        for line in self.text.splitlines():
            if line.startswith("data: "):
                found.append(line[6:] if line == "data: [DONE]" else json.loads(line[6:]))
        return found


async def read_stream(http: httpx.AsyncClient, url: str, payload: dict[str, Any], headers: dict[str, str],
                      result: StreamRead) -> None:
    try:
        async with http.stream("POST", url, json=payload, headers=headers) as response:
            result.status, result.headers = response.status_code, dict(response.headers)
            async for piece in response.aiter_raw():
                result.text += piece.decode()
                result.first.set()
    except httpx.HTTPError as err:
        result.error = err
    finally:
        result.first.set()
        result.done.set()


def chat(model_name: str = "gpt-4o-mini", *, stream: bool = False) -> dict[str, Any]:
    return {"model": model_name, "messages": MESSAGES, **({"stream": True} if stream else {})}


def openai_client(proxy: Proxy, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=key, max_retries=0)


def anthropic_client(proxy: Proxy, **credentials: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=proxy.url, max_retries=0, **credentials)


# -- client keys -------------------------------------------------------------------------------------


async def test_openai_sdk_sends_its_key_as_bearer_and_gets_401_without_a_good_one(serve_proxy, nursery, caplog):
    caplog.set_level(logging.DEBUG)
    up = await fake_upstream(nursery, [json_reply(COMPLETION)])
    proxy = await serve_proxy({"gpt-4o-mini": openai_model(up)}, auth=KEYS)
    done = await in_thread(lambda: openai_client(proxy, ALICE).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES))
    assert done.choices[0].message.content == "Hello!"
    [seen] = up.requests
    assert seen.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"  # the backend's key, never the client's
    assert ALICE not in json.dumps(seen.headers) and "x-api-key" not in seen.headers

    with pytest.raises(openai.AuthenticationError) as caught:
        await in_thread(lambda: openai_client(proxy, "sk-proxy-wrong").chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES))
    assert caught.value.status_code == 401 and caught.value.code == "invalid_api_key"
    assert caught.value.response.headers["www-authenticate"].startswith("Bearer")
    async with httpx.AsyncClient() as http:
        missing = await http.post(f"{proxy.url}/v1/chat/completions", json=chat())
    assert missing.status_code == 401 and "Authorization: Bearer" in missing.json()["error"]["message"]
    assert len(up.requests) == 1  # refused requests never reach the upstream
    assert not any(ALICE in record.getMessage() for record in caplog.records)


async def test_anthropic_sdk_is_accepted_with_x_api_key_or_auth_token_and_401_otherwise(serve_proxy, nursery):
    up = await fake_upstream(nursery, [json_reply(COMPLETION), json_reply(COMPLETION)])
    proxy = await serve_proxy({"gpt-4o-mini": openai_model(up)}, auth=KEYS)
    for credentials in ({"api_key": BOB}, {"auth_token": BOB}):  # x-api-key, then Authorization: Bearer
        message = await in_thread(lambda: anthropic_client(proxy, **credentials).messages.create(
            model="gpt-4o-mini", max_tokens=50, messages=MESSAGES))
        assert message.content[0].text == "Hello!"
    for seen in up.requests:
        assert seen.headers["authorization"] == f"Bearer {UPSTREAM_KEY}" and "x-api-key" not in seen.headers
        assert BOB not in json.dumps(seen.headers)
    with pytest.raises(anthropic.AuthenticationError) as caught:
        await in_thread(lambda: anthropic_client(proxy, api_key="sk-ant-wrong").messages.create(
            model="gpt-4o-mini", max_tokens=50, messages=MESSAGES))
    assert caught.value.status_code == 401
    assert caught.value.body == {"type": "error", "error": {"type": "authentication_error",
                                                             "message": "invalid API key"}}


async def test_a_model_outside_the_keys_allow_list_is_403_in_both_protocols(serve_proxy, nursery, caplog):
    caplog.set_level(logging.INFO)
    up = await fake_upstream(nursery, [])
    proxy = await serve_proxy({"claude-opus-4-1": model("anthropic", up.url, api_key=UPSTREAM_KEY),
                               "mock": model("mock")}, auth=KEYS)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        await in_thread(lambda: openai_client(proxy, ALICE).chat.completions.create(
            model="claude-opus-4-1", messages=MESSAGES))
    assert caught.value.status_code == 403 and "claude-opus-4-1" in caught.value.message
    with pytest.raises(anthropic.PermissionDeniedError) as ant_caught:
        await in_thread(lambda: anthropic_client(proxy, api_key=ALICE).messages.create(
            model="claude-opus-4-1", max_tokens=50, messages=MESSAGES))
    assert ant_caught.value.body["error"]["type"] == "permission_error"
    assert up.requests == []
    assert any("alice" in r.getMessage() and "claude-opus-4-1" in r.getMessage() for r in caplog.records)
    assert not any(ALICE in r.getMessage() for r in caplog.records)  # the name is logged, never the key


async def test_models_list_shows_only_what_the_key_may_use(serve_proxy):
    models = {"gpt-4o": model("mock"), "gpt-4o-mini": model("mock"), "claude-opus-4-1": model("mock"),
              "mock": model("mock"), "*": model("mock")}
    proxy = await serve_proxy(models, auth=KEYS)
    alice = await in_thread(lambda: [m.id for m in openai_client(proxy, ALICE).models.list()])
    assert alice == ["gpt-4o", "gpt-4o-mini", "mock"]
    bob = await in_thread(lambda: [m.id for m in anthropic_client(proxy, api_key=BOB).models.list()])
    assert bob == ["gpt-4o", "gpt-4o-mini", "claude-opus-4-1", "mock"]
    with pytest.raises(openai.AuthenticationError):
        await in_thread(lambda: list(openai_client(proxy, "nope").models.list()))


async def test_health_needs_no_key(serve_proxy):
    proxy = await serve_proxy({"mock": model("mock")}, auth=KEYS)
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{proxy.url}/health")).json() == {"status": "ok"}
        assert (await http.get(f"{proxy.url}/v1/models")).status_code == 401


async def test_a_body_over_the_limit_is_413_in_both_protocols_but_only_for_a_known_key(serve_proxy):
    proxy = await serve_proxy({"mock": model("mock")}, auth=KEYS, max_body_bytes=2048)
    big = {"model": "mock", "max_tokens": 5, "messages": [{"role": "user", "content": "x" * 4096}]}
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{proxy.url}/v1/chat/completions", json=big, headers=auth(ALICE))
        assert r.status_code == 413 and "2048 bytes" in r.json()["error"]["message"]
        r = await http.post(f"{proxy.url}/v1/messages", json=big, headers={"x-api-key": ALICE})
        assert r.status_code == 413 and r.json()["error"]["type"] == "request_too_large"
        r = await http.post(f"{proxy.url}/v1/messages", json=big, headers={"x-api-key": "wrong"})
        assert r.status_code == 401  # an unknown caller is turned away before its body is read


# -- limits ------------------------------------------------------------------------------------------


async def test_over_the_concurrency_limit_requests_get_503_with_retry_after_until_a_stream_ends(
        serve_proxy, nursery):
    up = await held_upstream(nursery, "held")
    proxy = await serve_proxy({"gpt-4o-mini": openai_model(up)}, auth=KEYS, max_concurrent_requests=2)
    url = f"{proxy.url}/v1/chat/completions"
    async with httpx.AsyncClient(timeout=30) as http:
        streams = [StreamRead(), StreamRead()]
        for result in streams:
            nursery.start_soon(read_stream, http, url, chat(stream=True), auth(ALICE), result)
        for result in streams:
            await result.first.wait()  # both are mid-stream: their handlers returned long ago
        refused = await http.post(url, json=chat(), headers=auth(BOB))
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["type"] == "overloaded_error"
        assert "2 concurrent requests" in refused.json()["error"]["message"]
        ant = await http.post(f"{proxy.url}/v1/messages", headers={"x-api-key": BOB},
                              json={"model": "gpt-4o-mini", "max_tokens": 5, "messages": MESSAGES})
        assert ant.status_code == 503 and ant.json()["error"]["type"] == "overloaded_error"
        assert len(up.requests) == 2  # refusals never went upstream
        up.release.set()
        for result in streams:
            await result.done.wait()
            assert result.status == 200 and result.data()[-1] == "[DONE]"
        again = await http.post(url, json=chat(stream=True), headers=auth(BOB))
        assert again.status_code == 200 and again.text.rstrip().endswith("data: [DONE]")

    async def all_released() -> bool:
        return proxy.state.concurrency.active == 0

    await _wait_for(all_released, within=2)


async def test_each_key_has_its_own_requests_per_minute_budget(serve_proxy):
    keys = {"keys": [KEYS["keys"][0], {**KEYS["keys"][1], "requests_per_minute": 1}]}
    proxy = await serve_proxy({"mock": model("mock")}, auth=keys, rate_limit={"requests_per_minute": 2})
    alice = openai_client(proxy, ALICE)
    for _ in range(2):
        await in_thread(lambda: alice.chat.completions.create(model="mock", messages=MESSAGES))
    with pytest.raises(openai.RateLimitError) as caught:
        await in_thread(lambda: alice.chat.completions.create(model="mock", messages=MESSAGES))
    assert 25 <= int(caught.value.response.headers["retry-after"]) <= 30  # one token every 30 s
    assert caught.value.code == "rate_limit_exceeded"
    bob = anthropic_client(proxy, api_key=BOB)  # bob's own budget: 1 per minute
    await in_thread(lambda: bob.messages.create(model="mock", max_tokens=5, messages=MESSAGES))
    with pytest.raises(anthropic.RateLimitError) as ant_caught:
        await in_thread(lambda: bob.messages.create(model="mock", max_tokens=5, messages=MESSAGES))
    assert 55 <= int(ant_caught.value.response.headers["retry-after"]) <= 60
    assert ant_caught.value.body["error"]["type"] == "rate_limit_error"


# -- CORS --------------------------------------------------------------------------------------------


async def test_cors_preflight_and_headers_on_responses_errors_and_streams(serve_proxy, nursery):
    upstream_cors = ("access-control-allow-origin", "*")  # the upstream's policy is not ours
    up = await fake_upstream(nursery, [sse_reply(stream_events("Hi")), json_reply(COMPLETION)])
    up.script[0].headers.append(upstream_cors)
    proxy = await serve_proxy({"gpt-4o-mini": openai_model(up)}, auth=KEYS, cors={"allow_origins": [APP_ORIGIN]})
    url = f"{proxy.url}/v1/chat/completions"
    async with httpx.AsyncClient() as http:
        preflight = await http.options(url, headers={
            "origin": APP_ORIGIN, "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type, x-stainless-os"})
        assert preflight.status_code == 204 and preflight.content == b""
        assert preflight.headers["access-control-allow-origin"] == APP_ORIGIN
        assert preflight.headers["access-control-allow-headers"] == "authorization, content-type, x-stainless-os"
        assert "POST" in preflight.headers["access-control-allow-methods"]

        evil = await http.options(url, headers={"origin": "https://evil.example",
                                                "access-control-request-method": "POST"})
        assert "access-control-allow-origin" not in evil.headers

        browser = {"origin": APP_ORIGIN, **auth(ALICE)}
        streamed = await http.post(url, json=chat(stream=True), headers=browser)
        assert streamed.status_code == 200 and streamed.text.rstrip().endswith("data: [DONE]")
        assert streamed.headers.get_list("access-control-allow-origin") == [APP_ORIGIN]
        assert "retry-after" in streamed.headers["access-control-expose-headers"]
        whole = await http.post(url, json=chat(), headers=browser)
        assert whole.json()["choices"][0]["message"]["content"] == "Hello!"
        assert whole.headers["access-control-allow-origin"] == APP_ORIGIN
        denied = await http.post(url, json=chat(), headers={"origin": APP_ORIGIN})
        assert denied.status_code == 401  # and the page can read why:
        assert denied.headers["access-control-allow-origin"] == APP_ORIGIN


async def test_without_cors_and_keys_browser_requests_from_other_origins_are_refused(serve_proxy):
    # Otherwise any web page could make its visitors' browsers spend the proxy's
    # provider keys with a "simple" text/plain POST to 127.0.0.1.
    proxy = await serve_proxy({"mock": model("mock")})
    url = f"{proxy.url}/v1/chat/completions"
    async with httpx.AsyncClient() as http:
        sneaky = await http.post(url, content=json.dumps(chat("mock")),
                                 headers={"origin": "https://evil.example", "content-type": "text/plain"})
        assert sneaky.status_code == 403 and "server.cors.allow_origins" in sneaky.json()["error"]["message"]
        assert "access-control-allow-origin" not in sneaky.headers
        sdk = await http.post(url, json=chat("mock"))  # no Origin: not a browser
        assert sdk.status_code == 200 and "access-control-allow-origin" not in sdk.headers


async def test_without_keys_a_request_on_a_non_loopback_address_is_refused():
    """The loader's open-relay rule, enforced per request for ``hypercorn -b 0.0.0.0`` started by hand."""

    async def get(config: Config, server: tuple[str, int]) -> tuple[int, bytes]:
        app = create_app(config)
        sent: list[dict[str, Any]] = []
        answered = trio.Event()
        requested = False

        async def receive() -> dict[str, Any]:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await answered.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                answered.set()

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
                 "scheme": "http", "path": "/v1/models", "raw_path": b"/v1/models", "query_string": b"",
                 "root_path": "", "headers": [(b"host", b"proxy")], "client": ("10.9.8.7", 50000),
                 "server": server, "extensions": {}}
        await app(scope, receive, send)
        return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])

    closed = load({"models": {"mock": model("mock")}})
    status, body = await get(closed, ("10.1.2.3", 8080))
    assert status == 403 and b"server.auth.keys" in body
    assert (await get(closed, ("127.0.0.1", 8080)))[0] == 200
    opened = load({"server": {"auth": {"allow_unauthenticated": True}}, "models": {"mock": model("mock")}})
    assert (await get(opened, ("10.1.2.3", 8080)))[0] == 200


async def test_the_open_relay_refusal_from_check_config_and_serve(tmp_path, capsys):
    exposed = tmp_path / "exposed.yaml"
    exposed.write_text("server: {host: 0.0.0.0}\nmodels: {mock: {backend_type: mock}}\n")
    assert main(["check-config", str(exposed)]) == 1
    assert "server.auth.allow_unauthenticated: true" in capsys.readouterr().err
    assert main(["serve", "--config", str(exposed)]) == 2
    assert "server.auth: no client keys are configured" in capsys.readouterr().err
    local = tmp_path / "local.yaml"
    local.write_text("server: {host: 127.0.0.1}\nmodels: {mock: {backend_type: mock}}\n")
    assert main(["serve", "--config", str(local), "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "refusing to start: --host 0.0.0.0" in err and "allow_unauthenticated" in err


async def test_a_request_head_over_max_header_bytes_gets_431(nursery):
    config = load({"server": {"max_header_bytes": 2048}, "models": {"mock": model("mock")}})
    binds = await nursery.start(hypercorn_serve, create_app(config), hypercorn_config(config.server, "127.0.0.1", 0))
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{binds[0]}/health", headers={"x-trace": "a" * 1000})).status_code == 200
        big = await http.post(f"{binds[0]}/v1/messages", json={}, headers={"x-trace": "a" * 3000})
        assert big.status_code == 431 and big.json()["error"]["type"] == "invalid_request_error"
        assert "2048 bytes" in big.json()["error"]["message"]


# -- hot reload ------------------------------------------------------------------------------------


async def test_reload_while_a_stream_is_in_flight(serve_proxy, nursery):
    old, new = await held_upstream(nursery, "from-old"), await held_upstream(nursery, "from-new")
    new.release.set()
    proxy = await serve_proxy({"gpt-4o-mini": openai_model(old)}, auth=KEYS)
    url = f"{proxy.url}/v1/chat/completions"
    async with httpx.AsyncClient(timeout=30) as http:
        before = StreamRead()
        nursery.start_soon(read_stream, http, url, chat(stream=True), auth(ALICE), before)
        await before.first.wait()
        snapshot = proxy.state.reload(load({"server": {"auth": KEYS}, "models": {"gpt-4o-mini": openai_model(new)}}))
        assert snapshot.generation == 2 and proxy.state.current is snapshot
        after = await http.post(url, json=chat(stream=True), headers=auth(ALICE))
        assert "from-new" in after.text and after.text.rstrip().endswith("data: [DONE]")
        assert not before.done.is_set()
        old.release.set()
        await before.done.wait()
    assert before.error is None and before.data()[-1] == "[DONE]"
    assert [d["choices"][0]["delta"].get("content") for d in before.data()[1:-2]] == ["from-old"]
    assert (len(old.requests), len(new.requests)) == (1, 1)


async def test_a_reload_replaces_the_keys_and_limits_for_new_requests(serve_proxy):
    proxy = await serve_proxy({"mock": model("mock")}, auth=KEYS)
    carol = "sk-proxy-carol-0f1e2d"
    proxy.state.reload(load({"server": {"auth": {"keys": [{"key": carol, "name": "carol"}]}, "max_body_bytes": 1024},
                             "models": {"mock": model("mock")}}))
    async with httpx.AsyncClient() as http:
        url = f"{proxy.url}/v1/chat/completions"
        assert (await http.post(url, json=chat("mock"), headers=auth(ALICE))).status_code == 401
        assert (await http.post(url, json=chat("mock"), headers=auth(carol))).status_code == 200
        big = {"model": "mock", "messages": [{"role": "user", "content": "x" * 2000}]}
        too_big = await http.post(url, json=big, headers=auth(carol))
        assert too_big.status_code == 413 and "1024 bytes" in too_big.json()["error"]["message"]


async def test_an_invalid_file_is_rejected_with_its_errors_and_the_old_config_keeps_serving(
        serve_proxy, tmp_path, caplog):
    proxy = await serve_proxy({"mock": model("mock")})
    path = tmp_path / "proxy.yaml"
    path.write_text("models:\n  mock: {backend_type: mock}\n  broken: {backend_type: openai}\n")
    assert await proxy.state.reload_file(path, {}) is False
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert str(path) in record.getMessage() and "still serving the previous configuration" in record.getMessage()
    assert "models.broken.endpoint: required key is missing" in record.getMessage()
    assert proxy.state.current.generation == 1
    path.write_text("models:\n  mock: {backend_type: mock}\n  other: {backend_type: mock}\n")
    assert await proxy.state.reload_file(path, {}) is True
    async with httpx.AsyncClient() as http:
        listed = (await http.get(f"{proxy.url}/v1/models")).json()
    assert [m["id"] for m in listed["data"]] == ["mock", "other"]


async def test_a_reload_that_would_open_the_relay_is_refused():
    config = load({"server": {"host": "0.0.0.0", "auth": KEYS}, "models": {"mock": model("mock")}})
    state = create_app(config, bind_host="0.0.0.0").extensions["llm_proxy"]
    keyless = load({"models": {"mock": model("mock")}})  # valid on its own: its host is 127.0.0.1
    with pytest.raises(ConfigError, match="allow_unauthenticated"):
        state.reload(keyless)
    assert state.current.config is config


async def test_breaker_state_survives_a_reload_for_unchanged_models():
    text = {"models": {"steady": model("openai", "http://a.test/v1", api_key="k"),
                       "moved": model("openai", "http://b.test/v1", api_key="k")}}
    state = ProxyState(load(text))
    steady, moved = state.current.balancers["steady"], state.current.balancers["moved"]
    text["models"]["moved"]["endpoint"] = "http://c.test/v1"
    snapshot = state.reload(load(text))  # every value is new, but "steady" is equal
    assert snapshot.balancers["steady"] is steady and snapshot.balancers["moved"] is not moved
    for name in ("steady", "moved"):
        model_config = snapshot.config.models[name]
        [dep] = snapshot.balancer(model_config).choose(0.0, state.rng)
        origin, target = snapshot.backends.target(dep, "/chat/completions")  # what the balancer hands out is known
        assert target == b"/v1/chat/completions"
    assert origin.host == "c.test"


# -- graceful shutdown, in process -----------------------------------------------------------------


async def test_a_request_still_waiting_at_the_shutdown_deadline_gets_a_clean_503(serve_proxy, nursery):
    up = await fake_upstream(nursery, [Reply(hang=True)])
    proxy = await serve_proxy({"gpt-4o-mini": openai_model(up)})
    async with httpx.AsyncClient(timeout=30) as http:
        async with trio.open_nursery() as inner:
            answer: list[httpx.Response] = []

            async def ask() -> None:
                answer.append(await http.post(f"{proxy.url}/v1/chat/completions", json=chat()))

            inner.start_soon(ask)
            while not up.requests:
                await trio.sleep(0.01)
            proxy.state.drain.begin(trio.current_time() + 0.2)
            with trio.fail_after(5):
                await up.disconnected.wait()  # the proxy let go of the upstream
    [response] = answer
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "shutting_down"


async def test_a_stream_still_running_at_the_shutdown_deadline_ends_with_an_error_event(serve_proxy, nursery):
    up = await held_upstream(nursery, "never released")
    proxy = await serve_proxy({"gpt-4o-mini": openai_model(up)})
    async with httpx.AsyncClient(timeout=30) as http:
        openai_stream, anthropic_stream = StreamRead(), StreamRead()
        nursery.start_soon(read_stream, http, f"{proxy.url}/v1/chat/completions", chat(stream=True), {},
                           openai_stream)
        nursery.start_soon(read_stream, http, f"{proxy.url}/v1/messages",
                           {"model": "gpt-4o-mini", "max_tokens": 50, "messages": MESSAGES, "stream": True},
                           {"anthropic-version": "2023-06-01"}, anthropic_stream)
        await openai_stream.first.wait()
        await anthropic_stream.first.wait()
        proxy.state.drain.begin(trio.current_time() + 0.2)
        with trio.fail_after(2):
            await openai_stream.done.wait()
            await anthropic_stream.done.wait()
    assert openai_stream.error is None and anthropic_stream.error is None  # ended cleanly, not cut
    assert openai_stream.data()[-1]["error"]["code"] == "shutting_down"
    assert "event: error" in anthropic_stream.text
    assert anthropic_stream.data()[-1]["error"]["type"] == "overloaded_error"


# -- a real `llm-proxy serve` process ----------------------------------------------------------------


def _llm_proxy_command() -> list[str]:
    script = Path(sys.executable).parent / "llm-proxy"
    return [str(script)] if script.exists() else [sys.executable, "-m", "io_trio.cli"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@attrs.define
class Served:
    process: trio.Process
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def exit_code(self, within: float) -> int:
        with trio.fail_after(within):
            return await self.process.wait()


@contextlib.asynccontextmanager
async def llm_proxy(config: Path, *extra: str) -> AsyncIterator[Served]:
    """``llm-proxy serve`` on a free port of 127.0.0.1, ready; killed by PID if still running at the end."""
    port = _free_port()
    log = config.with_suffix(".log")
    with open(log, "wb") as out:
        process = await trio.lowlevel.open_process(
            [*_llm_proxy_command(), "serve", "--config", str(config), "--port", str(port), *extra],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    served = Served(process, f"http://127.0.0.1:{port}", log)
    try:
        await _wait_ready(served)
        yield served
    finally:
        if process.returncode is None:
            os.kill(process.pid, signal.SIGKILL)
        with trio.move_on_after(5):
            await process.wait()


async def _wait_ready(served: Served) -> None:
    async with httpx.AsyncClient() as http:
        with trio.fail_after(20):
            while True:
                assert served.process.returncode is None, served.output()
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get(f"{served.url}/health")).status_code == 200:
                        return
                await trio.sleep(0.05)


async def _models(served: Served) -> list[str]:
    async with httpx.AsyncClient() as http:
        return [m["id"] for m in (await http.get(f"{served.url}/v1/models")).json()["data"]]


async def _wait_for(predicate: Callable[[], Any], within: float) -> None:
    with trio.fail_after(within):
        while not await predicate():
            await trio.sleep(0.1)


def _config_file(tmp_path: Path, upstream: Any, grace: float) -> Path:
    path = tmp_path / "proxy.yaml"
    path.write_text(f"server: {{host: 127.0.0.1, shutdown_grace_seconds: {grace}}}\n"
                    f"models:\n  gpt-4o-mini: {{backend_type: openai, endpoint: '{upstream.url}/v1', "
                    f"api_key: {UPSTREAM_KEY}}}\n")
    return path


async def test_sigterm_lets_a_stream_in_flight_finish_then_exits_0(tmp_path, nursery):
    up = await fake_upstream(nursery, [sse_reply(stream_events("tick", pieces=6), pause=0.25)])
    async with llm_proxy(_config_file(tmp_path, up, grace=10)) as served, httpx.AsyncClient(timeout=30) as http:
        stream = StreamRead()
        nursery.start_soon(read_stream, http, f"{served.url}/v1/chat/completions", chat(stream=True), {}, stream)
        await stream.first.wait()
        signalled = trio.current_time()
        served.process.send_signal(signal.SIGTERM)
        await _wait_for(lambda: _logged(served, "SIGTERM: shutting down"), within=5)
        with pytest.raises(httpx.TransportError):  # no new connection is served once the shutdown began
            await http.get(f"{served.url}/health", timeout=1)
        with trio.fail_after(10):
            await stream.done.wait()
        assert stream.error is None and stream.data()[-1] == "[DONE]"
        assert [d["choices"][0]["delta"].get("content") for d in stream.data()[1:7]] == ["tick"] * 6
        assert await served.exit_code(within=5) == 0
        assert trio.current_time() - signalled < 6  # it did not wait out the 10 s grace


async def test_sigterm_ends_a_stream_that_outlasts_the_grace_with_an_error_event_and_exits_0(tmp_path, nursery):
    up = await fake_upstream(nursery, [sse_reply(stream_events("slow", pieces=60), pause=0.25)])
    async with llm_proxy(_config_file(tmp_path, up, grace=1)) as served, httpx.AsyncClient(timeout=30) as http:
        stream = StreamRead()
        nursery.start_soon(read_stream, http, f"{served.url}/v1/chat/completions", chat(stream=True), {}, stream)
        await stream.first.wait()
        signalled = trio.current_time()
        served.process.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            await stream.done.wait()
        ended = trio.current_time() - signalled
        assert stream.error is None, f"the stream was cut: {stream.error!r}"
        assert stream.data()[-1]["error"]["code"] == "shutting_down"
        assert 0.9 < ended < 2.5  # at the grace deadline, not at hypercorn's backstop
        assert await served.exit_code(within=5) == 0


async def test_sighup_reloads_the_file_and_an_invalid_file_keeps_the_old_config(tmp_path):
    path = tmp_path / "proxy.yaml"
    path.write_text("models: {alpha: {backend_type: mock}}\n")
    async with llm_proxy(path) as served:
        assert await _models(served) == ["alpha"]
        path.write_text("models: {alpha: {backend_type: mock}, beta: {backend_type: mock}}\n")
        served.process.send_signal(signal.SIGHUP)
        await _wait_for(lambda: _has(served, "beta"), within=10)
        path.write_text("models: {gamma: {backend_type: nope}}\n")
        served.process.send_signal(signal.SIGHUP)

        await _wait_for(lambda: _logged(served, "still serving the previous configuration"), within=10)
        assert "models.gamma.backend_type: expected one of" in served.output()
        assert await _models(served) == ["alpha", "beta"]
        assert served.process.returncode is None


async def test_watch_reloads_when_the_file_changes(tmp_path):
    path = tmp_path / "proxy.yaml"
    path.write_text("models: {alpha: {backend_type: mock}}\n")
    async with llm_proxy(path, "--watch") as served:
        assert await _models(served) == ["alpha"]
        path.write_text("models: {delta: {backend_type: mock}}\n")
        await _wait_for(lambda: _has(served, "delta"), within=10)
        assert await _models(served) == ["delta"]


async def _has(served: Served, name: str) -> bool:
    return name in await _models(served)


async def _logged(served: Served, text: str) -> bool:
    return text in served.output()


async def test_the_plain_hypercorn_form_finds_and_serves_the_app(nursery, tmp_path, monkeypatch):
    """``hypercorn -k trio io_trio.app:app`` looks ``app`` up with eval: it must be a real module global."""
    from hypercorn.config import Config as HypercornConfig
    from hypercorn.trio.run import worker_serve
    from hypercorn.utils import load_application

    path = tmp_path / "plain.yaml"
    path.write_text("models: {only-this: {backend_type: mock}}\n")
    monkeypatch.setenv("LLM_PROXY_CONFIG", str(path))
    monkeypatch.setattr("io_trio.logs.configure_logging", lambda config: None)  # keep pytest's log capture
    app = load_application("io_trio.app:app", None)  # what hypercorn's worker does
    config = HypercornConfig()
    config.bind, config.accesslog, config.errorlog = ["127.0.0.1:0"], None, None
    [url] = await nursery.start(worker_serve, app, config)  # the worker's own loop, given the loaded app
    async with httpx.AsyncClient() as http:
        listed = (await http.get(f"{url}/v1/models")).json()
    assert [m["id"] for m in listed["data"]] == ["only-this"]
