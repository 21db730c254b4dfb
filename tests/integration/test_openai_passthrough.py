"""The spine: the official openai SDK through the proxy to an OpenAI-protocol upstream."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
import trio

from tests.integration.conftest import CLIENT_KEY, UPSTREAM_KEY, in_thread, model
from tests.support.servers import FakeUpstream, Reply, json_reply, sse_reply

COMPLETION = {
    "id": "chatcmpl-abc", "object": "chat.completion", "created": 1732600000, "model": "gpt-4o-mini-2024-07-18",
    "choices": [{"index": 0, "logprobs": None, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "Hello there!", "refusal": None}}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
}


def chunk(delta: dict, finish: str | None = None, **extra) -> dict:
    return {"id": "chatcmpl-abc", "object": "chat.completion.chunk", "created": 1732600000,
            "model": "gpt-4o-mini", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}


STREAM = [
    (None, chunk({"role": "assistant", "content": ""})),
    (None, chunk({"content": "Hel"})),
    (None, chunk({"content": "lo!"})),
    (None, chunk({}, "stop")),
    (None, {"id": "chatcmpl-abc", "object": "chat.completion.chunk", "created": 1732600000, "model": "gpt-4o-mini",
            "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}}),
    (None, "[DONE]"),
]


def client(proxy: str, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{proxy}/v1", api_key=CLIENT_KEY, max_retries=0, **kw)


async def openai_proxy(start_proxy, upstream: FakeUpstream, **extra) -> str:
    return await start_proxy({"models": {
        "gpt-4o-mini": model("openai", f"{upstream.url}/v1", api_key=UPSTREAM_KEY, **extra),
        "fast": model("openai-compatible", f"{upstream.url}/v1", api_key=UPSTREAM_KEY,
                      upstream_model="gpt-4o-mini"),
    }})


def assert_no_client_credentials(headers: dict[str, str]) -> None:
    assert CLIENT_KEY not in json.dumps(headers)
    assert "x-api-key" not in headers


async def test_create_relays_the_completion_and_sends_the_backend_key(start_proxy, upstream):
    upstream.script = [json_reply(COMPLETION, headers=[("x-request-id", "req_up_1"),
                                                       ("x-ratelimit-remaining-requests", "99")])]
    proxy = await openai_proxy(start_proxy, upstream)
    raw = await in_thread(lambda: client(proxy).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "say hi"}]))
    completion = raw.parse()
    assert completion.choices[0].message.content == "Hello there!"
    assert completion.usage.total_tokens == 12
    assert raw.headers["x-upstream-request-id"] == "req_up_1"  # x-request-id is the proxy's own
    assert raw.headers["x-ratelimit-remaining-requests"] == "99"
    [seen] = upstream.requests
    assert (seen.method, seen.path) == ("POST", "/v1/chat/completions")
    assert seen.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert_no_client_credentials(seen.headers)
    assert seen.json == {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "say hi"}]}


async def test_body_goes_upstream_byte_for_byte_when_nothing_changes(start_proxy, upstream):
    upstream.script = [json_reply(COMPLETION)]
    proxy = await openai_proxy(start_proxy, upstream)
    body = b'{"model": "gpt-4o-mini",   "messages": [{"role": "user", "content": "caf\\u00e9"}], "seed": 7}'
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{proxy}/v1/chat/completions", content=body,
                            headers={"content-type": "application/json"})
    assert r.status_code == 200
    assert upstream.requests[0].body == body


async def test_alias_rewrites_the_model_name_sent_upstream(start_proxy, upstream):
    upstream.script = [json_reply(COMPLETION)]
    proxy = await openai_proxy(start_proxy, upstream)
    await in_thread(lambda: client(proxy).chat.completions.create(
        model="fast", messages=[{"role": "user", "content": "hi"}], temperature=0.2))
    sent = upstream.requests[0].json
    assert sent["model"] == "gpt-4o-mini"
    assert sent["temperature"] == 0.2


async def test_stream_relays_every_chunk_and_done(start_proxy, upstream):
    upstream.script = [sse_reply(STREAM)]
    proxy = await openai_proxy(start_proxy, upstream)

    def run() -> list:
        stream = client(proxy).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True,
            stream_options={"include_usage": True})
        return list(stream)

    chunks = await in_thread(run)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello!"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].usage.total_tokens == 11
    assert upstream.requests[0].json["stream"] is True


async def test_stream_wire_format_is_preserved(start_proxy, upstream):
    upstream.script = [sse_reply(STREAM)]
    proxy = await openai_proxy(start_proxy, upstream)
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{proxy}/v1/chat/completions",
                            json={"model": "gpt-4o-mini", "stream": True, "messages": []})
    assert r.headers["content-type"].startswith("text/event-stream")
    expected = "".join(f"data: {d if isinstance(d, str) else json.dumps(d)}\n\n" for _, d in STREAM)
    assert r.text == expected


async def test_chat_completions_stream_helper(start_proxy, upstream):
    upstream.script = [sse_reply(STREAM)]
    proxy = await openai_proxy(start_proxy, upstream)

    def run():
        with client(proxy).chat.completions.stream(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]) as stream:
            return stream.get_final_completion()

    final = await in_thread(run)
    assert final.choices[0].message.content == "Hello!"
    assert final.choices[0].finish_reason == "stop"


async def test_stream_events_reach_the_client_before_the_upstream_finishes(start_proxy, upstream):
    """Each event is relayed as it arrives: the upstream waits for the client to see event 1."""
    client_saw_first = trio.Event()

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return await FakeUpstream()(scope, receive, send)
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        first, *rest = STREAM
        await send({"type": "http.response.body", "more_body": True,
                    "body": f"data: {json.dumps(first[1])}\n\n".encode()})
        with trio.fail_after(10):
            await client_saw_first.wait()
        for _, data in rest:
            text = data if isinstance(data, str) else json.dumps(data)
            await send({"type": "http.response.body", "body": f"data: {text}\n\n".encode(), "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    from tests.support.servers import start_server

    async with trio.open_nursery() as nursery:
        url = await start_server(nursery, app)
        upstream.url = url
        proxy = await openai_proxy(start_proxy, upstream)
        token = trio.lowlevel.current_trio_token()

        def run() -> str:
            stream = client(proxy).chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True)
            text = ""
            for n, c in enumerate(stream):
                if n == 0:
                    trio.from_thread.run_sync(client_saw_first.set, trio_token=token)
                text += (c.choices[0].delta.content or "") if c.choices else ""
            return text

        assert await in_thread(run) == "Hello!"
        nursery.cancel_scope.cancel()


async def test_upstream_error_is_relayed_with_status_body_and_retry_after(start_proxy, upstream):
    error = {"error": {"message": "Rate limit reached", "type": "requests", "param": None,
                       "code": "rate_limit_exceeded"}}
    upstream.script = [json_reply(error, 429, headers=[("retry-after", "7")])]
    proxy = await openai_proxy(start_proxy, upstream, retry={"max_attempts": 1})
    with pytest.raises(openai.RateLimitError) as caught:
        await in_thread(lambda: client(proxy).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]))
    assert caught.value.status_code == 429
    assert caught.value.body["code"] == "rate_limit_exceeded"
    assert caught.value.response.headers["retry-after"] == "7"


async def test_stream_request_with_upstream_error_gets_a_json_error(start_proxy, upstream):
    upstream.script = [json_reply({"error": {"message": "bad things", "type": "invalid_request_error",
                                             "param": "messages", "code": None}}, 400)]
    proxy = await openai_proxy(start_proxy, upstream)
    with pytest.raises(openai.BadRequestError) as caught:
        await in_thread(lambda: list(client(proxy).chat.completions.create(
            model="gpt-4o-mini", messages=[], stream=True)))
    assert caught.value.body["message"] == "bad things"


async def test_one_model_is_retrievable_and_an_unknown_one_is_a_404(start_proxy, upstream):
    proxy = await openai_proxy(start_proxy, upstream)
    found = await in_thread(lambda: client(proxy).models.retrieve("gpt-4o-mini"))
    assert (found.id, found.object, found.owned_by) == ("gpt-4o-mini", "model", "llm-proxy")
    with pytest.raises(openai.NotFoundError) as caught:
        await in_thread(lambda: client(proxy).models.retrieve("gpt-9"))
    assert "gpt-9" in caught.value.message
    assert upstream.requests == []


async def test_unknown_model_is_a_404_pointing_to_the_models_list(start_proxy, upstream):
    proxy = await openai_proxy(start_proxy, upstream)
    with pytest.raises(openai.NotFoundError) as caught:
        await in_thread(lambda: client(proxy).chat.completions.create(
            model="gpt-9", messages=[{"role": "user", "content": "hi"}]))
    assert "gpt-9" in caught.value.message and "/v1/models" in caught.value.message
    assert upstream.requests == []


@pytest.mark.parametrize(("body", "needle"), [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "JSON object"),
    (b'{"messages": []}', "'model'"),
    (b'{"model": 42, "messages": []}', "'model'"),
    (b"", "empty"),
])
async def test_bad_input_gets_a_400_in_openai_shape(start_proxy, upstream, body, needle):
    proxy = await openai_proxy(start_proxy, upstream)
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{proxy}/v1/chat/completions", content=body,
                            headers={"content-type": "application/json"})
    assert r.status_code == 400
    error = r.json()["error"]
    assert needle in error["message"]
    assert error["type"] == "invalid_request_error"


async def test_unreachable_upstream_is_a_502(start_proxy):
    with trio.socket.socket() as sock:  # a port nobody listens on
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proxy = await start_proxy({"models": {"m": model("openai", f"http://127.0.0.1:{port}/v1", api_key="k",
                                                     retry={"max_attempts": 1})}})
    with pytest.raises(openai.InternalServerError) as caught:
        await in_thread(lambda: client(proxy).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}]))
    assert caught.value.status_code == 502
    assert "could not connect" in caught.value.message


async def test_slow_upstream_is_a_504(start_proxy, upstream):
    upstream.script = [Reply(hang=True)]
    proxy = await openai_proxy(start_proxy, upstream, first_byte_timeout_seconds=0.3, retry={"max_attempts": 1})
    with pytest.raises(openai.APIStatusError) as caught:
        await in_thread(lambda: client(proxy).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]))
    assert caught.value.status_code == 504


async def test_missing_backend_key_names_the_variable(start_proxy, upstream):
    proxy = await start_proxy({"models": {"gpt-4o": model(
        "openai", f"{upstream.url}/v1", api_key="${OPENAI_API_KEY:-}")}})
    with pytest.raises(openai.InternalServerError) as caught:
        await in_thread(lambda: client(proxy).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]))
    assert "OPENAI_API_KEY" in caught.value.message
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert upstream.requests == []


async def test_body_over_the_limit_is_a_413(start_proxy, upstream):
    proxy = await start_proxy({"server": {"max_body_bytes": 1000},
                               "models": {"m": model("openai", f"{upstream.url}/v1", api_key="k")}})
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{proxy}/v1/chat/completions",
                            json={"model": "m", "messages": [{"role": "user", "content": "x" * 2000}]})
    assert r.status_code == 413
    assert "limit" in r.json()["error"]["message"]
    assert upstream.requests == []


async def test_models_list_and_health(start_proxy, upstream):
    proxy = await start_proxy({"models": {
        "gpt-4o-mini": model("openai", f"{upstream.url}/v1", api_key="k"),
        "claude-*": model("anthropic", upstream.url, api_key="k"),
        "mock": model("mock"),
    }})
    models = await in_thread(lambda: [m.id for m in client(proxy).models.list()])
    assert models == ["gpt-4o-mini", "mock"]
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{proxy}/health")).status_code == 200
        r = await http.get(f"{proxy}/v1/nope")
    assert r.status_code == 404 and "error" in r.json()


async def test_path_without_v1_prefix_works(start_proxy, upstream):
    upstream.script = [json_reply(COMPLETION)]
    proxy = await openai_proxy(start_proxy, upstream)
    completion = await in_thread(lambda: openai.OpenAI(base_url=proxy, api_key="x", max_retries=0)
                                 .chat.completions.create(model="gpt-4o-mini", messages=[]))
    assert completion.choices[0].message.content == "Hello there!"
