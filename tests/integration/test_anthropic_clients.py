"""The official anthropic SDK through the proxy, to every backend type (issue 3's proof).

Each test runs the real SDK against the real proxy on 127.0.0.1, in front of a
fake upstream that speaks the backend's real wire format (`tests.support.wire`),
and checks both sides: what the SDK parsed, and exactly what the upstream got
(path, the backend's own key, no client key, the translated body).

* Translated routes (Anthropic in, OpenAI-compatible ``/chat/completions`` or
  Ollama ``/api/chat`` out) are parametrized over both backends where the
  client-visible behaviour must be the same; request shapes are checked per
  backend.
* The pass-through route (Anthropic in, Anthropic out) must leave bodies, event
  types and unknown fields alone: a translator must never be in that path.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anthropic
import attrs
import httpx
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
    openai_chunks,
    openai_completion,
    openai_sse,
    parse_sse,
)

WEATHER_TOOL = {
    "name": "get_weather", "description": "Get the current weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
                     "required": ["city"]},
}
QUESTION = {"role": "user", "content": "What's the weather in Paris?"}
PARIS = ToolCall("call_pAr1s", "get_weather", {"city": "Paris", "unit": "celsius"})
LONDON = ToolCall("call_L0nd0n", "get_weather", {"city": "London"})


def client(proxy: str, **kw: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=proxy, api_key=CLIENT_KEY, max_retries=0, **kw)


async def proxy_for(start_proxy: Any, upstream: FakeUpstream, **extra: Any) -> str:
    """One proxy with a model per backend type, all served by the same fake upstream."""
    return await start_proxy({"models": {
        "claude-on-gpt": model("openai-compatible", f"{upstream.url}/v1", api_key=UPSTREAM_KEY,
                               upstream_model="gpt-4o", **extra),
        "claude-on-llama": model("ollama", upstream.url, api_key=UPSTREAM_KEY, upstream_model="llama3.2", **extra),
        "claude-sonnet-4-6": model("anthropic", upstream.url, api_key=UPSTREAM_KEY, **extra),
        "sonnet": model("anthropic", upstream.url, api_key=UPSTREAM_KEY, upstream_model="claude-sonnet-4-5-20250929"),
    }})


def assert_no_client_credentials(seen: Recorded) -> None:
    assert CLIENT_KEY not in json.dumps(seen.headers)
    assert CLIENT_KEY.encode() not in seen.body


@attrs.frozen
class Backend:
    """A backend behind an Anthropic client: its model name and wire format."""

    name: str
    wire: str
    path: str

    def reply(self, answer: Answer, *, stream: bool) -> Reply:
        if self.wire == "anthropic":
            return anthropic_sse(anthropic_events(answer)) if stream else json_reply(anthropic_message(answer))
        if self.wire == "openai":
            return openai_sse(openai_chunks(answer)) if stream else json_reply(openai_completion(answer))
        return ollama_ndjson(ollama_lines(answer)) if stream else json_reply(ollama_response(answer))

    def assert_request(self, seen: Recorded, *, stream: bool) -> None:
        """Path, credentials and stream flags of every request on a translated route."""
        assert (seen.method, seen.path) == ("POST", self.path)
        assert seen.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
        assert "x-api-key" not in seen.headers
        assert_no_client_credentials(seen)
        # Anthropic's and the SDK's own headers mean nothing to another vendor.
        assert not [name for name in seen.headers if name.startswith(("anthropic-", "x-stainless-"))]
        body = seen.json
        if self.wire == "openai":
            assert body["model"] == "gpt-4o"
            assert body.get("stream", False) is stream
            # Without include_usage an OpenAI stream carries no usage (protocols.md §3.6).
            assert body.get("stream_options") == ({"include_usage": True} if stream else None)
        else:
            assert body["model"] == "llama3.2"
            assert body["stream"] is stream  # always explicit: Ollama defaults to true

    def max_tokens_sent(self, body: dict[str, Any]) -> int:
        return body["max_tokens"] if self.wire == "openai" else body["options"]["num_predict"]


OPENAI_COMPATIBLE = Backend("claude-on-gpt", "openai", "/v1/chat/completions")
OLLAMA = Backend("claude-on-llama", "ollama", "/api/chat")
PASSTHROUGH = Backend("claude-sonnet-4-6", "anthropic", "/v1/messages")
TRANSLATED = [pytest.param(OPENAI_COMPATIBLE, id="openai-compatible"), pytest.param(OLLAMA, id="ollama")]
STREAMING = [pytest.param(False, id="create"), pytest.param(True, id="stream")]


def ask(proxy: str, *, stream: bool, **params: Any) -> Callable[[], Any]:
    """`messages.create(...)` or `messages.stream(...).get_final_message()`: the message either way."""
    def run() -> Any:
        ant = client(proxy)
        if not stream:
            return ant.messages.create(**params)
        with ant.messages.stream(**params) as events:
            return events.get_final_message()

    return run


# -- translated routes: answers -------------------------------------------------------------


@pytest.mark.parametrize("backend", TRANSLATED)
@pytest.mark.parametrize("stream", STREAMING)
async def test_tool_call_becomes_a_tool_use_block_with_parsed_input(start_proxy, upstream, backend, stream):
    answer = Answer(text="Let me check.", tool_calls=[PARIS], input_tokens=120, output_tokens=18)
    upstream.script = [backend.reply(answer, stream=stream)]
    proxy = await proxy_for(start_proxy, upstream)
    message = await in_thread(ask(proxy, stream=stream, model=backend.name, max_tokens=512,
                                  messages=[QUESTION], tools=[WEATHER_TOOL]))
    assert [block.type for block in message.content] == ["text", "tool_use"]
    text, tool = message.content
    assert text.text == "Let me check."
    assert (tool.id, tool.name) == ("call_pAr1s", "get_weather")
    assert tool.input == {"city": "Paris", "unit": "celsius"}  # an object, not a JSON string
    assert message.stop_reason == "tool_use"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (120, 18)
    assert message.model == backend.name
    [seen] = upstream.requests
    backend.assert_request(seen, stream=stream)
    [tool_sent] = seen.json["tools"]
    assert tool_sent == {"type": "function", "function": {
        "name": "get_weather", "description": WEATHER_TOOL["description"],
        "parameters": WEATHER_TOOL["input_schema"]}}


@pytest.mark.parametrize("backend", TRANSLATED)
@pytest.mark.parametrize("stream", STREAMING)
async def test_parallel_tool_calls_become_separate_tool_use_blocks(start_proxy, upstream, backend, stream):
    answer = Answer(tool_calls=[PARIS, LONDON], input_tokens=180, output_tokens=40)
    upstream.script = [backend.reply(answer, stream=stream)]
    proxy = await proxy_for(start_proxy, upstream)
    message = await in_thread(ask(proxy, stream=stream, model=backend.name, max_tokens=512, tools=[WEATHER_TOOL],
                                  messages=[{"role": "user", "content": "Weather in Paris and London?"}]))
    assert [(b.type, b.id, b.name, b.input) for b in message.content] == [
        ("tool_use", "call_pAr1s", "get_weather", {"city": "Paris", "unit": "celsius"}),
        ("tool_use", "call_L0nd0n", "get_weather", {"city": "London"}),
    ]
    assert message.stop_reason == "tool_use"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (180, 40)
    backend.assert_request(upstream.requests[0], stream=stream)


@pytest.mark.parametrize("backend", TRANSLATED)
@pytest.mark.parametrize("stream", STREAMING)
async def test_text_answer_ends_the_turn(start_proxy, upstream, backend, stream):
    answer = Answer(text="Hello! How can I help you today?", input_tokens=13, output_tokens=10)
    upstream.script = [backend.reply(answer, stream=stream)]
    proxy = await proxy_for(start_proxy, upstream)
    message = await in_thread(ask(proxy, stream=stream, model=backend.name, max_tokens=100,
                                  system="be brief", messages=[{"role": "user", "content": "say hi"}]))
    assert [(b.type, b.text) for b in message.content] == [("text", "Hello! How can I help you today?")]
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (13, 10)
    [seen] = upstream.requests
    backend.assert_request(seen, stream=stream)
    assert seen.json["messages"] == [{"role": "system", "content": "be brief"},
                                     {"role": "user", "content": "say hi"}]


@pytest.mark.parametrize("backend", TRANSLATED)
@pytest.mark.parametrize("stream", STREAMING)
async def test_hitting_the_token_limit_is_a_max_tokens_stop(start_proxy, upstream, backend, stream):
    answer = Answer(text="The history of Rome begins", stop="max_tokens", output_tokens=5)
    upstream.script = [backend.reply(answer, stream=stream)]
    proxy = await proxy_for(start_proxy, upstream)
    message = await in_thread(ask(proxy, stream=stream, model=backend.name, max_tokens=5,
                                  messages=[{"role": "user", "content": "Tell me about Rome."}]))
    assert message.stop_reason == "max_tokens"
    assert message.content[0].text == "The history of Rome begins"
    assert message.usage.output_tokens == 5
    assert backend.max_tokens_sent(upstream.requests[0].json) == 5


@pytest.mark.parametrize("backend", TRANSLATED)
@pytest.mark.parametrize("stream", STREAMING)
async def test_reasoning_comes_back_as_a_thinking_block(start_proxy, upstream, backend, stream):
    answer = Answer(reasoning="The user wants the capital of France. That is Paris.", text="Paris.")
    upstream.script = [backend.reply(answer, stream=stream)]
    proxy = await proxy_for(start_proxy, upstream)
    message = await in_thread(ask(proxy, stream=stream, model=backend.name, max_tokens=4096,
                                  thinking={"type": "enabled", "budget_tokens": 2048},
                                  messages=[{"role": "user", "content": "Capital of France?"}]))
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == "The user wants the capital of France. That is Paris."
    assert message.content[1].text == "Paris."
    assert message.stop_reason == "end_turn"
    sent = upstream.requests[0].json
    # A 2048-token budget is a medium effort on both backends (protocols.md §3.7).
    assert (sent["reasoning_effort"] if backend.wire == "openai" else sent["think"]) == "medium"


# -- translated routes: the tool round trip -------------------------------------------------

ROUND_TRIP = [
    {"role": "user", "content": "Weather in Paris and London? Which is warmer?"},
    {"role": "assistant", "content": [
        {"type": "text", "text": "Checking both cities."},
        {"type": "tool_use", "id": "toolu_01Paris", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_02London", "name": "get_weather", "input": {"city": "London"}},
    ]},
    {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_01Paris", "content": "18C, sunny"},
        {"type": "tool_result", "tool_use_id": "toolu_02London", "content": [{"type": "text", "text": "12C, rain"}]},
        {"type": "text", "text": "Answer in one word."},
    ]},
]


async def test_tool_results_reach_an_openai_backend_as_tool_messages(start_proxy, upstream):
    upstream.script = [OPENAI_COMPATIBLE.reply(Answer(text="Paris."), stream=False)]
    proxy = await proxy_for(start_proxy, upstream)
    message = await in_thread(lambda: client(proxy).messages.create(
        model="claude-on-gpt", max_tokens=256, tools=[WEATHER_TOOL], messages=ROUND_TRIP))
    assert message.content[0].text == "Paris."
    [seen] = upstream.requests
    OPENAI_COMPATIBLE.assert_request(seen, stream=False)
    assert seen.json["messages"] == [
        {"role": "user", "content": "Weather in Paris and London? Which is warmer?"},
        {"role": "assistant", "content": "Checking both cities.", "tool_calls": [  # arguments as JSON strings
            {"id": "toolu_01Paris", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "toolu_02London", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\":\"London\"}"}},
        ]},
        # One `tool` message per result, results first, then the rest of the user turn.
        {"role": "tool", "tool_call_id": "toolu_01Paris", "content": "18C, sunny"},
        {"role": "tool", "tool_call_id": "toolu_02London", "content": "12C, rain"},
        {"role": "user", "content": [{"type": "text", "text": "Answer in one word."}]},
    ]


async def test_tool_results_reach_ollama_as_tool_messages_with_tool_name(start_proxy, upstream):
    upstream.script = [OLLAMA.reply(Answer(text="Paris."), stream=True)]
    proxy = await proxy_for(start_proxy, upstream)
    message = await in_thread(ask(proxy, stream=True, model="claude-on-llama", max_tokens=256,
                                  tools=[WEATHER_TOOL], messages=ROUND_TRIP))
    assert message.content[0].text == "Paris."
    [seen] = upstream.requests
    OLLAMA.assert_request(seen, stream=True)
    assert seen.json["messages"] == [
        {"role": "user", "content": "Weather in Paris and London? Which is warmer?"},
        {"role": "assistant", "content": "Checking both cities.", "tool_calls": [
            {"id": "toolu_01Paris", "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}},
            {"id": "toolu_02London", "function": {"index": 1, "name": "get_weather",
                                                  "arguments": {"city": "London"}}},
        ]},
        {"role": "tool", "tool_name": "get_weather", "tool_call_id": "toolu_01Paris", "content": "18C, sunny"},
        {"role": "tool", "tool_name": "get_weather", "tool_call_id": "toolu_02London", "content": "12C, rain"},
        {"role": "user", "content": "Answer in one word."},
    ]


async def test_claude_code_style_request_works_on_an_openai_backend(start_proxy, upstream):
    """`?beta=true`, `x-api-key`, `anthropic-beta`: Claude Code's request, answered by a gpt model."""
    upstream.script = [OPENAI_COMPATIBLE.reply(Answer(tool_calls=[PARIS]), stream=True)]
    proxy = await proxy_for(start_proxy, upstream)
    ant = anthropic.Anthropic(base_url=proxy, api_key=None, auth_token=None, max_retries=0,
                              default_headers={"x-api-key": CLIENT_KEY})

    def run() -> Any:
        with ant.beta.messages.stream(model="claude-on-gpt", max_tokens=32000, messages=[QUESTION],
                                      tools=[WEATHER_TOOL], betas=["interleaved-thinking-2025-05-14"],
                                      metadata={"user_id": "user_0af4_account_5e2c_session_9b1d"},
                                      extra_query={"beta": "true"}) as events:
            return events.get_final_message()

    message = await in_thread(run)
    assert message.content[0].input == {"city": "Paris", "unit": "celsius"}
    assert message.stop_reason == "tool_use"
    [seen] = upstream.requests
    OPENAI_COMPATIBLE.assert_request(seen, stream=True)
    assert seen.query == ""  # `beta=true` means nothing to an OpenAI server
    assert (seen.json["max_tokens"], seen.json["user"]) == (32000, "user_0af4_account_5e2c_session_9b1d")


