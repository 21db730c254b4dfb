"""The official openai SDK through the proxy to Anthropic and Ollama backends (issue 3's proof).

Each test runs the real SDK against the real proxy on 127.0.0.1, in front of a
fake upstream speaking the backend's wire format (`tests.support.wire`), and
checks both what the SDK parsed and exactly what the upstream received.

Three ways to read an answer, all of which real applications use, must agree:
``chat.completions.create`` (one JSON body), ``create(stream=True)`` (chunks,
reassembled here the way the SDK documents) and the
``chat.completions.stream(...).get_final_completion()`` helper (the SDK's own
accumulator).  `ask` runs any of them and returns the same `Final` summary.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import httpx
import openai
import pytest

from tests.integration.conftest import CLIENT_KEY, UPSTREAM_KEY, in_thread, model
from tests.support.servers import FakeUpstream, Recorded, Reply, json_reply
from tests.support.wire import (
    Answer,
    ToolCall,
    anthropic_events,
    anthropic_message,
    anthropic_sse,
    cut_every,
    fixture,
    golden_cases,
    golden_client_request,
    golden_reply,
    golden_upstream_request,
    masked,
    ollama_lines,
    ollama_ndjson,
    ollama_response,
    parse_sse,
)

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Get weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
QUESTION = {"role": "user", "content": "weather in Paris?"}
PARIS = ToolCall("toolu_01Paris", "get_weather", {"city": "Paris"})
TOKYO = ToolCall("toolu_02Tokyo", "get_weather", {"city": "Tōkyō"})


def client(proxy: str, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{proxy}/v1", api_key=CLIENT_KEY, max_retries=0, **kw)


async def proxy_for(start_proxy: Any, upstream: FakeUpstream, **extra: Any) -> str:
    return await start_proxy({"models": {
        "claude-sonnet": model("anthropic", upstream.url, api_key=UPSTREAM_KEY,
                               upstream_model="claude-sonnet-4-5-20250929", **extra),
        "claude-short": model("anthropic", upstream.url, api_key=UPSTREAM_KEY, upstream_model="claude-haiku-4-5",
                              default_max_tokens=1024),
        "llama": model("ollama", upstream.url, upstream_model="llama3.2", **extra),
        "llama-cloud": model("ollama", upstream.url, api_key=UPSTREAM_KEY, upstream_model="gpt-oss:120b"),
    }})


def assert_no_client_credentials(seen: Recorded) -> None:
    assert CLIENT_KEY not in json.dumps(seen.headers)
    assert CLIENT_KEY.encode() not in seen.body
    # The SDK's telemetry and OpenAI's own headers mean nothing to another vendor.
    assert not [name for name in seen.headers if name.startswith(("x-stainless-", "openai-"))]


@attrs.frozen
class Backend:
    name: str
    wire: str
    path: str

    def reply(self, answer: Answer, *, stream: bool) -> Reply:
        if self.wire == "anthropic":
            return anthropic_sse(anthropic_events(answer)) if stream else json_reply(anthropic_message(answer))
        return ollama_ndjson(ollama_lines(answer)) if stream else json_reply(ollama_response(answer))

    def assert_request(self, seen: Recorded, *, stream: bool) -> None:
        assert (seen.method, seen.path) == ("POST", self.path)
        assert_no_client_credentials(seen)
        body = seen.json
        if self.wire == "anthropic":
            assert seen.headers["x-api-key"] == UPSTREAM_KEY
            assert seen.headers["anthropic-version"] == "2023-06-01"
            assert "authorization" not in seen.headers
            assert body["model"] == "claude-sonnet-4-5-20250929"
            assert body.get("stream", False) is stream
        else:
            assert "authorization" not in seen.headers  # a local Ollama has no key
            assert body["model"] == "llama3.2"
            assert body["stream"] is stream  # always explicit: Ollama defaults to true

    def max_tokens_sent(self, body: dict[str, Any]) -> int:
        return body["max_tokens"] if self.wire == "anthropic" else body["options"]["num_predict"]


ANTHROPIC = Backend("claude-sonnet", "anthropic", "/v1/messages")
OLLAMA = Backend("llama", "ollama", "/api/chat")
BACKENDS = [pytest.param(ANTHROPIC, id="anthropic"), pytest.param(OLLAMA, id="ollama")]
MODES = ["create", "stream", "helper"]


@attrs.frozen
class Final:
    """What an application ends up with, however it read the answer."""

    content: str | None
    tool_calls: list[tuple[str, str, str]]  # (id, name, arguments JSON string)
    finish_reason: str
    usage: Any  # openai.types.CompletionUsage, or None
    reasoning: str | None = None


def _from_message(choice: Any, usage: Any) -> Final:
    message = choice.message
    calls = [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or []]
    reasoning = (message.model_extra or {}).get("reasoning_content")
    return Final(message.content, calls, choice.finish_reason, usage, reasoning)


def _from_chunks(chunks: list[Any]) -> Final:
    """Reassemble chunks as the openai docs say: tool calls by `index`, usage from the last chunk."""
    text, reasoning, finish, usage = "", "", None, None
    calls: dict[int, list[str]] = {}
    for n, chunk in enumerate(chunks):
        if not chunk.choices:  # the include_usage chunk: last, and alone (protocols.md §1.4)
            assert n == len(chunks) - 1 and chunk.usage is not None
            usage = chunk.usage
            continue
        delta = chunk.choices[0].delta
        text += delta.content or ""
        reasoning += (delta.model_extra or {}).get("reasoning_content") or ""
        for call in delta.tool_calls or []:
            entry = calls.setdefault(call.index, ["", "", ""])
            entry[0] = entry[0] or (call.id or "")
            entry[1] = entry[1] or (call.function.name or "")
            entry[2] += call.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert chunks[0].choices[0].delta.role == "assistant"
    tool_calls = [tuple(calls[i]) for i in sorted(calls)]
    assert sorted(calls) == list(range(len(calls)))  # running tool index, no gaps
    return Final(text or None, tool_calls, finish, usage, reasoning or None)  # type: ignore[arg-type]


def ask(proxy: str, mode: str, **params: Any) -> Any:
    """A blocking call for `in_thread`: `mode` is create, stream (raw chunks) or helper."""
    def run() -> Final:
        oai = client(proxy)
        if mode == "create":
            completion = oai.chat.completions.create(**params)
            return _from_message(completion.choices[0], completion.usage)
        if mode == "stream":
            chunks = list(oai.chat.completions.create(stream=True, stream_options={"include_usage": True},
                                                      **params))
            return _from_chunks(chunks)
        with oai.chat.completions.stream(**params) as events:
            completion = events.get_final_completion()
        return _from_message(completion.choices[0], completion.usage)

    return run


# -- answers --------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", MODES)
async def test_tool_calls_arrive_with_json_string_arguments(start_proxy, upstream, backend, mode):
    answer = Answer(text="Checking both.", tool_calls=[PARIS, TOKYO], input_tokens=180, output_tokens=40)
    upstream.script = [backend.reply(answer, stream=mode != "create")]
    proxy = await proxy_for(start_proxy, upstream)
    final = await in_thread(ask(proxy, mode, model=backend.name, tools=[WEATHER_TOOL],
                                messages=[{"role": "user", "content": "weather in Paris and Tokyo?"}]))
    assert final.content == "Checking both."
    assert [(i, n) for i, n, _ in final.tool_calls] == [("toolu_01Paris", "get_weather"),
                                                        ("toolu_02Tokyo", "get_weather")]
    assert [json.loads(arguments) for _, _, arguments in final.tool_calls] == [{"city": "Paris"},
                                                                               {"city": "Tōkyō"}]
    assert final.finish_reason == "tool_calls"
    if mode != "helper":  # the helper asks for no usage
        assert (final.usage.prompt_tokens, final.usage.completion_tokens, final.usage.total_tokens) == (180, 40, 220)
    [seen] = upstream.requests
    backend.assert_request(seen, stream=mode != "create")
    if backend.wire == "anthropic":
        assert seen.json["tools"] == [{"name": "get_weather", "description": "Get weather",
                                       "input_schema": WEATHER_TOOL["function"]["parameters"]}]
    else:
        assert seen.json["tools"] == [WEATHER_TOOL]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", MODES)
async def test_text_answer_stops(start_proxy, upstream, backend, mode):
    answer = Answer(text="Hello! How can I help you today?", input_tokens=9, output_tokens=10)
    upstream.script = [backend.reply(answer, stream=mode != "create")]
    proxy = await proxy_for(start_proxy, upstream)
    final = await in_thread(ask(proxy, mode, model=backend.name, messages=[
        {"role": "developer", "content": "Be brief."}, {"role": "user", "content": "say hi"}]))
    assert (final.content, final.tool_calls, final.finish_reason) == ("Hello! How can I help you today?", [], "stop")
    [seen] = upstream.requests
    backend.assert_request(seen, stream=mode != "create")
    if backend.wire == "anthropic":
        assert seen.json["system"] == [{"type": "text", "text": "Be brief."}]
        assert seen.json["messages"] == [{"role": "user", "content": [{"type": "text", "text": "say hi"}]}]
    else:
        assert seen.json["messages"] == [{"role": "system", "content": "Be brief."},
                                         {"role": "user", "content": "say hi"}]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", MODES)
async def test_hitting_the_token_limit_is_finish_reason_length(start_proxy, upstream, backend, mode):
    answer = Answer(text="The history of Rome", stop="max_tokens", output_tokens=5)
    upstream.script = [backend.reply(answer, stream=mode != "create")]
    proxy = await proxy_for(start_proxy, upstream)
    call = ask(proxy, mode, model=backend.name, max_completion_tokens=5,
               messages=[{"role": "user", "content": "Tell me about Rome."}])
    if mode == "helper":  # the SDK's accumulator refuses a cut-off answer, as it should
        with pytest.raises(openai.LengthFinishReasonError) as caught:
            await in_thread(call)
        final = _from_message(caught.value.completion.choices[0], None)
    else:
        final = await in_thread(call)
    assert (final.content, final.finish_reason) == ("The history of Rome", "length")
    assert backend.max_tokens_sent(upstream.requests[0].json) == 5


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["create", "stream"])
async def test_thinking_comes_back_as_reasoning_content(start_proxy, upstream, backend, mode):
    answer = Answer(reasoning="Paris is the capital of France.", text="Paris.")
    upstream.script = [backend.reply(answer, stream=mode != "create")]
    proxy = await proxy_for(start_proxy, upstream)
    final = await in_thread(ask(proxy, mode, model=backend.name, reasoning_effort="medium", max_tokens=4096,
                                messages=[{"role": "user", "content": "Capital of France?"}]))
    assert (final.reasoning, final.content, final.finish_reason) == (
        "Paris is the capital of France.", "Paris.", "stop")
    sent = upstream.requests[0].json
    if backend.wire == "anthropic":  # medium effort: a 2048-token budget (protocols.md §3.7)
        assert sent["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    else:
        assert sent["think"] == "medium"


@pytest.mark.parametrize("mode", ["create", "stream"])
async def test_anthropic_cache_reads_are_reported_as_cached_tokens(start_proxy, upstream, mode):
    answer = Answer(text="It starts the server.", input_tokens=20012, cache_read=18000, output_tokens=55)
    upstream.script = [ANTHROPIC.reply(answer, stream=mode != "create")]
    proxy = await proxy_for(start_proxy, upstream)
    final = await in_thread(ask(proxy, mode, model="claude-sonnet", messages=[
        {"role": "system", "content": [{"type": "text", "text": "<long project context>"}]},
        {"role": "user", "content": "What does main.py do?"}]))
    usage = final.usage
    # OpenAI's prompt_tokens includes the cached part; Anthropic reports it apart (§3.6).
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (20012, 55, 20067)
    assert usage.prompt_tokens_details.cached_tokens == 18000


async def test_golden_cache_transcript_through_the_sdk(start_proxy, upstream):
    golden = fixture("openai_to_anthropic/usage_with_cache_tokens")
    upstream.script = [anthropic_sse(golden["upstream_events"])]
    proxy = await proxy_for(start_proxy, upstream)
    request = {k: v for k, v in golden["client_request"].items() if k not in ("model", "stream")}
    chunks = await in_thread(lambda: list(client(proxy).chat.completions.create(
        model="claude-sonnet", stream=True, **request)))
    expected = golden["client_events"][-2]["usage"]
    assert chunks[-1].usage.model_dump(exclude_none=True) == expected
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "It starts the server."
    sent = upstream.requests[0].json
    assert sent == {**golden["upstream_request"], "model": "claude-sonnet-4-5-20250929"}


async def test_usage_chunk_only_when_the_client_asks(start_proxy, upstream):
    upstream.script = [ANTHROPIC.reply(Answer(text="Hi."), stream=True), OLLAMA.reply(Answer(text="Hi."), stream=True)]
    proxy = await proxy_for(start_proxy, upstream)
    oai = client(proxy)
    for name in ("claude-sonnet", "llama"):
        chunks = await in_thread(lambda: list(oai.chat.completions.create(
            model=name, stream=True, messages=[{"role": "user", "content": "hi"}])))
        assert all(chunk.choices and chunk.usage is None for chunk in chunks)
        assert chunks[-1].choices[0].finish_reason == "stop"


@pytest.mark.parametrize(("name", "params", "expected"), [
    pytest.param("claude-sonnet", {}, 4096, id="default"),
    pytest.param("claude-short", {}, 1024, id="configured-default"),
    pytest.param("claude-short", {"max_tokens": 300}, 300, id="max_tokens"),
    pytest.param("claude-short", {"max_completion_tokens": 200}, 200, id="max_completion_tokens"),
])
async def test_anthropic_always_gets_max_tokens(start_proxy, upstream, name, params, expected):
    upstream.script = [ANTHROPIC.reply(Answer(text="Hi."), stream=False)]
    proxy = await proxy_for(start_proxy, upstream)
    completion = await in_thread(lambda: client(proxy).chat.completions.create(
        model=name, messages=[{"role": "user", "content": "hi"}], **params))
    assert completion.choices[0].message.content == "Hi."
    [seen] = upstream.requests
    assert seen.json["max_tokens"] == expected
    assert seen.headers["anthropic-version"] == "2023-06-01"


async def test_no_openai_headers_or_keys_reach_anthropic(start_proxy, upstream):
    upstream.script = [ANTHROPIC.reply(Answer(text="Hi."), stream=False)]
    proxy = await proxy_for(start_proxy, upstream)
    oai = client(proxy, organization="org-client", project="proj_client",
                 default_headers={"x-api-key": CLIENT_KEY})
    await in_thread(lambda: oai.chat.completions.create(model="claude-sonnet", messages=[QUESTION]))
    [seen] = upstream.requests
    ANTHROPIC.assert_request(seen, stream=False)
    assert seen.headers["x-api-key"] == UPSTREAM_KEY


async def test_ollama_with_a_key_gets_it_as_a_bearer_token(start_proxy, upstream):
    upstream.script = [json_reply(ollama_response(Answer(text="Hi."), model="gpt-oss:120b"))]
    proxy = await proxy_for(start_proxy, upstream)
    completion = await in_thread(lambda: client(proxy).chat.completions.create(
        model="llama-cloud", messages=[{"role": "user", "content": "hi"}]))
    assert completion.choices[0].message.content == "Hi."
    assert completion.model == "llama-cloud"
    [seen] = upstream.requests
    assert seen.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert_no_client_credentials(seen)
    assert seen.json["model"] == "gpt-oss:120b"


async def test_translated_stream_is_server_sent_events_for_the_client(start_proxy, upstream):
    upstream.script = [OLLAMA.reply(Answer(text="Hello there"), stream=True)]
    proxy = await proxy_for(start_proxy, upstream)
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{proxy}/v1/chat/completions", headers={"authorization": f"Bearer {CLIENT_KEY}"},
                            json={"model": "llama", "stream": True, "messages": [QUESTION]})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    frames = r.text.split("\n\n")
    assert frames[-2:] == ["data: [DONE]", ""]
    assert all(frame.startswith("data: ") for frame in frames[:-1])  # no `event:` lines for OpenAI


PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


@pytest.mark.parametrize("backend", BACKENDS)
async def test_data_url_images_reach_the_backend_in_its_own_shape(start_proxy, upstream, backend):
    upstream.script = [backend.reply(Answer(text="A single pixel."), stream=False)]
    proxy = await proxy_for(start_proxy, upstream)
    final = await in_thread(ask(proxy, "create", model=backend.name, messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is in this image?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "low"}}]}]))
    assert final.content == "A single pixel."
    [sent] = upstream.requests[0].json["messages"]
    if backend.wire == "anthropic":  # a base64 source block (protocols.md §3.2)
        assert sent == {"role": "user", "content": [
            {"type": "text", "text": "What is in this image?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]}
    else:  # bare base64 beside the text (§4.1)
        assert sent == {"role": "user", "content": "What is in this image?", "images": [PNG]}


@pytest.mark.parametrize("backend", BACKENDS)
async def test_stream_read_in_odd_pieces_is_still_exact(start_proxy, upstream, backend):
    """Upstream reads that split events, lines and UTF-8 characters change nothing for the client."""
    answer = Answer(text="Tōkyō ☀, Paris 🌧", tool_calls=[PARIS, TOKYO], input_tokens=30, output_tokens=12)
    upstream.script = [cut_every(backend.reply(answer, stream=True), 5)]
    proxy = await proxy_for(start_proxy, upstream)
    final = await in_thread(ask(proxy, "stream", model=backend.name, messages=[QUESTION], tools=[WEATHER_TOOL]))
    assert final.content == "Tōkyō ☀, Paris 🌧"
    assert [json.loads(arguments) for _, _, arguments in final.tool_calls] == [{"city": "Paris"}, {"city": "Tōkyō"}]
    assert (final.finish_reason, final.usage.total_tokens) == ("tool_calls", 42)


GOLDEN = [pytest.param(name, stream, "anthropic" if name.startswith("openai_to_anthropic") else "ollama",
                       id=f"{name.replace('openai_to_anthropic', 'anthropic')}-{'stream' if stream else 'create'}")
          for name, stream in golden_cases("openai_to_anthropic") + golden_cases("ollama")]


@pytest.mark.parametrize(("name", "stream", "wire"), GOLDEN)
async def test_golden_transcript_through_the_proxy(start_proxy, upstream, name, stream, wire):
    """Every recorded upstream answer, replayed over HTTP, gives the recorded OpenAI client stream."""
    golden = fixture(name)
    request = golden_client_request(golden, stream=stream)
    upstream.script = [golden_reply(golden, wire, stream=stream)]
    key = {"api_key": UPSTREAM_KEY} if wire == "anthropic" else {}
    proxy = await start_proxy({"models": {request["model"]: model(
        wire, upstream.url, upstream_model=golden["upstream_request"]["model"], **key)}})
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{proxy}/v1/chat/completions", json=request,
                            headers={"authorization": f"Bearer {CLIENT_KEY}"})
    assert r.status_code == 200
    [seen] = upstream.requests
    assert seen.json == golden_upstream_request(golden, wire, stream=stream)
    if not stream:
        assert masked(r.json()) == masked(golden["client_response"])
        return
    frames = parse_sse(r.content)
    assert all(event is None for event, _ in frames)  # OpenAI streams have no `event:` lines
    assert masked([data for _, data in frames]) == masked(golden["client_events"])


# -- the tool round trip --------------------------------------------------------------------

ROUND_TRIP = [  # openai-python's second turn (captured shape), with two parallel calls
    {"role": "user", "content": "weather in Paris and Tokyo?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_0af441c6c597", "type": "function",
         "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
        {"id": "call_1bb392fe3966", "type": "function",
         "function": {"name": "get_weather", "arguments": "{\"city\": \"Tokyo\"}"}},
    ]},
    {"role": "tool", "tool_call_id": "call_0af441c6c597", "content": "{\"temp_c\": 21}"},
    {"role": "tool", "tool_call_id": "call_1bb392fe3966", "content": [{"type": "text", "text": "{\"temp_c\": 9}"}]},
    {"role": "user", "content": "Which is warmer?"},
]


async def test_tool_messages_become_one_user_turn_of_tool_results_on_anthropic(start_proxy, upstream):
    upstream.script = [ANTHROPIC.reply(Answer(text="Paris."), stream=True)]
    proxy = await proxy_for(start_proxy, upstream)
    final = await in_thread(ask(proxy, "helper", model="claude-sonnet", tools=[WEATHER_TOOL], messages=ROUND_TRIP))
    assert final.content == "Paris."
    [seen] = upstream.requests
    ANTHROPIC.assert_request(seen, stream=True)
    assert seen.json["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "weather in Paris and Tokyo?"}]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "call_0af441c6c597", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_1bb392fe3966", "name": "get_weather", "input": {"city": "Tokyo"}},
        ]},
        # Anthropic wants every result first in the one user turn after the tool calls.
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_0af441c6c597", "content": "{\"temp_c\": 21}"},
            {"type": "tool_result", "tool_use_id": "call_1bb392fe3966",
             "content": [{"type": "text", "text": "{\"temp_c\": 9}"}]},
            {"type": "text", "text": "Which is warmer?"},
        ]},
    ]


async def test_tool_messages_carry_the_tool_name_on_ollama(start_proxy, upstream):
    upstream.script = [OLLAMA.reply(Answer(text="Paris."), stream=False)]
    proxy = await proxy_for(start_proxy, upstream)
    final = await in_thread(ask(proxy, "create", model="llama", tools=[WEATHER_TOOL], messages=ROUND_TRIP))
    assert final.content == "Paris."
    [seen] = upstream.requests
    OLLAMA.assert_request(seen, stream=False)
    assert seen.json["messages"] == [
        {"role": "user", "content": "weather in Paris and Tokyo?"},
        {"role": "assistant", "content": "", "tool_calls": [  # arguments as objects, not strings
            {"id": "call_0af441c6c597",
             "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}},
            {"id": "call_1bb392fe3966",
             "function": {"index": 1, "name": "get_weather", "arguments": {"city": "Tokyo"}}},
        ]},
        # Ollama matches results to calls by tool_name, which OpenAI tool messages lack.
        {"role": "tool", "tool_name": "get_weather", "tool_call_id": "call_0af441c6c597",
         "content": "{\"temp_c\": 21}"},
        {"role": "tool", "tool_name": "get_weather", "tool_call_id": "call_1bb392fe3966",
         "content": "{\"temp_c\": 9}"},
        {"role": "user", "content": "Which is warmer?"},
    ]


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
async def test_anthropic_overloaded_reaches_the_client_as_529(start_proxy, upstream, stream):
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"},
             "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"}
    upstream.script = [json_reply(error, 529)]
    proxy = await proxy_for(start_proxy, upstream, retry={"max_attempts": 1})
    with pytest.raises(openai.InternalServerError) as caught:
        await in_thread(lambda: client(proxy).chat.completions.create(
            model="claude-sonnet", messages=[QUESTION], stream=stream))
    assert caught.value.status_code == 529
    assert caught.value.body == {"message": "Overloaded", "type": "overloaded_error", "param": None, "code": None}


async def test_anthropic_rate_limit_reaches_the_client_as_429(start_proxy, upstream):
    error = {"type": "error", "error": {"type": "rate_limit_error",
                                        "message": "Number of request tokens has exceeded your per-minute rate limit"}}
    upstream.script = [json_reply(error, 429, headers=[("retry-after", "12")])]
    proxy = await proxy_for(start_proxy, upstream, retry={"max_attempts": 1})
    with pytest.raises(openai.RateLimitError) as caught:
        await in_thread(lambda: client(proxy).chat.completions.create(model="claude-sonnet", messages=[QUESTION]))
    assert caught.value.body["type"] == "rate_limit_error"
    assert caught.value.response.headers["retry-after"] == "12"


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
async def test_ollama_model_not_found_is_a_404(start_proxy, upstream, stream):
    upstream.script = [json_reply({"error": "model \"llama3.2\" not found, try pulling it first"}, 404)]
    proxy = await proxy_for(start_proxy, upstream, retry={"max_attempts": 1})
    with pytest.raises(openai.NotFoundError) as caught:
        await in_thread(lambda: client(proxy).chat.completions.create(
            model="llama", messages=[QUESTION], stream=stream))
    assert caught.value.status_code == 404
    assert caught.value.body["type"] == "not_found_error"
    assert "not found" in caught.value.body["message"]


OVERLOADED_EVENT = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


async def test_an_error_as_the_first_stream_event_is_retried(start_proxy, upstream):
    """Nothing reached the client yet: an overloaded Anthropic stream is a failed attempt like a 529."""
    upstream.script = [anthropic_sse([OVERLOADED_EVENT]), ANTHROPIC.reply(Answer(text="Hello."), stream=True)]
    proxy = await proxy_for(start_proxy, upstream, retry={"max_attempts": 2, "backoff_ms": 0, "jitter": False})
    final = await in_thread(ask(proxy, "stream", model="claude-sonnet", messages=[QUESTION]))
    assert (final.content, final.finish_reason) == ("Hello.", "stop")
    assert len(upstream.requests) == 2


MID_STREAM_FAILURES = {
    "anthropic": anthropic_sse([*anthropic_events(Answer(text="Partial answer"))[:5],
                                {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}]),
    "ollama": ollama_ndjson([*ollama_lines(Answer(text="Partial answer"))[:1],
                             {"error": "an error was encountered while running the model: unexpected EOF"}]),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["stream", "helper"])
async def test_a_mid_stream_upstream_error_makes_the_sdk_raise(start_proxy, upstream, backend, mode):
    upstream.script = [MID_STREAM_FAILURES[backend.wire]]
    proxy = await proxy_for(start_proxy, upstream)
    with pytest.raises(openai.APIError) as caught:
        await in_thread(ask(proxy, mode, model=backend.name, messages=[QUESTION]))
    expected = ("overloaded_error", "Overloaded") if backend.wire == "anthropic" else ("api_error", "unexpected EOF")
    assert caught.value.body["type"] == expected[0]
    assert expected[1] in caught.value.message


TRUNCATED = {  # the body ends in the middle of a tool call: no message_stop / done line
    "anthropic": anthropic_sse(anthropic_events(Answer(tool_calls=[PARIS]))[:5]),
    "ollama": ollama_ndjson(ollama_lines(Answer(text="Let me call the tool", tool_calls=[PARIS]))[:2]),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["stream", "helper"])
async def test_a_stream_cut_short_is_an_error_never_a_silent_success(start_proxy, upstream, backend, mode):
    upstream.script = [TRUNCATED[backend.wire]]
    proxy = await proxy_for(start_proxy, upstream)
    with pytest.raises(openai.APIError) as caught:
        await in_thread(ask(proxy, mode, model=backend.name, messages=[QUESTION], tools=[WEATHER_TOOL]))
    assert "ended before" in caught.value.message


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_dropped_connection_mid_stream_is_an_error_not_a_success(start_proxy, upstream, backend):
    reply = backend.reply(Answer(text="Partial answer", tool_calls=[PARIS]), stream=True)
    kept = {"anthropic": 8, "ollama": 2}[backend.wire]  # the text, then the drop before the tool call
    upstream.script = [attrs.evolve(reply, pieces=(reply.pieces or [])[:kept], cut=True)]
    proxy = await proxy_for(start_proxy, upstream)
    seen: list[str] = []

    def run() -> None:
        for chunk in client(proxy).chat.completions.create(model=backend.name, messages=[QUESTION], stream=True):
            seen.append(chunk.choices[0].delta.content or "")

    with pytest.raises(openai.APIError) as caught:
        await in_thread(run)
    assert "".join(seen) == "Partial answer"  # what arrived before the drop was delivered
    assert caught.value.body["type"] == "api_error"
    assert "broke the connection" in caught.value.message
