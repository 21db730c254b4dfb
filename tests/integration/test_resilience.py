"""Resilience end to end: the real proxy, real sockets, fault-injecting fake upstreams.

The proxy runs under hypercorn's trio worker on 127.0.0.1, its upstreams are
`FakeUpstream`s that answer 429s, hang, stall or drop the connection mid-body,
and the clients are the official SDKs (in a thread) or an ``httpx.AsyncClient``
in the test's own trio loop when the test must disconnect at a precise point.
Timing here is wall-clock, so assertions are lower bounds ("waited at least
the delay") with generous upper bounds; the exact instants are proved in
test_forward_mockclock.py.  Every test checks what the client got and what
each upstream saw.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from contextlib import aclosing
from functools import partial
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
import trio

from core.config import load_config
from io_trio.app import ProxyState, create_app
from tests.integration.conftest import CLIENT_KEY, UPSTREAM_KEY, in_thread, model
from tests.support.rawserver import filled_listener
from tests.support.servers import FakeUpstream, Reply, json_reply, sse_reply, start_server
from tests.support.samples import ANTHROPIC_EVENTS, ANTHROPIC_MESSAGE, COMPLETION, OPENAI_EVENTS, chunk

# -- wire data (protocols.md §1.3-1.5, §2.3-2.5) -----------------------------------------------


MESSAGES = [{"role": "user", "content": "say hi"}]


def openai_error(status: int, message: str, code: str | None = None,
                 headers: list[tuple[str, str]] | None = None) -> Reply:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return json_reply({"error": {"message": message, "type": kind, "param": None, "code": code}}, status, headers)


OVERLOADED = openai_error(503, "The server is overloaded")

# -- clients and proxies ---------------------------------------------------------------------


async def with_openai(proxy: str, call: Callable[[openai.OpenAI], Any]) -> Any:
    """``call(client)`` with the official OpenAI SDK (no retries of its own), in a thread."""
    def run() -> Any:
        with openai.OpenAI(base_url=f"{proxy}/v1", api_key=CLIENT_KEY, max_retries=0) as client:
            return call(client)

    return await in_thread(run)


async def with_anthropic(proxy: str, call: Callable[[anthropic.Anthropic], Any]) -> Any:
    """``call(client)`` with the official Anthropic SDK (no retries of its own), in a thread."""
    def run() -> Any:
        with anthropic.Anthropic(base_url=proxy, api_key=CLIENT_KEY, max_retries=0) as client:
            return call(client)

    return await in_thread(run)


def openai_model(upstream: FakeUpstream, **extra: Any) -> dict[str, Any]:
    return model("openai", f"{upstream.url}/v1", api_key=UPSTREAM_KEY, **extra)


def anthropic_model(upstream: FakeUpstream, **extra: Any) -> dict[str, Any]:
    return model("anthropic", upstream.url, api_key=UPSTREAM_KEY, **extra)


def fixed_backoff(ms: int, attempts: int = 3) -> dict[str, Any]:
    return {"max_attempts": attempts, "backoff_ms": ms, "max_backoff_ms": ms, "jitter": False}


async def start_app(nursery: trio.Nursery, config: dict[str, Any], *, seed: int = 0) -> tuple[str, ProxyState]:
    """Like the `start_proxy` fixture, but also hands back the state (to seed its rng)."""
    app = create_app(load_config(json.dumps(config), fmt="json", env={}, source="<test>"))
    state: ProxyState = app.extensions["llm_proxy"]
    state.rng = random.Random(seed)
    return await start_server(nursery, app), state


def sse_events(text: str) -> list[tuple[str | None, Any]]:
    found: list[tuple[str | None, Any]] = []
    for block in text.split("\n\n"):
        if block.strip():
            fields = dict(line.split(": ", 1) for line in block.split("\n"))
            data = fields["data"]
            found.append((fields.get("event"), data if data == "[DONE]" else json.loads(data)))
    return found


def gaps(upstream: FakeUpstream) -> list[float]:
    times = [seen.at for seen in upstream.requests]
    return [later - earlier for earlier, later in zip(times, times[1:])]


# -- retries ---------------------------------------------------------------------------------


async def test_429_429_200_succeeds_after_three_calls_honouring_each_retry_after(start_proxy, upstream):
    upstream.script = [
        openai_error(429, "Rate limit reached", "rate_limit_exceeded", [("retry-after-ms", "150")]),
        openai_error(429, "Rate limit reached", "rate_limit_exceeded", [("retry-after", "0.2")]),
        json_reply(COMPLETION),
    ]
    proxy = await start_proxy({"models": {"gpt-4o-mini": openai_model(upstream)}})
    raw = await with_openai(proxy, lambda client: client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES))
    assert raw.parse().choices[0].message.content == "Hello there!"
    assert raw.headers["x-proxy-attempts"] == "3"
    assert len(upstream.requests) == 3
    first, second = gaps(upstream)
    # Retry-After in seconds, with a fraction as the SDKs accept it; upper bounds only catch a runaway.
    assert 0.15 <= first < 0.15 + 1.0 and 0.2 <= second < 0.2 + 1.0
    assert all(seen.json == {"model": "gpt-4o-mini", "messages": MESSAGES} for seen in upstream.requests)


@pytest.mark.parametrize(("status", "error"), [
    (400, openai.BadRequestError), (401, openai.AuthenticationError),
    (404, openai.NotFoundError), (422, openai.UnprocessableEntityError),
])
async def test_bad_input_is_relayed_and_not_retried(start_proxy, upstream, status, error):
    upstream.script = [openai_error(status, f"status {status} from upstream")]
    proxy = await start_proxy({"models": {"gpt-4o-mini": openai_model(upstream, retry=fixed_backoff(10))}})
    with pytest.raises(error) as caught:
        await with_openai(proxy, lambda client: client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES))
    assert caught.value.status_code == status
    assert caught.value.body["message"] == f"status {status} from upstream"
    assert caught.value.response.headers["x-proxy-attempts"] == "1"
    assert len(upstream.requests) == 1


async def test_x_should_retry_false_from_the_upstream_stops_retries(start_proxy, upstream):
    upstream.script = [openai_error(503, "overloaded, do not retry", headers=[("x-should-retry", "false")])]
    proxy = await start_proxy({"models": {"gpt-4o-mini": openai_model(upstream, retry=fixed_backoff(10))}})
    with pytest.raises(openai.InternalServerError) as caught:
        await with_openai(proxy, lambda client: client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES))
    assert caught.value.status_code == 503 and caught.value.body["message"] == "overloaded, do not retry"
    assert len(upstream.requests) == 1


async def test_a_retry_after_above_the_maximum_returns_the_upstream_429_at_once(start_proxy, upstream):
    upstream.script = [openai_error(429, "quota", "rate_limit_exceeded", [("retry-after", "120")])]
    proxy = await start_proxy({"models": {"gpt-4o-mini": openai_model(
        upstream, retry={"max_attempts": 3, "max_retry_after_seconds": 5})}})
    started = trio.current_time()
    with pytest.raises(openai.RateLimitError) as caught:
        await with_openai(proxy, lambda client: client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES))
    assert trio.current_time() - started < 3.0  # not 120 s
    assert caught.value.response.headers["retry-after"] == "120"
    assert caught.value.body["code"] == "rate_limit_exceeded"
    assert len(upstream.requests) == 1


# -- timeouts --------------------------------------------------------------------------------


async def test_an_upstream_that_never_accepts_is_a_504_after_the_connect_timeout_then_falls_back(
        start_proxy, second_upstream):
    listener, fillers = filled_listener()  # connects to it hang (full accept queue)
    second_upstream.script = [json_reply(ANTHROPIC_MESSAGE)]
    try:
        proxy = await start_proxy({"models": {
            "gpt-4o-mini": model("openai", f"http://127.0.0.1:{listener.getsockname()[1]}/v1", api_key=UPSTREAM_KEY,
                                 connect_timeout_seconds=0.2, retry={"max_attempts": 1}),
            "backed-up": model("openai", f"http://127.0.0.1:{listener.getsockname()[1]}/v1", api_key=UPSTREAM_KEY,
                               connect_timeout_seconds=0.2, retry={"max_attempts": 1}, fallbacks=["claude-sonnet-4-6"]),
            "claude-sonnet-4-6": anthropic_model(second_upstream),
        }})
        started = trio.current_time()
        with pytest.raises(openai.InternalServerError) as caught:
            await with_openai(proxy, lambda client: client.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES))
        assert 0.2 <= trio.current_time() - started < 3.0
        assert caught.value.status_code == 504 and "connecting" in caught.value.body["message"]
        completion = await with_openai(proxy, lambda client: client.chat.completions.create(
            model="backed-up", messages=MESSAGES))
        assert completion.choices[0].message.content == "Hello from Claude!"
        assert len(second_upstream.requests) == 1
    finally:
        for sock in [listener, *fillers]:
            sock.close()


async def test_a_hung_upstream_is_a_504_for_an_openai_client_after_the_first_byte_timeout(start_proxy, upstream):
    upstream.script = [Reply(hang=True)]
    proxy = await start_proxy({"models": {"gpt-4o-mini": openai_model(
        upstream, first_byte_timeout_seconds=0.3, retry={"max_attempts": 1})}})
    started = trio.current_time()
    with pytest.raises(openai.InternalServerError) as caught:
        await with_openai(proxy, lambda client: client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES))
    assert 0.3 <= trio.current_time() - started < 3.0
    assert caught.value.status_code == 504
    assert caught.value.body["type"] == "timeout_error"
    [seen] = upstream.requests
    assert seen.closed_at is not None and seen.closed_at - started >= 0.3  # then the proxy hung up


async def test_a_hung_upstream_is_a_504_for_an_anthropic_client_after_the_first_byte_timeout(start_proxy, upstream):
    upstream.script = [Reply(hang=True)]
    proxy = await start_proxy({"models": {"claude-sonnet-4-6": anthropic_model(
        upstream, first_byte_timeout_seconds=0.3, retry={"max_attempts": 1})}})
    started = trio.current_time()
    with pytest.raises(anthropic.APIStatusError) as caught:
        await with_anthropic(proxy, lambda client: client.messages.create(
            model="claude-sonnet-4-6", max_tokens=100, messages=MESSAGES))
    assert 0.3 <= trio.current_time() - started < 3.0
    assert caught.value.status_code == 504
    assert caught.value.body == {"type": "error", "error": {"type": "timeout_error",
                                                            "message": caught.value.body["error"]["message"]}}
    assert len(upstream.requests) == 1


async def test_a_stream_that_stalls_after_two_events_gets_an_error_event_and_ends(start_proxy, upstream):
    upstream.script = [sse_reply(OPENAI_EVENTS[:2], stall=True)]
    proxy = await start_proxy({"models": {"gpt-4o-mini": openai_model(
        upstream, idle_timeout_seconds=0.3, retry=fixed_backoff(10))}})
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{proxy}/v1/chat/completions",
                            json={"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True})
    events = sse_events(r.text)
    assert r.status_code == 200 and events[:2] == OPENAI_EVENTS[:2] and len(events) == 3
    assert events[2][1]["error"]["type"] == "timeout_error"
    [seen] = upstream.requests  # not retried
    assert seen.closed_at is not None


# -- streams ---------------------------------------------------------------------------------


async def test_a_stream_that_breaks_before_its_first_event_is_retried_into_one_clean_stream(start_proxy, upstream):
    upstream.script = [sse_reply([], cut=True), sse_reply(OPENAI_EVENTS)]
    proxy = await start_proxy({"models": {"gpt-4o-mini": openai_model(upstream, retry=fixed_backoff(10))}})

    chunks = await with_openai(proxy, lambda client: list(client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True)))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello!"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert len(upstream.requests) == 2


async def test_an_openai_stream_cut_after_three_events_raises_in_the_sdk_and_is_not_retried(start_proxy, upstream):
    upstream.script = [sse_reply(OPENAI_EVENTS[:3], cut=True), sse_reply(OPENAI_EVENTS)]
    proxy = await start_proxy({"models": {"gpt-4o-mini": openai_model(upstream, retry=fixed_backoff(10))}})
    received: list[Any] = []

    def run(client: openai.OpenAI) -> None:
        for item in client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True):
            received.append(item)

    with pytest.raises(openai.APIError) as caught:
        await with_openai(proxy, run)
    assert [c.choices[0].delta.content for c in received] == ["", "Hel", "lo"]
    assert "broke the connection" in caught.value.message
    assert len(upstream.requests) == 1


async def test_an_anthropic_stream_cut_after_three_events_raises_in_the_sdk_and_is_not_retried(start_proxy,
                                                                                             upstream):
    upstream.script = [sse_reply(ANTHROPIC_EVENTS[:3], cut=True), sse_reply(ANTHROPIC_EVENTS)]
    proxy = await start_proxy({"models": {"claude-sonnet-4-6": anthropic_model(upstream, retry=fixed_backoff(10))}})
    received: list[str] = []

    def run(client: anthropic.Anthropic) -> None:
        with client.messages.stream(model="claude-sonnet-4-6", max_tokens=100, messages=MESSAGES) as stream:
            for event in stream:
                received.append(event.type)

    with pytest.raises(anthropic.APIStatusError) as caught:
        await with_anthropic(proxy, run)
    assert received[:3] == ["message_start", "content_block_start", "content_block_delta"]
    assert caught.value.body["error"]["type"] == "api_error"
    assert len(upstream.requests) == 1


async def test_the_raw_anthropic_stream_shows_three_events_then_an_error_event(start_proxy, upstream):
    upstream.script = [sse_reply(ANTHROPIC_EVENTS[:3], cut=True)]
    proxy = await start_proxy({"models": {"claude-sonnet-4-6": anthropic_model(upstream)}})
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{proxy}/v1/messages", headers={"anthropic-version": "2023-06-01"},
                            json={"model": "claude-sonnet-4-6", "max_tokens": 100, "messages": MESSAGES,
                                  "stream": True})
    events = sse_events(r.text)
    assert events[:3] == ANTHROPIC_EVENTS[:3] and len(events) == 4
    name, data = events[3]
    assert name == "error" and data["type"] == "error" and data["error"]["type"] == "api_error"
    assert len(upstream.requests) == 1


# -- cancellation ----------------------------------------------------------------------------


async def _read_one_chunk_and_leave(http: httpx.AsyncClient, proxy: str) -> float:
    """Start a stream, read its first chunk, disconnect; return the time of leaving."""
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
    async with http.stream("POST", f"{proxy}/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        async with aclosing(r.aiter_raw()) as pieces:
            async for piece in pieces:
                assert piece.startswith(b"data: ")
                break
    return trio.current_time()  # leaving the block closed the connection mid-body


async def test_a_client_leaving_mid_stream_closes_the_upstream_connection_promptly(start_proxy, upstream):
    upstream.script = [sse_reply(OPENAI_EVENTS[:2], stall=True)]
    proxy = await start_proxy({"models": {"gpt-4o-mini": openai_model(upstream)}})
    async with httpx.AsyncClient() as http:
        left = await _read_one_chunk_and_leave(http, proxy)
    with trio.fail_after(2):
        await upstream.disconnected.wait()
    [seen] = upstream.requests
    assert seen.closed_at is not None and seen.closed_at - left < 0.1


async def test_a_client_leaving_while_waiting_for_the_first_byte_closes_the_upstream_and_stops_retries(
        start_proxy, upstream):
    arrived = trio.Event()

    def script(seen: Any) -> Reply:
        arrived.set()
        return Reply(hang=True)

    upstream.script = script
    proxy = await start_proxy({"models": {"gpt-4o-mini": openai_model(upstream, retry=fixed_backoff(10))}})
    async with httpx.AsyncClient() as http:
        async with trio.open_nursery() as client:
            client.start_soon(partial(http.post, f"{proxy}/v1/chat/completions",
                                      json={"model": "gpt-4o-mini", "messages": MESSAGES}))
            await arrived.wait()  # the proxy now waits for the upstream's first byte
            client.cancel_scope.cancel()  # and the client gives up
        left = trio.current_time()
    with trio.fail_after(2):
        await upstream.disconnected.wait()
    [seen] = upstream.requests
    assert seen.closed_at is not None and seen.closed_at - left < 0.1
    await trio.sleep(0.2)  # a retry would have started by now
    assert len(upstream.requests) == 1


async def eventually(condition: Callable[[], bool], within: float = 2.0) -> None:
    with trio.fail_after(within):
        while not condition():
            await trio.sleep(0.01)


def _task_count() -> int:
    def count(task: trio.lowlevel.Task) -> int:
        return 1 + sum(count(child) for nursery in task.child_nurseries for child in nursery.child_tasks)

    return count(trio.lowlevel.current_root_task())


def _open_server_connections(port: int) -> int | None:
    """TCP connections the server on ``port`` still holds (ESTABLISHED or CLOSE_WAIT); None off Linux."""
    tables = [Path("/proc/net/tcp"), Path("/proc/net/tcp6")]
    if not tables[0].exists():
        return None
    count = 0
    for table in tables:
        for line in table.read_text().splitlines()[1:] if table.exists() else []:
            local, state = line.split()[1], line.split()[3]
            if int(local.rsplit(":", 1)[1], 16) == port and state in ("01", "08"):
                count += 1
    return count


async def test_many_disconnects_leak_no_task_connection_or_pool_slot(nursery, upstream):
    """60 clients leave (3 in 4 mid-stream, 1 in 4 while the proxy waits for a first byte), two at a
    time, through a pool of 2 upstream connections; then everything is back to where it was, and a
    normal request is served.  (test_forward_mockclock.py repeats this 200 times in memory.)"""
    arrivals: dict[str, trio.Event] = {}

    def script(seen: Any) -> Reply:
        if seen.json.get("stream"):
            return sse_reply(OPENAI_EVENTS[:2], stall=True)
        arrivals[seen.json["user"]].set()
        return Reply(hang=True)

    upstream.script = script
    proxy, _ = await start_app(nursery, {"server": {"upstream": {"max_connections_per_origin": 2}},
                                         "models": {"gpt-4o-mini": openai_model(upstream)}})
    port = int(upstream.url.rsplit(":", 1)[1])

    async def leave_while_waiting(http: httpx.AsyncClient, tag: str) -> None:
        arrivals[tag] = trio.Event()
        async with trio.open_nursery() as inner:
            inner.start_soon(partial(http.post, f"{proxy}/v1/chat/completions",
                                     json={"model": "gpt-4o-mini", "messages": MESSAGES, "user": tag}))
            await arrivals[tag].wait()
            inner.cancel_scope.cancel()

    async def lane(http: httpx.AsyncClient, name: int) -> None:
        for n in range(30):
            if n % 4 == 3:
                await leave_while_waiting(http, f"{name}-{n}")
            else:
                await _read_one_chunk_and_leave(http, proxy)

    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=20)) as http:
        await _read_one_chunk_and_leave(http, proxy)  # warm up, then take the baseline
        await trio.sleep(0.05)
        baseline = _task_count()
        with trio.fail_after(10):
            async with trio.open_nursery() as lanes:
                for name in range(2):
                    lanes.start_soon(lane, http, name)
    assert len(upstream.requests) == 1 + 60
    # Every upstream connection is closed by the proxy, and every task ends (hypercorn's
    # per-connection tasks notice their client's close a moment later).
    await eventually(lambda: upstream.active == 0 and _task_count() <= baseline)

    upstream.script = [sse_reply(OPENAI_EVENTS)]  # a normal request still gets one of the 2 slots
    with trio.fail_after(2):
        async with httpx.AsyncClient() as http:
            r = await http.post(f"{proxy}/v1/chat/completions",
                                json={"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True})
    assert sse_events(r.text) == OPENAI_EVENTS
    open_now = _open_server_connections(port)
    assert open_now is None or open_now <= 2  # at most the pool's idle keep-alive connections


# -- fallbacks -------------------------------------------------------------------------------


async def test_503s_fall_back_to_an_anthropic_backend_and_the_openai_client_gets_a_translation(
        start_proxy, upstream, second_upstream):
    upstream.script = [OVERLOADED, OVERLOADED]
    second_upstream.script = [json_reply(ANTHROPIC_MESSAGE, headers=[("request-id", "req_fallback")])]
    proxy = await start_proxy({"models": {
        "gpt-4o-mini": openai_model(upstream, retry=fixed_backoff(10, attempts=2), fallbacks=["claude-sonnet-4-6"]),
        "claude-sonnet-4-6": anthropic_model(second_upstream),
    }})
    raw = await with_openai(proxy, lambda client: client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES))
    completion = raw.parse()
    assert completion.choices[0].message.content == "Hello from Claude!"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == 12 and completion.usage.completion_tokens == 5
    assert raw.headers["x-proxy-served-by"] == "claude-sonnet-4-6"
    assert raw.headers["x-proxy-attempts"] == "3"
    assert len(upstream.requests) == 2
    [sent] = second_upstream.requests
    assert sent.path == "/v1/messages" and sent.headers["x-api-key"] == UPSTREAM_KEY
    assert sent.json["model"] == "claude-sonnet-4-6" and sent.json["max_tokens"] > 0
    assert sent.json["messages"] == [{"role": "user", "content": [{"type": "text", "text": "say hi"}]}]


async def test_an_unreachable_primary_falls_back_to_a_stream_in_another_protocol(start_proxy, second_upstream):
    with trio.socket.socket() as sock:  # a port nobody listens on
        await sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    second_upstream.script = [sse_reply(ANTHROPIC_EVENTS)]
    proxy = await start_proxy({"models": {
        "gpt-4o-mini": model("openai", f"{dead}/v1", api_key=UPSTREAM_KEY, retry=fixed_backoff(10, attempts=2),
                             fallbacks=["claude-sonnet-4-6"]),
        "claude-sonnet-4-6": anthropic_model(second_upstream),
    }})

    def run(client: openai.OpenAI) -> tuple[str, str | None]:
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
        return text, raw.headers.get("x-proxy-served-by")

    assert await with_openai(proxy, run) == ("Hello!", "claude-sonnet-4-6")
    assert second_upstream.requests[0].json["stream"] is True


async def test_a_400_from_the_primary_does_not_fall_back(start_proxy, upstream, second_upstream):
    upstream.script = [openai_error(400, "This model's maximum context length is 128000 tokens",
                                    "context_length_exceeded")]
    proxy = await start_proxy({"models": {
        "gpt-4o-mini": openai_model(upstream, fallbacks=["claude-sonnet-4-6"]),
        "claude-sonnet-4-6": anthropic_model(second_upstream),
    }})
    with pytest.raises(openai.BadRequestError) as caught:
        await with_openai(proxy, lambda client: client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES))
    assert caught.value.code == "context_length_exceeded"
    assert caught.value.response.headers["x-proxy-served-by"] == "gpt-4o-mini"
    assert len(upstream.requests) == 1 and second_upstream.requests == []


# -- deployments -----------------------------------------------------------------------------


async def test_the_breaker_skips_a_dead_deployment_then_lets_it_back(nursery, upstream, second_upstream):
    # `upstream` is preferred 100:1 but answers 503 until healed; `second_upstream` is healthy.
    cooldown = 0.5
    healed = False
    upstream.script = lambda seen: json_reply(COMPLETION) if healed else OVERLOADED
    second_upstream.script = lambda seen: json_reply(COMPLETION)
    deployments = [{"backend_type": "openai", "endpoint": f"{fake.url}/v1", "api_key": UPSTREAM_KEY, "weight": w}
                   for fake, w in ((upstream, 100), (second_upstream, 1))]
    proxy, _ = await start_app(nursery, {"models": {"gpt-4o-mini": {
        "deployments": deployments, "cooldown_after_failures": 2, "cooldown_seconds": cooldown,
        "retry": fixed_backoff(0, attempts=2)}}}, seed=3)
    async with httpx.AsyncClient() as http:
        async def ask() -> None:
            r = await http.post(f"{proxy}/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": MESSAGES})
            assert r.status_code == 200 and r.json() == COMPLETION  # a failure is retried on the other one

        with trio.fail_after(5):
            while len(upstream.requests) < 2:  # two failures in a row trip the breaker
                await ask()
            tripped = upstream.requests[1].at
            healed = True
            while len(upstream.requests) < 3 or trio.current_time() < tripped + cooldown:
                await ask()
    later = [seen.at - tripped for seen in upstream.requests[2:]]
    assert later and min(later) >= cooldown  # skipped for the whole cooldown, then back in rotation
    assert len(second_upstream.requests) >= 2  # the other deployment served meanwhile