async def test_sampling_parameters_reach_ollama_options(start_proxy, upstream):
    upstream.script = [OLLAMA.reply(Answer(text="Paris."), stream=False)]
    proxy = await proxy_for(start_proxy, upstream)
    await in_thread(ask(proxy, stream=False, model="claude-on-llama", max_tokens=64, stop_sequences=["END"],
                        messages=[QUESTION], extra_body={"temperature": 0.3, "top_p": 0.9, "top_k": 40}))
    assert upstream.requests[0].json["options"] == {
        "num_predict": 64, "temperature": 0.3, "top_p": 0.9, "top_k": 40, "stop": ["END"]}


PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
IMAGE_QUESTION = {"role": "user", "content": [
    {"type": "text", "text": "What is in this screenshot?"},
    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
]}


@pytest.mark.parametrize("backend", TRANSLATED)
async def test_images_reach_the_backend_in_its_own_shape(start_proxy, upstream, backend):
    upstream.script = [backend.reply(Answer(text="A single pixel."), stream=False)]
    proxy = await proxy_for(start_proxy, upstream)
    message = await in_thread(ask(proxy, stream=False, model=backend.name, max_tokens=64, messages=[IMAGE_QUESTION]))
    assert message.content[0].text == "A single pixel."
    [sent] = upstream.requests[0].json["messages"]
    if backend.wire == "openai":  # a data URL (protocols.md §3.2)
        assert sent == {"role": "user", "content": [
            {"type": "text", "text": "What is in this screenshot?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]}
    else:  # bare base64 beside the text (§4.1)
        assert sent == {"role": "user", "content": "What is in this screenshot?", "images": [PNG]}


@pytest.mark.parametrize("backend", TRANSLATED)
async def test_stream_read_in_odd_pieces_is_still_exact(start_proxy, upstream, backend):
    """Upstream reads that split events, lines and UTF-8 characters change nothing for the client."""
    answer = Answer(text="Tōkyō ☀, Paris 🌧", tool_calls=[PARIS, LONDON])
    upstream.script = [cut_every(backend.reply(answer, stream=True), 5)]
    proxy = await proxy_for(start_proxy, upstream)
    message = await in_thread(ask(proxy, stream=True, model=backend.name, max_tokens=100, messages=[QUESTION],
                                  tools=[WEATHER_TOOL]))
    assert [(b.type, getattr(b, "text", None), getattr(b, "input", None)) for b in message.content] == [
        ("text", "Tōkyō ☀, Paris 🌧", None),
        ("tool_use", None, {"city": "Paris", "unit": "celsius"}),
        ("tool_use", None, {"city": "London"}),
    ]
    assert message.stop_reason == "tool_use"


async def test_stream_starts_with_the_same_input_estimate_count_tokens_gives(start_proxy, upstream):
    """OpenAI reports usage only at the end; message_start carries the proxy's estimate meanwhile."""
    upstream.script = [OPENAI_COMPATIBLE.reply(Answer(text="Hi.", input_tokens=3000), stream=True)]
    proxy = await proxy_for(start_proxy, upstream)
    ant = client(proxy)
    params: dict[str, Any] = {"model": "claude-on-gpt", "system": "You are Claude Code. " * 50,
                              "messages": [QUESTION], "tools": [WEATHER_TOOL]}
    estimate = await in_thread(lambda: ant.messages.count_tokens(**params).input_tokens)

    def run() -> tuple[int, int]:
        with ant.messages.stream(max_tokens=100, **params) as events:
            first = next(iter(events))
            final = events.get_final_message()
        assert first.type == "message_start"
        return first.message.usage.input_tokens, final.usage.input_tokens

    at_start, at_end = await in_thread(run)
    assert at_start == estimate > 0
    assert at_end == 3000  # the upstream's real count replaces it


@pytest.mark.parametrize(("name", "stream"), golden_cases("anthropic_to_openai"),
                         ids=lambda v: v.split("/")[-1] if isinstance(v, str) else ("stream" if v else "create"))
async def test_golden_transcript_through_the_proxy(start_proxy, upstream, name, stream):
    """Every recorded OpenAI answer, replayed over HTTP, gives the recorded Anthropic client stream."""
    golden = fixture(name)
    request = golden_client_request(golden, stream=stream)
    upstream.script = [golden_reply(golden, "openai", stream=stream)]
    proxy = await start_proxy({"models": {request["model"]: model(
        "openai-compatible", f"{upstream.url}/v1", api_key=UPSTREAM_KEY,
        upstream_model=golden["upstream_request"]["model"])}})
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{proxy}/v1/messages?beta=true", json=request,
                            headers={"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"})
    assert r.status_code == 200
    [seen] = upstream.requests
    assert seen.json == golden_upstream_request(golden, "openai", stream=stream)
    if not stream:
        assert masked(r.json()) == masked(golden["client_response"])
        return
    frames = parse_sse(r.content)
    assert all(event == data["type"] for event, data in frames)  # the SDK ignores events without a name
    events = [data for _, data in frames]
    assert masked(events) == masked(_with_estimate(golden["client_events"], events))


def _with_estimate(expected: list[dict[str, Any]], got: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The transcript's events with the proxy's input estimate where the upstream gave no count."""
    estimate = got[0]["message"]["usage"]["input_tokens"]
    assert estimate > 0
    out = json.loads(json.dumps(expected))
    out[0]["message"]["usage"]["input_tokens"] = estimate
    for event in out:
        if event["type"] == "message_delta" and event["usage"].get("input_tokens") == 0:
            event["usage"]["input_tokens"] = estimate
    return out


async def test_usage_with_cache_reads_from_an_openai_backend(start_proxy, upstream):
    """The golden transcript's upstream, through the real proxy and SDK."""
    golden = fixture("anthropic_to_openai/usage_cache_tokens")
    upstream.script = [openai_sse(golden["upstream_events"])]
    proxy = await proxy_for(start_proxy, upstream)
    request = {k: v for k, v in golden["client_request"].items() if k not in ("model", "stream")}
    message = await in_thread(ask(proxy, stream=True, model="claude-on-gpt", **request))
    expected = golden["client_events"][-2]["usage"]  # message_delta's usage
    assert message.usage.input_tokens == expected["input_tokens"]
    assert message.usage.cache_read_input_tokens == expected["cache_read_input_tokens"]
    assert message.usage.cache_creation_input_tokens == expected["cache_creation_input_tokens"]
    assert message.usage.output_tokens == expected["output_tokens"]

@pytest.mark.parametrize("stream", STREAMING)
async def test_overloaded_claude_falls_back_to_an_openai_model(start_proxy, upstream, second_upstream, stream):
    """The fallback speaks another protocol: the same request is translated for it, the answer back."""
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    upstream.script = [json_reply(overloaded, 529)]
    second_upstream.script = [OPENAI_COMPATIBLE.reply(Answer(tool_calls=[PARIS]), stream=stream)]
    proxy = await start_proxy({"models": {
        "claude-sonnet-4-6": model("anthropic", upstream.url, api_key="sk-ant-backend", retry={"max_attempts": 1},
                                   fallbacks=["gpt-4o"]),
        "gpt-4o": model("openai-compatible", f"{second_upstream.url}/v1", api_key=UPSTREAM_KEY),
    }})
    message = await in_thread(ask(proxy, stream=stream, model="claude-sonnet-4-6", max_tokens=100,
                                  messages=[QUESTION], tools=[WEATHER_TOOL]))
    assert [(b.type, b.input) for b in message.content] == [("tool_use", {"city": "Paris", "unit": "celsius"})]
    assert message.stop_reason == "tool_use"
    [first] = upstream.requests
    assert first.path == "/v1/messages" and first.headers["x-api-key"] == "sk-ant-backend"
    [second] = second_upstream.requests
    assert second.path == "/v1/chat/completions"
    assert second.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert second.json["tools"][0]["function"]["name"] == "get_weather"
    assert_no_client_credentials(second)


# -- translated routes: errors --------------------------------------------------------------


@pytest.mark.parametrize("stream", STREAMING)
async def test_openai_rate_limit_reaches_the_client_as_rate_limit_error(start_proxy, upstream, stream):
    error = {"error": {"message": "Rate limit reached for gpt-4o", "type": "requests", "param": None,
                       "code": "rate_limit_exceeded"}}
    upstream.script = [json_reply(error, 429, headers=[("retry-after", "7")])]
    proxy = await proxy_for(start_proxy, upstream, retry={"max_attempts": 1})
    with pytest.raises(anthropic.RateLimitError) as caught:
        await in_thread(ask(proxy, stream=stream, model="claude-on-gpt", max_tokens=10, messages=[QUESTION]))
    assert caught.value.status_code == 429
    assert caught.value.body == {"type": "error", "error": {
        "type": "rate_limit_error", "message": "Rate limit reached for gpt-4o"}}
    assert caught.value.response.headers["retry-after"] == "7"


@pytest.mark.parametrize("stream", STREAMING)
async def test_ollama_model_not_found_is_a_404(start_proxy, upstream, stream):
    upstream.script = [json_reply({"error": "model \"llama3.2\" not found, try pulling it first"}, 404)]
    proxy = await proxy_for(start_proxy, upstream, retry={"max_attempts": 1})
    with pytest.raises(anthropic.NotFoundError) as caught:
        await in_thread(ask(proxy, stream=stream, model="claude-on-llama", max_tokens=10, messages=[QUESTION]))
    assert caught.value.status_code == 404
    assert caught.value.body["type"] == "error"
    assert caught.value.body["error"]["type"] == "not_found_error"
    assert "not found" in caught.value.body["error"]["message"]


MID_STREAM_FAILURES = {
    "openai": [*openai_chunks(Answer(text="Partial answer"))[:2],
               {"error": {"message": "The server had an error while processing your request.",
                          "type": "server_error", "param": None, "code": None}}],
    "ollama": [*ollama_lines(Answer(text="Partial answer"))[:1],
               {"error": "an error was encountered while running the model: unexpected EOF"}],
}


@pytest.mark.parametrize("backend", TRANSLATED)
async def test_a_mid_stream_upstream_error_makes_the_sdk_raise(start_proxy, upstream, backend):
    items = MID_STREAM_FAILURES[backend.wire]
    upstream.script = [openai_sse(items) if backend.wire == "openai" else ollama_ndjson(items)]
    proxy = await proxy_for(start_proxy, upstream)
    seen_text: list[str] = []

    def run() -> None:
        with client(proxy).messages.stream(model=backend.name, max_tokens=100, messages=[QUESTION]) as events:
            for text in events.text_stream:
                seen_text.append(text)

    with pytest.raises(anthropic.APIStatusError) as caught:
        await in_thread(run)
    assert seen_text == ["Partial"]  # what arrived before the failure was delivered
    assert caught.value.body["type"] == "error"
    assert caught.value.body["error"]["type"] == "api_error"
    assert ("had an error" if backend.wire == "openai" else "unexpected EOF") in caught.value.body["error"]["message"]


TRUNCATED = {  # the body ends in the middle of a tool call: no finish_reason / done line
    "openai": openai_chunks(Answer(tool_calls=[PARIS]))[:4],
    "ollama": ollama_lines(Answer(text="I will call the tool", tool_calls=[PARIS]))[:2],
}


@pytest.mark.parametrize("backend", TRANSLATED)
async def test_a_stream_cut_short_is_an_error_never_a_silent_success(start_proxy, upstream, backend):
    items = TRUNCATED[backend.wire]
    upstream.script = [openai_sse(items) if backend.wire == "openai" else ollama_ndjson(items)]
    proxy = await proxy_for(start_proxy, upstream)
    with pytest.raises(anthropic.APIStatusError) as caught:
        await in_thread(ask(proxy, stream=True, model=backend.name, max_tokens=100, messages=[QUESTION],
                            tools=[WEATHER_TOOL]))
    assert caught.value.body["error"]["type"] == "api_error"
    assert "ended before" in caught.value.body["error"]["message"]


@pytest.mark.parametrize("backend", [*TRANSLATED, pytest.param(PASSTHROUGH, id="anthropic-passthrough")])
async def test_a_dropped_connection_mid_stream_is_an_error_not_a_success(start_proxy, upstream, backend):
    reply = backend.reply(Answer(text="Partial answer", tool_calls=[PARIS]), stream=True)
    kept = {"openai": 5, "ollama": 2, "anthropic": 8}[backend.wire]  # the text, then the drop before the tool
    upstream.script = [attrs.evolve(reply, pieces=(reply.pieces or [])[:kept], cut=True)]
    proxy = await proxy_for(start_proxy, upstream)
    seen_text: list[str] = []

    def run() -> None:
        with client(proxy).messages.stream(model=backend.name, max_tokens=100, messages=[QUESTION]) as events:
            seen_text.extend(events.text_stream)

    with pytest.raises(anthropic.APIStatusError) as caught:
        await in_thread(run)
    assert seen_text == ["Partial", " answer"]  # what arrived before the drop was delivered
    assert caught.value.body["type"] == "error"
    assert caught.value.body["error"]["type"] == "api_error"
    assert "broke the connection" in caught.value.body["error"]["message"]


@pytest.mark.parametrize("stream", STREAMING)
async def test_ollama_that_cannot_think_is_asked_again_without_think(start_proxy, upstream, stream):
    """Claude Code asks for thinking on every request; most local models cannot think."""
    upstream.script = [
        json_reply({"error": "\"llama3.2\" does not support thinking"}, 400),
        OLLAMA.reply(Answer(text="Paris."), stream=stream),
    ]
    proxy = await proxy_for(start_proxy, upstream)
    message = await in_thread(ask(proxy, stream=stream, model="claude-on-llama", max_tokens=4096,
                                  thinking={"type": "enabled", "budget_tokens": 2048},
                                  messages=[{"role": "user", "content": "Capital of France?"}]))
    assert message.content[0].text == "Paris."
    first, second = upstream.requests
    assert first.json["think"] == "medium"
    assert "think" not in second.json
    assert {k: v for k, v in first.json.items() if k != "think"} == second.json


# -- pass-through to Anthropic --------------------------------------------------------------

CLAUDE_CODE_BODY = (
    b'{"model":"claude-sonnet-4-6","max_tokens":32000,"stream":false,'
    b'"system":[{"type":"text","text":"You are Claude Code.","cache_control":{"type":"ephemeral"}}],'
    b'"messages":[{"role":"user","content":[{"type":"text","text":"read the file",'
    b'"cache_control":{"type":"ephemeral","ttl":"1h"}}]},'
    b'{"role":"assistant","content":[{"type":"thinking","thinking":"I should read it.","signature":"EqQBsig=="},'
    b'{"type":"tool_use","id":"toolu_01","name":"Read","input":{"file_path":"/tmp/a.txt"}}]},'
    b'{"role":"user","content":[{"tool_use_id":"toolu_01","type":"tool_result","content":"1\\thello"}]}],'
    b'"thinking":{"type":"enabled","budget_tokens":31999},'
    b'"context_management":{"edits":[{"type":"clear_thinking_20251015","keep":"all"}]},'
    b'"a_field_from_the_future":{"nested":[1, 2.50, "caf\\u00e9"]},'
    b'"metadata":{"user_id":"user_0af4_account_5e2c_session_9b1d"}}'
)


@pytest.mark.parametrize("auth", [
    pytest.param({"x-api-key": CLIENT_KEY}, id="x-api-key"),
    pytest.param({"authorization": f"Bearer {CLIENT_KEY}"}, id="bearer"),
    pytest.param({"x-api-key": CLIENT_KEY, "authorization": f"Bearer {CLIENT_KEY}"}, id="both"),
])
async def test_passthrough_forwards_the_body_byte_for_byte(start_proxy, upstream, auth):
    reply = json_reply(anthropic_message(Answer(reasoning="It says hello.", text="The file says hello.")),
                       headers=[("request-id", "req_011CPassThrough")])
    upstream.script = [reply]
    proxy = await proxy_for(start_proxy, upstream)
    headers = {"content-type": "application/json", "anthropic-version": "2023-06-01",
               "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14", **auth}
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{proxy}/v1/messages?beta=true", content=CLAUDE_CODE_BODY, headers=headers)
    assert r.status_code == 200
    assert r.content == reply.body  # the answer comes back untouched as well
    assert r.headers["request-id"] == "req_011CPassThrough"
    [seen] = upstream.requests
    assert (seen.path, seen.body) == ("/v1/messages", CLAUDE_CODE_BODY)
    assert seen.headers["x-api-key"] == UPSTREAM_KEY
    assert "authorization" not in seen.headers
    assert_no_client_credentials(seen)
    assert seen.headers["anthropic-version"] == "2023-06-01"
    assert seen.headers["anthropic-beta"] == "claude-code-20250219,interleaved-thinking-2025-05-14"


async def test_passthrough_alias_changes_only_the_model(start_proxy, upstream):
    upstream.script = [json_reply(anthropic_message(Answer(text="Hi.")))]
    proxy = await proxy_for(start_proxy, upstream)
    message = await in_thread(lambda: client(proxy).messages.create(
        model="sonnet", max_tokens=2048, messages=[{"role": "user", "content": "hi"}],
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        thinking={"type": "enabled", "budget_tokens": 1024},
        extra_body={"top_k": 5, "a_field_from_the_future": {"x": [1, 2]}}))
    assert message.content[0].text == "Hi."
    [seen] = upstream.requests
    assert seen.json == {
        "model": "claude-sonnet-4-5-20250929", "max_tokens": 2048,
        "messages": [{"role": "user", "content": "hi"}],
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "thinking": {"type": "enabled", "budget_tokens": 1024}, "top_k": 5,
        "a_field_from_the_future": {"x": [1, 2]},
    }


async def test_passthrough_beta_endpoint_keeps_the_clients_version_and_betas(start_proxy, upstream):
    upstream.script = [json_reply(anthropic_message(Answer(text="Hi.")))]
    proxy = await proxy_for(start_proxy, upstream)
    message = await in_thread(lambda: client(proxy).beta.messages.create(
        model="claude-sonnet-4-6", max_tokens=100, messages=[{"role": "user", "content": "hi"}],
        betas=["interleaved-thinking-2025-05-14", "context-management-2025-06-27"],
        extra_headers={"anthropic-version": "2099-01-01"}, extra_query={"beta": "true"}))
    assert message.content[0].text == "Hi."
    [seen] = upstream.requests
    assert seen.path == "/v1/messages"
    assert seen.headers["anthropic-version"] == "2099-01-01"  # the client's, not a default
    assert seen.headers["anthropic-beta"] == "interleaved-thinking-2025-05-14,context-management-2025-06-27"
    assert seen.headers["x-api-key"] == UPSTREAM_KEY
    assert "authorization" not in seen.headers
    assert_no_client_credentials(seen)


# A web search run by Anthropic itself, a field and an event type this proxy has never
# heard of: all of it must reach the client exactly as sent.
SERVER_TOOL_STREAM = [
    {"type": "message_start", "message": {
        "id": "msg_01ServerTool", "type": "message", "role": "assistant", "content": [],
        "model": "claude-sonnet-4-5-20250929", "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 2679, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                  "output_tokens": 3, "service_tier": "standard"}}},
    {"type": "content_block_start", "index": 0, "content_block": {
        "type": "server_tool_use", "id": "srvtoolu_014hJH", "name": "web_search", "input": {}}},
    {"type": "content_block_delta", "index": 0,
     "delta": {"type": "input_json_delta", "partial_json": "{\"query\": \"weather Paris\"}"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1, "content_block": {
        "type": "web_search_tool_result", "tool_use_id": "srvtoolu_014hJH", "content": [
            {"type": "web_search_result", "title": "Paris weather", "url": "https://example.com/paris",
             "encrypted_content": "EqgfCioIARgBIiQ3YTAwMjY1Mi1m", "page_age": None}]}},
    {"type": "content_block_stop", "index": 1},
    {"type": "future_progress_event", "progress": {"stage": "drafting", "percent": 50}},
    {"type": "content_block_start", "index": 2, "content_block": {"type": "text", "text": "", "citations": []}},
    {"type": "content_block_delta", "index": 2,
     "delta": {"type": "text_delta", "text": "It is 18C in Paris.", "future_delta_field": True}},
    {"type": "content_block_stop", "index": 2},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
     "usage": {"output_tokens": 120, "server_tool_use": {"web_search_requests": 1}}},
    {"type": "message_stop"},
]


async def test_passthrough_stream_reaches_the_client_byte_for_byte(start_proxy, upstream):
    reply = anthropic_sse(SERVER_TOOL_STREAM)
    upstream.script = [reply]
    proxy = await proxy_for(start_proxy, upstream)
    body = {"model": "claude-sonnet-4-6", "max_tokens": 1024, "stream": True, "messages": [QUESTION],
            "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}]}
    async with httpx.AsyncClient() as http:  # no anthropic-version: the proxy supplies the default
        r = await http.post(f"{proxy}/v1/messages", json=body, headers={"x-api-key": CLIENT_KEY})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.content == b"".join(reply.pieces or [])
    [seen] = upstream.requests
    assert seen.json == body
    assert seen.headers["anthropic-version"] == "2023-06-01"


async def test_passthrough_stream_with_server_tools_through_the_sdk(start_proxy, upstream):
    upstream.script = [anthropic_sse(SERVER_TOOL_STREAM)]
    proxy = await proxy_for(start_proxy, upstream)
    message = await in_thread(ask(
        proxy, stream=True, model="claude-sonnet-4-6", max_tokens=1024, messages=[QUESTION],
        tools=[{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}]))
    assert [block.type for block in message.content] == ["server_tool_use", "web_search_tool_result", "text"]
    assert message.content[0].input == {"query": "weather Paris"}
    assert message.content[2].text == "It is 18C in Paris."
    assert message.usage.server_tool_use.web_search_requests == 1
    assert message.usage.output_tokens == 120


async def test_passthrough_tool_stream_through_the_sdk(start_proxy, upstream):
    answer = Answer(reasoning="Need the weather tool.", text="Checking.", tool_calls=[PARIS], cache_read=1800,
                    input_tokens=1825, output_tokens=60)
    upstream.script = [anthropic_sse(anthropic_events(answer))]
    proxy = await proxy_for(start_proxy, upstream)
    message = await in_thread(ask(proxy, stream=True, model="claude-sonnet-4-6", max_tokens=4096,
                                  thinking={"type": "enabled", "budget_tokens": 2048},
                                  messages=[QUESTION], tools=[WEATHER_TOOL]))
    assert [block.type for block in message.content] == ["thinking", "text", "tool_use"]
    assert message.content[0].signature == answer.signature  # signatures survive for the next turn
    assert message.content[2].input == {"city": "Paris", "unit": "celsius"}
    assert message.stop_reason == "tool_use"
    usage = message.usage
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.output_tokens) == (25, 1800, 60)


@pytest.mark.parametrize("stream", STREAMING)
async def test_passthrough_upstream_error_is_relayed_unchanged(start_proxy, upstream, stream):
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"},
             "request_id": "req_011CError"}
    upstream.script = [json_reply(error, 529)]
    proxy = await proxy_for(start_proxy, upstream, retry={"max_attempts": 1})
    with pytest.raises(anthropic.OverloadedError) as caught:
        await in_thread(ask(proxy, stream=stream, model="claude-sonnet-4-6", max_tokens=10, messages=[QUESTION]))
    assert caught.value.status_code == 529
    assert caught.value.body == error


async def test_an_error_as_the_first_stream_event_is_answered_with_its_status(start_proxy, upstream):
    """Nothing reached the client yet, so it can get a real status (and its SDK's retry policy)."""
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    upstream.script = [anthropic_sse([overloaded])]
    proxy = await proxy_for(start_proxy, upstream, retry={"max_attempts": 1})
    with pytest.raises(anthropic.APIStatusError) as caught:
        await in_thread(ask(proxy, stream=True, model="claude-sonnet-4-6", max_tokens=10, messages=[QUESTION]))
    assert caught.value.status_code == 529
    assert caught.value.body["error"]["type"] == "overloaded_error"


async def test_passthrough_stream_cut_short_ends_with_an_error_event(start_proxy, upstream):
    events = anthropic_events(Answer(text="Hello there", tool_calls=[PARIS]))
    upstream.script = [anthropic_sse(events[:7])]  # stops inside the tool_use block
    proxy = await proxy_for(start_proxy, upstream)
    with pytest.raises(anthropic.APIStatusError) as caught:
        await in_thread(ask(proxy, stream=True, model="claude-sonnet-4-6", max_tokens=100, messages=[QUESTION],
                            tools=[WEATHER_TOOL]))
    assert caught.value.body["error"]["type"] == "api_error"
    assert "ended before" in caught.value.body["error"]["message"]


@pytest.mark.parametrize("stream", STREAMING)
async def test_client_gets_one_date_header(start_proxy, upstream, stream):
    """The upstream's Date and Server must not be relayed next to the proxy's own (RFC 9110 §6.6.1)."""
    upstream.script = [PASSTHROUGH.reply(Answer(text="Hi."), stream=stream)]
    proxy = await proxy_for(start_proxy, upstream)
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{proxy}/v1/messages", headers={"x-api-key": CLIENT_KEY}, json={
            "model": "claude-sonnet-4-6", "max_tokens": 10, "stream": stream, "messages": [QUESTION]})
    assert r.status_code == 200
    assert len(r.headers.get_list("date")) == 1
    assert len(r.headers.get_list("server")) == 1


# -- count_tokens, models, bad input --------------------------------------------------------


async def test_count_tokens_is_passed_through_to_anthropic(start_proxy, upstream):
    upstream.script = [json_reply({"input_tokens": 2095}), json_reply({"input_tokens": 2101})]
    proxy = await proxy_for(start_proxy, upstream)
    ant = client(proxy)
    count = await in_thread(lambda: ant.messages.count_tokens(
        model="sonnet", messages=[QUESTION], tools=[WEATHER_TOOL], system="Be terse."))
    assert count.input_tokens == 2095
    beta = await in_thread(lambda: ant.beta.messages.count_tokens(  # Claude Code's ?beta=true form
        model="claude-sonnet-4-6", messages=[QUESTION], betas=["context-management-2025-06-27"],
        extra_query={"beta": "true"}))
    assert beta.input_tokens == 2101
    first, second = upstream.requests
    for seen in (first, second):
        assert seen.path == "/v1/messages/count_tokens"
        assert seen.headers["x-api-key"] == UPSTREAM_KEY
        assert_no_client_credentials(seen)
    assert first.json == {"model": "claude-sonnet-4-5-20250929", "messages": [QUESTION],
                          "tools": [WEATHER_TOOL], "system": "Be terse."}
    assert second.json == {"model": "claude-sonnet-4-6", "messages": [QUESTION]}
    assert "context-management-2025-06-27" in second.headers["anthropic-beta"].split(",")


@pytest.mark.parametrize("backend", TRANSLATED)
async def test_count_tokens_is_estimated_for_other_backends(start_proxy, upstream, backend):
    proxy = await proxy_for(start_proxy, upstream)
    ant = client(proxy)

    def count(text: str, **extra: Any) -> int:
        return ant.messages.count_tokens(model=backend.name, messages=[{"role": "user", "content": text}],
                                         **extra).input_tokens

    short = await in_thread(lambda: count("hi"))
    longer = await in_thread(lambda: count("hi " * 400))
    with_tools = await in_thread(lambda: count("hi", tools=[WEATHER_TOOL]))
    assert 0 < short < with_tools
    assert longer > short + 200  # roughly a token per word of input
    assert upstream.requests == []


async def test_models_list_in_anthropic_shape(start_proxy, upstream):
    proxy = await proxy_for(start_proxy, upstream)
    models = await in_thread(lambda: list(client(proxy).models.list()))
    assert [m.id for m in models] == ["claude-on-gpt", "claude-on-llama", "claude-sonnet-4-6", "sonnet"]
    assert all(m.type == "model" for m in models)
    async with httpx.AsyncClient() as http:
        r = await http.get(f"{proxy}/v1/models", headers={"x-api-key": CLIENT_KEY})
    assert set(r.json()) >= {"data", "has_more", "first_id", "last_id"}
    assert r.json()["first_id"] == "claude-on-gpt"


async def test_one_model_is_retrievable_in_anthropic_shape(start_proxy, upstream):
    proxy = await proxy_for(start_proxy, upstream)
    found = await in_thread(lambda: client(proxy).models.retrieve("sonnet"))
    assert (found.id, found.type) == ("sonnet", "model")
    with pytest.raises(anthropic.NotFoundError) as caught:
        await in_thread(lambda: client(proxy).models.retrieve("claude-unknown-9"))
    assert caught.value.body["error"]["type"] == "not_found_error"


@pytest.mark.parametrize("body", [
    pytest.param(b"{\"model\": \"sonnet\", \"messages\": [", id="malformed-json"),
    pytest.param(b'{"max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}', id="no-model"),
    pytest.param(b'{"model": 7, "max_tokens": 10, "messages": []}', id="model-not-a-string"),
    pytest.param(b"", id="empty"),
])
async def test_bad_input_is_a_400_in_anthropic_shape(start_proxy, upstream, body):
    proxy = await proxy_for(start_proxy, upstream)
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{proxy}/v1/messages", content=body,
                            headers={"content-type": "application/json", "x-api-key": CLIENT_KEY,
                                     "anthropic-version": "2023-06-01"})
    assert r.status_code == 400
    error = r.json()
    assert set(error) == {"type", "error"} and error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert error["error"]["message"]
    assert upstream.requests == []


async def test_the_sdk_raises_bad_request_for_bad_input(start_proxy, upstream):
    proxy = await proxy_for(start_proxy, upstream)
    ant = client(proxy)
    with pytest.raises(anthropic.BadRequestError) as no_model:
        await in_thread(lambda: ant.post("/v1/messages", cast_to=object,
                                         body={"max_tokens": 10, "messages": [QUESTION]}))
    assert no_model.value.body["error"]["type"] == "invalid_request_error"
    assert "model" in no_model.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as malformed:
        await in_thread(lambda: ant.post("/v1/messages", cast_to=object, content=b'{"model": "sonnet",',
                                         options={"headers": {"content-type": "application/json"}}))
    assert "JSON" in malformed.value.body["error"]["message"]
    with pytest.raises(anthropic.NotFoundError) as unknown:
        await in_thread(ask(proxy, stream=False, model="claude-opus-9", max_tokens=10, messages=[QUESTION]))
    assert unknown.value.body["error"]["type"] == "not_found_error"
    assert upstream.requests == []


async def test_translated_bad_input_is_a_400_before_any_upstream_call(start_proxy, upstream):
    proxy = await proxy_for(start_proxy, upstream)
    with pytest.raises(anthropic.BadRequestError) as caught:
        await in_thread(ask(proxy, stream=False, model="claude-on-gpt", max_tokens=10,
                            messages=[{"role": "user", "content": [{"type": "document", "source": {
                                "type": "file", "file_id": "file_011CNha8iCJcU1wXNR6q4V8w"}}]}]))
    assert caught.value.body["type"] == "error"
    assert caught.value.body["error"]["type"] == "invalid_request_error"
    assert upstream.requests == []

